"""The slice PSF forward model: adjointness, a Monte-Carlo reference, PSF sampling and stack simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, ndimage, stats

from inrsr import geometry
from inrsr.forward.slice_psf import (
    FWHM_TO_SIGMA,
    StackOperator,
    gaussian_taps,
    psf_offsets,
    psf_sigmas_mm,
)
from inrsr.geometry import Grid, apply_affine, direction_cosines, voxel_spacing
from inrsr.simulate import rotation_matrix, simulate_stack, stack_geometry
from inrsr.volume import Volume


def rotation(angles_deg) -> np.ndarray:
    return rotation_matrix(angles_deg)


def make_affine(rot: np.ndarray, spacing, centre_world, shape) -> np.ndarray:
    """Voxel -> world affine with axes ``rot`` and ``spacing``, its voxel grid centred on ``centre_world``."""
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = np.asarray(centre_world) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


SOURCE_SHAPE = (26, 24, 28)
SOURCE_ROT = rotation([10.0, -5.0, 20.0])
SOURCE_SPACING = (1.0, 1.1, 0.9)
CENTRE = np.array([5.0, -3.0, 12.0])


@pytest.fixture(scope="module")
def source() -> Grid:
    return Grid(shape=SOURCE_SHAPE, affine=make_affine(SOURCE_ROT, SOURCE_SPACING, CENTRE, SOURCE_SHAPE))


@pytest.fixture(scope="module")
def smooth_volume() -> np.ndarray:
    """Gaussian-filtered noise (sigma 2 voxels) scaled to [0, 1], float64."""
    rng = np.random.default_rng(0)
    v = ndimage.gaussian_filter(rng.normal(size=SOURCE_SHAPE), 2.0)
    return (v - v.min()) / (v.max() - v.min())


def aligned_stack(source: Grid):
    """Axes along the source's, 4 mm slices along k, origin shifted by a fraction of a source voxel."""
    shape = (16, 15, 6)
    affine = make_affine(SOURCE_ROT, [1.5, 1.6, 4.0], CENTRE, shape)
    affine[:3, 3] += SOURCE_ROT @ (np.array([0.37, -0.21, 0.43]) * SOURCE_SPACING)
    return shape, affine, 2


def oblique_stack(source: Grid):
    shape = (14, 6, 15)
    rot = rotation([25.0, 10.0, -30.0]) @ SOURCE_ROT
    affine = make_affine(rot, [1.4, 3.5, 1.5], CENTRE + [0.3, -0.4, 0.2], shape)
    return shape, affine, 1


def permuted_stack(source: Grid):
    """Axes (-k, j, -i) of the source lattice (permuted and flipped), 3 mm slices along the first axis."""
    shape = (7, 14, 16)
    rot = np.stack([-SOURCE_ROT[:, 2], SOURCE_ROT[:, 1], -SOURCE_ROT[:, 0]], axis=1)
    affine = make_affine(rot, [3.0, 1.3, 1.2], CENTRE + SOURCE_ROT @ [0.2, 0.55, -0.3], shape)
    return shape, affine, 0


STACKS = {"aligned": aligned_stack, "oblique": oblique_stack, "permuted": permuted_stack}


def make_operator(source: Grid, which: str, thickness: float | None = None) -> StackOperator:
    shape, affine, axis = STACKS[which](source)
    return StackOperator(shape, affine, psf_sigmas_mm(affine, axis, thickness), source)


# --- the operator ------------------------------------------------------------------------------------------


def test_operator_paths(source):
    aligned = make_operator(source, "aligned")
    assert aligned.aligned is not None
    perm, scale, _ = aligned.aligned
    assert perm == [0, 1, 2] and all(s > 0 for s in scale)
    assert make_operator(source, "oblique").aligned is None
    permuted = make_operator(source, "permuted")
    assert permuted.aligned is not None
    perm, scale, _ = permuted.aligned
    assert perm == [2, 1, 0]
    assert scale[0] < 0 and scale[1] > 0 and scale[2] < 0


