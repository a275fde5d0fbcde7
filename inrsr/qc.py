"""Quality-control pictures (``--qc FILE.png``): what a result looks like, without another viewer.

Volumes get a montage of the three planes through the centre of the output grid (axial, coronal, sagittal: the
voxel axes nearest to world z, y and x), one row per image (an input resampled onto the output grid in world
space, the output, a map such as the uncertainty or an error); cine reconstructions get three frames of the
zero-filled input and of the reconstruction, and an x-t profile through the centre. Planes are drawn in mm with
the voxel sizes' true aspect, a scale bar and orientation letters (RAS+, the neurological convention: the
subject's right on the right), and a caption carries the key figures of the run.

Drawing uses matplotlib's Agg canvas directly (no display, no pyplot state) and is imported only when a picture
is made, so ``--help`` stays fast. The functions take arrays and an affine or spacing; only :func:`save_png`
writes, atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .geometry import Grid, voxel_spacing

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .volume import Volume

PLANE_NAMES = ("sagittal", "coronal", "axial")  # the plane normal to world x, y, z
WORLD_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # low and high end of world x, y, z (RAS+)
WORLD_NAMES = "xyz"


@dataclass(frozen=True)
class Plane:
    """A 2D picture of a plane: ``image[row, col]`` with row 0 at the bottom, ``extent_mm`` = (width, height),
    ``letters`` = (left, right, bottom, top) orientation letters and the plane's position in world mm."""

    name: str
    image: np.ndarray
    extent_mm: tuple[float, float]
    letters: tuple[str, str, str, str]
    position: str


@dataclass(frozen=True)
class Row:
    """One row of a montage: a label, the three central slabs (see :func:`slabs`) and how to show them:
    ``"image"`` rows share a grey window; a ``"map"`` row has its own colour scale and a colour bar."""

    label: str
    slabs: Sequence[np.ndarray]
    kind: str = "image"


def centre_index(grid: Grid) -> np.ndarray:
    """The voxel index of the centre planes: ``n // 2`` along each voxel axis.

    >>> centre_index(Grid((4, 5, 1), np.eye(4))).tolist()
    [2, 2, 0]
    """
    return np.asarray(grid.shape, dtype=int) // 2


def centre_slabs(grid: Grid) -> list[Grid]:
    """The three one-voxel-thick grids through :func:`centre_index`, one normal to each voxel axis; resampling
    an input onto these is all a montage needs (not the whole output grid).

    >>> g = centre_slabs(Grid((4, 6, 8), np.diag([2.0, 1.0, 1.0, 1.0])))
    >>> [s.shape for s in g], float(g[0].affine[0, 3])
    ([(1, 6, 8), (4, 1, 8), (4, 6, 1)], 4.0)
    """
    centre = centre_index(grid)
    out = []
    for axis in range(3):
        shape = list(grid.shape)
        shape[axis] = 1
        shift = np.eye(4)
        shift[axis, 3] = centre[axis]
        out.append(Grid(tuple(shape), np.asarray(grid.affine, dtype=np.float64) @ shift))  # type: ignore[arg-type]
    return out


def slabs(data: np.ndarray) -> list[np.ndarray]:
    """The three central slabs of a 3D array on the output grid, as :func:`centre_slabs` places them.

    >>> [s.shape for s in slabs(np.zeros((4, 6, 8)))]
    [(1, 6, 8), (4, 1, 8), (4, 6, 1)]
    """
    data = np.asarray(data)
    centre = np.asarray(data.shape[:3]) // 2
    return [np.take(data, [int(centre[a])], axis=a) for a in range(3)]


