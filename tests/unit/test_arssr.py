"""The encoder-decoder (ArSSR-style) mode: networks, tiling, alignment, training, checkpoints, shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from phantom import phantom

from inrsr.arssr import default_weights_path
from inrsr.arssr.config import ArchConfig, IntensityNorm, TrainConfig
from inrsr.arssr.data import foreground_voxels, make_example
from inrsr.arssr.degrade import degrade
from inrsr.arssr.encoders import ENCODERS
from inrsr.arssr.infer import load_model, super_resolve, upsample_volume
from inrsr.arssr.inputs import target_grid
from inrsr.arssr.model import ArSSR
from inrsr.arssr.train import _batch, strip_training_state, train_model
from inrsr.errors import InputError
from inrsr.geometry import apply_affine, voxel_grid_world
from inrsr.io.checkpoints import load_checkpoint
from inrsr.io.nifti import load_volume, save_volume
from inrsr.metrics import psnr, resample_to_grid
from inrsr.volume import Volume

DATA = Path(__file__).parents[1] / "data"
TINY = ArchConfig(channels=8, feature_dim=8, blocks=1, depth=2, decoder_width=16, decoder_layers=4)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_shapes_and_receptive_radius(encoder):
    torch.manual_seed(0)
    model = ArSSR(ArchConfig(encoder=encoder, channels=4, feature_dim=5, blocks=2, depth=2))
    x = torch.zeros(1, 1, 31, 31, 31)
    base = model.encode(x)
    assert base.shape == (1, 5, 31, 31, 31)
    x[0, 0, 15, 15, 15] = 1.0
    changed = (model.encode(x) - base).abs().sum(dim=(0, 1)) > 1e-7
    reach = np.abs(np.argwhere(changed.numpy()) - 15).max()
    assert 0 < reach <= model.receptive_radius


def test_tiles_agree_with_one_pass():
    torch.manual_seed(0)
    model = ArSSR(TINY)
    torch.nn.init.normal_(model.decoder.out.weight, std=0.1)
    rng = np.random.default_rng(0)
    vol = Volume(rng.random((24, 20, 14)).astype(np.float32) + 0.5, np.diag([2.0, 2.0, 3.0, 1.0]))
    grid = target_grid(vol, scale="2,2.5,1.5")
    tiled, _ = upsample_volume(model, vol, grid, lr_tile=6)
    whole, _ = upsample_volume(model, vol, grid, lr_tile=100)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def _ramp_volume() -> Volume:
    affine = np.array([[0.0, 0.0, 3.0, 10.0], [2.0, 0.0, 0.0, -20.0], [0.0, -2.0, 0.0, 5.0], [0, 0, 0, 1.0]])
    world = voxel_grid_world((20, 18, 12), affine)
    data = 100 + 2.0 * world[..., 0] + 1.0 * world[..., 1] - 0.5 * world[..., 2]
    return Volume(data.astype(np.float32), affine, "ramp")


def _interior(vol: Volume, grid) -> np.ndarray:
    """Output voxels at least one input voxel inside the input's outer voxel centres."""
    src = apply_affine(np.linalg.solve(vol.affine, grid.affine), np.argwhere(np.ones(grid.shape, bool)))
    return np.all((src >= 1) & (src <= np.asarray(vol.shape) - 2), axis=1).reshape(grid.shape)


@pytest.mark.parametrize("scale", ["2.5", "1,1,4", "like"])
def test_linear_ramp_keeps_its_position(scale):
    """With the decoder at zero (its initial state) the model is trilinear interpolation, which reproduces a
    linear ramp exactly: any half-voxel shift or axis mix-up in the output geometry would show here."""
    vol = _ramp_volume()
    if scale == "like":
        from inrsr.geometry import Grid
        from inrsr.simulate import rotation_matrix

        affine = np.eye(4)  # an oblique reference grid, rotated against the input's axes
        affine[:3, :3] = rotation_matrix((10, -5, 20)) * 1.3
        affine[:3, 3] = apply_affine(vol.affine, np.array(vol.shape) / 2) - affine[:3, :3] @ np.full(3, 12.0)
        grid = target_grid(vol, like=Grid(shape=(24, 24, 24), affine=affine))
    else:
        grid = target_grid(vol, scale=scale)
    out, _ = upsample_volume(ArSSR(TINY), vol, grid)
    world = voxel_grid_world(grid.shape, grid.affine)
    truth = 100 + 2.0 * world[..., 0] + 1.0 * world[..., 1] - 0.5 * world[..., 2]
    inner = _interior(vol, grid)
    assert inner.sum() > 100
    np.testing.assert_allclose(out[inner], truth[inner], atol=2e-3)


