"""A volume: a 3D array together with its voxel -> world affine, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import geometry
from .errors import InputError


@dataclass
class Volume:
    """A 3D image in world space.

    ``data`` is float32 ``(nx, ny, nz)``; ``affine`` maps voxel indices to RAS+ world mm. ``name`` names the
    source (a file path) in error messages and reports.
    """

    data: np.ndarray
    affine: np.ndarray
    name: str = "volume"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"{self.name}: expected a 3D volume, got {data.ndim}D with shape {data.shape}")
        if min(data.shape) < 1:
            raise InputError(f"{self.name}: empty volume with shape {data.shape}")
        data = data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(data)):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise InputError(f"{self.name}: contains {bad} NaN or Inf voxels")
        self.data = data
        self.affine = geometry.check_affine(self.affine, self.name)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each voxel axis."""
        return geometry.voxel_spacing(self.affine)

    @property
    def slice_axis(self) -> int:
        """The through-plane voxel axis (the coarsest)."""
        return geometry.slice_axis(self.affine)

    @property
    def grid(self) -> geometry.Grid:
        return geometry.Grid(shape=self.shape, affine=self.affine)
