"""CMRxRecon 2023 scoring: per-image max normalisation, skimage PSNR / SSIM, NMSE, and the ranking crop.

Every 2D image (one slice, one frame) is scored on its own: the reference and the prediction are each
divided by their own maximum, PSNR uses ``data_range = gt.max()`` (skimage), SSIM skimage's default 7 x 7
window, and ``NMSE = ||gt - pred||^2 / ||gt||^2``; figures are averaged over images. The challenge crop is
the central ``round(nx / 3) x round(ny / 2)`` region (nx = readout, ny = phase-encode size) of the first 3
frames of the 2 central slices; ``img4ranking`` is that region, as the challenge's ``run4Ranking`` writes it.
Numbers are not comparable with the 2024/2025 editions (other normalisations).
"""

from __future__ import annotations

import numpy as np


def crop_box(nx: int, ny: int) -> tuple[slice, slice]:
    """The central ``round(nx / 3) x round(ny / 2)`` region of an ``(nx, ny)`` image."""
    cx, cy = int(round(nx / 3)), int(round(ny / 2))
    x0, y0 = nx // 2 - cx // 2, ny // 2 - cy // 2
    return slice(x0, x0 + cx), slice(y0, y0 + cy)


def ranking_slices(n_slices: int) -> list[int]:
    """The 2 slices the challenge scores (0-based): MATLAB's ``round(sz/2)-1 : round(sz/2)``, all when fewer
    than 3 (for an even count the lower of the two central pairs, as the challenge's ``run4Ranking``)."""
    if n_slices < 3:
        return list(range(n_slices))
    r = (n_slices + 1) // 2  # MATLAB round(n / 2), halves away from zero
    return [r - 2, r - 1]


def ranking_array(magnitude: np.ndarray, slices: list[int], n_slices: int) -> np.ndarray | None:
    """The challenge's ``img4ranking`` from a reconstruction ``(x, y, slice, t)`` of the file's ``slices``:
    its ranking slices, first 3 frames, central ``round(nx / 3) x round(ny / 2)`` region, float32; None when
    a ranking slice was not reconstructed."""
    position = {s: i for i, s in enumerate(slices)}
    wanted = ranking_slices(n_slices)
    if any(s not in position for s in wanted):
        return None
    sx, sy = crop_box(magnitude.shape[0], magnitude.shape[1])
    picked = magnitude[sx, sy][:, :, [position[s] for s in wanted], :3]
    return np.ascontiguousarray(picked, dtype=np.float32)


def score_image(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and NMSE of one 2D magnitude image after per-image max normalisation."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = np.abs(np.asarray(gt, dtype=np.float64))
    pred = np.abs(np.asarray(pred, dtype=np.float64))
    gt = gt / max(gt.max(), 1e-30)
    pred = pred / max(pred.max(), 1e-30)
    data_range = float(gt.max())
    psnr = float(peak_signal_noise_ratio(gt, pred, data_range=data_range))
    ssim = float(structural_similarity(gt, pred, data_range=data_range))
    nmse = float(np.sum((gt - pred) ** 2) / max(np.sum(gt**2), 1e-30))
    return {"psnr": psnr, "ssim": ssim, "nmse": nmse}


def score_cine(gt: np.ndarray, pred: np.ndarray, crop: bool = False) -> dict[str, float]:
    """Mean scores over the frames of one slice, ``(t, x, y)`` magnitudes; ``crop``: challenge crop, 3
    frames."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: {gt.shape} vs {pred.shape}")
    if crop:
        sx, sy = crop_box(gt.shape[1], gt.shape[2])
        gt, pred = gt[:3, sx, sy], pred[:3, sx, sy]
    scores = [score_image(g, p) for g, p in zip(gt, pred, strict=True)]
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
