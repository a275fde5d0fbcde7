"""Cartesian sampling masks: the CMRxRecon rule, masks read from files or from the data, ACS, held-out lines.

Internally a mask is boolean ``(t, kx, ky)``: ``True`` where k-space was measured, the same for every coil.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DEFAULT_ACS = 24


def acs_range(ny: int, acs: int) -> tuple[int, int]:
    """The central ``acs`` ky lines as ``[start, stop)``; the centre line ``ny // 2`` is ky = 0 (centred
    FFT)."""
    acs = max(0, min(int(acs), ny))
    start = ny // 2 - acs // 2
    return start, start + acs


def challenge_lines(ny: int, accel: int, acs: int = DEFAULT_ACS) -> np.ndarray:
    """CMRxRecon 2023 rule, ``(ny,)`` bool: the central ``acs`` lines plus every ``accel``-th line from the
    first."""
    if accel < 1:
        raise InputError(f"--accel must be >= 1, got {accel}")
    if acs < 0 or acs > ny:
        raise InputError(f"--acs must be between 0 and the {ny} phase-encode lines, got {acs}")
    lines = np.zeros(ny, dtype=bool)
    lines[::accel] = True
    start, stop = acs_range(ny, acs)
    lines[start:stop] = True
    return lines


def lines_to_mask(lines: np.ndarray, nx: int, nt: int) -> np.ndarray:
    """``(ny,)`` or ``(t, ny)`` line pattern -> ``(t, kx, ky)`` mask."""
    lines = np.asarray(lines, dtype=bool)
    if lines.ndim == 1:
        lines = np.broadcast_to(lines, (nt, lines.shape[0]))
    return np.ascontiguousarray(np.broadcast_to(lines[:, None, :], (nt, nx, lines.shape[1])))


def mask_from_data(kspace: np.ndarray) -> np.ndarray:
    """The sampled positions of undersampled k-space ``(t, coils, kx, ky)`` (zeros mark unsampled points).

    When the non-zero points form ky lines (Cartesian data; a sampled line is non-zero along most of kx) whole
    lines are taken, so isolated zeros inside a measured line stay measured; otherwise (k-t radial or random
    masks) the non-zero points themselves.
    """
    points = np.any(kspace != 0, axis=1)  # (t, kx, ky)
    lines = points.any(axis=1)  # (t, ky)
    if not lines.any():
        raise InputError("the k-space is all zeros")
    fill = points.sum(axis=1)[lines] / points.shape[1]
    if np.median(fill) >= 0.5:
        return lines_to_mask(lines, points.shape[1], points.shape[0])
    return points


def mask_from_file(mask: np.ndarray, nx: int, ny: int, nt: int, name: str) -> np.ndarray:
    """A mask read in MATLAB order, ``(kx, ky)`` or ``(kx, ky, t)``, as ``(t, kx, ky)``; shapes must match."""
    if mask.ndim == 2:
        if mask.shape != (nx, ny):
            raise InputError(f"mask {name}: shape {mask.shape} does not match the k-space (kx, ky) = {(nx, ny)}")
        return np.ascontiguousarray(np.broadcast_to(mask[None], (nt, nx, ny)))
    if mask.shape != (nx, ny, nt):
        raise InputError(f"mask {name}: shape {mask.shape} does not match the k-space (kx, ky, t) = {(nx, ny, nt)}")
    return np.ascontiguousarray(mask.transpose(2, 0, 1))


def sampled_lines(mask: np.ndarray) -> np.ndarray:
    """``(t, ky)``: lines with any sampled point."""
    return mask.any(axis=1)


def effective_accel(mask: np.ndarray) -> float:
    """Points in the grid over points sampled."""
    return float(mask.size / max(int(mask.sum()), 1))


def detect_acs(mask: np.ndarray) -> tuple[int, int]:
    """The contiguous run of ky lines around the centre that is fully sampled in every frame, ``[start,
    stop)``."""
    full = mask.all(axis=(0, 1))  # (ky,)
    ny = full.shape[0]
    c = ny // 2
    if not full[c]:
        return c, c
    start, stop = c, c + 1
    while start > 0 and full[start - 1]:
        start -= 1
    while stop < ny and full[stop]:
        stop += 1
    return start, stop


def nominal_accel(mask: np.ndarray) -> float | None:
    """The nominal acceleration, from the mask itself: the step of a regular line pattern (``every R-th
    line``),
    else the acceleration outside the ACS region."""
    step = regular_step(mask)
    if step is not None:
        return float(step)
    start, stop = detect_acs(mask)
    lines = sampled_lines(mask)
    outside = np.ones(lines.shape[1], dtype=bool)
    outside[start:stop] = False
    n = int(lines[:, outside].sum())
    if n == 0 or not outside.any():
        return None
    return float(lines.shape[0] * outside.sum() / n)


def regular_step(mask: np.ndarray) -> int | None:
    """The step of a regular line pattern outside the ACS (``every R-th line``), or None if not regular."""
    start, stop = detect_acs(mask)
    lines = sampled_lines(mask)
    if not np.all(lines == lines[:1]):
        return None
    idx = np.flatnonzero(lines[0])
    idx = idx[(idx < start) | (idx >= stop)]
    if len(idx) < 2:
        return None
    gaps = np.diff(idx)
    gaps = gaps[gaps > 0]
    step = int(np.min(gaps))
    # Gaps across the ACS are multiples of the step; others are equal to it.
    return step if np.all(gaps % step == 0) else None


def holdout_split(
    mask: np.ndarray, acs: tuple[int, int], fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split a mask into (training, held-out): a random ``fraction`` of the sampled ``(t, ky)`` lines
    outside the
    ACS is held out (at least one when ``fraction > 0`` and any exist). Returns two ``(t, kx, ky)`` masks."""
    lines = sampled_lines(mask).copy()
    lines[:, acs[0] : acs[1]] = False
    candidates = np.argwhere(lines)
    hold = np.zeros_like(lines)
    if fraction > 0 and len(candidates):
        n = max(1, int(round(fraction * len(candidates))))
        n = min(n, len(candidates) - 1) if len(candidates) > 1 else 0
        if n:
            pick = candidates[rng.choice(len(candidates), size=n, replace=False)]
            hold[pick[:, 0], pick[:, 1]] = True
    held = mask & hold[:, None, :]
    return mask & ~held, held
