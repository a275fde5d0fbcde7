"""Voxel <-> world geometry: affines, output grids and the model's coordinate normalisation.

World space is NIfTI's RAS+ scanner space in millimetres. An affine is a 4x4 matrix mapping voxel indices
``(i, j, k, 1)`` (voxel centres at integers) to world ``(x, y, z, 1)`` in mm. All functions are pure and work on
``(..., 3)`` arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to ``(..., 3)`` points.

    >>> apply_affine(np.diag([2.0, 3.0, 4.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    array([2., 3., 4.])
    """
    affine = np.asarray(affine, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:3, :3].T + affine[:3, 3]


def check_affine(affine: np.ndarray, name: str = "affine") -> np.ndarray:
    """Return ``affine`` as float64 4x4 after checking it is finite and invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(f"{name}: affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{name}: affine contains NaN or Inf")
    linear = affine[:3, :3]
    scale = max(float(np.abs(linear).max()), 1e-30)
    if abs(np.linalg.det(linear / scale)) < 1e-6:
        raise InputError(f"{name}: affine is singular (zero or degenerate voxel size)")
    return affine


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis (norms of the affine's columns).

    >>> voxel_spacing(np.diag([-1.0, 2.0, 5.0, 1.0]))
    array([1., 2., 5.])
    """
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def direction_cosines(affine: np.ndarray) -> np.ndarray:
    """The 3x3 matrix whose columns are the unit world directions of the voxel axes."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    return linear / np.linalg.norm(linear, axis=0)


def slice_axis(affine: np.ndarray) -> int:
    """Index of the slice (through-plane) axis: the coarsest voxel axis; the last one on ties.

    >>> slice_axis(np.diag([1.0, 1.0, 5.0, 1.0]))
    2
    >>> slice_axis(np.diag([4.0, 1.0, 1.0, 1.0]))
    0
    """
    spacing = voxel_spacing(affine)
    coarsest = spacing.max()
    candidates = np.flatnonzero(np.isclose(spacing, coarsest, rtol=1e-3))
    return int(candidates[-1])


def voxel_corners(shape: Sequence[int]) -> np.ndarray:
    """The 8 corners, in voxel coordinates, of the field of view (voxel edges, not centres): ``(8, 3)``."""
    lo = -0.5
    hi = np.asarray(shape[:3], dtype=np.float64) - 0.5
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    return lo + corners * (hi - lo)


def world_corners(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World (mm) positions of the 8 corners of a volume's field of view: ``(8, 3)``."""
    return apply_affine(affine, voxel_corners(shape))