def test_shipped_model_keeps_a_ramp_in_place():
    """A ramp rising along a world axis and its mirror falling along it: a shift of the output by d mm changes
    their mean errors by -2d and +2d, an intensity bias changes both alike, so the shift can be measured."""
    vol = _ramp_volume()
    world_in = voxel_grid_world(vol.shape, vol.affine)
    grid = target_grid(vol, scale="2")
    world = voxel_grid_world(grid.shape, grid.affine)
    inner = _interior(vol, grid)
    model = load_model()[0]
    for axis in range(3):
        errors = []
        for sign in (1.0, -1.0):
            ramp = Volume((100 + sign * 2.0 * world_in[..., axis]).astype(np.float32), vol.affine)
            out, _ = upsample_volume(model, ramp, grid)
            errors.append(np.mean(out[inner] - (100 + sign * 2.0 * world[inner][:, axis])))
        shift_mm = (errors[1] - errors[0]) / 4
        assert abs(shift_mm) < 0.1, (axis, shift_mm)


def test_output_grid_geometry():
    vol = Volume(np.ones((10, 12, 8), np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    grid = target_grid(vol, scale="1,1,4")
    assert grid.shape == (10, 12, 32)
    np.testing.assert_allclose(grid.spacing, [2.0, 2.0, 1.25])
    centre_in = apply_affine(vol.affine, (np.array(vol.shape) - 1) / 2)
    centre_out = apply_affine(grid.affine, (np.array(grid.shape) - 1) / 2)
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)
    with pytest.raises(InputError, match="scale"):
        target_grid(vol, scale="0")
    with pytest.raises(InputError, match="exactly one"):
        target_grid(vol, scale="2", spacing="1")


def test_intensity_norm_definition():
    data = np.concatenate([np.zeros(1000), np.linspace(10, 110, 1001)]).astype(np.float32)
    norm = IntensityNorm.from_data(data)
    assert norm.low == 0.0
    assert norm.high == pytest.approx(np.percentile(np.linspace(10, 110, 1001), 99.5))
    np.testing.assert_allclose(norm.inverse(norm.forward(data)), data, rtol=1e-6, atol=1e-4)


def test_degradations_use_the_shared_psf():
    hr = phantom((40, 40, 40))
    iso = degrade(hr, 2.5)
    np.testing.assert_allclose(iso.spacing, 2.5)
    thick = degrade(hr, 4.0, axis=1)
    np.testing.assert_allclose(thick.spacing, [1.0, 4.0, 1.0])
    assert thick.shape == (40, 10, 40)
    # the decoder's scale input is low-res over high-res voxel size per axis, also for anisotropic high-res input
    aniso = Volume(hr.data, np.diag([1.0, 1.0, 2.0, 1.0]))
    norm, fg, rng = IntensityNorm.from_data(aniso.data), foreground_voxels(aniso), np.random.default_rng(0)
    for scale, axis, expected in ((3.0, 2, [1, 1, 3]), (3.0, None, [3, 3, 1.5])):
        ex = make_example(aniso, norm, fg, rng, patch=6, n_queries=16, scale=scale, axis=axis, augment=False)
        np.testing.assert_allclose(ex.scale, expected, rtol=1e-6)
        assert ex.lr.shape == (6, 6, 6)


def test_training_lowers_the_loss():
    hr = phantom((40, 40, 40))
    norm, fg = IntensityNorm.from_data(hr.data), foreground_voxels(hr)
    rng = np.random.default_rng(0)
    examples = [make_example(hr, norm, fg, rng, patch=8, n_queries=256) for _ in range(4)]
    torch.manual_seed(0)
    model = ArSSR(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lr, coords, target, scale = _batch(examples, torch.device("cpu"))
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.l1_loss(model(lr, coords, scale), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.85 * losses[0]


def test_checkpoint_round_trip_resume_and_strip(tmp_path):
    hr = phantom((36, 36, 36))
    save_volume(tmp_path / "hr.nii.gz", hr.data, hr.affine)
    cfg = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch=8, queries=64, val_patches=2, arch=TINY)
    ckpt = tmp_path / "m.pt"
    train_model([tmp_path], ckpt, cfg, device="cpu", quiet=True)
    payload = load_checkpoint(ckpt, kind="arssr")
    assert payload["metadata"]["training"]["epoch"] == 1
    assert "val_psnr_db" in payload["metadata"]["training"]["history"][0]
    assert payload["metadata"]["intensity"]["high_percentile"] == 99.5
    model, _ = load_model(ckpt)
    # resume continues the epochs from the stored state
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 2})
    train_model([tmp_path / "hr.nii.gz"], ckpt, cfg2, device="cpu", resume=True, quiet=True)
    assert load_checkpoint(ckpt)["metadata"]["training"]["epoch"] == 2
    stripped = tmp_path / "weights.pt"
    strip_training_state(ckpt, stripped)
    assert not any(k.startswith("optim.") for k in load_checkpoint(stripped)["state_dict"])
    resumed, _ = load_model(ckpt)
    again, _ = load_model(stripped)
    for a, b in zip(resumed.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(InputError, match="no training state"):
        train_model([tmp_path / "hr.nii.gz"], stripped, cfg2, device="cpu", resume=True, quiet=True)


def test_incompatible_checkpoints_are_refused(tmp_path):
    from inrsr.io.checkpoints import save_checkpoint

    model = ArSSR(TINY)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "future.pt", "arssr", state, model.metadata() | {"model_version": 99})
    with pytest.raises(InputError, match="version 99"):
        load_model(tmp_path / "future.pt")
    save_checkpoint(tmp_path / "fit.pt", "fit", state, {})
    with pytest.raises(InputError, match="expected 'arssr'"):
        load_model(tmp_path / "fit.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an inrsr checkpoint"):
        load_model(tmp_path / "other.pt")


