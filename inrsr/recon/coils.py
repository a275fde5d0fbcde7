"""Coil sensitivities from the autocalibration (ACS) region: ESPIRiT (Uecker et al. 2014).

The calibration block is the time-averaged k-space of the central fully sampled ky lines. Its block-Hankel
(calibration) matrix gives, after an SVD, the signal subspace as a set of k-space kernels; in the image domain
this becomes, at every pixel, a ``C x C`` Hermitian matrix ``G(r) = A(r) A(r)^H`` whose dominant eigenvector
is the coil sensitivity vector. ``G`` is a trigonometric polynomial with at most ``2k - 1`` frequencies per
axis (``k`` = kernel width), so it is computed exactly on a small grid and Fourier-interpolated to the full
image, never through ``C x n_kernels`` full-size FFTs. Maps are unit root-sum-of-squares at every pixel; their
phase is taken relative to the dominant virtual coil of the calibration data.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def calibration_block(kspace: np.ndarray, mask: np.ndarray, acs: tuple[int, int], width_x: int) -> np.ndarray:
    """Time-averaged ACS k-space ``(C, width_x, acs_lines)`` from ``kspace (t, C, kx, ky)`` and ``mask (t,
    kx, ky)``.

    Each point is averaged over the frames where it was sampled.
    """
    nx = kspace.shape[2]
    width_x = min(width_x, nx)
    x0 = nx // 2 - width_x // 2
    ks = kspace[:, :, x0 : x0 + width_x, acs[0] : acs[1]]
    m = mask[:, None, x0 : x0 + width_x, acs[0] : acs[1]]
    count = np.maximum(m.sum(axis=0), 1)
    return (ks * m).sum(axis=0) / count


def espirit_maps(
    calib: np.ndarray,
    shape: tuple[int, int],
    kernel: int = 6,
    threshold: float = 0.02,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """ESPIRiT maps ``(C, X, Y)`` complex64 with unit RSS, and the dominant eigenvalue ``(X, Y)`` (about 1
    inside
    the object, lower where no coil sees signal), from a calibration block ``(C, cx, cy)``."""
    n_coils, cx, cy = calib.shape
    nx, ny = shape
    if n_coils == 1:
        return np.ones((1, nx, ny), np.complex64), np.ones((nx, ny), np.float32)
    kx, ky = min(kernel, cx), min(kernel, cy)
    if kx < 2 or ky < 2:
        raise ValueError(f"calibration region {cx} x {cy} is too small for ESPIRiT")
    patches = sliding_window_view(calib, (kx, ky), axis=(1, 2))  # (C, px, py, kx, ky)
    rows = patches.transpose(1, 2, 0, 3, 4).reshape(-1, n_coils * kx * ky)
    _, s, vh = np.linalg.svd(rows.astype(np.complex128), full_matrices=False)
    keep = int(np.sum(s > threshold * s[0]))
    # The patches (rows) lie in the span of the rows of vh: kernels[j, c, o] = basis vector j at coil c,
    # offset o.
    kernels = vh[:keep].reshape(keep, n_coils, kx, ky)

    # A_j(r)[c] = sum_o V[(c, o), j] exp(+2 pi i o.r); G(r) = sum_j A_j A_j^H, sampled exactly on an M grid.
    mx, my = 2 * kx, 2 * ky
    padded = np.zeros((keep, n_coils, mx, my), np.complex128)
    padded[:, :, :kx, :ky] = kernels
    a = np.fft.ifft2(padded, axes=(-2, -1)) * (mx * my)  # (J, C, mx, my)
    g_small = np.einsum("jcxy,jdxy->cdxy", a, a.conj())  # (C, C, mx, my)
    coef = np.fft.fft2(g_small, axes=(-2, -1)) / (mx * my)  # g(d) at d mod M, |d| < k
    full = np.zeros((n_coils, n_coils, nx, ny), np.complex128)
    for dx in range(-(kx - 1), kx):
        for dy in range(-(ky - 1), ky):
            full[:, :, dx % nx, dy % ny] += coef[:, :, dx % mx, dy % my]
    g = np.fft.fftshift(np.fft.ifft2(full, axes=(-2, -1)) * (nx * ny), axes=(-2, -1))  # centred pixels
    g = g.transpose(2, 3, 0, 1).reshape(nx * ny, n_coils, n_coils)
    g = 0.5 * (g + g.conj().transpose(0, 2, 1))

    # Reference for the phase: the dominant virtual coil of the calibration data.
    cov = np.einsum("cxy,dxy->cd", calib, calib.conj())
    ref = np.linalg.eigh(cov)[1][:, -1]

    maps = np.empty((nx * ny, n_coils), np.complex64)
    eig = np.empty(nx * ny, np.float32)
    for i in range(0, nx * ny, chunk):
        w, v = np.linalg.eigh(g[i : i + chunk])
        vec = v[:, :, -1]  # (n, C), unit norm
        phase = vec @ ref.conj()
        phase = np.where(np.abs(phase) > 1e-12, phase / np.maximum(np.abs(phase), 1e-12), 1.0)
        maps[i : i + chunk] = vec * phase.conj()[:, None]
        eig[i : i + chunk] = w[:, -1]
    eig /= max(float(eig.max()), 1e-12)
    return maps.T.reshape(n_coils, nx, ny), eig.reshape(nx, ny)
