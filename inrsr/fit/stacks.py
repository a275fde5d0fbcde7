"""The measurements of ``fit``: stacks, their thickness, foreground, intensity calibration and noise level."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .. import geometry
from ..errors import InputError
from ..geometry import Grid
from ..memory import ensure_memory
from ..volume import Volume


def thicknesses(stacks: Sequence[Volume], thickness_mm: Sequence[float] | None) -> list[float]:
    """Slice thickness (mm) per stack: one value for all, one per stack, else the sidecar's or the spacing."""
    if not thickness_mm:
        return [float(s.meta.get("thickness_mm", s.spacing[s.slice_axis])) for s in stacks]
    values = [float(t) for t in thickness_mm]
    if len(values) == 1:
        values = values * len(stacks)
    if len(values) != len(stacks):
        raise InputError(
            f"--thickness has {len(values)} values but there are {len(stacks)} stacks "
            "(give one value, or one per stack)"
        )
    if any(not math.isfinite(t) or t <= 0 for t in values):
        raise InputError(f"--thickness values must be positive mm, got {values}")
    return values


def foreground(stack: Volume) -> np.ndarray:
    """Automatic foreground of a stack: above 10% of its 99th percentile, closed, holes filled, dilated."""
    data = stack.data
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    mask = data > 0.1 * float(np.percentile(positive, 99))
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    return ndimage.binary_dilation(mask, iterations=2)


def relative_intensity(reference: Volume, ref_mask: np.ndarray, stack: Volume, mask: np.ndarray) -> float:
    """Factor bringing ``stack``'s intensities to ``reference``'s: the ratio of their foreground means (robust to
    different fields of view and slice blurs, and to misregistration, since no voxel correspondence is used)."""
    if stack is reference:
        return 1.0
    own = float(np.mean(stack.data[mask])) if mask.any() else 0.0
    ref = float(np.mean(reference.data[ref_mask])) if ref_mask.any() else 0.0
    return ref / own if own > 0 and ref > 0 else 1.0


def check_overlap(stacks: Sequence[Volume]) -> None:
    """Every stack must overlap the first one in world space."""
    first = (stacks[0].shape, stacks[0].affine)
    for s in stacks[1:]:
        if not geometry.boxes_overlap(first, (s.shape, s.affine)):
            raise InputError(f"{s.name}: does not overlap {stacks[0].name} in world space (check the affines)")


def check_memory(stacks: Sequence[Volume], output: Grid) -> None:
    """Refuse, with one line, a fit whose arrays would not fit in the memory available: about 30 float32 arrays
    of the output grid and 16 per PSF sample of the stacks (9 samples per voxel)."""
    n_samples = sum(s.data.size * 9 for s in stacks)
    ensure_memory(output.n_voxels * 4 * 30 + n_samples * 4 * 16, f"fitting on a {output.shape} output grid")


def noise_sigma(stack: Volume, mask: np.ndarray) -> float:
    """Noise standard deviation of a stack, from its slices: the median absolute response of Immerkaer's
    Laplacian-difference kernel inside the foreground (robust to edges; ``0`` for a constant image).

    >>> rng = np.random.default_rng(0)
    >>> v = Volume(rng.normal(10, 0.5, (64, 64, 8)).astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    >>> round(noise_sigma(v, np.ones(v.shape, bool)), 1)
    0.5
    """
    axis = stack.slice_axis
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    k3 = np.expand_dims(kernel, axis)
    response = ndimage.convolve(stack.data.astype(np.float64), k3, mode="nearest")
    inner = ndimage.binary_erosion(mask, structure=np.expand_dims(np.ones((3, 3), bool), axis))
    values = np.abs(response[inner])
    if values.size == 0:
        return 0.0
    # |N(0, 36 s^2)| has median 0.6745 * 6 s
    return float(np.median(values) / (0.6745 * 6.0))


def coarser_stack(stack: Volume, mask: np.ndarray, factor: int) -> tuple[Volume, np.ndarray]:
    """The stack with ``factor`` x ``factor`` in-plane blocks averaged (slices kept), and its mask (any voxel of
    a block); the affine follows so that each new voxel sits at its block's centre."""
    if factor <= 1:
        return stack, mask
    axis = stack.slice_axis
    data, m = stack.data, mask
    pads = [(0, 0) if a == axis else (0, (-n) % factor) for a, n in enumerate(data.shape)]
    data = np.pad(data, pads, mode="edge")
    m = np.pad(m, pads)
    blocks: list[int] = []
    within: list[int] = []
    for a, n in enumerate(data.shape):
        if a == axis:
            blocks.append(n)
        else:
            blocks += [n // factor, factor]
            within.append(len(blocks) - 1)
    coarse = data.reshape(blocks).mean(axis=tuple(within)).astype(np.float32)
    coarse_mask = m.reshape(blocks).any(axis=tuple(within))
    scale = np.eye(4)
    for a in range(3):
        if a != axis:
            scale[a, a] = factor
            scale[a, 3] = (factor - 1) / 2
    return Volume(coarse, stack.affine @ scale, stack.name, dict(stack.meta)), coarse_mask


def support_on_lattice(lattice: Grid, stacks: Sequence[Volume], masks: Sequence[np.ndarray]) -> np.ndarray:
    """Lattice voxels whose centre falls in at least one stack's foreground (nearest stack voxel)."""
    support = np.zeros(lattice.shape, dtype=bool)
    for stack, mask in zip(stacks, masks, strict=True):
        to_stack = np.linalg.solve(stack.affine, lattice.affine)  # lattice voxel -> stack voxel
        support |= (
            ndimage.affine_transform(
                mask.astype(np.uint8), to_stack, output_shape=lattice.shape, order=0, mode="constant", cval=0
            )
            > 0
        )
    return support


def acquisition_order(stack: Volume) -> list[int]:
    """The order in which a stack's slices were acquired: the sidecar's ``AcquisitionOrder``, else the order of
    its BIDS ``SliceTiming``, else interleaved (even slices, then odd), the common default of 2D multi-slice.

    >>> acquisition_order(Volume(np.zeros((4, 4, 5), np.float32), np.diag([1.0, 1.0, 4.0, 1.0])))
    [0, 2, 4, 1, 3]
    """
    n = stack.shape[stack.slice_axis]
    sidecar = stack.meta.get("sidecar", {})
    order = sidecar.get("AcquisitionOrder")
    if order is None and isinstance(sidecar.get("SliceTiming"), list) and len(sidecar["SliceTiming"]) == n:
        order = [int(k) for k in np.argsort(sidecar["SliceTiming"], kind="stable")]
    if order is None or sorted(int(k) for k in order) != list(range(n)):
        order = list(range(0, n, 2)) + list(range(1, n, 2))
    return [int(k) for k in order]
