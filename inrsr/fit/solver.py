"""The reconstruction on a voxel lattice: weighted least squares through the posed-slice PSF plus total variation.

    min_x  1/(2 W) sum_s sum_j w_sj (c_sk(j) [A_s(M_s) x]_j - y_sj)^2  +  lam * mean_lattice sqrt(|grad x|^2 + eps^2)

``W = sum w`` (so the data term is a mean over the measurements), ``grad`` in intensity per mm and the prior a mean
over lattice voxels: the same data at another spacing, or with another number of stacks, gets the same amount of
smoothing for the same ``lam``. ``w`` combines the foreground mask with the robust inlier weights, ``c`` is a
per-slice intensity scale. Solved by lagged diffusivity: a few reweightings of the TV term, each a short run of
conjugate gradients on the resulting quadratic problem, warm-started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..forward.posed_slices import PosedStackOperator
from ..progress import Progress

TV_EPS = 1e-2  # intensity per mm: below it TV turns quadratic
# Intensity per mm (the reference's bright tissue is ~1): above it the prior turns quadratic too, so oscillations that
# inconsistent data (misregistered or corrupted slices) excite cannot grow from one reweighting to the next.
TV_MAX_GRADIENT = 1.0
MAX_INTENSITY = 3.0  # estimates are clipped to [0, 3] (normalised intensities)


@dataclass
class StackTerm:
    """One stack's share of the data term: its operator, measurements, weights, per-slice scales and poses."""

    operator: PosedStackOperator
    y: torch.Tensor  # (nx, ny, nz), intensities normalised to the reference
    mask: torch.Tensor  # (nx, ny, nz) 0/1 foreground
    poses: torch.Tensor  # (n_slices, 4, 4) world -> world
    voxel_weight: torch.Tensor  # (nx, ny, nz) robust inlier probability
    slice_weight: torch.Tensor  # (n_slices,) robust slice inlier probability
    slice_scale: torch.Tensor  # (n_slices,)

    def _per_slice(self, v: torch.Tensor) -> torch.Tensor:
        shape = [1, 1, 1]
        shape[self.operator.slice_axis] = -1
        return v.view(shape)

    def data_weight(self) -> torch.Tensor:
        """How much each measurement is trusted: foreground x voxel inlier x slice inlier probability."""
        return self.mask * self.voxel_weight * self._per_slice(self.slice_weight)

    def weights(self) -> torch.Tensor:
        """Total weight of each measurement in the quadratic data term (scale folded in)."""
        c = self._per_slice(self.slice_scale)
        return self.data_weight() * c * c

    def target(self) -> torch.Tensor:
        """The measurements divided by their slice's intensity scale."""
        return self.y / self._per_slice(self.slice_scale)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator(x, self.poses)


def gradient_mm(x: torch.Tensor, spacing: Sequence[float]) -> list[torch.Tensor]:
    """Forward differences per mm along the three axes, zero-padded at the far end (same shape as ``x``)."""
    out = []
    for d, h in enumerate(spacing):
        g = torch.zeros_like(x)
        n = x.shape[d]
        g.narrow(d, 0, n - 1).copy_(x.diff(dim=d) / float(h))
        out.append(g)
    return out


def divergence_adjoint(v: torch.Tensor, dim: int, h: float) -> torch.Tensor:
    """``D_dim^T v`` for the forward difference per mm of :func:`gradient_mm` (whose last entry along ``dim`` is 0).

    >>> x, v = torch.randn(5, 4, 3, dtype=torch.float64), torch.randn(5, 4, 3, dtype=torch.float64)
    >>> v[:, -1] = 0
    >>> dx = gradient_mm(x, (1.0, 0.5, 2.0))[1]
    >>> bool(torch.isclose((dx * v).sum(), (x * divergence_adjoint(v, 1, 0.5)).sum()))
    True
    """
    n = v.shape[dim]
    out = -v / h
    out.narrow(dim, 1, n - 1).add_(v.narrow(dim, 0, n - 1) / h)
    return out


