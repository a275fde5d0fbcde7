"""Simulated head motion (per stack and per slice), signal dropout and the stack's sidecar."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from phantom import phantom

from inrsr.errors import InputError
from inrsr.forward.slice_psf import StackOperator, psf_sigmas_mm
from inrsr.geometry import apply_affine, rigid_matrix, rigid_params
from inrsr.simulate import (
    dropout_map,
    interleaved_order,
    simulate_stack,
    slice_motion_walk,
    stack_geometry,
    stack_sidecar,
)


@pytest.fixture(scope="module")
def hr():
    return phantom((32, 32, 32))


def centre(vol) -> np.ndarray:
    return apply_affine(vol.affine, (np.asarray(vol.shape) - 1) / 2)


def through(hr, shape, affine, axis, thickness) -> np.ndarray:
    op = StackOperator(shape, affine, psf_sigmas_mm(affine, axis, thickness), hr.grid)
    with torch.no_grad():
        return op(torch.from_numpy(hr.data)).numpy()


def test_stack_motion_samples_the_object_at_inverse_pose(hr):
    params = [4.0, -3.0, 6.0, 1.5, -2.0, 0.7]
    stack = simulate_stack(hr, "z", 4.0, rotation_deg=(5, 0, 0), motion_stack=params)
    shape, affine = stack_geometry(hr, 2, 4.0, (5, 0, 0))
    np.testing.assert_allclose(stack.affine, affine)  # the header is not moved
    m = np.linalg.inv(rigid_matrix(params, centre(hr)))
    np.testing.assert_allclose(stack.data, through(hr, shape, m @ affine, 2, 4.0), atol=1e-6)
    assert not np.allclose(stack.data, simulate_stack(hr, "z", 4.0, rotation_deg=(5, 0, 0)).data, atol=1e-2)
    motion = stack_sidecar(stack)["SimulatedMotion"]
    np.testing.assert_allclose(motion["stack_params"], params)
    np.testing.assert_allclose(motion["centre_mm"], centre(hr))
    assert len(motion["slice_to_object"]) == shape[2] and motion["corrupted_slices"] == []
    for p, mk in zip(motion["slice_params"], motion["slice_to_object"], strict=True):
        np.testing.assert_allclose(p, params, atol=1e-9)
        np.testing.assert_allclose(mk, m, atol=1e-12)


def test_interleaved_walk_has_zero_mean_and_steps_in_time_order():
    sd = np.array([0.5] * 3 + [0.2] * 3)
    walk = slice_motion_walk(9, 0.5, 0.2, np.random.default_rng(7))
    assert walk.shape == (9, 6)
    np.testing.assert_allclose(walk.mean(axis=0), 0.0, atol=1e-12)
    steps = np.random.default_rng(7).normal(0.0, 1.0, (9, 6)) * sd
    order = interleaved_order(9)
    assert order == [0, 2, 4, 6, 8, 1, 3, 5, 7]
    for t in range(1, 9):  # consecutive slices in time differ by exactly one step
        np.testing.assert_allclose(walk[order[t]] - walk[order[t - 1]], steps[t], atol=1e-12)
    assert np.all(slice_motion_walk(5, 0.0, 0.0, np.random.default_rng(0)) == 0)


def test_slice_motion_without_motion_equals_the_single_operator(hr):
    for axis, rot in [("z", (0, 0, 0)), ("y", (10, 5, 20))]:
        plain = simulate_stack(hr, axis, 3.0, rotation_deg=rot)
        per_slice = simulate_stack(hr, axis, 3.0, rotation_deg=rot, motion_slices=(0.0, 0.0))
        np.testing.assert_allclose(per_slice.data, plain.data, atol=1e-6)


def test_each_slice_sees_the_object_at_its_own_pose(hr):
    stack_params = [2.0, 0.0, -3.0, 0.0, 1.0, 0.0]
    stack = simulate_stack(hr, "x", 4.0, motion_stack=stack_params, motion_slices=(2.0, 1.0), seed=4)
    motion = stack_sidecar(stack)["SimulatedMotion"]
    c = np.asarray(motion["centre_mm"])
    walk = slice_motion_walk(stack.shape[0], 2.0, 1.0, np.random.default_rng([4, 1]))
    h_stack = rigid_matrix(stack_params, c)
    shape1 = (1, *stack.shape[1:])
    for k in range(stack.shape[0]):
        h_k = rigid_matrix(walk[k], c) @ h_stack
        np.testing.assert_allclose(motion["slice_params"][k], rigid_params(h_k, c), atol=1e-9)
        m_k = np.asarray(motion["slice_to_object"][k])
        np.testing.assert_allclose(m_k, np.linalg.inv(h_k), atol=1e-12)
        shift = np.eye(4)
        shift[0, 3] = k
        expected = through(hr, shape1, m_k @ stack.affine @ shift, 0, 4.0)[0]
        np.testing.assert_allclose(stack.data[k], expected, atol=1e-6)
    # the walk's mean is zero, so on average the slices keep the stack's pose
    np.testing.assert_allclose(np.mean(motion["slice_params"], axis=0), stack_params, atol=0.05)


def test_corrupted_slices_are_listed_and_darkened_non_uniformly(hr):
    clean = simulate_stack(hr, "z", 4.0, motion_stack=[0, 0, 0, 0, 0, 0])
    bad = simulate_stack(hr, "z", 4.0, corrupt=3, seed=2)
    listed = stack_sidecar(bad)["SimulatedMotion"]["corrupted_slices"]
    assert len(set(listed)) == 3 and all(0 <= k < bad.shape[2] for k in listed)
    for k in range(bad.shape[2]):
        if k not in listed:
            np.testing.assert_array_equal(bad.data[..., k], clean.data[..., k])
            continue
        assert bad.data[..., k].sum() < 0.9 * clean.data[..., k].sum()
        signal = clean.data[..., k] > 0.1
        ratio = bad.data[..., k][signal] / clean.data[..., k][signal]
        assert ratio.max() > 0.99 and ratio.min() < 0.31  # no single intensity scale undoes it
    again = stack_sidecar(simulate_stack(hr, "z", 4.0, corrupt=3, seed=2))
    assert again["SimulatedMotion"]["corrupted_slices"] == listed


def test_dropout_map_shape_and_range():
    for seed in range(20):
        m = dropout_map((40, 30), np.random.default_rng(seed))
        assert m.shape == (40, 30) and m.max() == pytest.approx(1.0)
        assert 0.0 <= m.min() <= 0.3
        assert 0.2 < np.mean(m < 0.99) < 0.8  # a half-plane covering 30-70 % of the slice, plus the soft edge


def test_seed_drives_all_randomness(hr):
    kwargs = dict(motion_slices=(1.0, 0.5), corrupt=2, noise=0.02)
    a = simulate_stack(hr, "z", 4.0, seed=1, **kwargs)
    b = simulate_stack(hr, "z", 4.0, seed=1, **kwargs)
    c = simulate_stack(hr, "z", 4.0, seed=2, **kwargs)
    np.testing.assert_array_equal(a.data, b.data)
    assert stack_sidecar(a) == stack_sidecar(b)
    assert stack_sidecar(a) != stack_sidecar(c)


def test_sidecar_of_a_plain_stack(hr):
    stack = simulate_stack(hr, "y", 3.0, spacing_mm=4.0)
    assert stack_sidecar(stack) == {
        "SliceThickness": 3.0,
        "SpacingBetweenSlices": 4.0,
        "SliceAxis": 1,
        "AcquisitionOrder": interleaved_order(stack.shape[1]),
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"motion_stack": [1, 2, 3]}, "motion-stack"),
        ({"motion_stack": [0, 0, 0, 0, 0, float("nan")]}, "motion-stack"),
        ({"motion_slices": [1.0, -0.5]}, "motion-slices"),
        ({"corrupt": 9}, "corrupt 9: the stack has only 8 slices"),
        ({"corrupt": -1}, "corrupt -1"),
    ],
)
def test_bad_motion_arguments(hr, kwargs, message):
    with pytest.raises(InputError, match=message):
        simulate_stack(hr, "z", 4.0, **kwargs)
