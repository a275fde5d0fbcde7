"""Voxel <-> world geometry: affines, output grids, overlap tests and the model's normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from inrsr.errors import InputError
from inrsr.geometry import (
    Normalization,
    apply_affine,
    boxes_overlap,
    check_affine,
    direction_cosines,
    output_grid,
    parse_spacing,
    slice_axis,
    voxel_corners,
    voxel_grid_world,
    voxel_spacing,
    world_corners,
)


def random_rotation(rng: np.random.Generator, left_handed: bool = False) -> np.ndarray:
    """A random orthonormal 3x3 matrix with determinant +1 (or -1 when ``left_handed``)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if left_handed:
        q[:, 1] = -q[:, 1]
    return q


def oblique_affine(rotation: np.ndarray, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = origin
    return affine


def random_affine(rng: np.random.Generator, left_handed: bool = False) -> np.ndarray:
    rot = random_rotation(rng, left_handed)
    return oblique_affine(rot, rng.uniform(0.5, 5.0, 3), rng.uniform(-80, 80, 3))


# --- affines -----------------------------------------------------------------------------------------------


def test_apply_affine_matches_manual_homogeneous_product():
    rng = np.random.default_rng(0)
    affine = random_affine(rng)
    points = rng.normal(size=(4, 5, 3)) * 20
    homogeneous = np.concatenate([points, np.ones((4, 5, 1))], axis=-1)
    expected = np.einsum("ij,...j->...i", affine, homogeneous)[..., :3]
    out = apply_affine(affine, points)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    # a single point
    np.testing.assert_allclose(apply_affine(affine, points[0, 0]), expected[0, 0], atol=1e-10)


@pytest.mark.parametrize("left_handed", [False, True])
def test_voxel_world_round_trip_on_oblique_affines(left_handed):
    rng = np.random.default_rng(1 + left_handed)
    for _ in range(10):
        affine = random_affine(rng, left_handed)
        assert np.sign(np.linalg.det(affine[:3, :3])) == (-1 if left_handed else 1)
        vox = rng.uniform(-5, 60, size=(100, 3))
        world = apply_affine(affine, vox)
        back = apply_affine(np.linalg.inv(affine), world)
        np.testing.assert_allclose(back, vox, atol=1e-9)


def test_voxel_spacing_direction_cosines_and_slice_axis_on_oblique_affines():
    rng = np.random.default_rng(3)
    for left in (False, True):
        rot = random_rotation(rng, left)
        affine = oblique_affine(rot, [0.9, 1.3, 4.5], [10, -20, 30])
        np.testing.assert_allclose(voxel_spacing(affine), [0.9, 1.3, 4.5], rtol=1e-12)
        np.testing.assert_allclose(direction_cosines(affine), rot, atol=1e-12)
        assert slice_axis(affine) == 2
        assert slice_axis(oblique_affine(rot, [5.0, 1.0, 1.0], [0, 0, 0])) == 0
        assert slice_axis(oblique_affine(rot, [1.0, 3.0, 0.5], [0, 0, 0])) == 1
        # ties: the last of the coarsest axes
        assert slice_axis(oblique_affine(rot, [3.0, 3.0, 1.0], [0, 0, 0])) == 1
        assert slice_axis(oblique_affine(rot, [3.0, 1.0, 3.0], [0, 0, 0])) == 2
        assert slice_axis(oblique_affine(rot, [2.0, 2.0, 2.0], [0, 0, 0])) == 2


def test_voxel_corners_and_grid_world():
    corners = voxel_corners((4, 5, 6))
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.min(axis=0), [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(corners.max(axis=0), [3.5, 4.5, 5.5])
    assert len({tuple(c) for c in corners}) == 8
    affine = random_affine(np.random.default_rng(4))
    grid = voxel_grid_world((4, 5, 6), affine)
    assert grid.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(grid[2, 3, 1], apply_affine(affine, [2, 3, 1]), atol=1e-10)
    np.testing.assert_allclose(world_corners((4, 5, 6), affine), apply_affine(affine, corners), atol=1e-10)


# --- output grids ------------------------------------------------------------------------------------------


def stacks_sharing_frame(rng: np.random.Generator, left_handed: bool):
    """Three overlapping stacks whose axes all lie along one oblique frame (permuted / flipped), different
    shapes and spacings, plus the frame."""
    rot = random_rotation(rng, left_handed)
    a = (tuple([30, 28, 8]), oblique_affine(rot, [1.0, 1.1, 4.0], [0, 0, 0]))
    a[1][:3, 3] = -a[1][:3, :3] @ ((np.asarray(a[0]) - 1) / 2) + [3.0, -2.0, 1.0]
    # axes permuted (k, i, j) and the first flipped
    rot_b = np.stack([-rot[:, 2], rot[:, 0], rot[:, 1]], axis=1)
    b = ((9, 26, 25), oblique_affine(rot_b, [3.5, 1.2, 1.2], [0, 0, 0]))
    b[1][:3, 3] = -b[1][:3, :3] @ ((np.asarray(b[0]) - 1) / 2) + [-4.0, 5.0, 2.0]
    rot_c = np.stack([rot[:, 1], -rot[:, 2], -rot[:, 0]], axis=1)
    c = ((27, 10, 31), oblique_affine(rot_c, [0.9, 3.0, 1.0], [0, 0, 0]))
    c[1][:3, 3] = -c[1][:3, :3] @ ((np.asarray(c[0]) - 1) / 2) + [1.0, 1.0, -6.0]
    return [a, b, c], rot


def grid_box_corners(grid) -> np.ndarray:
    return world_corners(grid.shape, grid.affine)


@pytest.mark.parametrize("left_handed", [False, True])
def test_union_grid_contains_every_input(left_handed):
    rng = np.random.default_rng(10 + left_handed)
    volumes, rot = stacks_sharing_frame(rng, left_handed)
    # plus a fully oblique stack in another orientation
    volumes.append(((20, 18, 7), oblique_affine(random_rotation(rng), [1.3, 1.3, 3.3], [8.0, -3.0, 5.0])))
    spacing = np.array([0.8, 1.0, 1.3])
    grid = output_grid(volumes, spacing, extent="union")
    np.testing.assert_allclose(voxel_spacing(grid.affine), spacing, rtol=1e-12)
    np.testing.assert_allclose(direction_cosines(grid.affine), direction_cosines(volumes[0][1]), atol=1e-12)
    np.testing.assert_allclose(direction_cosines(grid.affine), rot, atol=1e-12)
    assert np.sign(np.linalg.det(grid.affine[:3, :3])) == np.sign(np.linalg.det(volumes[0][1][:3, :3]))
    to_grid = np.linalg.inv(grid.affine)
    all_corners = np.concatenate([world_corners(s, a) for s, a in volumes])
    in_grid = apply_affine(to_grid, all_corners)
    # every input corner inside the grid's voxel-edge box ...
    assert np.all(in_grid >= -0.5 - 1e-6)
    assert np.all(in_grid <= np.asarray(grid.shape) - 0.5 + 1e-6)
    # ... and the box is tight: less than one voxel of slack per axis, split evenly on both sides
    lo_slack = in_grid.min(axis=0) + 0.5
    hi_slack = np.asarray(grid.shape) - 0.5 - in_grid.max(axis=0)
    assert np.all(lo_slack + hi_slack < 1.0 + 1e-6)
    np.testing.assert_allclose(lo_slack, hi_slack, atol=1e-6)


@pytest.mark.parametrize("left_handed", [False, True])
def test_intersection_grid_lies_inside_each_input(left_handed):
    rng = np.random.default_rng(20 + left_handed)
    volumes, rot = stacks_sharing_frame(rng, left_handed)
    grid = output_grid(volumes, "1.0,0.7,1.5", extent="intersection")
    np.testing.assert_allclose(direction_cosines(grid.affine), rot, atol=1e-12)
    union = output_grid(volumes, "1.0,0.7,1.5", extent="union")
    assert np.prod(grid.shape) < np.prod(union.shape)
    centres = voxel_grid_world(grid.shape, grid.affine).reshape(-1, 3)
    box = grid_box_corners(grid)
    half_voxel = 0.5 * np.array([1.0, 0.7, 1.5]).max()
    for shape, affine in volumes:
        inv = np.linalg.inv(affine)
        # every output voxel centre inside the input's field of view
        v = apply_affine(inv, centres)
        assert np.all(v >= -0.5 - 1e-6) and np.all(v <= np.asarray(shape) - 0.5 + 1e-6)
        # the grid's box edges stick out by at most half an output voxel
        vb = apply_affine(inv, box) * voxel_spacing(affine)
        lo = -0.5 * voxel_spacing(affine)
        hi = (np.asarray(shape) - 0.5) * voxel_spacing(affine)
        assert np.all(vb >= lo - half_voxel - 1e-6) and np.all(vb <= hi + half_voxel + 1e-6)
    # and the intersection is tight: some input face touches each face of the grid (within half a voxel)
    to_grid = np.linalg.inv(grid.affine)
    lo_faces = np.max([apply_affine(to_grid, world_corners(s, a)).min(axis=0) for s, a in volumes], axis=0)
    hi_faces = np.min([apply_affine(to_grid, world_corners(s, a)).max(axis=0) for s, a in volumes], axis=0)
    np.testing.assert_allclose(lo_faces, -0.5, atol=0.5 + 1e-6)
    np.testing.assert_allclose(hi_faces, np.asarray(grid.shape) - 0.5, atol=0.5 + 1e-6)


def test_output_grid_single_axis_aligned_input_reproduces_its_box():
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [40.0, -30.0, 7.0]
    grid = output_grid([((10, 12, 5), affine)], 1.0)
    assert grid.shape == (20, 24, 15)
    np.testing.assert_allclose(grid.affine[:3, :3], np.diag([-1.0, 1.0, 1.0]), atol=1e-12)
    # voxel-edge boxes coincide
    np.testing.assert_allclose(
        np.sort(world_corners(grid.shape, grid.affine), axis=0),
        np.sort(world_corners((10, 12, 5), affine), axis=0),
        atol=1e-9,
    )


def test_output_grid_disjoint_intersection_and_bad_extent_raise():
    a = ((10, 10, 10), np.eye(4))
    b_affine = np.eye(4)
    b_affine[:3, 3] = [30.0, 0.0, 0.0]
    b = ((10, 10, 10), b_affine)
    with pytest.raises(InputError, match="do not intersect"):
        output_grid([a, b], 1.0, extent="intersection")
    assert output_grid([a, b], 1.0, extent="union").shape == (40, 10, 10)
    with pytest.raises(InputError, match="extent"):
        output_grid([a], 1.0, extent="bbox")
    with pytest.raises(InputError):
        output_grid([a], "0")


# --- parsing and checks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", [1.5, 1.5, 1.5]),
        ("1,1,2", [1.0, 1.0, 2.0]),
        (" 0.5, 0.75 ,3 ", [0.5, 0.75, 3.0]),
        (2, [2.0, 2.0, 2.0]),
        (0.25, [0.25, 0.25, 0.25]),
        ([1, 2, 3], [1.0, 2.0, 3.0]),
        (np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0]),
    ],
)
def test_parse_spacing_good(text, expected):
    out = parse_spacing(text)
    assert out.dtype == np.float64 and out.shape == (3,)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "text", ["", "abc", "1,2", "1,2,3,4", "0", "-1", "1,0,1", "nan", "inf", "1;2;3", 0.0, [1, -2, 3]]
)
def test_parse_spacing_bad(text):
    with pytest.raises(InputError, match="spacing"):
        parse_spacing(text)


