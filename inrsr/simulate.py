"""Low-resolution stacks from a high-resolution volume, with the same PSF model as the reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import geometry
from .errors import InputError
from .forward.slice_psf import StackOperator, psf_sigmas_mm
from .geometry import rotation_matrix
from .volume import Volume

AXES = {"x": 0, "y": 1, "z": 2, "i": 0, "j": 1, "k": 2, "0": 0, "1": 1, "2": 2}


def parse_axis(axis: str | int) -> int:
    """``x|y|z`` (or ``i|j|k``, ``0|1|2``): a voxel axis of the high-res volume."""
    key = str(axis).strip().lower()
    if key not in AXES:
        raise InputError(f"axis {axis!r}: expected x, y or z")
    return AXES[key]


def stack_geometry(
    hr: Volume,
    axis: int,
    spacing_mm: float,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    inplane_mm: float | None = None,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of a stack covering ``hr``'s field of view, slices ``spacing_mm`` apart along ``axis``.

    In-plane the stack keeps ``hr``'s voxel size unless ``inplane_mm`` is given. The stack is centred on
    ``hr``'s field of view and then rotated about that centre by ``rotation_deg`` (world x, y, z).
    """
    extent = np.asarray(hr.shape) * hr.spacing
    spacing = hr.spacing.copy() if inplane_mm is None else np.full(3, float(inplane_mm))
    spacing[axis] = spacing_mm
    shape = tuple(int(n) for n in np.maximum(np.ceil(extent / spacing - 1e-6), 1))
    direction = geometry.direction_cosines(hr.affine)
    centre_world = geometry.apply_affine(hr.affine, (np.asarray(hr.shape) - 1) / 2)
    linear = rotation_matrix(rotation_deg) @ direction * spacing
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre_world - linear @ ((np.asarray(shape) - 1) / 2)
    return shape, affine  # type: ignore[return-value]


def simulate_stack(
    hr: Volume,
    axis: int | str,
    thickness_mm: float,
    spacing_mm: float | None = None,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    noise: float = 0.0,
    seed: int = 0,
    inplane_mm: float | None = None,
) -> Volume:
    """A low-res stack of ``hr`` through the Gaussian slice PSF (FWHM ``thickness_mm`` through-plane).

    ``noise`` is the standard deviation of Rician noise relative to ``hr``'s 99.9th percentile intensity.
    ``inplane_mm`` sets the in-plane voxel size (default: ``hr``'s), e.g. to simulate from a finer object.
    The result records its slice thickness in ``meta["thickness_mm"]``.
    """
    axis = parse_axis(axis)
    if thickness_mm <= 0:
        raise InputError(f"thickness {thickness_mm}: must be positive mm")
    spacing_mm = float(thickness_mm if spacing_mm is None else spacing_mm)
    if spacing_mm <= 0:
        raise InputError(f"spacing {spacing_mm}: must be positive mm")
    if noise < 0:
        raise InputError(f"noise {noise}: must be >= 0")
    shape, affine = stack_geometry(hr, axis, spacing_mm, rotation_deg, inplane_mm)
    op = StackOperator(shape, affine, psf_sigmas_mm(affine, axis, thickness_mm), hr.grid)
    with torch.no_grad():
        data = op(torch.from_numpy(hr.data)).numpy()
    if noise > 0:
        rng = np.random.default_rng(seed)
        sigma = noise * float(np.percentile(hr.data, 99.9))
        real = data + rng.normal(0.0, sigma, data.shape)
        imag = rng.normal(0.0, sigma, data.shape)
        data = np.sqrt(real**2 + imag**2)
    return Volume(
        data=data.astype(np.float32),
        affine=affine,
        name=f"{hr.name} simulated",
        meta={"thickness_mm": float(thickness_mm), "slice_axis": axis},
    )
