"""Sampling masks: the CMRxRecon rules (2023 lines, 2024 k-t patterns), masks read from files or from the data,
the autocalibration (ACS) region, held-out lines.

Internally a mask is boolean ``(t, kx, ky)``: ``True`` where k-space was measured, the same for every coil. The
k-t patterns sample different points in every frame; their acceleration ``R`` counts, as the challenge's does,
the samples outside the ACS region: ``R`` = points outside it / points sampled outside it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .config import Pattern

DEFAULT_ACS = 24
GOLDEN_ANGLE = 2 * np.pi / (1 + np.sqrt(5))  # radial golden angle: pi / golden ratio, about 111.25 degrees
GAUSSIAN_SIGMA = 0.28  # ktGaussian: standard deviation of the line density, as a share of the ky extent


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


def check_pattern(pattern: Pattern | str, ny: int, accel: int, acs: int) -> None:
    """Refuse a k-t pattern the matrix cannot hold: at least one line per frame must lie outside the ACS, so
    ``ny - acs >= accel``. The CMRxRecon 2023 rule (``uniform``) always fits.

    >>> check_pattern("ktGaussian", 160, 24, 16)
    >>> check_pattern("ktGaussian", 30, 24, 16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    inrsr.errors.InputError: --pattern ktGaussian --accel 24 --acs 16: the 30 phase-encode lines leave 14 outside...
    """
    pattern = Pattern(pattern)
    if accel < 1:
        raise InputError(f"--accel must be >= 1, got {accel}")
    if not 0 <= acs <= ny:
        raise InputError(f"--acs must be between 0 and the {ny} phase-encode lines, got {acs}")
    if pattern is not Pattern.uniform and ny - acs < accel:
        raise InputError(
            f"--pattern {pattern.value} --accel {accel} --acs {acs}: the {ny} phase-encode lines leave {ny - acs} "
            f"outside the ACS, fewer than one line per frame at {accel}x (it needs at least {acs + accel} lines)"
        )


def kt_uniform_lines(ny: int, nt: int, accel: int, acs: int = DEFAULT_ACS) -> np.ndarray:
    """ktUniform, ``(t, ny)`` bool: every ``accel``-th line, from line ``t * step mod accel`` in frame ``t``, plus
    the central ``acs`` lines. ``step = max(1, accel // nt)``: one line from frame to frame (a sheared k-t
    lattice), more when there are fewer frames than offsets, so that the frames spread over all of them.

    >>> kt_uniform_lines(10, 3, 4, 2).astype(int)
    array([[1, 0, 0, 0, 1, 1, 0, 0, 1, 0],
           [0, 1, 0, 0, 1, 1, 0, 0, 0, 1],
           [0, 0, 1, 0, 1, 1, 1, 0, 0, 0]])
    """
    check_pattern(Pattern.kt_uniform, ny, accel, acs)
    shifts = np.arange(nt) * max(1, accel // nt) % accel
    lines = (np.arange(ny)[None, :] - shifts[:, None]) % accel == 0
    start, stop = acs_range(ny, acs)
    lines[:, start:stop] = True
    return lines


def kt_gaussian_lines(
    ny: int, nt: int, accel: int, acs: int = DEFAULT_ACS, rng: np.random.Generator | None = None
) -> np.ndarray:
    """ktGaussian, ``(t, ny)`` bool: the central ``acs`` lines, plus in each frame lines drawn at random (without
    repeats) with a Gaussian density over ky (standard deviation ``GAUSSIAN_SIGMA`` of the ky extent). The
    ``(ny - acs) * nt / accel`` lines outside the ACS are shared between the frames as evenly as counts allow.

    >>> lines = kt_gaussian_lines(100, 4, 8, 10, np.random.default_rng(0))
    >>> bool(lines[:, 45:55].all()), lines.sum(axis=1).tolist()
    (True, [21, 21, 22, 21])
    """
    check_pattern(Pattern.kt_gaussian, ny, accel, acs)
    rng = rng if rng is not None else np.random.default_rng()
    start, stop = acs_range(ny, acs)
    candidates = np.setdiff1d(np.arange(ny), np.arange(start, stop))
    density = np.exp(-0.5 * ((candidates - ny // 2) / (GAUSSIAN_SIGMA * ny)) ** 2)
    density /= density.sum()
    lines = np.zeros((nt, ny), dtype=bool)
    lines[:, start:stop] = True
    for t, n in enumerate(_share(len(candidates) * nt / accel, nt)):
        lines[t, rng.choice(candidates, size=n, replace=False, p=density)] = True
    return lines


def kt_radial_mask(nx: int, ny: int, nt: int, accel: int, acs: int = DEFAULT_ACS, golden: bool = True) -> np.ndarray:
    """ktRadial, ``(t, kx, ky)`` bool: spokes through the centre of k-space (each a diameter of the ellipse
    inscribed in the ``kx x ky`` grid, rasterised), equally spaced in angle within a frame and rotated from frame
    to frame by the golden angle (``golden``) or by ``pi / (spokes x frames)``, plus a fully sampled central
    ``acs x acs`` square. The number of spokes is the one whose acceleration outside the square (corners
    included) is closest to ``accel``; frames share them as evenly as counts allow.

    >>> m = kt_radial_mask(64, 48, 6, 8, 12)
    >>> bool(m[:, 26:38, 18:30].all()), round(nominal_accel(m) / 8, 1), bool((m[0] != m[1]).any())
    (True, 1.0, True)
    """
    check_pattern(Pattern.kt_radial, ny, accel, acs)
    if acs > nx:
        raise InputError(f"--acs {acs}: the ACS square of --pattern ktRadial needs {acs} readout points, not {nx}")
    (x0, x1), (y0, y1) = acs_range(nx, acs), acs_range(ny, acs)
    outside = np.ones((nx, ny), dtype=bool)
    outside[x0:x1, y0:y1] = False

    def build(total: int) -> np.ndarray:
        mask = np.zeros((nt, nx, ny), dtype=bool)
        for t, n in enumerate(_share(total, nt)):
            offset = t * GOLDEN_ANGLE if golden else t * np.pi / (n * nt)
            mask[t] = _spokes(nx, ny, offset + np.arange(n) * np.pi / n)
        mask[:, x0:x1, y0:y1] = True
        return mask

    def accel_of(mask: np.ndarray) -> float:
        return nt * outside.sum() / max(int(mask[:, outside].sum()), 1)

    lo, hi = nt, nt  # fewest spokes (one per frame) .. enough spokes to reach accel
    while accel_of(build(hi)) > accel and hi < nt * 4 * max(nx, ny):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accel_of(build(mid)) > accel else (lo, mid)
    best = min({lo, hi}, key=lambda total: abs(accel_of(build(total)) - accel))
    return build(best)


def _spokes(nx: int, ny: int, angles: np.ndarray) -> np.ndarray:
    """``(kx, ky)`` bool: rasterised diameters at ``angles`` (radians) of the ellipse inscribed in the grid,
    through its centre ``(nx // 2, ny // 2)``, angles measured on the grid normalised to a square."""
    s = np.linspace(-0.5, 0.5, 4 * max(nx, ny) + 1)
    kx = np.rint(nx // 2 + s[None, :] * nx * np.cos(angles)[:, None]).astype(int).clip(0, nx - 1)
    ky = np.rint(ny // 2 + s[None, :] * ny * np.sin(angles)[:, None]).astype(int).clip(0, ny - 1)
    out = np.zeros((nx, ny), dtype=bool)
    out[kx.ravel(), ky.ravel()] = True
    return out


def _share(total: float, n: int) -> list[int]:
    """``round(total)`` split into ``n`` counts that differ by at most one, spread evenly.

    >>> _share(10, 4)
    [2, 3, 3, 2]
    """
    edges = np.rint(np.linspace(0, round(total), n + 1)).astype(int)
    return np.diff(edges).tolist()


def pattern_mask(
    pattern: Pattern | str, nx: int, ny: int, nt: int, accel: int, acs: int = DEFAULT_ACS, seed: int = 0
) -> np.ndarray:
    """The ``(t, kx, ky)`` mask of ``pattern`` at ``accel`` with ``acs`` ACS lines (``seed``: ktGaussian's draw).

    >>> [round(nominal_accel(pattern_mask(p, 48, 100, 12, 8, 16)), 1) for p in ("ktUniform", "ktGaussian")]
    [7.9, 8.0]
    """
    pattern = Pattern(pattern)
    if pattern is Pattern.uniform:
        return lines_to_mask(challenge_lines(ny, accel, acs), nx, nt)
    if pattern is Pattern.kt_uniform:
        return lines_to_mask(kt_uniform_lines(ny, nt, accel, acs), nx, nt)
    if pattern is Pattern.kt_gaussian:
        return lines_to_mask(kt_gaussian_lines(ny, nt, accel, acs, np.random.default_rng(seed)), nx, nt)
    return kt_radial_mask(nx, ny, nt, accel, acs)


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
    if mask.shape[:2] == (nx, ny) and mask.shape[2] != nt:
        raise InputError(f"mask {name}: {mask.shape[2]} frames, but the k-space has {nt}")
    if mask.shape != (nx, ny, nt):
        raise InputError(f"mask {name}: shape {mask.shape} does not match the k-space (kx, ky, t) = {(nx, ny, nt)}")
    return np.ascontiguousarray(mask.transpose(2, 0, 1))


def sampled_lines(mask: np.ndarray) -> np.ndarray:
    """``(t, ky)``: lines with any sampled point."""
    return mask.any(axis=1)


def effective_accel(mask: np.ndarray) -> float:
    """Points in the grid over points sampled."""
    return float(mask.size / max(int(mask.sum()), 1))


def changes_per_frame(mask: np.ndarray) -> bool:
    """Whether the frames that have samples sample different points (k-t sampling); frames without any are ignored.

    >>> m = np.zeros((3, 2, 4), bool); m[:, :, 0] = True; m[1] = False
    >>> changes_per_frame(m)
    False
    >>> m[2, :, 1] = True
    >>> changes_per_frame(m)
    True
    """
    sampled = mask[mask.reshape(mask.shape[0], -1).any(axis=1)]
    return bool(len(sampled) and (sampled != sampled[:1]).any())


def detect_acs(mask: np.ndarray) -> tuple[int, int]:
    """The ky lines of the autocalibration region, ``[start, stop)``: the contiguous run of central ky lines
    fully sampled in every frame that has samples, or, when there are no such lines (radial masks), the ky
    extent of the fully sampled central square (:func:`acs_block`)."""
    return acs_block(mask)[1]


def acs_block(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """The autocalibration region as ``((kx0, kx1), (ky0, ky1))``, half-open: central ky lines sampled along
    all of kx in every frame that has samples (Cartesian masks: ``kx`` is then the whole readout), else the
    largest central square (``acs_range`` on both axes) sampled in those frames. Empty frames are ignored.

    >>> m = np.zeros((2, 8, 6), bool)
    >>> m[:, :, 2:4] = True
    >>> acs_block(m)
    ((0, 8), (2, 4))
    >>> r = np.zeros((2, 8, 6), bool)
    >>> r[:, 3:6, 2:5] = True  # a 3 x 3 square about the centre (4, 3)
    >>> acs_block(r)
    ((3, 6), (2, 5))
    """
    nt, nx, ny = mask.shape
    frames = mask.any(axis=(1, 2))
    every = mask[frames].all(axis=0) if frames.any() else np.zeros((nx, ny), dtype=bool)  # (kx, ky)
    full = every.all(axis=0)  # (ky,)
    c = ny // 2
    if full[c]:
        start, stop = c, c + 1
        while start > 0 and full[start - 1]:
            start -= 1
        while stop < ny and full[stop]:
            stop += 1
        return (0, nx), (start, stop)
    size = 0
    while size < min(nx, ny):
        (x0, x1), (y0, y1) = acs_range(nx, size + 1), acs_range(ny, size + 1)
        if not every[x0:x1, y0:y1].all():
            break
        size += 1
    return acs_range(nx, size), acs_range(ny, size)


def nominal_accel(mask: np.ndarray) -> float | None:
    """The nominal acceleration, from the mask itself: the step of a regular line pattern (``every R-th line``),
    else the acceleration outside the autocalibration region (points there over points sampled there, over all
    frames: the ``R`` of the k-t patterns)."""
    step = regular_step(mask)
    if step is not None:
        return float(step)
    (x0, x1), (y0, y1) = acs_block(mask)
    outside = np.ones(mask.shape[1:], dtype=bool)
    outside[x0:x1, y0:y1] = False
    n = int(mask[:, outside].sum())
    if n == 0:
        return None
    return float(mask.shape[0] * outside.sum() / n)


def regular_step(mask: np.ndarray) -> int | None:
    """The step of a regular line pattern outside the ACS (``every R-th line``, the same in every frame), or None
    if not regular."""
    start, stop = detect_acs(mask)
    lines = sampled_lines(mask)
    if not np.all(lines == lines[:1]) or not np.array_equal(mask.all(axis=1), lines):  # not whole, equal lines
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
