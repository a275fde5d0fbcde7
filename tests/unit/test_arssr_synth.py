"""The training generator (random deformations, contrasts from tissue maps, bias fields) and the data-consistency
step of single-volume upsampling."""

from __future__ import annotations

import numpy as np
import pytest
from phantom import phantom

from inrsr.arssr.config import Augmentation, TrainConfig
from inrsr.arssr.consistency import enforce_consistency
from inrsr.arssr.data import make_example
from inrsr.arssr.degrade import degrade
from inrsr.arssr.synth import TissueMaps, deformed_coordinates, load_tissue_maps, sample
from inrsr.errors import InputError
from inrsr.io.nifti import save_volume
from inrsr.metrics import psnr, resample_to_grid
from inrsr.volume import Volume


def _tissues(shape=(40, 40, 40)) -> TissueMaps:
    """Three nested 'tissues' with soft (partial-volume) edges."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    r = np.linalg.norm((grid - (np.asarray(shape) - 1) / 2) / (np.asarray(shape) / 2), axis=-1)
    inner = np.clip((0.35 - r) / 0.05 + 0.5, 0, 1)
    middle = np.clip((0.6 - r) / 0.05 + 0.5, 0, 1) - inner
    outer = np.clip((0.85 - r) / 0.05 + 0.5, 0, 1) - inner - middle
    return TissueMaps(np.stack([inner, middle, outer]).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))


def test_deformation_moves_the_crop_smoothly_without_folding():
    shifts, dets = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        size = np.array([30, 30, 40])
        coords = deformed_coordinates(np.zeros(3), size, np.array([1.0, 1.0, 1.5]), rng, Augmentation())
        plain = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij")).astype(np.float32)
        shifts.append(float(np.median(np.linalg.norm(coords - plain, axis=0))))
        jac = np.moveaxis(np.stack([np.stack(np.gradient(c), 0) for c in coords]), (0, 1), (-2, -1))
        dets.append(np.linalg.det(jac))
    assert 0.3 < np.median(shifts) < 8  # it moves, by a few voxels
    assert min(float(d.min()) for d in dets) > 0.05  # a diffeomorphism-like warp: no folding
    assert 0.7 < float(np.median(np.concatenate([d.ravel() for d in dets]))) < 1.3


def test_synthetic_examples_differ_in_contrast_and_keep_anatomy():
    maps = _tissues()
    fg = maps.foreground()
    means = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ex = make_example(maps, None, fg, rng, patch=8, n_queries=128, scale=2.0, axis=None, synth=Augmentation())
        assert ex.lr.shape == (8, 8, 8) and np.isfinite(ex.lr).all() and np.isfinite(ex.target).all()
        assert 0 <= ex.target.min() and ex.target.max() < 1.6
        means.append(float(ex.target.mean()))
    assert np.ptp(means) > 0.05  # the contrast changes from draw to draw


def test_tissue_maps_from_files(tmp_path):
    maps = _tissues((12, 12, 12))
    for k, p in enumerate(maps.probs):
        save_volume(tmp_path / f"p{k}.nii.gz", p, maps.affine)
    loaded = load_tissue_maps([tmp_path / f"p{k}.nii.gz" for k in range(3)])
    np.testing.assert_allclose(loaded.probs, maps.probs, atol=1e-6)
    labels = np.argmax(np.concatenate([1e-3 * np.ones((1, 12, 12, 12)), maps.probs]), axis=0).astype(np.float32)
    save_volume(tmp_path / "seg.nii.gz", labels, maps.affine)
    seg = load_tissue_maps([tmp_path / "seg.nii.gz"])
    assert seg.probs.shape == (len(np.unique(labels)) - 1, 12, 12, 12) and set(np.unique(seg.probs)) == {0.0, 1.0}
    save_volume(tmp_path / "other.nii.gz", maps.probs[0], np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(InputError, match="another grid"):
        load_tissue_maps([tmp_path / "p0.nii.gz", tmp_path / "other.nii.gz"])
    save_volume(tmp_path / "big.nii.gz", 3 * maps.probs[0], maps.affine)
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        load_tissue_maps([tmp_path / "p0.nii.gz", tmp_path / "big.nii.gz"])
    with pytest.raises(InputError, match="integer segmentation"):
        load_tissue_maps([tmp_path / "p0.nii.gz"])


def test_train_config_checks_the_generator_settings():
    with pytest.raises(InputError, match="synth-fraction"):
        TrainConfig(synth_fraction=1.5).check()
    with pytest.raises(InputError, match="noise"):
        TrainConfig(noise_max=-0.1).check()


def test_sampling_outside_is_zero():
    data = np.ones((4, 4, 4), np.float32)
    assert sample(data, np.full((3, 1), 10.0))[0] == 0 and sample(data, np.full((3, 1), 1.5))[0] == 1


def _thick_case(noise: float):
    hr = phantom((36, 36, 36))
    lr = degrade(hr, 4.0, 2, noise=noise, seed=1)
    return hr, lr, resample_to_grid(lr, hr.grid, order=3)


def test_consistency_fits_the_data_and_improves_a_blurred_estimate():
    hr, lr, start = _thick_case(0.0)
    res = enforce_consistency(start, hr.grid, lr, scale=1.0)
    assert res.iterations > 0
    assert res.residual_after < 0.5 * res.residual_before
    inner = np.zeros(hr.shape, bool)
    inner[4:-4, 4:-4, 8:-8] = True
    assert psnr(res.image, hr.data, inner) > psnr(start, hr.data, inner) + 0.5


def test_consistency_stops_at_the_noise_level_and_leaves_the_border_alone():
    hr, lr, start = _thick_case(0.05)
    res = enforce_consistency(start, hr.grid, lr, scale=1.0)
    # the B-spline estimate already fits the noisy data to within its noise: nothing to fit
    assert res.noise == pytest.approx(0.05 * np.percentile(hr.data, 99.9), rel=0.35)
    assert res.iterations <= 1
    # an estimate that is too dark everywhere is brightened inside, but the slices whose PSF leaves the grid do not
    # pull the border up
    hr, lr, start = _thick_case(0.0)
    res = enforce_consistency(0.5 * start, hr.grid, lr, scale=1.0)
    gain = res.image / np.maximum(0.5 * start, 1e-3)
    head = start > 0.2
    assert np.median(gain[:, :, 10:-10][head[:, :, 10:-10]]) > 1.5
    assert float(np.abs(res.image[:, :, :1] - 0.5 * start[:, :, :1]).max()) < 0.1


def test_consistency_keeps_a_perfect_estimate():
    hr = Volume(phantom((32, 32, 32)).data, np.eye(4))
    lr = degrade(hr, 4.0, 2)
    res = enforce_consistency(hr.data, hr.grid, lr, scale=1.0)
    assert psnr(res.image, hr.data) > 40