def test_check_affine():
    rng = np.random.default_rng(5)
    good = random_affine(rng)
    out = check_affine(good)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, good)
    # tiny but valid voxels are accepted (the check is scale-free)
    check_affine(np.diag([1e-4, 1e-4, 2e-4, 1.0]))
    check_affine(np.diag([1e4, 1e4, 1e4, 1.0]))
    singular = good.copy()
    singular[:3, 2] = 0.0
    with pytest.raises(InputError, match="singular"):
        check_affine(singular, "s.nii")
    degenerate = good.copy()
    degenerate[:3, 2] = 2.0 * degenerate[:3, 1]  # two parallel voxel axes
    with pytest.raises(InputError, match="singular"):
        check_affine(degenerate)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[1, 3] = bad_value
        with pytest.raises(InputError, match="NaN or Inf") as info:
            check_affine(bad, "my_file.nii.gz")
        assert "my_file.nii.gz" in str(info.value)
    with pytest.raises(InputError, match="4x4"):
        check_affine(np.eye(3))


# --- overlap -----------------------------------------------------------------------------------------------


def box(centre, half_size, rotation=np.eye(3), spacing=1.0):
    """A volume (shape, affine) whose voxel-edge box is centred at ``centre``, half-sizes ``half_size`` mm."""
    half_size = np.asarray(half_size, dtype=np.float64)
    shape = tuple(int(n) for n in np.rint(2 * half_size / spacing))
    affine = oblique_affine(rotation, [spacing] * 3, [0, 0, 0])
    affine[:3, 3] = np.asarray(centre, dtype=np.float64) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine


