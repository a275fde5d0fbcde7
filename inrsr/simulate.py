"""Low-resolution stacks from a high-resolution volume, with the same PSF model as the reconstruction.

Optionally with head motion and signal dropout. Convention: the head moved by a rigid ``H`` (world -> world,
about the high-res volume's centre); the scanner keeps the stack's header affine ``A``, so voxel ``ijk`` sees the
object at ``M @ A @ ijk`` with ``M = inv(H)``. ``M`` (per slice, ``M_k``) is what a reconstruction must recover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def interleaved_order(n_slices: int) -> list[int]:
    """Slice indices in acquisition (time) order for an interleaved acquisition: even slices, then odd ones.

    >>> interleaved_order(7)
    [0, 2, 4, 6, 1, 3, 5]
    """
    return list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))


def slice_motion_walk(n_slices: int, sd_deg: float, sd_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Per-slice rigid parameters ``(n_slices, 6)`` (degrees, mm), indexed by slice: a random walk in
    :func:`interleaved_order` whose steps add ``N(0, sd_deg)`` to each angle and ``N(0, sd_mm)`` to each
    translation, with its mean over the slices subtracted."""
    order = interleaved_order(n_slices)
    steps = rng.normal(0.0, 1.0, (n_slices, 6)) * np.array([sd_deg] * 3 + [sd_mm] * 3)
    in_time = np.cumsum(steps, axis=0)
    walk = np.empty_like(in_time)
    walk[order] = in_time
    return walk - walk.mean(axis=0)


def dropout_map(shape: Sequence[int], rng: np.random.Generator, edge_vox: float = 4.0) -> np.ndarray:
    """A 2D intensity map for signal dropout in one slice: 1 on part of the slice, falling smoothly (over about
    ``edge_vox`` voxels) to a random factor in [0, 0.3] over a random half-plane covering 30-70% of the slice."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    theta = rng.uniform(0.0, 2 * np.pi)
    proj = grid @ np.array([np.cos(theta), np.sin(theta)])
    fraction = rng.uniform(0.3, 0.7)
    threshold = float(np.quantile(proj, 1.0 - fraction))
    factor = rng.uniform(0.0, 0.3)
    t = np.clip((proj - threshold) / edge_vox + 0.5, 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)  # smoothstep
    return 1.0 - (1.0 - factor) * ramp


@dataclass(frozen=True)
class SimulatedMotion:
    """Simulated motion and corruption: ``stack_params`` (6), head pose about ``centre_mm``; ``slice_params``
    ``(n, 6)`` per slice (``H_k = rigid_matrix(walk_k) @ H_stack``, as parameters); corrupted slice indices."""

    stack_params: np.ndarray
    slice_params: np.ndarray
    centre_mm: np.ndarray
    corrupted: tuple[int, ...]

    def slice_to_object(self) -> list[np.ndarray]:
        """Per slice ``M_k = inv(H_k)``: header world -> object world."""
        return [np.linalg.inv(geometry.rigid_matrix(p, self.centre_mm)) for p in self.slice_params]

    def to_dict(self) -> dict:
        """The ``SimulatedMotion`` entry of a stack's JSON sidecar (plain lists)."""
        return {
            "stack_params": [float(v) for v in self.stack_params],
            "slice_params": [[float(v) for v in p] for p in self.slice_params],
            "centre_mm": [float(v) for v in self.centre_mm],
            "slice_to_object": [m.tolist() for m in self.slice_to_object()],
            "corrupted_slices": [int(k) for k in self.corrupted],
        }


def _check_motion(
    motion_stack: Sequence[float] | None, motion_slices: Sequence[float] | None, corrupt: int, n_slices: int
) -> None:
    if motion_stack is not None:
        values = np.asarray(motion_stack, dtype=np.float64)
        if values.shape != (6,) or not np.all(np.isfinite(values)):
            raise InputError(f"motion-stack {list(motion_stack)}: expected six finite numbers rx,ry,rz,tx,ty,tz")
    if motion_slices is not None:
        sds = np.asarray(motion_slices, dtype=np.float64)
        if sds.shape != (2,) or not np.all(np.isfinite(sds)) or np.any(sds < 0):
            raise InputError(f"motion-slices {list(motion_slices)}: expected two standard deviations >= 0 (deg, mm)")
    if int(corrupt) != corrupt or corrupt < 0:
        raise InputError(f"corrupt {corrupt}: expected a number of slices >= 0")
    if corrupt > n_slices:
        raise InputError(f"corrupt {corrupt}: the stack has only {n_slices} slices")


def _shift(axis: int, k: int) -> np.ndarray:
    shift = np.eye(4)
    shift[axis, 3] = k
    return shift


def _simulate_slices(
    hr: Volume, shape: tuple[int, int, int], affine: np.ndarray, axis: int, thickness_mm: float, motion: SimulatedMotion
) -> np.ndarray:
    """Each slice through its own single-slice operator with affine ``M_k @ A @ shift(k)``."""
    data = np.zeros(shape, dtype=np.float32)
    one = list(shape)
    one[axis] = 1
    for k, m in enumerate(motion.slice_to_object()):
        a_k = m @ affine @ _shift(axis, k)
        op = StackOperator(one, a_k, psf_sigmas_mm(a_k, axis, thickness_mm), hr.grid)
        with torch.no_grad():
            out = op(torch.from_numpy(hr.data)).numpy()
        np.moveaxis(data, axis, 0)[k] = np.moveaxis(out, axis, 0)[0]
    return data