def test_shipped_weights_load_safely_and_beat_bspline():
    """On a crop held out from training. The crop is degraded on its own, so the PSF reads zeros past its edges
    (a dark rim no real scan has): the metric leaves out a rim of ``RIM`` voxels."""
    path = Path(str(default_weights_path()))
    assert path.stat().st_size < 10e6
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["kind"] == "arssr" and not any(k.startswith("optim.") for k in payload["state_dict"])
    model, _ = load_model()
    hr = load_volume(DATA / "mni_heldout_crop.nii.gz")  # never seen in training (docs/model_card.md)
    mask = np.zeros(hr.shape, bool)
    mask[RIM:-RIM, RIM:-RIM, RIM:-RIM] = True
    mask &= hr.data > 0
    gains = {}
    cases = (("x2", 2.0, None, 0.0), ("x4 through-plane", 4.0, 2, 0.0), ("noisy", 4.0, 2, 0.02))
    for name, scale, axis, noise in cases:
        lr = degrade(hr, scale, axis, noise=noise, seed=3)
        sr, _, dc = super_resolve(model, lr, hr.grid)  # the default: network + data consistency
        spline = resample_to_grid(lr, hr.grid, order=3)
        gains[name] = psnr(sr, hr.data, mask) - psnr(spline, hr.data, mask)
        assert dc.residual_after <= dc.residual_before
    # measured with the shipped weights: +4.6 dB at x2, +1.6 dB at x4 through-plane, +1.2 dB with 2% noise
    assert gains["x2"] > 3.5 and gains["x4 through-plane"] > 1.0 and gains["noisy"] > 0.6, gains


RIM = 6
