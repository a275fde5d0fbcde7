"""Motion correction, robust statistics and the automatic weight of `fit`, on a small textured phantom with
known simulated motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from phantom import phantom
from scipy import ndimage

from inrsr import geometry
from inrsr.config import FitConfig, Motion
from inrsr.fit import fit_stacks
from inrsr.fit.register import register_stack
from inrsr.fit.stacks import foreground
from inrsr.io.nifti import load_volume
from inrsr.metrics import psnr
from inrsr.render import render
from inrsr.simulate import simulate_stack
from inrsr.volume import Volume

SHAPE = (44, 44, 44)


def textured(spacing_mm: float) -> Volume:
    """The test phantom with a smooth texture inside the head, so registration has something to lock onto."""
    base = phantom(SHAPE, spacing_mm)
    rng = np.random.default_rng(5)
    texture = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    texture = 0.25 * texture / np.abs(texture).max()
    data = np.where(base.data > 0, base.data + texture, 0).astype(np.float32)
    return Volume(data, base.affine, "textured phantom")


@pytest.fixture(scope="module")
def hr() -> Volume:
    return textured(1.0)


def stacks_of(hr: Volume, noise: float = 0.01, thickness: float = 3.0, **motion) -> list[Volume]:
    out = []
    for i, (axis, rot) in enumerate(zip((2, 1, 0), [(5, 0, 3), (0, -4, 6), (7, 3, 0)], strict=True)):
        kw = {k: (v[i] if k == "motion_stack" else v) for k, v in motion.items()}
        if kw.get("motion_stack") is None:
            kw.pop("motion_stack", None)
        out.append(simulate_stack(hr, axis, thickness, rotation_deg=rot, noise=noise, seed=i, **kw))
    return out


def centre(hr: Volume) -> np.ndarray:
    return geometry.apply_affine(hr.affine, (np.asarray(hr.shape) - 1) / 2)


def mean_pose_error(stacks: list[Volume], poses) -> tuple[float, float]:
    errs = []
    for i, s in enumerate(stacks):
        truth = s.meta["motion"].slice_to_object() if "motion" in s.meta else [np.eye(4)] * s.shape[s.slice_axis]
        pts = geometry.apply_affine(s.affine, np.argwhere(s.data > 0.1)[::7])
        for k, t in enumerate(truth):
            errs.append(geometry.rigid_difference(np.eye(4) if poses is None else poses[i][k], t, pts))
    e = np.mean(errs, axis=0)
    return float(e[0]), float(e[1])


def test_stack_registration_recovers_a_known_transform():
    """Mutual-information registration to the reference stack, refined against the reconstruction, on a crop of
    real anatomy (tests/data)."""
    hr = load_volume(Path(__file__).parent.parent / "data" / "mni_heldout_crop.nii.gz")
    motion = [None, (4.0, -3.0, 5.0, 2.5, -2.0, 3.0), (-3.0, 4.0, -2.0, -2.0, 3.0, 2.0)]
    stacks = stacks_of(hr, motion_stack=motion)
    result = fit_stacks(stacks, hr.grid, FitConfig(device="cpu", motion=Motion.stack))
    for s in (1, 2):
        truth = stacks[s].meta["motion"].slice_to_object()[0]
        pts = geometry.apply_affine(stacks[s].affine, np.argwhere(stacks[s].data > 0.1))
        angle, dist = geometry.rigid_difference(result.poses[s][0], truth, pts)
        assert angle < 0.5 and dist < 0.5, (s, angle, dist)
    reg = result.report["stack_registration"]
    assert [r["stack"] for r in reg] == [1, 2]
    assert all(r["metric_after"] < r["metric_before"] and r["warning"] is None for r in reg)


@pytest.fixture(scope="module")
def moving_case(hr):
    motion = [None, (4.0, -3.0, 5.0, 2.5, -2.0, 3.0), (-3.0, 4.0, -2.0, -2.0, 3.0, 2.0)]
    return stacks_of(hr, motion_stack=motion, motion_slices=(0.5, 0.5), corrupt=2)


@pytest.fixture(scope="module")
def fits(hr, moving_case):
    out = {}
    for name, settings in {
        "classic": {"register": False, "motion": Motion.none, "robust": False, "slice_scaling": False},
        "stack": {"motion": Motion.stack},
        "slice": {"motion": Motion.slice},
    }.items():
        result = fit_stacks(moving_case, hr.grid, FitConfig(device="cpu", **settings))
        out[name] = (result, render(result.model, hr.grid))
    return out


def test_slice_motion_correction_halves_the_pose_error(moving_case, fits):
    before = mean_pose_error(moving_case, fits["stack"][0].poses)
    after = mean_pose_error(moving_case, fits["slice"][0].poses)
    assert after[1] < 0.5 * before[1], (before, after)


def test_motion_correction_beats_trusting_the_headers(hr, fits):
    mask = hr.data > 0
    classic = psnr(fits["classic"][1], hr.data, mask)
    corrected = psnr(fits["slice"][1], hr.data, mask)
    assert corrected > classic + 3.0, (classic, corrected)


def test_corrupted_slices_are_flagged(moving_case, fits):
    report = fits["slice"][0].report
    truth = {(i, k) for i, s in enumerate(moving_case) for k in s.meta["motion"].corrupted}
    flagged = {(o["stack"], o["slice"]) for o in report["outlier_slices"]}
    # slices near the edge of the head lose little signal to a dropout; two thirds of the corrupted ones at least
    assert len(truth & flagged) >= 2 * len(truth) / 3, (truth, flagged)
    assert len(flagged - truth) <= 1, (truth, flagged)


def test_automatic_weight_beats_a_fixed_one(hr):
    """At each of two noise levels the weight set from the noise level beats the weight that is right for the
    other one."""
    mask = hr.data > 0
    plain = {"register": False, "motion": Motion.none, "robust": False, "slice_scaling": False, "device": "cpu"}
    stacks = {noise: stacks_of(hr, noise=noise) for noise in (0.0, 0.03)}
    auto = {noise: fit_stacks(s, hr.grid, FitConfig(**plain)) for noise, s in stacks.items()}
    weights = {noise: a.report["regularization"]["weight"] for noise, a in auto.items()}
    assert weights[0.03] > 2 * weights[0.0], weights
    for noise, other in ((0.0, 0.03), (0.03, 0.0)):
        fixed = fit_stacks(stacks[noise], hr.grid, FitConfig(regularization=weights[other], **plain))
        ours = psnr(render(auto[noise].model, hr.grid), hr.data, mask)
        theirs = psnr(render(fixed.model, hr.grid), hr.data, mask)
        assert ours > theirs, (noise, weights, ours, theirs)


def test_failed_registration_falls_back_to_the_header(hr):
    fixed, moving, _ = stacks_of(hr)
    far = moving.affine.copy()
    far[:3, 3] += 500.0  # no overlap at all: the metric cannot be evaluated
    away = Volume(moving.data, far, "away.nii.gz")
    r = register_stack(fixed, foreground(fixed), away, foreground(away), centre(hr))
    np.testing.assert_array_equal(r.matrix, np.eye(4))
    assert r.warning is not None and "away.nii.gz" in r.warning


def test_stack_registration_is_reproducible(hr):
    motion = [None, (4.0, -3.0, 5.0, 2.5, -2.0, 3.0), None]
    fixed, moving, _ = stacks_of(hr, motion_stack=motion)
    runs = [register_stack(fixed, foreground(fixed), moving, foreground(moving), centre(hr), seed=0) for _ in range(2)]
    np.testing.assert_allclose(runs[0].matrix, runs[1].matrix, atol=1e-9)  # a wall-clock seed differs by ~1e-3