@pytest.mark.parametrize("which", list(STACKS))
def test_adjointness(source, which):
    op = make_operator(source, which, thickness=3.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(source.shape, dtype=torch.float64, generator=g)
    y = torch.randn(op.stack_shape, dtype=torch.float64, generator=g)
    ax = op(x)
    assert ax.shape == op.stack_shape and ax.dtype == torch.float64
    aty = op.adjoint(y)
    assert aty.shape == source.shape and aty.dtype == torch.float64
    lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
    assert lhs == pytest.approx(rhs, rel=1e-6)
    # batched forward equals per-volume forward
    xb = torch.stack([x, 2 * x + 1])
    out = op(xb)
    torch.testing.assert_close(out[0], ax)
    torch.testing.assert_close(out[1], op(2 * x + 1))


@pytest.mark.parametrize("which", list(STACKS))
def test_linearity(source, which):
    op = make_operator(source, which)
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(source.shape, dtype=torch.float64, generator=g)
    x2 = torch.randn(source.shape, dtype=torch.float64, generator=g)
    torch.testing.assert_close(op(2.5 * x1 - 0.7 * x2), 2.5 * op(x1) - 0.7 * op(x2), rtol=1e-10, atol=1e-10)
    assert float(op(torch.zeros(source.shape, dtype=torch.float64)).abs().max()) == 0.0


@pytest.mark.parametrize("which", ["aligned", "permuted"])
def test_separable_path_equals_grid_sample_path(source, smooth_volume, which):
    """The fast axis-aligned resampling gives the same result as the general (oblique) one."""
    op = make_operator(source, which)
    general = make_operator(source, which)
    general.aligned = None
    g = torch.Generator().manual_seed(3)
    for x in (torch.from_numpy(smooth_volume), torch.randn(source.shape, dtype=torch.float64, generator=g)):
        torch.testing.assert_close(op(x), general(x), rtol=1e-9, atol=1e-9)


def monte_carlo_reference(volume, source, stack_affine, sigmas_mm, voxels, n=250_000, seed=0):
    """The stack value at ``voxels``: the continuous trilinear image averaged over Gaussian PSF samples."""
    rng = np.random.default_rng(seed)
    spacing = voxel_spacing(stack_affine)
    world_to_source = np.linalg.inv(source.affine)
    out = []
    for v in voxels:
        offsets_vox = rng.normal(size=(n, 3)) * (np.asarray(sigmas_mm) / spacing)  # in stack voxels
        world = apply_affine(stack_affine, np.asarray(v, dtype=np.float64) + offsets_vox)
        src = apply_affine(world_to_source, world)
        values = ndimage.map_coordinates(volume, src.T, order=1, mode="constant", cval=0.0)
        out.append(values.mean())
    return np.asarray(out)


@pytest.mark.parametrize(("which", "thickness"), [("aligned", None), ("oblique", 4.5), ("permuted", 2.5)])
def test_forward_matches_monte_carlo_psf_average(source, smooth_volume, which, thickness):
    shape, affine, axis = STACKS[which](source)
    sigmas = psf_sigmas_mm(affine, axis, thickness)
    op = StackOperator(shape, affine, sigmas, source)
    pred = op(torch.from_numpy(smooth_volume)).numpy()
    centre = (np.asarray(shape) - 1) // 2
    voxels = [centre, centre + [1, -1, 1], centre - [2, 1, 1], centre + [-1, 2, 0]]
    voxels = [np.clip(v, 1, np.asarray(shape) - 2) for v in voxels]
    ref = monte_carlo_reference(smooth_volume, source, affine, sigmas, voxels)
    got = np.array([pred[tuple(v)] for v in voxels])
    np.testing.assert_allclose(got, ref, atol=2e-3)  # the volume's range is 1
    # the PSF matters: for at least one voxel the plain trilinear sample at its centre differs from the PSF
    # average by more than the tolerance (otherwise this test could not tell a PSF from none)
    plain = ndimage.map_coordinates(
        smooth_volume,
        apply_affine(np.linalg.solve(source.affine, affine), np.asarray(voxels, dtype=np.float64)).T,
        order=1,
    )
    assert np.max(np.abs(plain - ref)) > 5e-3


@pytest.mark.parametrize("which", list(STACKS))
def test_constant_volume_maps_to_the_constant_inside(source, which):
    op = make_operator(source, which, thickness=3.0)
    out = op(torch.full(source.shape, 3.0, dtype=torch.float64)).numpy()
    # stack voxels whose PSF support (3 sigma + one source voxel) lies inside the source box
    shape = np.asarray(op.stack_shape)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    spacing = voxel_spacing(op.stack_affine)
    sigmas_vox = psf_sigmas_mm(op.stack_affine, geometry.slice_axis(op.stack_affine), 3.0) / spacing
    reach = 3 * sigmas_vox + 1.5 * max(SOURCE_SPACING) / spacing
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
    to_src = np.linalg.solve(source.affine, op.stack_affine)
    inside = np.ones(len(idx), dtype=bool)
    for s in signs:
        p = apply_affine(to_src, idx + s * reach)
        inside &= np.all((p >= 0) & (p <= np.asarray(source.shape) - 1), axis=1)
    assert inside.sum() >= 20
    np.testing.assert_allclose(out.reshape(-1)[inside], 3.0, rtol=1e-9)


# --- PSF definition ----------------------------------------------------------------------------------------


def test_psf_sigmas_are_fwhm():
    affine = make_affine(rotation([30, 0, 45]), [0.8, 1.2, 4.0], [0, 0, 0], (4, 4, 4))
    default = psf_sigmas_mm(affine, 2, None)
    np.testing.assert_allclose(default, np.array([0.8, 1.2, 4.0]) * FWHM_TO_SIGMA, rtol=1e-12)
    thick = psf_sigmas_mm(affine, 2, 6.0)
    np.testing.assert_allclose(thick, np.array([0.8, 1.2, 6.0]) * FWHM_TO_SIGMA, rtol=1e-12)
    # FWHM semantics: the Gaussian with that sigma is at half maximum at +-FWHM/2
    for fwhm, sigma in zip([0.8, 1.2, 6.0], thick, strict=True):
        assert math.exp(-0.5 * (fwhm / 2 / sigma) ** 2) == pytest.approx(0.5, rel=1e-12)
    assert FWHM_TO_SIGMA == pytest.approx(1 / 2.3548200450309493, rel=1e-12)
    # slice axis other than the last
    np.testing.assert_allclose(psf_sigmas_mm(affine, 0, 5.0), np.array([5.0, 1.2, 4.0]) * FWHM_TO_SIGMA)


@pytest.mark.parametrize(("sigma", "step"), [(1.7, 1.0), (0.4, 0.5), (3.0, 0.75), (0.3, 1.0)])
def test_gaussian_taps(sigma, step):
    w = gaussian_taps(sigma, step)
    assert len(w) % 2 == 1
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w, w[::-1], atol=1e-14)
    assert np.all(w > 0)
    # the definition: tap k = integral g(t) hat(t / step - k) dt (normalised), by adaptive quadrature
    half = (len(w) - 1) // 2
    exact = []
    for k in range(-half, half + 1):
        f = lambda t, k=k: math.exp(-0.5 * (t / sigma) ** 2) * max(0.0, 1 - abs(t / step - k))  # noqa: E731
        exact.append(integrate.quad(f, (k - 1) * step, (k + 1) * step, points=[k * step])[0])
    exact = np.asarray(exact) / np.sum(exact)
    np.testing.assert_allclose(w, exact, atol=5e-4)  # the implementation integrates on 32 sub-steps
    if sigma >= 0.8 * step:
        # the Gaussian convolved with the linear-interpolation hat: variance sigma^2 + step^2 / 6, a little
        # less because the Gaussian is cut at about 3 sigma
        k = np.arange(len(w)) - half
        variance = float((w * (k * step) ** 2).sum())
        assert variance == pytest.approx(sigma**2 + step**2 / 6, rel=0.03)


