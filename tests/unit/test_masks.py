"""Masks resampled onto a stack's grid in world space, whatever the orientations and resolutions."""

from __future__ import annotations

import numpy as np
import pytest

from inrsr.errors import InputError
from inrsr.geometry import apply_affine, rotation_matrix, voxel_grid_world
from inrsr.masks import mask_on_stack
from inrsr.volume import Volume


def stack_volume(shape=(24, 20, 8), spacing=(1.0, 1.0, 4.0), angles=(0.0, 0.0, 0.0)) -> Volume:
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(angles) * np.asarray(spacing)
    affine[:3, 3] = [-11.3, -9.1, -14.2]  # no stack voxel centre falls on a mask voxel boundary
    return Volume(np.zeros(shape, np.float32), affine, "stack")


def coarse_box_mask() -> tuple[Volume, np.ndarray, np.ndarray]:
    """A 2 mm mask stored with axes permuted (i -> world z, j -> -x, k -> y) holding a box of whole voxels; the
    box's world bounds (voxel edges) are returned too."""
    shape = (14, 12, 16)  # along world z, x, y
    data = np.zeros(shape, np.float32)
    data[3:10, 2:9, 4:12] = 1.0
    affine = np.zeros((4, 4))
    affine[2, 0] = 2.0
    affine[0, 1] = -2.0
    affine[1, 2] = 2.0
    affine[:3, 3] = [11.0, -16.0, -14.0]
    affine[3, 3] = 1.0
    corners = apply_affine(affine, np.array([[2.5, 1.5, 3.5], [9.5, 8.5, 11.5]]))
    return Volume(data, affine, "mask.nii.gz"), corners.min(axis=0), corners.max(axis=0)


def test_same_grid_is_thresholded():
    stack = stack_volume()
    data = np.zeros(stack.shape, np.float32)
    data[3:9, 4:6, 2] = 0.7
    data[0, 0, 0] = 0.4
    out = mask_on_stack(Volume(data, stack.affine, "m"), stack)
    assert out.dtype == bool and out.shape == stack.shape
    np.testing.assert_array_equal(out, data > 0.5)


def test_permuted_coarser_mask_matches_the_box_in_world_space():
    mask, lo, hi = coarse_box_mask()
    stack = stack_volume()
    out = mask_on_stack(mask, stack)
    world = voxel_grid_world(stack.shape, stack.affine)
    expected = np.all((world > lo) & (world < hi), axis=-1)
    assert 100 < expected.sum() < expected.size
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (12.0, -7.0, 25.0)])
def test_nearest_mask_voxel_computed_directly(angles):
    rng = np.random.default_rng(3)
    mask, _, _ = coarse_box_mask()
    mask = Volume((rng.random(mask.shape) > 0.5).astype(np.float32), mask.affine, mask.name)
    stack = stack_volume(angles=angles)
    out = mask_on_stack(mask, stack)
    # each stack voxel centre -> mask voxel coordinates -> nearest voxel, looked up directly
    coords = apply_affine(np.linalg.inv(mask.affine), voxel_grid_world(stack.shape, stack.affine))
    idx = np.floor(coords + 0.5).astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(mask.shape)), axis=-1)
    expected = np.zeros(stack.shape, bool)
    expected[inside] = mask.data[tuple(idx[inside].T)] > 0.5
    assert inside.sum() > 100 and not inside.all()
    np.testing.assert_array_equal(out, expected)


def test_no_overlap_and_empty_mask_are_refused():
    mask, _, _ = coarse_box_mask()
    far = stack_volume()
    far.affine[:3, 3] += [200.0, 0.0, 0.0]
    with pytest.raises(InputError, match=r"mask.nii.gz: does not overlap stack in world space"):
        mask_on_stack(mask, far)
    empty = Volume(np.zeros(mask.shape, np.float32), mask.affine, "empty.nii")
    with pytest.raises(InputError, match="empty.nii: mask is empty"):
        mask_on_stack(empty, stack_volume())
