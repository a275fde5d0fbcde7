"""Metrics against scikit-image's own implementations, and world-space resampling on known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from inrsr.errors import InputError
from inrsr.geometry import Grid, apply_affine, voxel_grid_world
from inrsr.metrics import compare_volumes, nrmse, psnr, resample_to_grid, ssim
from inrsr.volume import Volume


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth reference, a noisy blurred prediction and a ball mask, 20 x 22 x 18 voxels."""
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.random((20, 22, 18)), 2.0) * 3.0 + 1.0
    pred = ndimage.gaussian_filter(ref, 1.0) + rng.normal(0, 0.02, ref.shape)
    idx = np.indices(ref.shape).astype(float)
    centre = (np.asarray(ref.shape, dtype=float) - 1) / 2
    mask = np.sum((idx - centre[:, None, None, None]) ** 2, axis=0) < 8.0**2
    return pred, ref, mask


def test_psnr_matches_skimage(pair):
    pred, ref, mask = pair
    rng_all = ref.max() - ref.min()
    assert psnr(pred, ref) == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=rng_all), rel=1e-12)
    rng_in = ref[mask].max() - ref[mask].min()
    expected = peak_signal_noise_ratio(ref[mask], pred[mask], data_range=rng_in)
    assert psnr(pred, ref, mask) == pytest.approx(expected, rel=1e-12)
    assert psnr(ref, ref, mask) == math.inf


def test_nrmse_matches_skimage_euclidean(pair):
    pred, ref, mask = pair
    assert nrmse(pred, ref) == pytest.approx(
        normalized_root_mse(ref, pred, normalization="euclidean"), rel=1e-12
    )
    expected = normalized_root_mse(ref[mask], pred[mask], normalization="euclidean")
    assert nrmse(pred, ref, mask) == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_skimage(pair):
    pred, ref, mask = pair
    rng_all = ref.max() - ref.min()
    _, smap = structural_similarity(ref, pred, data_range=rng_all, full=True, gaussian_weights=False)
    # No mask: the full map averaged over the whole volume.
    assert ssim(pred, ref) == pytest.approx(smap.mean(), rel=1e-12)
    # A mask that drops the 3-voxel border gives scikit-image's own mean (which crops that border), with the
    # data range taken inside the mask.
    interior = np.zeros(ref.shape, dtype=bool)
    interior[3:-3, 3:-3, 3:-3] = True
    rng_interior = ref[interior].max() - ref[interior].min()
    mssim = structural_similarity(ref, pred, data_range=rng_interior, gaussian_weights=False)
    assert ssim(pred, ref, interior) == pytest.approx(mssim, rel=1e-12)
    # With a mask, the data range comes from the reference inside the mask.
    rng_in = ref[mask].max() - ref[mask].min()
    _, smap_in = structural_similarity(ref, pred, data_range=rng_in, full=True, gaussian_weights=False)
    assert ssim(pred, ref, mask) == pytest.approx(smap_in[mask].mean(), rel=1e-12)
    assert ssim(ref, ref, mask) == pytest.approx(1.0)


def test_metrics_reject_bad_input(pair):
    pred, ref, mask = pair
    with pytest.raises(InputError, match="shape"):
        psnr(pred[:-1], ref)
    with pytest.raises(InputError, match="empty"):
        ssim(pred, ref, np.zeros_like(mask))
    with pytest.raises(InputError, match="data range 0"):
        psnr(pred, np.ones_like(ref))
    with pytest.raises(InputError, match="at least 7"):
        ssim(pred[:, :, :5], ref[:, :, :5])


def _smooth_volume(shape=(16, 14, 12), seed=1) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5).astype(np.float32)