def oriented_planes(slab_list: Sequence[np.ndarray], affine: np.ndarray) -> list[Plane]:
    """The slabs as axial, coronal and sagittal pictures (in that order), each turned so that its horizontal and
    vertical axes run along increasing world coordinates (RAS+), with their extents in mm.

    A plane's in-plane voxel axes are the two not normal to it; flips and transposes only, no resampling, so an
    oblique grid is shown along its own voxel axes (the nearest world axes name it).
    """
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=np.float64)
    ornt = nio.io_orientation(affine)  # voxel axis i -> (world axis, direction)
    spacing = voxel_spacing(affine)
    world_of = ornt[:, 0].astype(int)
    sign = ornt[:, 1]
    shape = [slab_list[(a + 1) % 3].shape[a] for a in range(3)]  # the full grid's shape
    centre_mm = affine[:3, :3] @ (np.asarray(shape) // 2) + affine[:3, 3]
    planes = {}
    for normal in range(3):
        image = np.squeeze(np.asarray(slab_list[normal], dtype=np.float32), axis=normal)
        axes = [a for a in range(3) if a != normal]
        axes_sorted = sorted(axes, key=lambda a: world_of[a])  # horizontal: the lower world axis
        if axes_sorted != axes:
            image = image.T
        h, v = axes_sorted
        if sign[h] < 0:
            image = image[::-1, :]
        if sign[v] < 0:
            image = image[:, ::-1]
        picture = np.ascontiguousarray(image.T)  # rows = vertical axis
        wh, wv = world_of[h], world_of[v]
        name = PLANE_NAMES[world_of[normal]]
        letters = (*WORLD_LETTERS[wh], *WORLD_LETTERS[wv])
        planes[name] = Plane(
            name=name,
            image=picture,
            extent_mm=(float(image.shape[0] * spacing[h]), float(image.shape[1] * spacing[v])),
            letters=letters,  # type: ignore[arg-type]
            position=f"{WORLD_NAMES[world_of[normal]]} = {centre_mm[world_of[normal]]:.1f} mm",
        )
    return [planes["axial"], planes["coronal"], planes["sagittal"]]


def nice_length(max_mm: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``max_mm``: a scale bar's length.

    >>> nice_length(47.0), nice_length(9.9), nice_length(0.3)
    (20.0, 5.0, 0.2)
    """
    if not max_mm > 0:
        return 0.0
    power = 10.0 ** np.floor(np.log10(max_mm))
    for step in (5.0, 2.0, 1.0):
        if step * power <= max_mm * (1 + 1e-9):
            return float(step * power)
    return float(power)


def window(images: Sequence[np.ndarray], low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """A display window from the pooled pixels of ``images``: their ``low`` and ``high`` percentiles (finite
    pixels only; a flat or empty set gives a unit-wide window).

    >>> window([np.arange(101.0)], 0, 100)
    (0.0, 100.0)
    """
    values = np.concatenate([np.asarray(i, dtype=np.float64).ravel() for i in images]) if images else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def _scale_bar(ax: Axes, width_mm: float, height_mm: float, origin_top: bool = False) -> None:
    """A white bar of a round number of mm (at most a quarter of the width) in the lower left corner of the
    picture; ``origin_top`` when the axes' vertical coordinate grows downwards."""
    length = nice_length(width_mm / 4)
    if length <= 0:
        return
    x0 = 0.05 * width_mm
    y0 = 0.06 * height_mm if not origin_top else 0.94 * height_mm
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=4, foreground="black")]
    ax.plot([x0, x0 + length], [y0, y0], color="white", linewidth=3, solid_capstyle="butt", path_effects=outline)
    dy = 0.03 * height_mm * (-1 if origin_top else 1)  # above the bar on the screen
    ax.text(x0 + length / 2, y0 + dy, f"{length:g} mm", color="white", fontsize=7, ha="center", va="bottom",
            path_effects=outline)  # fmt: skip


def _letters(ax: Axes, letters: tuple[str, str, str, str]) -> None:
    style = {"color": "yellow", "fontsize": 7, "transform": ax.transAxes}
    left, right, bottom, top = letters
    ax.text(0.01, 0.5, left, ha="left", va="center", **style)
    ax.text(0.99, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.01, bottom, ha="center", va="bottom", **style)
    ax.text(0.5, 0.99, top, ha="center", va="top", **style)


def _caption(fig: Figure, caption: str, bottom_in: float, height_in: float) -> None:
    fig.text(0.01, (bottom_in - 0.08) / height_in, caption, color="white", fontsize=7.5, family="monospace",
             ha="left", va="top", wrap=True)  # fmt: skip


def volume_montage(rows: Sequence[Row], affine: np.ndarray, title: str, caption: str = "") -> Figure:
    """Rows of central planes (axial, coronal, sagittal columns) of images on one grid with voxel -> world
    ``affine``: each row's slabs as :func:`slabs` or :func:`centre_slabs` give them. Returns the figure."""
    pictures = [oriented_planes(r.slabs, affine) for r in rows]
    widths = [p.extent_mm[0] for p in pictures[0]]
    heights = [p.extent_mm[1] for p in pictures[0]]
    width_in = 10.0
    panel_h = width_in * 0.92 * max(heights) / sum(widths)
    n_lines = caption.count("\n") + 1 if caption else 0
    caption_in = 0.35 + 0.14 * n_lines
    title_in = 0.6
    height_in = title_in + panel_h * len(rows) + caption_in
    fig = _figure(width_in, height_in)
    grid = fig.add_gridspec(
        len(rows), 4, width_ratios=[*widths, 0.04 * sum(widths)], left=0.06, right=0.97, wspace=0.04,
        hspace=0.08, top=1 - title_in / height_in, bottom=caption_in / height_in,
    )  # fmt: skip
    fig.suptitle(title, color="white", fontsize=10, y=1 - 0.12 / height_in, va="top")
    grey = [p.image for r, ps in zip(rows, pictures, strict=True) if r.kind == "image" for p in ps]
    grey_window = window(grey)
    for i, (row, planes) in enumerate(zip(rows, pictures, strict=True)):
        if row.kind == "map":
            lo, hi = window([p.image for p in planes], 0.0, 99.5)
            cmap = "magma"
        else:
            lo, hi = grey_window
            cmap = "gray"
        shown = None
        for j, plane in enumerate(planes):
            ax = fig.add_subplot(grid[i, j])
            w, h = plane.extent_mm
            shown = ax.imshow(plane.image, cmap=cmap, vmin=lo, vmax=hi, origin="lower", extent=(0, w, 0, h),
                              interpolation="nearest", aspect="equal")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            _letters(ax, plane.letters)
            if i == 0:
                ax.set_title(f"{plane.name}, {plane.position}", color="white", fontsize=9)
                _scale_bar(ax, w, h)
            if j == 0:
                ax.set_ylabel(row.label, color="white", fontsize=8)
        if row.kind == "map" and shown is not None:
            bar = fig.colorbar(shown, cax=fig.add_subplot(grid[i, 3]))
            bar.ax.tick_params(colors="white", labelsize=7)
    if caption:
        _caption(fig, caption, caption_in, height_in)
    return fig


