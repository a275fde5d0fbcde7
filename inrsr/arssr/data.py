"""Training data for the encoder-decoder: high-res volumes -> random (low-res patch, query points, targets).

One training example: a high-res crop around a random foreground voxel, randomly flipped and with its axes
permuted, intensity-normalised (:class:`~inrsr.arssr.model.IntensityNorm`, jittered) with a random gamma,
degraded by :func:`~inrsr.arssr.degrade.degrade` at a random scale, and the central ``patch`` ^3 low-res voxels
kept (the crop has a margin so the PSF never reads past the crop). The queries are high-res voxel centres inside
the patch, in the patch's voxel coordinates; the targets are those high-res voxels' values (exact, no
interpolation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import apply_affine
from ..volume import Volume
from .config import IntensityNorm
from .degrade import degrade, lowres_spacing, random_degradation
from .synth import Augmentation, TissueMaps, bias_field, deformed_coordinates, sample, synthesize

MARGIN_LR = 2  # low-res voxels of context cut away on every side after degrading
QUERY_MARGIN = 0.5  # queries stay this many low-res voxels inside the patch's outer voxel centres


def find_volumes(paths: list[str | os.PathLike]) -> list[Path]:
    """NIfTI files named directly or found (not recursively) in folders, sorted; an error if there are none."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.name.endswith((".nii", ".nii.gz")))
            if not found:
                raise InputError(f"{p}: folder holds no .nii or .nii.gz file")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return files


def crop(volume: Volume, start: np.ndarray, size: np.ndarray) -> Volume:
    """The box ``[start, start + size)`` of ``volume`` (zeros outside it) with the matching affine."""
    start = np.asarray(start, dtype=int)
    size = np.asarray(size, dtype=int)
    out = np.zeros(tuple(size), dtype=np.float32)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, volume.shape)
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        out[dst] = volume.data[src]
    affine = volume.affine.copy()
    affine[:3, 3] = apply_affine(volume.affine, start)
    return Volume(data=out, affine=affine, name=volume.name)


def split_volume(volume: Volume, val_fraction: float) -> tuple[Volume, Volume | None]:
    """Training part (first ``1 - val_fraction`` along the third voxel axis) and validation part (the rest)."""
    n = volume.shape[2]
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 1:
        return volume, None
    size = np.array(volume.shape)
    train = crop(volume, np.zeros(3), np.array([size[0], size[1], n - n_val]))
    val = crop(volume, np.array([0, 0, n - n_val]), np.array([size[0], size[1], n_val]))
    return train, val


def foreground_voxels(volume: Volume) -> np.ndarray:
    """Indices ``(M, 3)`` of the voxels above 10% of the maximum, where examples are centred."""
    peak = float(volume.data.max())
    fg = np.argwhere(volume.data > 0.1 * peak) if peak > 0 else np.zeros((0, 3), dtype=int)
    return fg if len(fg) else np.array([np.asarray(volume.shape) // 2])


@dataclass
class Example:
    """One training example: ``lr`` ``(P, P, P)``, ``coords`` ``(N, 3)`` in ``lr``'s voxels, ``target`` ``(N,)``,
    ``scale`` ``(3,)`` per-axis factors; intensities normalised."""

    lr: np.ndarray
    coords: np.ndarray
    target: np.ndarray
    scale: np.ndarray


def make_example(
    hr: Volume | TissueMaps,
    norm: IntensityNorm | None,
    foreground: np.ndarray,
    rng: np.random.Generator,
    patch: int,
    n_queries: int,
    scale: float | None = None,
    axis: int | None = None,
    augment: bool = True,
    noise_max: float = 0.0,
    synth: Augmentation | None = None,
) -> Example:
    """A random example from ``hr`` (see the module docstring) centred on one of ``foreground``'s voxels
    (:func:`foreground_voxels`); ``scale``/``axis`` fixed when given.

    ``hr`` is a high-res volume (normalised by ``norm``) or :class:`~inrsr.arssr.synth.TissueMaps` (a random
    contrast is synthesised, ``norm`` unused). With ``synth`` (and ``augment``), the crop is randomly deformed, a
    bias field applied and the slice thickness drawn below the spacing (:mod:`inrsr.arssr.synth`).
    """
    if scale is None:
        scale, axis = random_degradation(rng)
    spacing = hr.spacing
    factors = lowres_spacing(spacing, scale, axis) / spacing  # per axis: low-res over high-res voxel size
    size = np.ceil((patch + 2 * MARGIN_LR) * factors).astype(int) + 1
    centre = foreground[rng.integers(len(foreground))]
    start = centre - size // 2 + rng.integers(-2, 3, size=3)
    deform = augment and synth is not None
    if deform:
        coords = deformed_coordinates(start, size, spacing, rng, synth)

    def read(a: np.ndarray) -> np.ndarray:
        return sample(a, coords) if deform else crop(Volume(a, hr.affine), start, size).data

    if isinstance(hr, TissueMaps):
        data = synthesize(np.stack([read(p) for p in hr.probs]), rng, spacing, synth or Augmentation())
    elif augment:
        data = _jittered(read(hr.data), norm, rng)
        if deform and synth.bias > 0:
            data = data * bias_field(data.shape, spacing, rng, synth.bias * rng.uniform(0, 1))
    else:
        data = norm.forward(read(hr.data))
    thickness = float(rng.uniform(*synth.thickness_range)) if deform else 1.0
    if augment:
        perm = rng.permutation(3)
        data = np.transpose(data, perm)
        factors, spacing = factors[perm], spacing[perm]
        axis = None if axis is None else int(np.flatnonzero(perm == axis)[0])
        for a in range(3):
            if rng.random() < 0.5:
                data = np.flip(data, a)
    hr_aug = Volume(data=np.ascontiguousarray(data, dtype=np.float32), affine=np.diag([*spacing, 1.0]))
    noise = float(rng.uniform(0, noise_max)) if noise_max > 0 and rng.random() < 0.5 else 0.0
    lr_full = degrade(hr_aug, scale, axis, noise=noise, seed=int(rng.integers(2**31)), thickness_ratio=thickness)
    lr_start = (np.asarray(lr_full.shape) - patch) // 2
    lr = crop(lr_full, lr_start, np.full(3, patch))
    # high-res voxel centres in the patch's voxel coordinates; keep those inside the patch
    to_lr = np.linalg.solve(lr.affine, hr_aug.affine)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in hr_aug.shape], indexing="ij"), -1).reshape(-1, 3)
    coords = apply_affine(to_lr, idx)
    inside = np.all((coords >= QUERY_MARGIN) & (coords <= patch - 1 - QUERY_MARGIN), axis=1)
    candidates = np.flatnonzero(inside)
    pick = rng.choice(candidates, size=n_queries, replace=len(candidates) < n_queries)
    return Example(
        lr=lr.data,
        coords=coords[pick].astype(np.float32),
        target=hr_aug.data.reshape(-1)[pick].astype(np.float32),
        scale=factors.astype(np.float32),
    )


def _jittered(data: np.ndarray, norm: IntensityNorm, rng: np.random.Generator) -> np.ndarray:
    """``norm`` with its range jittered by 5% and a random gamma in [0.7, 1.4]."""
    low, high = norm.low, norm.high
    jitter = (high - low) * rng.uniform(-0.05, 0.05, size=2)
    data = IntensityNorm(low + jitter[0], high + jitter[1]).forward(data)
    return np.clip(data, 0, None) ** rng.uniform(0.7, 1.4)
