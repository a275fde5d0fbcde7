"""Voxel-grid super-resolution reconstruction: least squares through the slice PSF plus a smoothness prior.

Solves ``min_x sum_s 1/2 ||W_s (A_s x - y_s)||^2 + R(x)`` on a regular lattice, where ``A_s`` is the stack's
:class:`~inrsr.forward.slice_psf.StackOperator` and ``R`` is first-order Tikhonov (``lam/2 ||D x||^2``, solved
by conjugate gradients on the normal equations) or isotropic total variation (``lam sum |D x|_eps``, solved by
L-BFGS), as classic slice-to-volume tools (NiftyMIC, SVRTK) do. ``fit`` uses it as the initial estimate of the
field; the benchmark uses it as the classic baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .forward.slice_psf import StackOperator
from .progress import Progress


def finite_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences of a volume along its three axes (each one voxel shorter along that axis)."""
    return [x.diff(dim=d) for d in range(x.dim() - 3, x.dim())]


def total_variation(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smoothed isotropic total variation ``sum sqrt(|D x|^2 + eps^2)`` on the common interior."""
    dx, dy, dz = finite_differences(x)
    g2 = dx[..., :, :-1, :-1] ** 2 + dy[..., :-1, :, :-1] ** 2 + dz[..., :-1, :-1, :] ** 2
    return torch.sqrt(g2 + eps**2).sum()


class VoxelGridProblem:
    """The data term shared by every solver: stacks ``ys`` predicted by ``operators`` from a lattice volume.

    ``weights`` (optional, per stack, same shape as the stack) down-weight or exclude voxels (masks).
    """

    def __init__(
        self,
        operators: Sequence[StackOperator],
        ys: Sequence[torch.Tensor],
        weights: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        self.operators = list(operators)
        self.ys = list(ys)
        self.weights = list(weights) if weights is not None else [None] * len(self.ys)
        self.shape = tuple(operators[0].source.shape)

    def data_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_s 1/2 ||W_s (A_s x - y_s)||^2``."""
        total = x.new_zeros(())
        for op, y, w in zip(self.operators, self.ys, self.weights, strict=True):
            r = op(x) - y
            total = total + 0.5 * ((r * r) if w is None else (w * r * r)).sum()
        return total

    def _normal(self, p: torch.Tensor, lam: float) -> torch.Tensor:
        """``(sum_s A_s^T W_s A_s + lam D^T D) p`` through autograd."""
        p = p.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = p.new_zeros(())
            for op, w in zip(self.operators, self.weights, strict=True):
                ap = op(p)
                loss = loss + 0.5 * ((ap * ap) if w is None else (w * ap * ap)).sum()
            loss = loss + 0.5 * lam * sum((d * d).sum() for d in finite_differences(p))
            (grad,) = torch.autograd.grad(loss, p)
        return grad

    def _rhs(self) -> torch.Tensor:
        rhs = torch.zeros(self.shape, dtype=self.ys[0].dtype, device=self.ys[0].device)
        for op, y, w in zip(self.operators, self.ys, self.weights, strict=True):
            rhs = rhs + op.adjoint(y if w is None else w * y)
        return rhs

    def solve_tikhonov(
        self,
        lam: float,
        n_iter: int,
        x0: torch.Tensor | None = None,
        quiet: bool = True,
        tol: float = 1e-6,
    ) -> torch.Tensor:
        """Conjugate gradients on ``(A^T W A + lam D^T D) x = A^T W y``; stops early at relative residual ``tol``."""
        b = self._rhs()
        x = torch.zeros_like(b) if x0 is None else x0.detach().clone()
        r = b - self._normal(x, lam) if x0 is not None else b.clone()
        p = r.clone()
        rs = (r * r).sum()
        b_norm = float(b.norm()) or 1.0
        with Progress(n_iter, "initial estimate (CG)", quiet=quiet) as bar:
            for _ in range(n_iter):
                ap = self._normal(p, lam)
                alpha = rs / (p * ap).sum().clamp_min(1e-30)
                x = x + alpha * p
                r = r - alpha * ap
                rs_new = (r * r).sum()
                bar.update(1, residual=float(rs_new.sqrt()) / b_norm)
                if float(rs_new.sqrt()) / b_norm < tol:
                    break
                p = r + (rs_new / rs) * p
                rs = rs_new
        return x

    def solve_tv(
        self,
        lam: float,
        n_iter: int,
        x0: torch.Tensor | None = None,
        eps: float = 1e-3,
        quiet: bool = True,
    ) -> torch.Tensor:
        """L-BFGS on the data term plus ``lam`` times smoothed total variation."""
        x = (torch.zeros(self.shape) if x0 is None else x0.detach().clone()).requires_grad_(True)
        opt = torch.optim.LBFGS(
            [x],
            lr=1.0,
            max_iter=n_iter,
            history_size=10,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
        )
        with Progress(n_iter, "classic TV reconstruction", quiet=quiet) as bar:

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = self.data_loss(x) + lam * total_variation(x, eps)
                loss.backward()
                bar.update(1, loss=float(loss.detach()))
                return loss

            opt.step(closure)
        return x.detach()
