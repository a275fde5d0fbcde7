"""Image-quality metrics (PSNR, SSIM, NRMSE) with an explicit data range and masks; world-space resampling.

Conventions, shared by every metric so that numbers from different commands and benchmarks compare:

- ``ref`` is the ground truth, ``pred`` the estimate; both are arrays of the same shape.
- ``mask`` (optional, boolean, same shape) selects the voxels that count; no mask means the whole volume.
- The data range is ``max(ref[mask]) - min(ref[mask])``, taken from the reference only, never from ``pred``.

:func:`compare_volumes` puts a prediction and a mask onto the reference's voxel grid (in world mm, NIfTI RAS+)
before measuring; :func:`resample_to_grid` is that resampling, reused by the B-spline baselines.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .geometry import Grid, apply_affine, boxes_overlap
from .volume import Volume

__all__ = ["compare_volumes", "data_range", "nrmse", "psnr", "resample_to_grid", "ssim"]

#: SSIM window edge length in voxels (scikit-image's default for uniform windows).
SSIM_WIN_SIZE = 7
#: Voxels evaluated per slab by :func:`resample_to_grid` (bounds the coordinate arrays to ~100 MB).
_SLAB_VOXELS = 1 << 20


def _prepare(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != ref.shape:
            raise InputError(f"mask shape {mask.shape} differs from reference shape {ref.shape}")
        mask = mask.astype(bool, copy=False)
        if not mask.any():
            raise InputError("the mask is empty: no voxel to measure")
    return pred, ref, mask


def _inside(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The voxels of ``a`` inside ``mask`` as float64 (flattened when masked)."""
    return np.asarray(a[mask] if mask is not None else a, dtype=np.float64)


def data_range(ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``max(ref[mask]) - min(ref[mask])`` in intensity units; an :class:`InputError` if it is 0."""
    values = _inside(np.asarray(ref), None if mask is None else np.asarray(mask, dtype=bool))
    if values.size == 0:
        raise InputError("the mask is empty: no voxel to measure")
    rng = float(values.max() - values.min())
    if not rng > 0:
        raise InputError("the reference is constant inside the mask (data range 0): PSNR, SSIM undefined")
    return rng


def _mse(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> float:
    diff = _inside(pred, mask) - _inside(ref, mask)
    return float(np.mean(diff * diff))


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R^2 / MSE)`` inside ``mask``.

    ``R = max(ref[mask]) - min(ref[mask])``; ``MSE`` is the mean squared error over the voxels in the mask.
    Returns ``inf`` when ``pred`` equals ``ref`` inside the mask.

    >>> round(psnr(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 0.9])), 2)
    23.86
    """
    pred, ref, mask = _prepare(pred, ref, mask)
    rng = data_range(ref, mask)
    mse = _mse(pred, ref, mask)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(rng * rng / mse))


def ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity (unitless, at most 1), 2D or 3D, averaged inside ``mask``.

    The full SSIM map is computed by scikit-image's ``structural_similarity`` with a uniform
    ``7 x 7 (x 7)`` window, ``data_range = max(ref[mask]) - min(ref[mask])`` and the default constants
    ``K1 = 0.01, K2 = 0.03``; the map is then averaged over the voxels in ``mask`` (the whole volume, borders
    included, when there is no mask). Every side of the image must be at least 7 voxels.
    """
    from skimage.metrics import structural_similarity

    pred, ref, mask = _prepare(pred, ref, mask)
    rng = data_range(ref, mask)
    if min(ref.shape) < SSIM_WIN_SIZE:
        raise InputError(
            f"SSIM needs every side of the image to be at least {SSIM_WIN_SIZE} voxels, got shape {ref.shape}"
        )
    _, smap = structural_similarity(
        np.asarray(ref, dtype=np.float64),
        np.asarray(pred, dtype=np.float64),
        data_range=rng,
        full=True,
        gaussian_weights=False,
        win_size=SSIM_WIN_SIZE,
    )
    return float(np.mean(smap[mask] if mask is not None else smap, dtype=np.float64))


def nrmse(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised root-mean-square error (unitless): ``sqrt(MSE) / sqrt(mean(ref^2))`` inside ``mask``.

    The normalisation is the reference's root-mean-square intensity in the mask (scikit-image's
    ``normalized_root_mse(..., normalization="euclidean")``), so the value is ``||pred - ref|| / ||ref||``
    over the masked voxels and does not depend on the data range.

    >>> round(nrmse(np.array([1.0, 1.0]), np.array([1.0, 2.0])), 4)
    0.4472
    """
    pred, ref, mask = _prepare(pred, ref, mask)
    ref_in = _inside(ref, mask)
    denom = float(np.sqrt(np.mean(ref_in * ref_in)))
    if denom == 0:
        raise InputError("the reference is zero everywhere inside the mask: NRMSE is undefined")
    return float(np.sqrt(_mse(pred, ref, mask)) / denom)