def voxel_grid_world(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre: ``(*shape, 3)``."""
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape[:3]], indexing="ij"), axis=-1)
    return apply_affine(affine, idx)


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about world x, then y, then z by the given angles in degrees: ``Rz @ Ry @ Rx``.

    >>> np.round(rotation_matrix([0, 0, 90]), 6)
    array([[ 0., -1.,  0.],
           [ 1.,  0.,  0.],
           [ 0.,  0.,  1.]])
    """
    ax, ay, az = (math.radians(float(a)) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_angles(rotation: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rotation_matrix`: angles (degrees) about world x, y, z with ``R = Rz @ Ry @ Rx``.

    >>> np.round(rotation_angles(rotation_matrix([5.0, -7.0, 12.0])), 6)
    array([ 5., -7., 12.])
    """
    r = np.asarray(rotation, dtype=np.float64)
    ay = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    ax = math.atan2(r[2, 1], r[2, 2])
    az = math.atan2(r[1, 0], r[0, 0])
    return np.degrees([ax, ay, az])


def rigid_matrix(params: Sequence[float], centre_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A 4x4 world -> world rigid transform from ``(rx, ry, rz, tx, ty, tz)`` (degrees, mm).

    The rotation (:func:`rotation_matrix`) is about ``centre_mm``, then the translation is added:
    ``x -> R (x - c) + c + t``.

    >>> m = rigid_matrix([0, 0, 90, 1, 2, 3], centre_mm=[10, 0, 0])
    >>> apply_affine(m, [10.0, 0.0, 0.0])
    array([11.,  2.,  3.])
    """
    p = np.asarray(params, dtype=np.float64)
    c = np.asarray(centre_mm, dtype=np.float64)
    r = rotation_matrix(p[:3])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c + p[3:6] - r @ c
    return m


def rigid_params(matrix: np.ndarray, centre_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The inverse of :func:`rigid_matrix`: ``(rx, ry, rz, tx, ty, tz)`` (degrees, mm) about ``centre_mm``.

    >>> np.round(rigid_params(rigid_matrix([3, -4, 5, 1, 2, -3], [5, 6, 7]), [5, 6, 7]), 6)
    array([ 3., -4.,  5.,  1.,  2., -3.])
    """
    m = np.asarray(matrix, dtype=np.float64)
    c = np.asarray(centre_mm, dtype=np.float64)
    t = m[:3, 3] - c + m[:3, :3] @ c
    return np.concatenate([rotation_angles(m[:3, :3]), t])


def rigid_difference(a: np.ndarray, b: np.ndarray, points_mm: np.ndarray) -> tuple[float, float]:
    """How far apart two rigid transforms are: the angle (degrees) of ``a b^-1``'s rotation and the mean
    distance (mm) between ``a`` and ``b`` applied to ``points_mm`` ``(N, 3)``.

    >>> round(rigid_difference(rigid_matrix([0, 0, 2, 1, 0, 0]), np.eye(4), np.zeros((1, 3)))[0], 6)
    2.0
    """
    d = np.asarray(a, dtype=np.float64) @ np.linalg.inv(np.asarray(b, dtype=np.float64))
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(d[:3, :3]) - 1) / 2))))
    dist = np.linalg.norm(apply_affine(a, points_mm) - apply_affine(b, points_mm), axis=-1)
    return angle, float(dist.mean())


def parse_spacing(text: str | float | Sequence[float]) -> np.ndarray:
    """Parse ``"S"`` or ``"Sx,Sy,Sz"`` (mm) into a length-3 array of positive spacings.

    >>> parse_spacing("1.5")
    array([1.5, 1.5, 1.5])
    >>> parse_spacing("1,1,2")
    array([1., 1., 2.])
    """
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise InputError(f"spacing {text!r}: expected 'S' or 'Sx,Sy,Sz' in mm") from None
    elif np.isscalar(text):
        values = [float(text)]
    else:
        values = [float(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise InputError(f"spacing {text!r}: expected 1 or 3 values, got {len(values)}")
    spacing = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spacing {text!r}: values must be positive mm")
    return spacing


def sampling_affine(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World mm -> the normalised coordinates of ``torch.nn.functional.grid_sample`` (``align_corners=True``) on a
    volume of ``shape`` with ``affine``; rows in grid_sample's (x, y, z) = (last, middle, first axis) order.

    >>> np.round(apply_affine(sampling_affine((3, 5, 9), np.eye(4)), [2.0, 0.0, 4.0]), 6)
    array([ 0., -1.,  1.])
    """
    size = np.asarray(shape[:3], dtype=np.float64)
    to_sample = np.eye(4)
    to_sample[:3, :3] = np.diag(2.0 / np.maximum(size - 1, 1))
    to_sample[:3, 3] = -1.0
    return (to_sample @ np.linalg.inv(np.asarray(affine, dtype=np.float64)))[[2, 1, 0, 3]]


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid: shape and voxel -> world affine (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return voxel_spacing(self.affine)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))


def frame_bounds(corners_world: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of world points expressed in the frame whose axes are ``rotation``'s columns."""
    local = corners_world @ rotation
    return local.min(axis=0), local.max(axis=0)


def output_grid(
    volumes: Sequence[tuple[Sequence[int], np.ndarray]],
    spacing_mm: np.ndarray,
    extent: str = "union",
) -> Grid:
    """An output grid with ``spacing_mm`` covering the inputs' fields of view, axis-aligned with the first input.

    ``volumes`` holds ``(shape, affine)`` pairs. The grid's axes point along the first input's voxel axes (so its
    handedness is kept); ``extent`` is ``"union"`` or ``"intersection"`` of the inputs' boxes in that frame.
    """
    if extent not in ("union", "intersection"):
        raise InputError(f"extent must be 'union' or 'intersection', got {extent!r}")
    spacing_mm = parse_spacing(spacing_mm)
    rotation = direction_cosines(volumes[0][1])
    lows, highs = zip(*(frame_bounds(world_corners(s, a), rotation) for s, a in volumes), strict=True)
    if extent == "union":
        lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    else:
        lo, hi = np.max(lows, axis=0), np.min(highs, axis=0)
        if np.any(hi <= lo):
            raise InputError("the inputs' fields of view do not intersect in world space")
    size = hi - lo
    shape = tuple(int(n) for n in np.maximum(np.ceil(size / spacing_mm - 1e-6), 1))
    # Centre the grid on the box so that any rounding is split evenly on both sides.
    centre_local = (lo + hi) / 2
    first_local = centre_local - (np.asarray(shape) - 1) / 2 * spacing_mm
    affine = np.eye(4)
    affine[:3, :3] = rotation * spacing_mm
    affine[:3, 3] = rotation @ first_local
    return Grid(shape=shape, affine=affine)


def boxes_overlap(a: tuple[Sequence[int], np.ndarray], b: tuple[Sequence[int], np.ndarray]) -> bool:
    """Whether two volumes' fields of view overlap (separating-axis test on their oriented boxes)."""
    ca, cb = world_corners(*a), world_corners(*b)
    axes = [direction_cosines(a[1])[:, i] for i in range(3)] + [
        direction_cosines(b[1])[:, i] for i in range(3)
    ]
    for u in axes[:3]:
        for v in axes[3:]:
            w = np.cross(u, v)
            if np.linalg.norm(w) > 1e-6:
                axes.append(w / np.linalg.norm(w))
    for axis in axes:
        pa, pb = ca @ axis, cb @ axis
        if pa.max() <= pb.min() + 1e-9 or pb.max() <= pa.min() + 1e-9:
            return False
    return True


def fov_fraction_inside(
    a: tuple[Sequence[int], np.ndarray], b: tuple[Sequence[int], np.ndarray], n: int = 24
) -> float:
    """The fraction of ``a``'s field of view (voxel edges, as :func:`voxel_corners`) that lies inside ``b``'s,
    any orientations: the share of an ``n^3`` lattice of cell centres over ``a``'s box that falls in ``b``'s box
    (exact to about ``1/n`` of an edge).

    Two 10 mm cubes 5 mm apart along x, and a cube inside a larger one:

    >>> cube = ((10, 10, 10), np.eye(4))
    >>> moved = ((10, 10, 10), np.array([[1.0, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    >>> fov_fraction_inside(cube, moved), fov_fraction_inside(cube, ((20, 20, 20), np.eye(4)))
    (0.5, 1.0)
    """
    size_a = np.asarray(a[0][:3], dtype=np.float64)
    upper_b = np.asarray(b[0][:3], dtype=np.float64) - 0.5
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    cells = np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=-1).reshape(-1, 3)
    world = apply_affine(a[1], -0.5 + cells * size_a)
    in_b = apply_affine(np.linalg.inv(np.asarray(b[1], dtype=np.float64)), world)
    tol = 1e-9
    inside = np.all((in_b >= -0.5 - tol) & (in_b <= upper_b + tol), axis=1)
    return float(inside.mean())


@dataclass(frozen=True)
class Normalization:
    """Maps world mm into the model's ``[-1, 1]^3`` box and back.

    The box is the inputs' world bounding box expressed in a frame with axes ``rotation``'s columns:
    ``u = (R^T x - centre) / half_extent`` per axis. Stored with the model so that re-rendering uses the same map.
    """

    rotation: np.ndarray  # (3, 3) columns = box axes in world
    centre: np.ndarray  # (3,) mm, in the rotated frame
    half_extent: np.ndarray  # (3,) mm

    @classmethod
    def from_volumes(
        cls, volumes: Sequence[tuple[Sequence[int], np.ndarray]], margin_mm: float = 2.0
    ) -> Normalization:
        """The box around the union of the inputs' fields of view, axis-aligned with the first, plus a margin."""
        rotation = direction_cosines(volumes[0][1])
        lows, highs = zip(*(frame_bounds(world_corners(s, a), rotation) for s, a in volumes), strict=True)
        lo, hi = np.min(lows, axis=0) - margin_mm, np.max(highs, axis=0) + margin_mm
        return cls(rotation=rotation, centre=(lo + hi) / 2, half_extent=(hi - lo) / 2)

    def to_unit(self, world: np.ndarray) -> np.ndarray:
        """World mm ``(..., 3)`` -> normalised ``[-1, 1]`` coordinates ``(..., 3)``."""
        return (np.asarray(world) @ self.rotation - self.centre) / self.half_extent

    def to_world(self, unit: np.ndarray) -> np.ndarray:
        """Normalised coordinates ``(..., 3)`` -> world mm ``(..., 3)``."""
        return (np.asarray(unit) * self.half_extent + self.centre) @ self.rotation.T

    def unit_affine(self, affine: np.ndarray) -> np.ndarray:
        """Compose a voxel -> world affine with :meth:`to_unit`: voxel -> normalised coordinates (4x4)."""
        to_unit = np.eye(4)
        to_unit[:3, :3] = np.diag(1 / self.half_extent) @ self.rotation.T
        to_unit[:3, 3] = -self.centre / self.half_extent
        return to_unit @ np.asarray(affine, dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "rotation": self.rotation.tolist(),
            "centre": self.centre.tolist(),
            "half_extent": self.half_extent.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(
            rotation=np.asarray(d["rotation"], dtype=np.float64),
            centre=np.asarray(d["centre"], dtype=np.float64),
            half_extent=np.asarray(d["half_extent"], dtype=np.float64),
        )
