"""Masks in world space: a mask volume brought onto another volume's voxel grid, whatever the two geometries."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .volume import Volume


def mask_on_stack(mask: Volume, stack: Volume) -> np.ndarray:
    """``mask`` resampled onto ``stack``'s voxel grid in world space (nearest neighbour): bool, ``stack.shape``.

    Each stack voxel takes the value of the mask voxel nearest to its centre in world space (outside the mask's
    field of view: False); a voxel is in the mask when that value is above 0.5. Any orientations and resolutions
    work; when the shapes and affines are equal the mask is only thresholded. An empty mask, or one that does
    not overlap the stack, raises :class:`InputError`.

    A 2 mm mask of 2^3 voxels covers world -1..3 mm; a 1 mm stack has centres at 0.25, 1.25, 2.25, 3.25 mm:

    >>> m = Volume(np.ones((2, 2, 2), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "m")
    >>> s = Volume(np.zeros((4, 4, 4), np.float32), np.array([[1, 0, 0, 0.25], [0, 1, 0, 0.25], [0, 0, 1, 0.25],
    ...                                                        [0, 0, 0, 1]]), "s")
    >>> mask_on_stack(m, s)[:, 0, 0]
    array([ True,  True,  True, False])
    """
    if not np.any(mask.data > 0.5):
        raise InputError(f"{mask.name}: mask is empty (no voxel above 0.5)")
    if mask.shape == stack.shape and np.allclose(mask.affine, stack.affine, rtol=0.0, atol=1e-9):
        result = mask.data > 0.5
    else:
        matrix = np.linalg.solve(mask.affine, stack.affine)  # stack voxel -> mask voxel
        values = ndimage.affine_transform(
            mask.data, matrix, output_shape=stack.shape, order=0, mode="grid-constant", cval=0.0
        )
        result = values > 0.5
    if not result.any():
        raise InputError(f"{mask.name}: does not overlap {stack.name} in world space")
    return result