def test_gaussian_taps_degenerate_sigma():
    np.testing.assert_array_equal(gaussian_taps(1e-6, 1.0), [1.0])


# --- PSF sampling ------------------------------------------------------------------------------------------


def test_psf_offsets_shape_and_statistics():
    sigmas = torch.tensor([0.4, 0.6, 1.8])
    g = torch.Generator().manual_seed(0)
    n_vox, n_samp = 20_000, 8
    off = psf_offsets(n_vox, n_samp, sigmas, slice_axis=2, generator=g)
    assert off.shape == (n_vox, n_samp, 3) and off.dtype == torch.float32
    std = off.reshape(-1, 3).std(dim=0).numpy()
    np.testing.assert_allclose(std, sigmas.numpy(), rtol=0.02)
    np.testing.assert_allclose(off.reshape(-1, 3).mean(dim=0).numpy(), 0.0, atol=0.02)
    # stratified through-plane: sample b of every voxel falls in the b-th equal-probability bin
    z = (off[..., 2] / sigmas[2]).numpy()
    u = stats.norm.cdf(z)
    bins = np.arange(n_samp)[None, :]
    assert np.all(u >= bins / n_samp - 1e-5) and np.all(u <= (bins + 1) / n_samp + 1e-5)
    # which makes each voxel's through-plane mean far less variable than plain draws (var sigma^2 / n)
    var_strat = float(off[..., 2].mean(dim=1).var())
    var_plain = float(off[..., 0].mean(dim=1).var())
    assert var_plain == pytest.approx(0.4**2 / n_samp, rel=0.05)
    assert var_strat < 0.1 * 1.8**2 / n_samp