def simulate_stack(
    hr: Volume,
    axis: int | str,
    thickness_mm: float,
    spacing_mm: float | None = None,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    noise: float = 0.0,
    seed: int = 0,
    inplane_mm: float | None = None,
    *,
    motion_stack: Sequence[float] | None = None,
    motion_slices: Sequence[float] | None = None,
    corrupt: int = 0,
) -> Volume:
    """A low-res stack of ``hr`` through the Gaussian slice PSF (FWHM ``thickness_mm`` through-plane).

    ``noise`` is the standard deviation of Rician noise relative to ``hr``'s 99.9th percentile intensity.
    ``inplane_mm`` sets the in-plane voxel size (default: ``hr``'s), e.g. to simulate from a finer object.

    Motion (see the module docstring): ``motion_stack`` ``(rx, ry, rz, tx, ty, tz)`` (degrees, mm, about
    ``hr``'s centre) moves the head for the whole stack; ``motion_slices`` ``(sd_deg, sd_mm)`` adds a zero-mean
    random walk per slice in interleaved order (:func:`slice_motion_walk`); ``corrupt`` slices get signal dropout
    (:func:`dropout_map`) before the noise. ``seed`` drives the noise, the walk and the corruption. The header
    affine is the unmoved one.

    The result records its slice thickness in ``meta["thickness_mm"]``, its slice axis in ``meta["slice_axis"]``
    and, with motion or corruption, a :class:`SimulatedMotion` in ``meta["motion"]``. :func:`stack_sidecar` turns
    that into the stack's JSON sidecar.
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
    n_slices = shape[axis]
    _check_motion(motion_stack, motion_slices, corrupt, n_slices)
    meta: dict = {"thickness_mm": float(thickness_mm), "slice_axis": axis}
    moved = motion_stack is not None or motion_slices is not None or corrupt > 0
    if not moved:
        op = StackOperator(shape, affine, psf_sigmas_mm(affine, axis, thickness_mm), hr.grid)
        with torch.no_grad():
            data = op(torch.from_numpy(hr.data)).numpy()
    else:
        centre = geometry.apply_affine(hr.affine, (np.asarray(hr.shape) - 1) / 2)
        stack_params = np.zeros(6) if motion_stack is None else np.asarray(motion_stack, dtype=np.float64)
        h_stack = geometry.rigid_matrix(stack_params, centre)
        if motion_slices is None:
            slice_params = np.tile(stack_params, (n_slices, 1))
        else:
            walk = slice_motion_walk(n_slices, *map(float, motion_slices), np.random.default_rng([seed, 1]))
            slice_params = np.array(
                [geometry.rigid_params(geometry.rigid_matrix(w, centre) @ h_stack, centre) for w in walk]
            )
        corrupted: tuple[int, ...] = ()
        if corrupt > 0:
            crng = np.random.default_rng([seed, 2])
            corrupted = tuple(sorted(int(k) for k in crng.choice(n_slices, int(corrupt), replace=False)))
        motion = SimulatedMotion(stack_params, slice_params, centre, corrupted)
        meta["motion"] = motion
        if motion_slices is None:
            m = np.linalg.inv(h_stack)
            op = StackOperator(shape, m @ affine, psf_sigmas_mm(affine, axis, thickness_mm), hr.grid)
            with torch.no_grad():
                data = op(torch.from_numpy(hr.data)).numpy()
        else:
            data = _simulate_slices(hr, shape, affine, axis, thickness_mm, motion)
        inplane = [n for a, n in enumerate(shape) if a != axis]
        for k in corrupted:
            np.moveaxis(data, axis, 0)[k] *= dropout_map(inplane, crng).astype(data.dtype)
    if noise > 0:
        rng = np.random.default_rng(seed)
        sigma = noise * float(np.percentile(hr.data, 99.9))
        real = data + rng.normal(0.0, sigma, data.shape)
        imag = rng.normal(0.0, sigma, data.shape)
        data = np.sqrt(real**2 + imag**2)
    return Volume(data=data.astype(np.float32), affine=affine, name=f"{hr.name} simulated", meta=meta)


def stack_sidecar(stack: Volume) -> dict:
    """The JSON sidecar of a simulated stack (BIDS keys where BIDS has them).

    ``SliceThickness`` and ``SpacingBetweenSlices`` (mm), ``SliceAxis`` (the voxel axis), ``AcquisitionOrder``
    (slice indices in time order, interleaved) and, with motion or corruption, ``SimulatedMotion``
    (:meth:`SimulatedMotion.to_dict`).
    """
    axis = int(stack.meta.get("slice_axis", stack.slice_axis))
    thickness = float(stack.meta.get("thickness_mm", stack.spacing[axis]))
    sidecar: dict = {
        "SliceThickness": thickness,
        "SpacingBetweenSlices": round(float(stack.spacing[axis]), 9),
        "SliceAxis": axis,
        "AcquisitionOrder": interleaved_order(stack.shape[axis]),
    }
    if isinstance(stack.meta.get("motion"), SimulatedMotion):
        sidecar["SimulatedMotion"] = stack.meta["motion"].to_dict()
    return sidecar