def _same_grid(a: Grid, b: Grid, atol_mm: float = 1e-4) -> bool:
    """Whether two grids have the same shape and the same affine to within ``atol_mm`` (mm)."""
    return tuple(a.shape) == tuple(b.shape) and bool(np.allclose(a.affine, b.affine, rtol=0.0, atol=atol_mm))


def resample_to_grid(volume: Volume, grid: Grid, order: int = 3) -> np.ndarray:
    """Resample ``volume`` onto ``grid`` in world space (mm); returns a float32 array of ``grid.shape``.

    Each output voxel centre is mapped voxel -> world (``grid.affine``) -> ``volume``'s voxel indices
    (``inv(volume.affine)``) and the volume is interpolated there with ``scipy.ndimage.map_coordinates``:
    ``order=3`` is a cubic B-spline (the spline prefilter is applied once, to a float32 copy), ``1``
    trilinear, ``0`` nearest neighbour.

    Points outside ``volume``'s field of view are 0. The field of view ends at the outer voxel *edges*, half a
    voxel past the outer centres (as in :func:`inrsr.geometry.voxel_corners`); in that half-voxel rim the
    spline uses mirror boundary conditions. This is scipy's ``mode="constant", cval=0`` except for the rim,
    which scipy also zeros, so that a point a rounding error past the last voxel centre would drop to 0.

    Memory: besides the input and output, one float32 copy of the input (spline coefficients, order 3 only)
    and coordinates for about 1 M output voxels at a time, processed in slabs along the first axis.
    """
    from scipy import ndimage

    if order not in (0, 1, 3):
        raise InputError(f"interpolation order must be 0, 1 or 3, got {order}")
    shape = tuple(int(n) for n in grid.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"output grid must be 3D and non-empty, got shape {shape}")
    if _same_grid(volume.grid, grid, atol_mm=1e-6):
        return np.array(volume.data, dtype=np.float32, copy=True)

    source = np.asarray(volume.data, dtype=np.float32)
    if order > 1:
        source = ndimage.spline_filter(source, order=order, output=np.float32, mode="mirror")
    # Output voxel -> world -> source voxel, as one affine.
    world_to_src = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64))
    out_to_src = world_to_src @ np.asarray(grid.affine, dtype=np.float64)
    upper = np.asarray(source.shape, dtype=np.float64) - 0.5

    out = np.empty(shape, dtype=np.float32)
    nx, ny, nz = shape
    rows = max(1, _SLAB_VOXELS // (ny * nz))
    jk = np.stack(np.meshgrid(np.arange(ny), np.arange(nz), indexing="ij"), axis=-1).astype(np.float64)
    for i0 in range(0, nx, rows):
        i1 = min(nx, i0 + rows)
        idx = np.empty((i1 - i0, ny, nz, 3), dtype=np.float64)
        idx[..., 0] = np.arange(i0, i1, dtype=np.float64)[:, None, None]
        idx[..., 1:] = jk
        src = np.moveaxis(apply_affine(out_to_src, idx), -1, 0)
        del idx
        slab = out[i0:i1]
        ndimage.map_coordinates(source, src, output=slab, order=order, mode="mirror", prefilter=False)
        outside = np.any((src < -0.5) | (src > upper[:, None, None, None]), axis=0)
        slab[outside] = 0.0
    return out


def compare_volumes(pred: Volume, ref: Volume, mask: Volume | None = None) -> dict:
    """PSNR, SSIM and NRMSE of ``pred`` against ``ref`` on ``ref``'s voxel grid, inside ``mask``.

    When ``pred``'s grid differs from ``ref``'s, ``pred`` is resampled onto it in world space (cubic B-spline,
    0 outside ``pred``'s field of view); a mask on another grid is resampled with nearest neighbour. Mask
    voxels count where the value is above 0.5.

    Returns ``{"psnr_db": float (inf when identical), "ssim": float, "nrmse": float, "resampled": bool,
    "n_voxels_in_mask": int, "data_range": float}``; ``data_range`` is in ``ref``'s intensity units.
    """
    target = ref.grid
    resampled = not _same_grid(pred.grid, target)
    if resampled and not boxes_overlap((pred.shape, pred.affine), (ref.shape, ref.affine)):
        raise InputError(f"{pred.name} and {ref.name} do not overlap in world space: check their affines")
    pred_data = resample_to_grid(pred, target, order=3) if resampled else pred.data
    mask_data: np.ndarray | None = None
    if mask is not None:
        values = mask.data if _same_grid(mask.grid, target) else resample_to_grid(mask, target, order=0)
        mask_data = values > 0.5
        if not mask_data.any():
            raise InputError(f"{mask.name}: the mask has no voxel above 0.5 on the reference's grid")
    rng = data_range(ref.data, mask_data)
    return {
        "psnr_db": psnr(pred_data, ref.data, mask_data),
        "ssim": ssim(pred_data, ref.data, mask_data),
        "nrmse": nrmse(pred_data, ref.data, mask_data),
        "resampled": resampled,
        "n_voxels_in_mask": int(mask_data.sum()) if mask_data is not None else int(ref.data.size),
        "data_range": rng,
    }