def test_psf_offsets_other_slice_axis_and_determinism():
    sigmas = torch.tensor([2.0, 0.5, 0.5])
    a = psf_offsets(5000, 4, sigmas, slice_axis=0, generator=torch.Generator().manual_seed(7))
    b = psf_offsets(5000, 4, sigmas, slice_axis=0, generator=torch.Generator().manual_seed(7))
    c = psf_offsets(5000, 4, sigmas, slice_axis=0, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    u = stats.norm.cdf((a[..., 0] / 2.0).numpy())
    bins = np.arange(4)[None, :]
    assert np.all(u >= bins / 4 - 1e-5) and np.all(u <= (bins + 1) / 4 + 1e-5)
    np.testing.assert_allclose(a.reshape(-1, 3).std(dim=0).numpy(), [2.0, 0.5, 0.5], rtol=0.03)


# --- simulation --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hr() -> Volume:
    shape = (24, 22, 20)
    affine = make_affine(rotation([5, -10, 15]), [1.0, 1.0, 1.2], [12.0, -8.0, 30.0], shape)
    affine[:3, 0] *= -1  # left-handed
    affine[:3, 3] = np.array([12.0, -8.0, 30.0]) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    data = ndimage.gaussian_filter(np.random.default_rng(1).random(shape), 2.0) * 100
    return Volume(data.astype(np.float32), affine, "hr")


def hr_centre(hr: Volume) -> np.ndarray:
    return apply_affine(hr.affine, (np.asarray(hr.shape) - 1) / 2)


@pytest.mark.parametrize(("axis", "spacing"), [("z", None), ("x", 3.0), (1, 2.5)])
def test_simulated_stack_geometry(hr, axis, spacing):
    stack = simulate_stack(hr, axis, thickness_mm=4.0, spacing_mm=spacing)
    ax = {"z": 2, "x": 0, 1: 1}[axis]
    expected = hr.spacing.copy()
    expected[ax] = 4.0 if spacing is None else spacing
    np.testing.assert_allclose(stack.spacing, expected, rtol=1e-12)
    assert stack.slice_axis == ax
    np.testing.assert_allclose(direction_cosines(stack.affine), direction_cosines(hr.affine), atol=1e-12)
    np.testing.assert_allclose(apply_affine(stack.affine, (np.asarray(stack.shape) - 1) / 2), hr_centre(hr),
                               atol=1e-9)
    # the stack covers the field of view along the slice axis (ceil), and no more than one slice beyond
    extent = stack.shape[ax] * expected[ax]
    hr_extent = hr.shape[ax] * hr.spacing[ax]
    assert hr_extent - 1e-6 <= extent < hr_extent + expected[ax]
    assert stack.meta == {"thickness_mm": 4.0, "slice_axis": ax}
    assert stack.data.dtype == np.float32


def test_rotation_matrix_and_rotated_stack(hr):
    np.testing.assert_allclose(rotation_matrix([0, 0, 90]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix([90, 0, 0]), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix([0, 90, 0]), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    # x first, then y, then z
    angles = (20.0, -15.0, 40.0)
    np.testing.assert_allclose(
        rotation_matrix(angles),
        rotation_matrix([0, 0, 40]) @ rotation_matrix([0, -15, 0]) @ rotation_matrix([20, 0, 0]),
        atol=1e-12,
    )
    stack = simulate_stack(hr, "z", thickness_mm=3.0, rotation_deg=angles)
    np.testing.assert_allclose(
        direction_cosines(stack.affine), rotation_matrix(angles) @ direction_cosines(hr.affine), atol=1e-12
    )
    np.testing.assert_allclose(stack.spacing, [1.0, 1.0, 3.0], rtol=1e-12)
    np.testing.assert_allclose(apply_affine(stack.affine, (np.asarray(stack.shape) - 1) / 2), hr_centre(hr),
                               atol=1e-9)
    shape, affine = stack_geometry(hr, 2, 3.0, angles)
    assert shape == stack.shape
    np.testing.assert_allclose(affine, stack.affine)


@pytest.mark.parametrize("angles", [(0, 0, 0), (10, 0, 25)])
def test_constant_hr_gives_constant_stack_inside(hr, angles):
    const = Volume(np.full(hr.shape, 7.0, dtype=np.float32), hr.affine, "const")
    stack = simulate_stack(const, "z", thickness_mm=3.0, rotation_deg=angles)
    # stack voxels whose PSF (3 sigma through-plane, 2 voxels in-plane) stays inside the HR lattice
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in stack.shape], indexing="ij"), -1).reshape(-1, 3)
    reach = np.array([2.5, 2.5, 3 * 3.0 * FWHM_TO_SIGMA / 3.0 + 0.5])
    to_hr = np.linalg.solve(hr.affine, stack.affine)
    inside = np.ones(len(idx), dtype=bool)
    for s in [np.array([i, j, k]) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]:
        p = apply_affine(to_hr, idx + s * reach)
        inside &= np.all((p >= 0) & (p <= np.asarray(hr.shape) - 1), axis=1)
    assert inside.sum() >= 50
    np.testing.assert_allclose(stack.data.reshape(-1)[inside], 7.0, rtol=1e-5)


def test_simulated_noise_is_seeded(hr):
    clean = simulate_stack(hr, "y", thickness_mm=3.0)
    a = simulate_stack(hr, "y", thickness_mm=3.0, noise=0.02, seed=5)
    b = simulate_stack(hr, "y", thickness_mm=3.0, noise=0.02, seed=5)
    c = simulate_stack(hr, "y", thickness_mm=3.0, noise=0.02, seed=6)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert np.all(a.data >= 0)  # Rician magnitude
    sigma = 0.02 * float(np.percentile(hr.data, 99.9))
    # where the signal is much larger than sigma, Rician noise is about Gaussian with that sigma
    diff = (a.data - clean.data)[clean.data > 20 * sigma]
    assert diff.size > 100
    assert float(diff.std()) == pytest.approx(sigma, rel=0.15)
    assert abs(float(diff.mean())) < 0.2 * sigma
