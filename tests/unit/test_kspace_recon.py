"""Masks, ESPIRiT, CMRxRecon scoring, the grid evaluation of fields, and the INR reconstruction itself."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from kspace_synth import cine_kspace

from inrsr.encodings import FourierEncoding, HashGridEncoding
from inrsr.errors import InputError
from inrsr.recon import masks as M
from inrsr.recon.api import ReconConfig, build_mask, reconstruct_slice
from inrsr.recon.coils import calibration_block, espirit_maps
from inrsr.recon.model import grid_coords, grid_features, hash_encoding
from inrsr.recon.scoring import crop_box, ranking_array, ranking_slices, score_cine, score_image
from inrsr.recon.solver import fit_slice, zero_filled

NX, NY, NT, NC = 48, 40, 8, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def cine():
    return cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)


def test_challenge_mask_rule():
    lines = M.challenge_lines(246, 8)
    start, stop = M.acs_range(246, 24)
    assert (start, stop) == (111, 135) and lines[start:stop].all()
    assert lines[0] and lines[8] and not lines[1]
    mask = M.lines_to_mask(lines, 512, 12)
    assert mask.shape == (12, 512, 246)
    assert 4.5 < M.effective_accel(mask) < 5.0  # "8x" is about 4.7x effective
    assert M.detect_acs(mask) == (start, stop)
    assert M.regular_step(mask) == 8 and M.nominal_accel(mask) == 8.0


def test_holdout_split_leaves_acs_and_is_disjoint():
    mask = M.lines_to_mask(M.challenge_lines(NY, 4, 8), NX, NT)
    acs = M.detect_acs(mask)
    train, hold = M.holdout_split(mask, acs, 0.1, np.random.default_rng(0))
    assert not (train & hold).any() and ((train | hold) == mask).all()
    assert hold.any() and not hold[:, :, acs[0] : acs[1]].any()
    held_lines = M.sampled_lines(hold)
    assert (hold.sum(axis=1)[held_lines] == NX).all()  # whole lines


def test_espirit_recovers_smooth_coil_maps(cine):
    k, img, maps = cine
    mask = M.lines_to_mask(M.challenge_lines(NY, 4, 12), NX, NT)
    est, eig = espirit_maps(calibration_block(k, mask, M.detect_acs(mask), 24), (NX, NY))
    np.testing.assert_allclose(np.sqrt((np.abs(est) ** 2).sum(0)), 1, atol=1e-5)
    truth = maps / np.sqrt((np.abs(maps) ** 2).sum(0))
    obj = np.abs(img).mean(0) > 0.1
    inner = np.abs((est * truth.conj()).sum(0))  # equal up to a phase per pixel
    assert inner[obj].min() > 0.98


def test_scoring_follows_skimage_with_max_normalisation():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    gt = rng.random((20, 30)) * 5
    pred = gt + 0.3 * rng.random((20, 30))
    s = score_image(gt, pred)
    g, p = gt / gt.max(), pred / pred.max()
    assert s["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=1.0))
    assert s["ssim"] == pytest.approx(structural_similarity(g, p, data_range=1.0))
    assert s["nmse"] == pytest.approx(np.sum((g - p) ** 2) / np.sum(g**2))
    assert score_image(gt, 3 * gt)["nmse"] == pytest.approx(0)  # scale-free
    sx, sy = crop_box(512, 246)
    assert (sx.stop - sx.start, sy.stop - sy.start) == (171, 123)
    # MATLAB's round(sz/2)-1 : round(sz/2), 1-based
    assert ranking_slices(10) == [3, 4] and ranking_slices(11) == [4, 5] and ranking_slices(3) == [0, 1]
    assert ranking_slices(1) == [0] and ranking_slices(2) == [0, 1]
    cine_gt = rng.random((5, 30, 24))
    assert score_cine(cine_gt, cine_gt + 0.01, crop=True)["psnr"] > 30


@pytest.mark.parametrize("order", [None, (2, 0, 1)])
def test_grid_features_equal_the_encoding(order):
    shape = (11, 9, 5)
    torch.manual_seed(0)
    for enc in (
        hash_encoding(shape, 5, 2, 3),
        HashGridEncoding(3, 5, 2, 6, 3, (15, 13, 6)),
        FourierEncoding(3, 8, 1.0),
    ):
        for p in enc.parameters():
            p.data.normal_()
        got = grid_features(enc, shape, order)
        ref = enc(grid_coords(shape).reshape(-1, 3)).reshape(*shape, -1)
        ref = ref.permute(3, *(order or (0, 1, 2)))
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_build_mask_checks_accel_and_shapes(cine):
    k, _, _ = cine
    cfg = ReconConfig(accel=4, acs=8)
    mask, kus, full = build_mask(k, cfg, None, None, None)
    assert full and M.regular_step(mask) == 4
    mask2, _, full2 = build_mask(kus, ReconConfig(), None, None, None)
    assert not full2 and (mask2 == mask).all()
    with pytest.raises(InputError, match="disagrees"):
        build_mask(kus, ReconConfig(accel=8), None, None, None)
    with pytest.raises(InputError, match="disagrees"):
        build_mask(kus, ReconConfig(accel=4), None, None, 8)
    with pytest.raises(InputError, match="fully sampled"):
        build_mask(k, ReconConfig(), None, None, None)


def _psnr(gt, pred):
    return score_cine(gt, pred)["psnr"]


def _r4(k):
    """The cine at R = 4 (12 ACS lines): mask, undersampled k-space, fully sampled and zero-filled RSS images."""
    mask = M.lines_to_mask(M.challenge_lines(NY, 4, 12), NX, NT)
    kus = np.where(mask[:, None], k, 0)
    return mask, kus, zero_filled(torch.from_numpy(k)).numpy(), zero_filled(torch.from_numpy(kus)).numpy()


@pytest.mark.parametrize("accel", [4, 8])
def test_recon_beats_zero_filling(cine, accel):
    k, _, _ = cine
    gt = zero_filled(torch.from_numpy(k)).numpy()
    mask = M.lines_to_mask(M.challenge_lines(NY, accel, 12), NX, NT)
    kus = np.where(mask[:, None], k, 0)
    res = reconstruct_slice(kus, mask, ReconConfig(steps=200, quiet=True, device="cpu"))
    zf = zero_filled(torch.from_numpy(kus)).numpy()
    gain = _psnr(gt, res.image) - _psnr(gt, zf)
    assert gain > (4.0 if accel == 4 else 3.0), gain
    assert res.info["nominal_accel"] == accel and res.info["holdout_lines"] >= 1
    assert 0 < res.info["seconds_per_step"] * res.info["steps_run"] <= res.info["fit_seconds"] * 1.0001
    assert "warning" not in res.info


def test_warns_when_held_out_lines_are_predicted_no_better_than_zero_filling():
    """White-noise k-space: nothing the model learns from some lines predicts the others."""
    rng = np.random.default_rng(0)
    mask = M.lines_to_mask(M.challenge_lines(NY, 4, 12), NX, NT)
    noise = (rng.standard_normal((NT, NC, NX, NY)) + 1j * rng.standard_normal((NT, NC, NX, NY))).astype(np.complex64)
    res = reconstruct_slice(np.where(mask[:, None], noise, 0), mask, ReconConfig(steps=40, quiet=True, device="cpu"))
    assert res.info["best_holdout_nmse"] > 0.95
    assert "no better than zero-filling" in res.info["warning"]


def test_joint_coils_and_single_coil(cine):
    k, _, _ = cine
    mask, kus, gt, zf = _r4(k)
    joint = reconstruct_slice(kus, mask, ReconConfig(steps=100, coils="joint", quiet=True, device="cpu"))
    assert _psnr(gt, joint.image) > _psnr(gt, zf) + 2
    single_k, single_kus = k[:, :1], kus[:, :1]
    single = reconstruct_slice(single_kus, mask, ReconConfig(steps=100, quiet=True, device="cpu"))
    gt1 = zero_filled(torch.from_numpy(single_k)).numpy()
    assert _psnr(gt1, single.image) > _psnr(gt1, zero_filled(torch.from_numpy(single_kus)).numpy()) + 1


def test_holdout_stopping_chooses_a_sensible_step():
    """Run on past the best point: the step chosen by the held-out lines must be close, in its true error (which
    the rule never sees), to the best step in hindsight, and come after the warm-up."""
    k, _, maps = cine_kspace(NX, NY, NT, NC, noise=0.02, seed=3)
    gt = torch.from_numpy(zero_filled(torch.from_numpy(k)).numpy())
    mask = M.lines_to_mask(M.challenge_lines(NY, 4, 12), NX, NT)
    kus = np.where(mask[:, None], k, 0)
    scale = float(zero_filled(torch.from_numpy(kus)).max())
    train, hold = M.holdout_split(mask, M.detect_acs(mask), 0.1, np.random.default_rng(0))
    true_err = []

    def record(step, image):
        true_err.append(float(((image.abs() * scale - gt) ** 2).sum() / (gt**2).sum()))

    torch.manual_seed(0)
    maps_n = (maps / np.sqrt((np.abs(maps) ** 2).sum(0))).astype(np.complex64)
    base = ReconConfig().for_mask(kt=False).fit_settings()
    settings = replace(base, steps=250, patience=1000, lr=3e-2, lr_final=3e-2)
    fit = fit_slice(
        torch.from_numpy(kus) / scale,
        torch.from_numpy(train),
        torch.from_numpy(hold),
        torch.from_numpy(maps_n),
        settings,
        on_step=record,
    )
    oracle = int(np.argmin(true_err))
    assert fit.best_step >= 50 and len(true_err) == 250
    assert true_err[fit.best_step] < 1.15 * true_err[oracle]
    assert true_err[fit.best_step] < 0.1 * true_err[0]


def test_without_held_out_lines_the_weights_stay_fixed_and_every_step_runs(cine, recorded_fits):
    """--holdout 0: nothing tells when to lower the weights or stop, so neither happens."""
    k, _, _ = cine
    mask, kus, gt, zf = _r4(k)
    cfg = ReconConfig(steps=120, patience=5, settle_tol=0.5, holdout=0.0, quiet=True, device="cpu")
    res = reconstruct_slice(kus, mask, cfg)
    assert res.info["holdout_lines"] == 0 and res.info["steps_run"] == 120
    assert set(recorded_fits[0].history["tv_scale"]) == {1.0}
    assert _psnr(gt, res.image) > _psnr(gt, zf) + 3


def test_ranking_array_is_the_challenge_crop_of_the_central_slices():
    nx, ny, nz, nt = 30, 24, 10, 5
    mag = np.arange(nx * ny * nz * nt, dtype=np.float64).reshape(nx, ny, nz, nt)
    got = ranking_array(mag, list(range(nz)), nz)
    sx, sy = crop_box(nx, ny)
    assert got.dtype == np.float32 and got.shape == (10, 12, 2, 3)
    np.testing.assert_array_equal(got, mag[sx, sy][:, :, 3:5, :3])
    # only the ranking slices reconstructed, in another order
    np.testing.assert_array_equal(ranking_array(mag[:, :, [4, 3]], [4, 3], nz), got)
    assert ranking_array(mag[:, :, :1], [0], nz) is None


def test_pixel_tensor_ablation_fits_and_interpolates_around_the_cycle(cine):
    """``encoding="pixel"``: the same loss on a plain pixel tensor (no INR) still reconstructs, and frames between
    the acquired ones are linear interpolation around the cycle."""
    from inrsr.recon.model import CineField

    k, _, _ = cine
    mask, kus, gt, zf = _r4(k)
    res = reconstruct_slice(kus, mask, ReconConfig(steps=200, encoding="pixel", quiet=True, device="cpu"))
    assert _psnr(gt, res.image) > _psnr(gt, zf) + 2
    field = CineField((6, 5, 4), encoding="pixel")
    with torch.no_grad():
        field.pixels.copy_(torch.randn_like(field.pixels))
    acquired, doubled = field.render(), field.render(8)
    torch.testing.assert_close(doubled[0::2], acquired)
    torch.testing.assert_close(doubled[7], (acquired[3] + acquired[0]) / 2)  # the cycle closes on itself


def test_coil_compression_keeps_the_energy_and_still_reconstructs(cine):
    from inrsr.recon.api import compress_coils

    k, _, _ = cine
    mask, kus, gt, zf = _r4(k)
    compressed, kept = compress_coils(kus, 3)
    assert compressed.shape[1] == 3 and 0.95 < kept <= 1.0
    # a unitary projection: the compressed data's energy is the kept share of the original's
    assert np.sum(np.abs(compressed) ** 2) == pytest.approx(kept * np.sum(np.abs(kus) ** 2), rel=1e-3)
    res = reconstruct_slice(kus, mask, ReconConfig(steps=150, virtual_coils=3, quiet=True, device="cpu"))
    # measured: 34.7 dB with 3 of 4 coils (98.5% of the energy), 35.5 dB with all 4, zero-filling 28.0 dB
    assert res.info["virtual_coils"] == 3 and _psnr(gt, res.image) > _psnr(gt, zf) + 5
    with pytest.raises(InputError, match="virtual-coils"):
        ReconConfig(virtual_coils=-1).validate()


def test_the_mask_chooses_the_virtual_coil_count_unless_given():
    """10 coils: 8 virtual coils with the same lines in every frame at R = 4, all 10 at R = 8, 6 under a k-t
    mask, as many as given otherwise (a few steps each: only the compression is checked here)."""
    k, _, _ = cine_kspace(48, 40, 6, 10, seed=0)
    cases = [
        ("uniform", 4, {}, 8),
        ("uniform", 8, {}, 10),
        ("ktUniform", 8, {}, 6),
        ("uniform", 4, {"virtual_coils": 5}, 5),
    ]
    for pattern, accel, given, expected in cases:
        mask = M.pattern_mask(pattern, 48, 40, 6, accel, 8)
        kus = np.where(mask[:, None], k, 0).astype(np.complex64)
        res = reconstruct_slice(kus, mask, ReconConfig(steps=2, quiet=True, device="cpu", **given))
        assert res.info["virtual_coils"] == expected, (pattern, accel, given)


def test_pyramid_reconstructs_and_its_cycle_is_continuous(cine):
    """``encoding="pyramid"`` (the multi-resolution grids summed, no MLP) reconstructs; rendered at twice the frame
    rate, its even frames are the acquired ones (time periodic, every level's vertices around the cycle)."""
    from inrsr.recon.model import CineField

    k, _, _ = cine
    mask, kus, gt, zf = _r4(k)
    res = reconstruct_slice(kus, mask, ReconConfig(steps=200, encoding="pyramid", quiet=True, device="cpu"))
    assert _psnr(gt, res.image) > _psnr(gt, zf) + 4
    field = CineField((6, 5, 4), encoding="pyramid", n_levels=3, base_resolution=(2, 2, 2))
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(torch.randn_like(p))
    acquired, doubled = field.render(), field.render(8)
    torch.testing.assert_close(doubled[0::2], acquired)
    assert not torch.allclose(doubled[1], acquired[0])


def test_tv_stages_lower_too_strong_weights_from_the_held_out_lines(cine):
    """TV weights ten times too strong for this clean R = 4 cine: with ``tv_stages`` the held-out lines ask for
    lower weights, and the image is better than with the weights fixed. The rule never sees the truth."""
    k, _, _ = cine
    mask, kus, gt, _ = _r4(k)
    base = ReconConfig(steps=400, patience=30, tv_space=0.02, tv_time=0.04, holdout=0.1, tv_stages=0, quiet=True,
                       device="cpu")  # fmt: skip
    fixed = reconstruct_slice(kus, mask, base)
    staged = reconstruct_slice(kus, mask, replace(base, tv_stages=3, tv_factor=0.3))
    assert fixed.info["tv_scale"] == 1.0
    assert staged.info["tv_scale"] <= 0.25
    assert _psnr(gt, staged.image) > _psnr(gt, fixed.image) + 1.0


def test_a_weight_ramp_spreads_each_lowering_over_its_steps(cine, recorded_fits):
    """``weight_ramp``: the weights applied reach each lowered factor geometrically over that many steps, and the
    held-out rule still lowers weights ten times too strong."""
    k, _, _ = cine
    mask, kus, gt, _ = _r4(k)
    cfg = ReconConfig(steps=400, patience=30, tv_space=0.02, tv_time=0.04, holdout=0.1, tv_stages=3, tv_factor=0.3,
                      weight_ramp=10, quiet=True, device="cpu")  # fmt: skip
    res = reconstruct_slice(kus, mask, cfg)
    history = recorded_fits[0].history
    first = next(i for i, s in enumerate(history["tv_scale"]) if s < 1)
    ramp = history["weights"][first : first + 11]
    assert ramp[0] == pytest.approx(0.3**0.1, rel=1e-6) and ramp[9] == pytest.approx(0.3, rel=1e-6)
    assert all(b < a for a, b in zip(ramp[:10], ramp[1:10], strict=False)) and ramp[10] == pytest.approx(0.3)
    assert res.info["tv_scale"] <= 0.25


def test_a_stage_that_does_not_help_goes_back_to_the_previous_weights_and_trains_on(recorded_fits):
    """Noisy cine: lowering the weights does not improve the held-out error, so the fit goes back to the previous
    weights (tv_scale 0.3 -> 1) and trains on there for at least ``patience`` steps before it stops."""
    k, _, _ = cine_kspace(NX, NY, NT, NC, noise=0.05, seed=0)
    mask, kus, _, _ = _r4(k)
    res = reconstruct_slice(kus, mask, ReconConfig(steps=400, patience=30, holdout=0.1, llr=0.0, quiet=True,
                                                   device="cpu"))  # fmt: skip
    scales = recorded_fits[0].history["tv_scale"]
    changes = [(i, scales[i]) for i in range(1, len(scales)) if scales[i] != scales[i - 1]]
    assert [s for _, s in changes] == [0.3, 1.0], changes
    back = changes[1][0]
    assert res.info["steps_run"] > back + 30 and res.info["steps_run"] < 400
    assert res.info["tv_scale"] == 1.0