OBLIQUE = np.array(
    [[0.9, 0.2, 0.0, -10.0], [-0.1, 1.1, 0.3, 5.0], [0.05, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]],
    dtype=np.float64,
)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_onto_own_grid_is_identity(order):
    vol = Volume(_smooth_volume(), OBLIQUE)
    out = resample_to_grid(vol, vol.grid, order=order)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vol.data)
    # A grid off by a hair takes the interpolating path and still gives the data back, edge voxels included
    # (scipy's mode="constant" would zero the voxels that land a hair beyond the last voxel centre).
    affine = OBLIQUE.copy()
    affine[:3, 3] += 1e-5
    nudged = resample_to_grid(vol, Grid(shape=vol.shape, affine=affine), order=order)
    np.testing.assert_allclose(nudged, vol.data, atol=1e-4)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_resample_onto_integer_shifted_grid_is_a_shift(order):
    data = _smooth_volume()
    vol = Volume(data, OBLIQUE)
    shift = np.array([2, -3, 1])  # the output's voxel (i, j, k) is the input's (i, j, k) + shift
    affine = OBLIQUE.copy()
    affine[:3, 3] = apply_affine(OBLIQUE, shift)
    out = resample_to_grid(vol, Grid(shape=vol.shape, affine=affine), order=order)
    expected = np.zeros_like(data)
    expected[:-2, 3:, :-1] = data[2:, :-3, 1:]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_resample_matches_map_coordinates_on_an_oblique_finer_grid():
    data = _smooth_volume()
    vol = Volume(data, OBLIQUE)
    grid = Grid(
        shape=(19, 17, 21), affine=np.array([[0.7, 0, 0, -12], [0, 0.8, 0, 4], [0, 0, 1.3, 2], [0, 0, 0, 1]])
    )
    out = resample_to_grid(vol, grid, order=3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=-1)
    src = apply_affine(np.linalg.inv(OBLIQUE) @ grid.affine, idx)
    expected = ndimage.map_coordinates(
        data.astype(np.float64), np.moveaxis(src, -1, 0), order=3, mode="mirror"
    )
    inside = np.all((src >= -0.5) & (src <= np.asarray(data.shape) - 0.5), axis=-1)
    assert 0.2 < inside.mean() < 1.0  # the test covers both inside and outside the field of view
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-5)
    assert np.all(out[~inside] == 0)


def test_resample_rejects_bad_order():
    vol = Volume(_smooth_volume(), np.eye(4))
    with pytest.raises(InputError, match="order"):
        resample_to_grid(vol, vol.grid, order=2)


def test_compare_volumes_same_grid(pair):
    pred, ref, mask = pair
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    result = compare_volumes(
        Volume(pred, affine), Volume(ref, affine), Volume(mask.astype(np.float32), affine)
    )
    p32, r32 = pred.astype(np.float32), ref.astype(np.float32)
    assert result["resampled"] is False
    assert result["n_voxels_in_mask"] == int(mask.sum())
    assert result["data_range"] == pytest.approx(float(r32[mask].max() - r32[mask].min()))
    assert result["psnr_db"] == pytest.approx(psnr(p32, r32, mask))
    assert result["ssim"] == pytest.approx(ssim(p32, r32, mask))
    assert result["nrmse"] == pytest.approx(nrmse(p32, r32, mask))
    no_mask = compare_volumes(Volume(pred, affine), Volume(ref, affine), None)
    assert no_mask["n_voxels_in_mask"] == ref.size


def _smooth_function(world: np.ndarray) -> np.ndarray:
    x, y, z = np.moveaxis(world, -1, 0)
    return (2.0 + np.sin(0.3 * x) + np.cos(0.25 * y) + 0.5 * np.sin(0.2 * z + 0.4 * x)).astype(np.float32)


def test_compare_volumes_resamples_pred_and_mask(pair):
    _, texture, mask = pair
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    # pred and the mask on a 2x finer grid covering the same field of view: each reference voxel centre lies
    # halfway between two fine voxel centres along every axis, so pred must really be interpolated.
    fine = np.diag([0.5, 0.5, 0.75, 1.0])
    fine[:3, 3] = [-0.25, -0.25, -0.375]
    fine_shape = tuple(2 * n for n in texture.shape)
    pred_fine = _smooth_function(voxel_grid_world(fine_shape, fine))
    pred = _smooth_function(voxel_grid_world(texture.shape, affine))
    ref = pred + 0.2 * (texture - texture.mean())
    mask_fine = np.repeat(np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1), 2, axis=2).astype(np.uint8)

    result = compare_volumes(Volume(pred_fine, fine), Volume(ref, affine), Volume(mask_fine, fine))
    same = compare_volumes(Volume(pred, affine), Volume(ref, affine), Volume(mask.astype(np.float32), affine))
    assert result["resampled"] is True and same["resampled"] is False
    # Nearest neighbour brings the upsampled mask back exactly; cubic B-splines bring back the smooth pred.
    assert result["n_voxels_in_mask"] == int(mask.sum())
    assert result["data_range"] == same["data_range"]
    assert result["psnr_db"] == pytest.approx(same["psnr_db"], abs=0.05)
    assert result["ssim"] == pytest.approx(same["ssim"], abs=5e-4)
    assert result["nrmse"] == pytest.approx(same["nrmse"], rel=1e-2)


def test_compare_volumes_rejects_disjoint_fields_of_view(pair):
    pred, ref, _ = pair
    far = np.eye(4)
    far[0, 3] = 500.0
    with pytest.raises(InputError, match="do not overlap"):
        compare_volumes(Volume(pred, far, name="pred.nii.gz"), Volume(ref, np.eye(4), name="ref.nii.gz"))
