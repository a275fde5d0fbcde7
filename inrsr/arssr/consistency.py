"""Data consistency: make the network's output agree with its input through the slice-PSF forward model.

A network can invent detail the input contradicts. After it, ``upsample`` solves

    min_x  ||W (A x - y)||^2 + lam ||x - x_net||^2

with ``A`` the input's acquisition model on the output grid (:class:`~inrsr.forward.slice_psf.StackOperator`,
the Gaussian slice PSF that ``fit`` and ``simulate`` use: FWHM = the slice thickness through-plane, the spacing
in-plane), ``y`` the input, ``x_net`` the network's output and ``lam`` a weight towards it. ``W`` keeps only the
input voxels whose PSF lies inside the output grid: at the volume's border the PSF reads past the output's field of
view, and fitting those voxels would brighten the border (ringing). A few conjugate-gradient iterations from
``x_net`` (:data:`ITERATIONS`) move the output into agreement with the data in the directions the data see, and
leave it near the network's output in the directions they do not (the detail the network restored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..forward.slice_psf import StackOperator, psf_sigmas_mm
from ..geometry import Grid
from ..volume import Volume

#: Conjugate-gradient iterations and the weight towards the network's output (normalised intensities).
ITERATIONS = 10
WEIGHT = 0.01
#: Discrepancy principle: iterations stop once the RMS data residual is at most this many noise SDs.
DISCREPANCY = 1.0
#: Input voxels with less than this share of their PSF inside the output grid are left out of the data term.
MIN_PSF_INSIDE = 0.98


@dataclass(frozen=True)
class ConsistencyResult:
    """The corrected image and the data residual (RMS of ``A x - y`` over the fitted input voxels, relative to the
    RMS of ``y`` there) before and after."""

    image: np.ndarray
    residual_before: float
    residual_after: float
    noise: float
    iterations: int
    seconds: float
    weight: float = WEIGHT
    max_iterations: int = ITERATIONS

    def report(self) -> dict:
        return {
            "forward_model": "Gaussian slice PSF (FWHM = thickness through-plane, spacing in-plane)",
            "weight_to_network_output": self.weight,
            "max_iterations": self.max_iterations,
            "iterations": self.iterations,
            "noise_sd_relative": self.noise,
            "relative_residual_before": self.residual_before,
            "relative_residual_after": self.residual_after,
            "seconds": self.seconds,
        }


def input_operator(volume: Volume, grid: Grid, thickness_mm: float | None = None) -> StackOperator:
    """The acquisition model of ``volume`` as a map from ``grid``: its slice axis is its coarsest voxel axis."""
    slice_axis = int(np.argmax(volume.spacing))
    sigmas = psf_sigmas_mm(volume.affine, slice_axis, thickness_mm)
    return StackOperator(volume.shape, volume.affine, sigmas, grid)


def enforce_consistency(
    image: np.ndarray,
    grid: Grid,
    volume: Volume,
    scale: float,
    thickness_mm: float | None = None,
    iterations: int = ITERATIONS,
    weight: float = WEIGHT,
) -> ConsistencyResult:
    """``image`` (on ``grid``) made consistent with ``volume`` (see the module docstring); ``scale`` is the
    intensity that maps to 1 (the input's robust maximum), so ``weight`` means the same for any units.

    Iterations stop early by the discrepancy principle: once the RMS residual is within :data:`DISCREPANCY` times
    the input's noise SD (estimated from the input, :func:`inrsr.fit.stacks.noise_sigma`), fitting further would
    fit the noise."""
    import time

    from ..fit.stacks import foreground, noise_sigma

    t0 = time.perf_counter()
    op = input_operator(volume, grid, thickness_mm)
    s = float(scale) if scale > 0 else 1.0
    x0 = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)) / s
    y = torch.from_numpy(np.ascontiguousarray(volume.data, dtype=np.float32)) / s
    with torch.no_grad():
        w = (op.forward(torch.ones_like(x0)) >= MIN_PSF_INSIDE).float()

    s_noise = noise_sigma(volume, foreground(volume)) / s
    n_fitted = float(w.sum().clamp_min(1))

    def rms(r: torch.Tensor) -> float:
        return float(r.norm()) / n_fitted**0.5

    def residual(x: torch.Tensor) -> float:
        with torch.no_grad():
            r = w * (op.forward(x) - y)
        return float(r.norm() / (w * y).norm().clamp_min(1e-12))

    before = residual(x0)
    # CG on (A^T W A + lam I) x = A^T W y + lam x0, from x0 (its initial residual is A^T W (y - A x0)).
    x = x0.clone()
    data_r = w * (y - op.forward(x0))
    r = op.adjoint(data_r)
    p = r.clone()
    rr = float((r * r).sum())
    done = 0
    while done < iterations and rr > 1e-20 and rms(data_r) > DISCREPANCY * s_noise:
        with torch.no_grad():
            ap = w * op.forward(p)
        q = op.adjoint(ap) + weight * p
        alpha = rr / max(float((p * q).sum()), 1e-30)
        x += alpha * p
        r -= alpha * q
        data_r -= alpha * ap
        rr_new = float((r * r).sum())
        p = r + (rr_new / rr) * p
        rr = rr_new
        done += 1
    after = residual(x)
    seconds = time.perf_counter() - t0
    return ConsistencyResult((x * s).numpy(), before, after, s_noise, done, seconds, weight, iterations)
