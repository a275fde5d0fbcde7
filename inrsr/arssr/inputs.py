"""What ``upsample`` checks before the network loads: the output grid and whether the model can use the input.

No PyTorch here, so that bad input fails at once.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..geometry import Grid, output_grid, parse_spacing
from ..memory import ensure_memory
from ..volume import Volume

#: Negative intensities below this fraction of the robust maximum mean the input is not a magnitude image.
NEGATIVE_TOLERANCE = 0.05


def check_input(volume: Volume, grid: Grid) -> None:
    """Refuse, with one line, inputs the model cannot use: a constant volume, a volume with real negative values
    (the model expects magnitude images), or an output grid that would change nothing."""
    data = volume.data
    if not np.isfinite(data).all():
        raise InputError(f"{volume.name}: holds NaN or infinite values")
    top = float(np.percentile(np.abs(data), 99.5))
    if float(data.max()) == float(data.min()) or top == 0:
        raise InputError(
            f"{volume.name}: all voxels have the same intensity ({float(data.flat[0]):g}); nothing to upsample"
        )
    if float(data.min()) < -NEGATIVE_TOLERANCE * top:
        raise InputError(
            f"{volume.name}: has negative intensities down to {float(data.min()):.4g} (robust maximum {top:.4g}); "
            "the model expects a magnitude image"
        )
    if grid.shape == volume.shape and np.allclose(grid.affine, volume.affine, atol=1e-4):
        raise InputError(f"{volume.name}: the output grid is the input's own (scale 1); nothing would change")
    ensure_memory(grid.n_voxels * 4 * 12 + volume.data.size * 8, f"super-resolving onto a {grid.shape} grid")


def parse_scale(text: str) -> np.ndarray:
    """``"S"`` or ``"Sx,Sy,Sz"``: positive upsampling factors along the input's voxel axes."""
    try:
        return parse_spacing(text)
    except InputError:
        raise InputError(f"scale {text!r}: expected 'S' or 'Sx,Sy,Sz' with positive factors") from None


def target_grid(volume: Volume, scale: str | None = None, spacing: str | None = None, like: Grid | None = None) -> Grid:
    """The output grid for ``volume``: ``like``'s grid, or ``volume``'s field of view (axis-aligned with it, same
    centre) at ``volume.spacing / scale`` or at ``spacing`` mm. Exactly one of the three must be given."""
    if sum(x is not None for x in (scale, spacing, like)) != 1:
        raise InputError("give exactly one of --spacing, --like or --scale")
    if like is not None:
        return like
    step = volume.spacing / parse_scale(scale) if scale is not None else parse_spacing(spacing)
    return output_grid([(volume.shape, volume.affine)], step, "union")