def rot_z(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def test_boxes_overlap_axis_aligned():
    a = box([0, 0, 0], [10, 10, 10])
    assert boxes_overlap(a, box([15, 0, 0], [6, 6, 6]))
    assert boxes_overlap(a, box([0, 0, 0], [2, 2, 2]))  # contained
    assert not boxes_overlap(a, box([17, 0, 0], [6, 6, 6]))  # 1 mm gap
    assert not boxes_overlap(a, box([0, -25, 0], [10, 10, 10]))
    assert not boxes_overlap(a, box([0, 0, 16], [6, 6, 6]))  # faces touch: no volume in common
    # symmetric
    assert boxes_overlap(box([15, 0, 0], [6, 6, 6]), a)
    assert not boxes_overlap(box([17, 0, 0], [6, 6, 6]), a)


def test_boxes_overlap_rotated_boxes():
    # a 10 mm cube turned 45 degrees about z: its corners reach 7.07 mm along x and y
    a = box([0, 0, 0], [5, 5, 5], rot_z(45))
    # a small box inside a's axis-aligned bounding box but beyond its diagonal face: no overlap
    b = box([6.5, 6.5, 0], [1, 1, 1])
    a_corners = world_corners(*a)
    assert np.all(np.abs([6.5, 6.5]) < a_corners[:, :2].max(axis=0))  # the AABBs do overlap
    assert not boxes_overlap(a, b)
    assert not boxes_overlap(b, a)
    # moved towards the centre it overlaps
    assert boxes_overlap(a, box([3.0, 3.0, 0], [1, 1, 1]))
    # a box reaching the corner of a along x
    assert boxes_overlap(a, box([7.5, 0, 0], [1, 1, 1]))
    assert not boxes_overlap(a, box([8.5, 0, 0], [1, 1, 1]))
    # two rotated slabs, crossed
    s1 = box([0, 0, 0], [20, 2, 20], rot_z(30))
    s2 = box([0, 0, 0], [20, 2, 20], rot_z(-60))
    assert boxes_overlap(s1, s2)
    # parallel slabs offset along their common normal: no overlap even though the AABBs overlap widely
    normal = rot_z(30)[:, 1]
    s3 = box(5.0 * normal, [20, 2, 20], rot_z(30))
    assert not boxes_overlap(s1, s3)
    assert boxes_overlap(s1, box(3.0 * normal, [20, 2, 20], rot_z(30)))


# --- normalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("left_handed", [False, True])
def test_normalization_maps_inputs_into_unit_box(left_handed):
    rng = np.random.default_rng(30 + left_handed)
    volumes, rot = stacks_sharing_frame(rng, left_handed)
    volumes.append(((20, 18, 7), oblique_affine(random_rotation(rng), [1.3, 1.3, 3.3], [4.0, -3.0, 5.0])))
    margin = 2.0
    norm = Normalization.from_volumes(volumes, margin_mm=margin)
    np.testing.assert_allclose(norm.rotation, rot, atol=1e-12)
    corners = np.concatenate([world_corners(s, a) for s, a in volumes])
    unit = norm.to_unit(corners)
    bound = 1 - margin / norm.half_extent
    assert np.all(np.abs(unit) <= bound + 1e-9)
    # tight: along every axis some corner reaches the inner bound on each side
    np.testing.assert_allclose(unit.max(axis=0), bound, atol=1e-9)
    np.testing.assert_allclose(unit.min(axis=0), -bound, atol=1e-9)
    # round trips
    pts = rng.normal(size=(50, 3)) * 40
    np.testing.assert_allclose(norm.to_world(norm.to_unit(pts)), pts, atol=1e-9)
    u = rng.uniform(-1, 1, size=(50, 3))
    np.testing.assert_allclose(norm.to_unit(norm.to_world(u)), u, atol=1e-12)
    # unit_affine composes voxel -> world -> unit
    for _, affine in volumes:
        vox = rng.uniform(0, 10, size=(20, 3))
        np.testing.assert_allclose(
            apply_affine(norm.unit_affine(affine), vox), norm.to_unit(apply_affine(affine, vox)), atol=1e-12
        )
    np.testing.assert_allclose(apply_affine(norm.unit_affine(np.eye(4)), pts), norm.to_unit(pts), atol=1e-12)
    # serialisation
    again = Normalization.from_dict(norm.to_dict())
    np.testing.assert_allclose(again.to_unit(pts), norm.to_unit(pts), atol=0)
