"""The posed-slice PSF operator: agreement with StackOperator, adjointness, poses, pose gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from inrsr.forward.posed_slices import PosedStackOperator, rigid_matrices
from inrsr.forward.slice_psf import StackOperator, psf_sigmas_mm
from inrsr.geometry import Grid, rigid_matrix, rotation_matrix

SOURCE = Grid((40, 44, 38), np.array([[1.0, 0, 0, -20], [0, 1.0, 0, -22], [0, 0, 1.0, -19], [0, 0, 0, 1]]))


@pytest.fixture(scope="module")
def smooth() -> torch.Tensor:
    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.normal(size=SOURCE.shape), 2.5)
    return torch.as_tensor((v - v.min()) / (v.max() - v.min()), dtype=torch.float32)


def stack(axis: int, angles) -> tuple[tuple[int, int, int], np.ndarray]:
    spacing = np.array([1.2, 1.2, 1.2])
    spacing[axis] = 4.0
    shape = tuple(int(n) for n in np.where(np.arange(3) == axis, 8, 26))
    a = np.eye(4)
    a[:3, :3] = rotation_matrix(angles) * spacing
    a[:3, 3] = -a[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, a


@pytest.mark.parametrize("axis,angles", [(2, (0, 0, 0)), (1, (8, -5, 6)), (0, (-10, 4, 12))])
def test_matches_stack_operator(smooth, axis, angles):
    shape, a = stack(axis, angles)
    sig = psf_sigmas_mm(a, axis, 4.0)
    ours = PosedStackOperator(shape, a, sig, SOURCE, axis)(smooth)
    ref = StackOperator(shape, a, sig, SOURCE)(smooth)
    assert ours.shape == ref.shape
    assert float((ours - ref).norm() / ref.norm()) < 0.01


@pytest.mark.parametrize("axis", [0, 2])
def test_adjoint(axis):
    shape, a = stack(axis, (5, 3, -7))
    op = PosedStackOperator(shape, a, psf_sigmas_mm(a, axis, 3.0), SOURCE, axis)
    g = torch.Generator().manual_seed(1)
    poses = rigid_matrices(torch.randn(shape[axis], 6, generator=g, dtype=torch.float64), torch.zeros(3).double())
    x = torch.randn(SOURCE.shape, generator=g, dtype=torch.float64)
    y = torch.randn(shape, generator=g, dtype=torch.float64)
    lhs = float((op(x, poses) * y).sum())
    rhs = float((x * op.adjoint(y, poses)).sum())
    assert abs(lhs - rhs) < 1e-8 * max(abs(lhs), 1.0)


def test_a_pose_equals_a_moved_header(smooth):
    """A stack whose slices all have pose M is the stack whose affine is M @ A."""
    shape, a = stack(2, (0, 0, 0))
    sig = psf_sigmas_mm(a, 2, 4.0)
    p = np.array([3.0, -2.0, 4.0, 1.5, -1.0, 0.7])
    m = rigid_matrix(p, [1.0, 2.0, 0.5])
    poses = rigid_matrices(torch.as_tensor(p).repeat(shape[2], 1), torch.tensor([1.0, 2.0, 0.5]).double())
    posed = PosedStackOperator(shape, a, sig, SOURCE, 2)(smooth, poses)
    moved = PosedStackOperator(shape, m @ a, sig, SOURCE, 2)(smooth)
    assert float((posed - moved).abs().max()) < 1e-5


def test_pose_gradient_points_home(smooth):
    """The gradient of the misfit with respect to a slice's pose points back toward the true pose."""
    shape, a = stack(2, (0, 0, 0))
    op = PosedStackOperator(shape, a, psf_sigmas_mm(a, 2, 4.0), SOURCE, 2)
    centre = torch.zeros(3, dtype=torch.float64)
    truth = torch.zeros(shape[2], 6, dtype=torch.float64)
    y = op(smooth, rigid_matrices(truth, centre)).detach()
    start = truth.clone()
    start[:, 3] = 1.0  # 1 mm off along x
    start.requires_grad_(True)
    loss = ((op(smooth, rigid_matrices(start, centre)) - y) ** 2).sum()
    loss.backward()
    assert bool((start.grad[:, 3] > 0).all())  # descending lowers tx toward 0


def test_separable_path_for_aligned_stacks(smooth):
    """Stacks along the lattice axes take the separable path (blur, then one read per voxel); it agrees with the
    quadrature path and with StackOperator, and a tilt beyond SEPARABLE_MAX_DEG switches to quadrature."""
    from inrsr.forward import posed_slices

    shape, a = stack(1, (0, 0, 0))
    sig = psf_sigmas_mm(a, 1, 4.0)
    op = PosedStackOperator(shape, a, sig, SOURCE, 1)
    quad = PosedStackOperator(shape, a, sig, SOURCE, 1)
    quad._separable_axes = None
    assert op.separable(None) and not quad.separable(None)
    ref = StackOperator(shape, a, sig, SOURCE)(smooth)
    for o in (op, quad):
        assert float((o(smooth) - ref).norm() / ref.norm()) < 0.01
    centre = torch.zeros(3, dtype=torch.float64)
    small = rigid_matrices(torch.tensor([[1.0, -1.0, 0.5, 0.3, 0.2, -0.4]], dtype=torch.float64), centre)
    small = small.repeat(shape[1], 1, 1)
    assert op.separable(small)
    rel = float((op(smooth, small) - quad(smooth, small)).norm() / quad(smooth, small).norm())
    assert rel < 0.01
    tilt = posed_slices.SEPARABLE_MAX_DEG + 1.0
    big = rigid_matrices(torch.tensor([[tilt, 0, 0, 0, 0, 0]], dtype=torch.float64), centre).repeat(shape[1], 1, 1)
    assert not op.separable(big)


def test_separable_adjoint_and_pose_gradient(smooth):
    shape, a = stack(2, (0, 0, 0))
    op = PosedStackOperator(shape, a, psf_sigmas_mm(a, 2, 4.0), SOURCE, 2)
    g = torch.Generator().manual_seed(2)
    centre = torch.zeros(3, dtype=torch.float64)
    params = 0.5 * torch.randn(shape[2], 6, generator=g, dtype=torch.float64)
    poses = rigid_matrices(params, centre)
    assert op.separable(poses)
    x = torch.randn(SOURCE.shape, generator=g, dtype=torch.float64)
    y = torch.randn(shape, generator=g, dtype=torch.float64)
    lhs = float((op(x, poses) * y).sum())
    rhs = float((x * op.adjoint(y, poses)).sum())
    assert abs(lhs - rhs) < 1e-8 * max(abs(lhs), 1.0)
    truth = torch.zeros(shape[2], 6, dtype=torch.float64)
    target = op(smooth, rigid_matrices(truth, centre)).detach()
    start = truth.clone()
    start[:, 4] = 1.0  # 1 mm off along y
    start.requires_grad_(True)
    ((op(smooth, rigid_matrices(start, centre)) - target) ** 2).sum().backward()
    assert bool((start.grad[:, 4] > 0).all())