def cine_montage(
    zero_filled: np.ndarray,
    reconstruction: np.ndarray,
    spacing_mm: Sequence[float],
    title: str,
    caption: str = "",
) -> Figure:
    """Zero-filled vs reconstructed cine ``(x, y, t)`` magnitudes: three frames (first, a third and two thirds
    through) and the x-t profile along x at the central y; ``spacing_mm`` = (dx, dy). Both rows share the
    reconstruction's grey window."""
    from matplotlib.ticker import MaxNLocator

    zf = np.asarray(zero_filled, dtype=np.float32)
    rec = np.asarray(reconstruction, dtype=np.float32)
    if zf.shape != rec.shape or zf.ndim != 3:
        raise ValueError(f"expected two (x, y, t) arrays of one shape, got {zf.shape} and {rec.shape}")
    nx, ny, nt = rec.shape
    dx, dy = float(spacing_mm[0]), float(spacing_mm[1])
    frames = sorted({0, nt // 3, (2 * nt) // 3})
    yc = ny // 2
    lo, hi = window([rec])
    w, h = nx * dx, ny * dy
    width_in = 10.0
    panel_h = width_in * 0.9 / (len(frames) + 1.2) * h / w
    panel_h = min(max(panel_h, 1.2), 4.0)
    n_lines = caption.count("\n") + 1 if caption else 0
    caption_in = 0.35 + 0.14 * n_lines
    title_in = 0.6
    height_in = title_in + 2 * panel_h + caption_in
    fig = _figure(width_in, height_in)
    grid = fig.add_gridspec(
        2, len(frames) + 1, width_ratios=[1.0] * len(frames) + [1.2], left=0.04, right=0.94, wspace=0.06,
        hspace=0.1, top=1 - title_in / height_in, bottom=caption_in / height_in,
    )  # fmt: skip
    fig.suptitle(title, color="white", fontsize=10, y=1 - 0.12 / height_in, va="top")
    for i, (label, data) in enumerate((("zero-filled", zf), ("reconstruction", rec))):
        for j, f in enumerate(frames):
            ax = fig.add_subplot(grid[i, j])
            # x across, y down (matrix order, as the arrays are stored); extent in mm
            ax.imshow(data[:, :, f].T, cmap="gray", vmin=lo, vmax=hi, origin="upper", extent=(0, w, h, 0),
                      interpolation="nearest", aspect="equal")  # fmt: skip
            ax.axhline((yc + 0.5) * dy, color="yellow", linewidth=0.6, linestyle="--")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"frame {f}", color="white", fontsize=9)
                _scale_bar(ax, w, h, origin_top=True)
            if j == 0:
                ax.set_ylabel(label, color="white", fontsize=8)
        ax = fig.add_subplot(grid[i, len(frames)])
        ax.imshow(data[:, yc, :], cmap="gray", vmin=lo, vmax=hi, origin="upper", extent=(-0.5, nt - 0.5, w, 0),
                  interpolation="nearest", aspect="auto")  # fmt: skip
        ax.tick_params(colors="white", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # frames are whole numbers
        ax.yaxis.tick_right()
        ax.yaxis.set_label_position("right")
        ax.set_ylabel("x (mm)", color="white", fontsize=7)
        if i == 0:
            ax.set_title(f"x-t profile at y = {yc}", color="white", fontsize=9)
            ax.tick_params(labelbottom=False)  # the rows share the frame axis: labelled once, below
        else:
            ax.set_xlabel("frame", color="white", fontsize=7)
    if caption:
        _caption(fig, caption, caption_in, height_in)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG to ``path`` atomically (a temporary file beside it, then a rename)."""
    from .io.nifti import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", facecolor=fig.get_facecolor())


def input_row(label: str, volume: Volume, grid: Grid, order: int = 1) -> Row:
    """A montage row for an input ``volume`` (:class:`~inrsr.volume.Volume`) resampled in world space onto the
    central planes of ``grid`` (trilinear by default; 0 outside the input's field of view)."""
    from .metrics import resample_to_grid

    return Row(label, [resample_to_grid(volume, g, order=order) for g in centre_slabs(grid)])


def format_mm(values: Sequence[float]) -> str:
    """Voxel sizes for a caption.

    >>> format_mm([1.0, 1.0, 2.5])
    '1 x 1 x 2.5 mm'
    """
    return " x ".join(f"{float(v):.4g}" for v in values) + " mm"
