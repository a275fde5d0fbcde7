"""The k-t regularisation of ``recon``: the locally low-rank term, the ACS motion weights, and the settings chosen by
the mask."""

import numpy as np
import pytest
import torch
from kspace_synth import cine_kspace

from inrsr.errors import InputError
from inrsr.recon import masks as M
from inrsr.recon.api import ReconConfig, reconstruct_slice
from inrsr.recon.config import FIXED_LINE_LOW_SETTINGS, FIXED_LINE_SETTINGS, KT_SETTINGS
from inrsr.recon.loss import LocallyLowRank
from inrsr.recon.scoring import score_cine
from inrsr.recon.solver import motion_weight, zero_filled

NX, NY, NT, NC = 48, 40, 8, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def _llr(x: torch.Tensor, block: int, shift: tuple[int, int], weight=None, eps: float = 1e-12):
    """The term's value at a complex cine ``x (t, x, y)`` and its gradient as a complex cine."""
    planes = torch.stack([x.real, x.imag])
    grad = torch.zeros_like(planes)
    term = LocallyLowRank(block, weight, eps)
    term.shift, term.strength = shift, 1.0
    value = term.cine(planes, grad)
    assert value == pytest.approx(term.value)
    return value, torch.complex(grad[0], grad[1])


def test_llr_of_a_rank_one_cine_is_the_sum_of_its_block_norms():
    """A separable cine ``a(x, y) b(t)`` has rank 1 in every block: each nuclear norm is the block's Frobenius
    norm. A second, independent component adds to it; a weight scales it."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 12, dtype=torch.complex64, generator=g)
    b = torch.randn(5, dtype=torch.complex64, generator=g)
    x = b[:, None, None] * a[None]
    shift = (1, 3)
    blocks = torch.roll(a, shift, dims=(0, 1)).reshape(4, 4, 3, 4).permute(0, 2, 1, 3).reshape(12, 16)
    expected = float(blocks.abs().pow(2).sum(1).sqrt().sum() * b.abs().pow(2).sum().sqrt()) / x.numel()
    assert _llr(x, 4, shift)[0] == pytest.approx(expected, rel=2e-3)  # float32 eigenvalues near 0
    assert _llr(x, 4, shift, weight=torch.full((16, 12), 2.0))[0] == pytest.approx(2 * expected, rel=2e-3)
    c = torch.randn(5, 16, 12, dtype=torch.complex64, generator=g)
    assert _llr(x + 0.3 * c, 4, shift)[0] > _llr(x, 4, shift)[0] + 0.1 * expected


def test_llr_of_a_cine_smaller_than_a_block_is_zero():
    value, grad = _llr(torch.randn(3, 5, 6, dtype=torch.complex64), 8, (1, 2))
    assert value == 0.0 and not grad.any()


@pytest.mark.parametrize("ny", [16, 18])  # 18: two columns beyond the last whole block, without gradient
def test_llr_gradient_is_that_of_the_singular_values(ny):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 12, ny, dtype=torch.complex128, generator=g)
    weight = torch.rand(x.shape[1:], dtype=torch.float64, generator=g)
    value, grad = _llr(x, 4, (1, 2), weight=weight, eps=0.0)
    ref = x.clone().requires_grad_(True)
    p = torch.roll(ref, (1, 2), dims=(1, 2))[:, :, :16].reshape(6, 3, 4, 4, 4).permute(1, 3, 2, 4, 0)
    w = torch.roll(weight, (1, 2), dims=(0, 1))[:, :16].reshape(3, 4, 4, 4).mean((1, 3)).reshape(-1)
    nuc = torch.linalg.svdvals(p.reshape(-1, 16, 6)).sum(-1)
    loss = (nuc * w).sum() / x.numel()
    loss.backward()
    assert value == pytest.approx(float(loss.detach()), rel=1e-9)
    torch.testing.assert_close(grad, ref.grad, rtol=1e-6, atol=1e-9)


def test_motion_weight_relaxes_where_the_heart_beats():
    """From the ACS lines only: low weight on the beating blood pool, about 1 on the static anatomy."""
    k, img, maps = cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)
    mask = M.lines_to_mask(M.challenge_lines(NY, 8, 12), NX, NT)
    w = motion_weight(
        torch.from_numpy(k), torch.from_numpy(mask), torch.from_numpy(maps), M.detect_acs(mask), scale=0.03
    ).numpy()
    dev = np.abs(img - img.mean(0)).max(0)
    moving, static = dev > 0.1, (dev < 0.01) & (np.abs(img).mean(0) > 0.2)
    assert moving.sum() > 50 and static.sum() > 500
    assert w[moving].mean() < 0.3 and w[static].mean() > 0.85
    empty = mask.copy()
    empty[1::2] = False  # frames without samples say nothing of motion
    w2 = motion_weight(
        torch.from_numpy(k), torch.from_numpy(empty), torch.from_numpy(maps), M.detect_acs(mask), scale=0.03
    ).numpy()
    assert w2[moving].mean() < 0.4 and w2[static].mean() > 0.85
    assert not M.changes_per_frame(empty) and M.changes_per_frame(M.pattern_mask("ktUniform", NX, NY, NT, 8, 12))


def test_settings_are_chosen_by_the_mask_unless_given():
    assert ReconConfig().for_mask(kt=True).llr == KT_SETTINGS["llr"] > 0
    assert ReconConfig().for_mask(kt=False).llr == FIXED_LINE_SETTINGS["llr"] == 0
    assert ReconConfig().for_mask(kt=False).tv_factor == FIXED_LINE_SETTINGS["tv_factor"]
    # the same lines in every frame at low acceleration: the low-rank term on, the other settings as at high R
    low = ReconConfig().for_mask(kt=False, accel=4.0)
    assert low.llr == FIXED_LINE_LOW_SETTINGS["llr"] > 0 and low.tv_factor == FIXED_LINE_SETTINGS["tv_factor"]
    assert ReconConfig().for_mask(kt=False, accel=5.0).llr == 0 and ReconConfig().for_mask(kt=True, accel=4.0).llr > 0
    # the same lines in every frame: 8 virtual coils at R <= 4, every coil above (0: no compression); k-t: 6
    assert low.virtual_coils == FIXED_LINE_LOW_SETTINGS["virtual_coils"] == 8
    assert ReconConfig().for_mask(kt=False, accel=8.0).virtual_coils == FIXED_LINE_SETTINGS["virtual_coils"] == 0
    assert ReconConfig().for_mask(kt=True, accel=4.0).virtual_coils == KT_SETTINGS["virtual_coils"]
    assert ReconConfig(virtual_coils=0).for_mask(kt=False, accel=4.0).virtual_coils == 0  # given: kept
    given = ReconConfig(llr=0.5, acs_motion=0.0, tv_factor=0.2).for_mask(kt=True)
    assert (given.llr, given.acs_motion, given.tv_factor) == (0.5, 0.0, 0.2)
    for bad, match in (
        ({"llr": -1.0}, "--llr"),
        ({"acs_motion": -0.1}, "--acs-motion"),
        ({"llr_race": 1.5}, "--llr-race"),
        ({"race_steps": 0}, "--race-steps"),
        ({"lr_decay": 0.0}, "--lr-decay"),
    ):
        with pytest.raises(InputError, match=match):
            ReconConfig(**bad).validate()


def test_kt_settings_beat_the_fixed_line_settings_under_a_kt_mask():
    """ktUniform 8x on the small cine, two draws: the low-rank term with motion weights scores higher on average
    than the settings kept for masks with the same lines in every frame (the truth is used only to score)."""
    gains = []
    for seed in (0, 1):
        k, _, _ = cine_kspace(NX, NY, NT, NC, noise=0.002, seed=seed)
        gt = zero_filled(torch.from_numpy(k)).numpy()
        mask = M.pattern_mask("ktUniform", NX, NY, NT, 8, 12)
        kus = np.where(mask[:, None], k, 0)
        kt = reconstruct_slice(kus, mask, ReconConfig(steps=300, quiet=True, device="cpu"))
        fixed = reconstruct_slice(kus, mask, ReconConfig(steps=300, quiet=True, device="cpu", **FIXED_LINE_SETTINGS))
        chosen = ("llr", "acs_motion", "tv_factor")
        assert tuple(kt.info[name] for name in chosen) == tuple(KT_SETTINGS[name] for name in chosen)
        assert fixed.info["llr"] == 0
        gains.append(score_cine(gt, kt.image)["psnr"] - score_cine(gt, fixed.image)["psnr"])
    assert np.mean(gains) > 0.5, gains


def test_llr_every_n_steps_evaluates_the_term_on_those_steps_n_times_as_strong(monkeypatch, recorded_fits):
    """``llr_every = 2``: the low-rank term on steps 0, 2, 4 only, twice as strong; the first step's loss is the
    every-step loss plus one more times the term (same start, same block shift)."""
    k, _, _ = cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)
    mask = M.pattern_mask("ktUniform", NX, NY, NT, 4, 12)
    kus = np.where(mask[:, None], k, 0)
    calls, real_cine = [], LocallyLowRank.cine

    def counted_cine(self, x, grad):
        value = real_cine(self, x, grad)
        calls.append(self.value)
        return value

    monkeypatch.setattr(LocallyLowRank, "cine", counted_cine)
    for every in (1, 2):
        reconstruct_slice(kus, mask, ReconConfig(steps=6, llr_every=every, quiet=True, device="cpu"))
    assert len(calls) == 6 + 3
    first_every_step, first_every_other = recorded_fits[0].history["loss"][0], recorded_fits[1].history["loss"][0]
    assert calls[6] == pytest.approx(calls[0], rel=1e-6)
    weight = KT_SETTINGS["llr"]
    assert first_every_other - first_every_step == pytest.approx(weight * calls[0], rel=1e-2)  # float32 loss


def test_batched_eigh_splits_over_threads_with_the_same_result():
    from inrsr.recon.loss import batched_eigh

    g = torch.Generator().manual_seed(0)
    p = torch.complex(torch.randn(37, 9, 5, generator=g), torch.randn(37, 9, 5, generator=g))
    gram = p.mH @ p
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        lam, vec = batched_eigh(gram)
    finally:
        torch.set_num_threads(threads)
    ref_lam, _ = torch.linalg.eigh(gram)
    torch.testing.assert_close(lam, ref_lam)
    torch.testing.assert_close(vec @ torch.diag_embed(lam).to(vec.dtype) @ vec.mH, gram, rtol=1e-4, atol=1e-4)


def test_the_race_of_low_rank_factors_resumes_from_the_winner_exactly():
    """From the first lowering of the weights each raced factor runs from the same saved state (field, Adam's
    moments and rate, schedule, history, the block shifts' generator). Racing the factor the TV weights use
    against itself must then give the fit without a race, to the bit; racing another factor keeps the branch with
    the lower held-out error and only its steps in the history."""
    k, _, _ = cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)
    mask = M.pattern_mask("ktUniform", NX, NY, NT, 8, 12)
    kus = np.where(mask[:, None], k, 0)
    base = {"steps": 160, "patience": 10, "race_steps": 12, "quiet": True, "device": "cpu"}
    plain = reconstruct_slice(kus, mask, ReconConfig(**base))
    same = reconstruct_slice(kus, mask, ReconConfig(llr_race=KT_SETTINGS["tv_factor"], **base))
    assert plain.info["llr_factor"] is None and same.info["llr_factor"] == pytest.approx(KT_SETTINGS["tv_factor"])
    first, second = same.info["llr_race_holdout"]
    assert first == second
    np.testing.assert_array_equal(same.image, plain.image)
    assert same.info["steps_run"] == plain.info["steps_run"]
    other = reconstruct_slice(kus, mask, ReconConfig(llr_race=0.5, **base))
    scores = other.info["llr_race_holdout"]
    assert len(scores) == 2 and scores[0] != scores[1]
    assert other.info["llr_factor"] == pytest.approx((KT_SETTINGS["tv_factor"], 0.5)[int(np.argmin(scores))])
    assert other.info["best_holdout_nmse"] <= min(scores) + 1e-12


def test_the_learning_rate_is_constant_unless_a_decay_is_given(monkeypatch):
    """The rate the solver is given: constant by default under every mask, falling to ``--lr-decay`` times itself
    at the step cap when given, and 3x by default when frames between the acquired ones are rendered."""
    from inrsr.recon import solver

    k, _, _ = cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)
    given, real = [], solver.fit_slice
    monkeypatch.setattr(solver, "fit_slice", lambda *a, **kw: given.append(a[4]) or real(*a, **kw))
    cases = [("uniform", 4, {}), ("uniform", 8, {}), ("ktUniform", 4, {}), ("uniform", 8, {"lr_decay": 0.5})]
    cases += [("uniform", 8, {"frames": 2 * NT}), ("uniform", 8, {"frames": 2 * NT, "lr_decay": 1.0})]
    reported = []
    for pattern, accel, options in cases:
        mask = M.pattern_mask(pattern, NX, NY, NT, accel, 12)
        config = ReconConfig(steps=2, quiet=True, device="cpu", **options)
        reported.append(reconstruct_slice(np.where(mask[:, None], k, 0), mask, config).info["lr_decay"])
    assert [s.lr_final / s.lr for s in given] == pytest.approx([1.0, 1.0, 1.0, 0.5, 1 / 3, 1.0])
    assert reported == pytest.approx([s.lr_final / s.lr for s in given])  # the report says which rate was used
