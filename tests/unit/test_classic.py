"""The classic voxel-grid reconstruction (Tikhonov by CG, TV by L-BFGS) on a tiny three-stack problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from inrsr.classic import VoxelGridProblem, finite_differences, total_variation
from inrsr.forward.slice_psf import StackOperator, psf_sigmas_mm
from inrsr.simulate import stack_geometry
from inrsr.volume import Volume

N = 20


@pytest.fixture(scope="module")
def problem():
    """A smooth 20^3 truth (1 mm) seen by three orthogonal stacks with 3 mm slices."""
    rng = np.random.default_rng(0)
    truth = ndimage.gaussian_filter(rng.normal(size=(N, N, N)), 2.0)
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-9.5, -9.5, -9.5]
    hr = Volume(truth.astype(np.float32), affine, "truth")
    x_true = torch.as_tensor(truth, dtype=torch.float32)
    operators, ys = [], []
    for axis in range(3):
        shape, stack_affine = stack_geometry(hr, axis, 3.0)
        op = StackOperator(shape, stack_affine, psf_sigmas_mm(stack_affine, axis, None), hr.grid)
        operators.append(op)
        with torch.no_grad():
            ys.append(op(x_true))
    return VoxelGridProblem(operators, ys), x_true


def back_projection_mean(p: VoxelGridProblem) -> torch.Tensor:
    """The mean of the stacks' normalised adjoints A^T y / A^T 1: the usual naive estimate."""
    total = torch.zeros(p.shape)
    for op, y in zip(p.operators, p.ys, strict=True):
        total += op.adjoint(y) / op.adjoint(torch.ones_like(y)).clamp_min(1e-6)
    return total / len(p.operators)


def rel_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    return float((x - truth).norm() / truth.norm())


def test_finite_differences_and_tv():
    x = torch.arange(24.0).reshape(2, 3, 4)
    dx, dy, dz = finite_differences(x)
    assert dx.shape == (1, 3, 4) and dy.shape == (2, 2, 4) and dz.shape == (2, 3, 3)
    assert torch.all(dx == 12) and torch.all(dy == 4) and torch.all(dz == 1)
    # TV over the common interior (1 x 2 x 3 points), each sqrt(144 + 16 + 1 + eps^2)
    assert float(total_variation(x, eps=0.0)) == pytest.approx(6 * np.sqrt(161.0), rel=1e-6)
    assert float(total_variation(torch.zeros(3, 3, 3), eps=1e-3)) == pytest.approx(8 * 1e-3, rel=1e-6)


def test_tikhonov_fits_the_data_and_beats_back_projection(problem):
    p, truth = problem
    initial = float(p.data_loss(torch.zeros(p.shape)))
    assert initial > 0
    x = p.solve_tikhonov(lam=1e-4, n_iter=80, tol=1e-8)
    final = float(p.data_loss(x))
    assert final < 1e-3 * initial
    naive = back_projection_mean(p)
    err, err_naive = rel_error(x, truth), rel_error(naive, truth)
    assert err < 0.2 * err_naive
    assert err < 0.02  # noise-free, three orthogonal stacks: the truth is recovered
    # conjugate gradients converge fast on this well-conditioned problem (steepest descent would need ~4x
    # the iterations for this)
    x10 = p.solve_tikhonov(lam=1e-4, n_iter=10, tol=1e-12)
    assert float(p.data_loss(x10)) < 1e-5 * initial
    # a warm start from the solution stays there
    x2 = p.solve_tikhonov(lam=1e-4, n_iter=5, x0=x, tol=1e-8)
    assert float(p.data_loss(x2)) <= final * 1.5 + 1e-9


def test_tikhonov_normal_equations_residual(problem):
    """CG solves (A^T A + lam D^T D) x = A^T y: the residual of those equations is small at the result."""
    p, _ = problem
    lam = 1e-2
    x = p.solve_tikhonov(lam=lam, n_iter=200, tol=1e-7)
    b = p._rhs()
    residual = b - p._normal(x, lam)
    assert float(residual.norm() / b.norm()) < 1e-4
    # and stronger smoothing gives a smoother solution
    rough = sum(float((d * d).sum()) for d in finite_differences(p.solve_tikhonov(lam=1e-4, n_iter=60)))
    smooth = sum(float((d * d).sum()) for d in finite_differences(p.solve_tikhonov(lam=1.0, n_iter=60)))
    assert smooth < rough


def test_weights_exclude_voxels(problem):
    p, truth = problem
    # corrupt one stack's first slice and give it zero weight: the result ignores the corruption
    ys = [y.clone() for y in p.ys]
    ys[2][..., 0] += 100.0
    weights = [None, None, torch.ones_like(ys[2])]
    weights[2][..., 0] = 0.0
    weighted = VoxelGridProblem(p.operators, ys, weights)
    x = weighted.solve_tikhonov(lam=1e-3, n_iter=60)
    assert rel_error(x, truth) < 0.5
    assert float(weighted.data_loss(truth)) < 1e-8  # the truth explains every voxel that counts


def test_tv_lowers_the_objective(problem):
    p, truth = problem
    lam = 1e-3

    def objective(x: torch.Tensor) -> float:
        return float(p.data_loss(x) + lam * total_variation(x))

    x0 = back_projection_mean(p)
    x = p.solve_tv(lam=lam, n_iter=8, x0=x0)
    assert x.shape == p.shape and not x.requires_grad
    assert objective(x) < 0.5 * objective(x0)
    assert rel_error(x, truth) < rel_error(x0, truth)
    # from zero as well
    x_zero = p.solve_tv(lam=lam, n_iter=8)
    assert objective(x_zero) < 0.5 * objective(torch.zeros(p.shape))