class Reconstruction:
    """The weighted least-squares + TV problem over ``terms`` on a lattice of ``shape`` and ``spacing`` (mm)."""

    def __init__(self, terms: Sequence[StackTerm], shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.terms = list(terms)
        self.shape = tuple(int(n) for n in shape)
        self.spacing = [float(s) for s in spacing]

    def _normal(self, p: torch.Tensor, weights, total: float, lam: float, q: torch.Tensor) -> torch.Tensor:
        """``(A^T W A / total + lam / N D^T Q D) p``: the data part by autograd, the TV part explicitly."""
        p = p.detach().requires_grad_(True)
        out = torch.zeros_like(p)
        with torch.enable_grad():
            for term, w in zip(self.terms, weights, strict=True):
                ap = term.predict(p)
                (grad,) = torch.autograd.grad(ap, p, grad_outputs=(w * ap).detach() / total)
                out += grad
        p = p.detach()
        scale = lam / p.numel()
        for d, g in enumerate(gradient_mm(p, self.spacing)):
            out += scale * divergence_adjoint(q * g, d, self.spacing[d])
        return out

    def solve(
        self,
        x0: torch.Tensor,
        lam: float,
        reweightings: int,
        cg_iterations: int,
        quiet: bool = True,
        description: str = "reconstruction",
    ) -> torch.Tensor:
        """Lagged-diffusivity TV: ``reweightings`` rounds of ``cg_iterations`` CG steps, from ``x0``."""
        weights = [t.weights() for t in self.terms]
        total = float(sum(w.sum() for w in weights)) or 1.0
        rhs = torch.zeros(self.shape, dtype=x0.dtype, device=x0.device)
        for term, w in zip(self.terms, weights, strict=True):
            rhs = rhs + term.operator.adjoint(w * term.target(), term.poses) / total
        x = x0.detach().clone()
        with Progress(reweightings * cg_iterations, description, quiet=quiet) as bar:
            for _ in range(reweightings):
                g = gradient_mm(x, self.spacing)
                q = 1.0 / torch.sqrt(sum(gi * gi for gi in g) + TV_EPS**2).clamp_max(TV_MAX_GRADIENT)
                r = rhs - self._normal(x, weights, total, lam, q)
                p = r.clone()
                rs = (r * r).sum()
                for _ in range(cg_iterations):
                    ap = self._normal(p, weights, total, lam, q)
                    alpha = rs / (p * ap).sum().clamp_min(1e-30)
                    x = x + alpha * p
                    r = r - alpha * ap
                    rs_new = (r * r).sum()
                    bar.update(1)
                    p = r + (rs_new / rs.clamp_min(1e-30)) * p
                    rs = rs_new
                x = x.clamp(0, MAX_INTENSITY)
        return x

    def residuals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``y / c - A x`` per stack (in reference intensity units)."""
        with torch.no_grad():
            return [t.target() - t.predict(x) for t in self.terms]


def automatic_weight(noise_sigma: float, floor: float, per_sigma: float) -> float:
    """The TV weight from the stacks' noise level (normalised intensities): ``floor + per_sigma * sigma``.

    >>> automatic_weight(0.0, 5e-4, 0.5), automatic_weight(0.01, 5e-4, 0.5)
    (0.0005, 0.0055)
    """
    return float(floor + per_sigma * max(noise_sigma, 0.0))


def robust_update(terms: Sequence[StackTerm], residuals: Sequence[torch.Tensor]) -> dict:
    """One EM step of the robust statistics (Kuklisova-Murgasova et al. 2012), in place on ``terms``.

    Voxels: a Gaussian inlier (variance ``sigma^2``) against a uniform outlier over the intensity range, mixed
    with proportion ``c``; each voxel's inlier probability follows. Slices: the potential
    ``sqrt(mean (1 - p_voxel)^2)`` of each slice, judged against the median and spread of all slices' potentials;
    a slice far above them gets a low inlier probability. Per-slice intensity scales are the weighted
    least-squares factors between a slice and its prediction (bounded to [0.5, 2]).
    """
    masks = [t.mask > 0 for t in terms]
    sq = torch.cat([(r[m] ** 2) for r, m in zip(residuals, masks, strict=True)])
    prev = torch.cat([t.data_weight()[m] for t, m in zip(terms, masks, strict=True)])
    sigma2 = float((prev * sq).sum() / prev.sum().clamp_min(1e-12))
    sigma2 = max(sigma2, 1e-8)
    y_all = torch.cat([t.y[m] for t, m in zip(terms, masks, strict=True)])
    density_out = 1.0 / max(float(y_all.max() - y_all.min()), 1e-6)
    mix = float(prev.mean().clamp(0.5, 0.99))
    potentials, owners = [], []
    for s, (t, r, m) in enumerate(zip(terms, residuals, masks, strict=True)):
        # exponent capped so that no weight is a subnormal float (slow arithmetic in every later solve)
        g = torch.exp((-0.5 * r * r / sigma2).clamp_min(-80.0)) / np.sqrt(2 * np.pi * sigma2)
        p = mix * g / (mix * g + (1 - mix) * density_out)
        p = p.masked_fill(p < 1e-6, 0.0)
        t.voxel_weight = torch.where(m, p, torch.ones_like(p))
        axes = tuple(a for a in range(3) if a != t.operator.slice_axis)
        n = m.float().sum(axes)
        pot = torch.sqrt((((1 - p) ** 2) * m).sum(axes) / n.clamp_min(1))
        pot = torch.where(n > 10, pot, torch.zeros_like(pot))
        potentials.append(pot)
        owners += [(s, k) for k in range(len(pot))]
    allp = torch.cat(potentials)
    med = float(allp.median())
    spread = float(1.4826 * (allp - med).abs().median()) + 0.02
    outliers = []
    for s, (t, pot) in enumerate(zip(terms, potentials, strict=True)):
        z = (pot - med) / spread
        t.slice_weight = torch.sigmoid(-2.0 * (z - 4.0))
        outliers += [[s, int(k)] for k in torch.nonzero(t.slice_weight < 0.5)[:, 0]]
    return {"sigma": float(np.sqrt(sigma2)), "inlier_fraction": mix, "outlier_slices": outliers}


def update_slice_scales(terms: Sequence[StackTerm], x: torch.Tensor) -> None:
    """Per-slice intensity scale: weighted least squares between each slice and its prediction, in [0.5, 2]."""
    with torch.no_grad():
        for t in terms:
            pred = t.predict(x)
            w = t.mask * t.voxel_weight
            axes = tuple(a for a in range(3) if a != t.operator.slice_axis)
            num = (w * pred * t.y).sum(axes)
            den = (w * pred * pred).sum(axes)
            scale = torch.where(den > 1e-8, num / den.clamp_min(1e-12), torch.ones_like(num))
            t.slice_scale = scale.clamp(0.5, 2.0)


def as_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)
