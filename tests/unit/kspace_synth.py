"""Synthetic multi-coil cine k-space for the tests, and .mat writers laid out as MATLAB writes them.

The cine: a body ellipse with a beating "heart" (a bright disk whose radius and position follow a cardiac
cycle) and static structures, a smooth complex phase, and known smooth coil maps (Gaussian profiles of coils
around the field of view, smooth phases). Drawn on a 2x finer grid and band-limited down (no method gets its
own forward model back). Arrays use the package's layout: image ``(t, x, y)``, k-space ``(t, coils, kx, ky)``.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import scipy.io


def _fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def phantom(nx: int, ny: int, nt: int, seed: int = 0) -> np.ndarray:
    """A complex cine ``(t, x, y)``, magnitude up to about 1."""
    rng = np.random.default_rng(seed)
    fx, fy = 2 * nx, 2 * ny
    x = (np.arange(fx) - fx / 2 + 0.5) / (fx / 2)
    y = (np.arange(fy) - fy / 2 + 0.5) / (fy / 2)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    frames = []
    blobs = [
        (rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.06, 0.12), rng.uniform(0.3, 0.7))
        for _ in range(4)
    ]
    for t in range(nt):
        phase_t = 2 * np.pi * t / nt
        img = 0.35 * (((xx / 0.85) ** 2 + (yy / 0.7) ** 2) < 1)
        img += 0.25 * (((xx + 0.05) / 0.42) ** 2 + ((yy - 0.05) / 0.36) ** 2 < 1)  # "myocardium"
        r = 0.2 + 0.07 * np.sin(phase_t)
        cx, cy = 0.1 + 0.03 * np.cos(phase_t), 0.05
        img += 0.45 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2)  # beating blood pool
        for bx, by, br, bv in blobs:
            img += bv * 0.5 * (((xx - bx) ** 2 + (yy - by) ** 2) < br**2)
        frames.append(img)
    hi = np.stack(frames)  # (t, 2nx, 2ny)
    k = _fft2c(hi)[:, fx // 2 - nx // 2 : fx // 2 - nx // 2 + nx, fy // 2 - ny // 2 : fy // 2 - ny // 2 + ny]
    img = _ifft2c(k) * np.sqrt(nx * ny / (fx * fy))
    xs = np.linspace(-1, 1, nx)[:, None]
    ys = np.linspace(-1, 1, ny)[None, :]
    phase = np.exp(1j * (0.6 * xs + 0.4 * ys**2 + 0.3))
    img = img * phase[None]
    return (img / np.abs(img).max()).astype(np.complex64)


def coil_maps(nx: int, ny: int, nc: int) -> np.ndarray:
    """Smooth complex coil maps ``(C, x, y)`` from coils placed on a circle around the field of view."""
    xs = np.linspace(-1, 1, nx)[:, None]
    ys = np.linspace(-1, 1, ny)[None, :]
    maps = []
    for c in range(nc):
        a = 2 * np.pi * c / nc
        px, py = 1.3 * np.cos(a), 1.3 * np.sin(a)
        mag = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / 1.5)
        ph = np.exp(1j * (0.8 * np.cos(a) * xs + 0.8 * np.sin(a) * ys + a))
        maps.append(mag * ph)
    return np.stack(maps).astype(np.complex64)


def cine_kspace(
    nx: int = 48, ny: int = 40, nt: int = 8, nc: int = 4, noise: float = 0.002, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fully sampled k-space ``(t, C, kx, ky)``, the true image ``(t, x, y)`` and the true maps ``(C, x,
    y)``."""
    img = phantom(nx, ny, nt, seed)
    maps = coil_maps(nx, ny, nc) if nc > 1 else np.ones((1, nx, ny), np.complex64)
    k = _fft2c(img[:, None] * maps[None])
    rng = np.random.default_rng(seed + 1)
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    return k.astype(np.complex64), img, maps


def to_matlab(kspace_slices: list[np.ndarray], multicoil: bool = True) -> np.ndarray:
    """Slices ``(t, C, kx, ky)`` -> MATLAB layout ``(kx, ky, coils, slices, t)`` (or ``(kx, ky, slices,
    t)``)."""
    arr = np.stack(kspace_slices, axis=0)  # (s, t, C, kx, ky)
    if multicoil:
        return np.ascontiguousarray(arr.transpose(3, 4, 2, 0, 1))
    return np.ascontiguousarray(arr[:, :, 0].transpose(2, 3, 0, 1))


def write_v73(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: 512-byte userblock with the MATLAB header, HDF5 datasets with
    reversed dimensions, complex as a compound of ``real``/``imag``, a ``MATLAB_class`` attribute."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            arr = np.asarray(arr)
            data = arr.T  # reversed dimensions
            if np.iscomplexobj(arr):
                part = "<f4" if arr.dtype == np.complex64 else "<f8"
                rec = np.empty(data.shape, dtype=[("real", part), ("imag", part)])
                rec["real"], rec["imag"] = data.real, data.imag
                data = rec
            ds = f.create_dataset(name, data=data)
            cls = {
                np.float32: "single",
                np.float64: "double",
                np.complex64: "single",
                np.complex128: "double",
            }
            ds.attrs["MATLAB_class"] = np.bytes_(cls[arr.dtype.type])
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {time.ctime()} HDF5 schema 1.00 ."
    header = text.encode().ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as raw:
        raw.write(header.ljust(512, b"\x00"))


def write_v5(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    scipy.io.savemat(str(path), variables, format="5")
