"""Random training images that generalise: deformations, contrasts drawn from tissue maps, bias fields.

A model trained on one brain learns that brain's anatomy and contrast. Following the generators of SynthSeg and
SynthSR, every training crop is drawn anew:

* **deformation** (:func:`deformed_coordinates`): a random rotation and scaling about the crop's centre plus a
  smooth elastic displacement, applied to the sampling coordinates of the crop (real volumes and tissue maps
  alike), so the model never sees the same anatomy twice;
* **contrast** (:func:`synthesize`): from tissue probability maps (grey matter, white matter, CSF, or the
  one-hot labels of a segmentation) an intensity is drawn per tissue, the maps are sharpened by a random exponent
  (from the template's smooth partial volumes to the crisp edges of a single subject), each tissue gets a fine
  random texture, and the tissues are blended: T1-, T2-, PD- and FLAIR-like images and contrasts no scanner makes;
* **bias field** (:func:`bias_field`): a smooth multiplicative field;
* **acquisition**: slice thickness drawn as a fraction of the slice spacing (gaps), and noise (``degrade``).

The intensities come out in about ``[0, 1]`` (the brightest tissue near 1), the range the model sees at inference
after :class:`~inrsr.arssr.config.IntensityNorm`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..geometry import voxel_spacing
from .config import Augmentation

#: Labels of an integer segmentation above this count are refused (a probability map was probably meant).
MAX_LABELS = 64


def smooth_noise(shape: Sequence[int], rng: np.random.Generator, sigma_vox: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed with a Gaussian of ``sigma_vox`` voxels.

    >>> n = smooth_noise((32, 32, 32), np.random.default_rng(0), 2.0)
    >>> n.shape, abs(float(n.mean())) < 0.2, round(float(n.std()), 3)
    ((32, 32, 32), True, 1.0)
    """
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma_vox, mode="wrap")
    std = float(field.std())
    return field / std if std > 0 else field


def bspline_weights(n: int, step: float) -> np.ndarray:
    """Uniform cubic B-spline basis ``(n, c)`` for ``n`` samples one unit apart, control points every ``step``
    units starting one control point before the first sample (so every sample has its four control points).

    The weights of a sample sum to 1, so a constant control grid gives the same constant:

    >>> w = bspline_weights(10, 4.0)
    >>> w.shape, bool(np.allclose(w.sum(axis=1), 1))
    ((10, 6), True)
    """
    t = np.arange(n) / float(step) + 1.0  # position in control-point units; control 0 lies one step before
    k = np.floor(t).astype(int)
    f = t - k
    basis = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], axis=1) / 6
    c = int(k.max()) + 3
    weights = np.zeros((n, c))
    for j in range(4):
        np.add.at(weights, (np.arange(n), k - 1 + j), basis[:, j])
    return weights


def smooth_field(shape: Sequence[int], spacing_mm: Sequence[float], rng: np.random.Generator, step_mm: float):
    """A smooth random field on ``shape``: normals on a control grid every ``step_mm``, cubic B-spline weighted
    (separable, cheap, no overshoot), scaled to unit variance. Its gradient is about ``1 / step_mm`` per mm."""
    weights = [bspline_weights(int(n), step_mm / float(h)) for n, h in zip(shape, spacing_mm, strict=True)]
    field = rng.standard_normal(tuple(w.shape[1] for w in weights))
    norm = 1.0
    for axis, w in enumerate(weights):
        field = np.moveaxis(np.tensordot(w, field, axes=([1], [axis])), 0, axis)
        norm *= float(np.sqrt(np.mean((w**2).sum(axis=1))))
    return (field / norm).astype(np.float32)


def bias_field(shape: Sequence[int], spacing_mm: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``exp(strength * smooth field)``, control points every 40 mm: a coil-sensitivity-like multiplicative field.

    >>> b = bias_field((20, 20, 20), np.ones(3), np.random.default_rng(1), 0.2)
    >>> bool((b > 0).all()), bool(0.3 < b.min() <= b.max() < 3)
    (True, True)
    """
    return np.exp(strength * smooth_field(shape, spacing_mm, rng, 40.0)).astype(np.float32)


def rotation_matrix(rotvec_rad: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: the rotation by ``|v|`` radians about ``v``.

    >>> np.round(rotation_matrix(np.array([0.0, 0.0, np.pi / 2])), 6) + 0.0
    array([[ 0., -1.,  0.],
           [ 1.,  0.,  0.],
           [ 0.,  0.,  1.]])
    """
    v = np.asarray(rotvec_rad, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle == 0:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def deformed_coordinates(
    start: np.ndarray, size: np.ndarray, spacing_mm: np.ndarray, rng: np.random.Generator, aug: Augmentation
) -> np.ndarray:
    """Source voxel coordinates ``(3, *size)`` of a crop ``[start, start + size)``, randomly deformed about its
    centre: rotation up to ``max_rotation_deg`` about a random axis, isotropic scaling, elastic displacement.

    Rotations act in mm, so anisotropic voxels are handled. With all ranges at zero it is the plain crop:

    >>> still = Augmentation(max_rotation_deg=0, scale_range=(1, 1), elastic_mm=0)
    >>> c = deformed_coordinates(np.array([2, 3, 4]), np.array([2, 2, 2]), np.ones(3), np.random.default_rng(0), still)
    >>> c[:, 0, 0, 0].tolist(), c[:, 1, 1, 1].tolist()
    ([2.0, 3.0, 4.0], [3.0, 4.0, 5.0])
    """
    size = np.asarray(size, dtype=int)
    spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
    local = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in size], indexing="ij"))
    centre = (size - 1) / 2.0
    axis = rng.standard_normal(3)
    axis /= max(float(np.linalg.norm(axis)), 1e-12)
    angle = np.deg2rad(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
    zoom = rng.uniform(*aug.scale_range)
    # voxel -> mm -> rotate/scale -> voxel
    m = np.diag(1 / spacing_mm) @ (zoom * rotation_matrix(axis * angle)) @ np.diag(spacing_mm)
    offset = (local.reshape(3, -1) - centre[:, None]).astype(np.float64)
    coords = (m @ offset + centre[:, None] + np.asarray(start, dtype=np.float64)[:, None]).reshape(3, *size)
    if aug.elastic_mm > 0:
        for a in range(3):
            coords[a] += smooth_field(size, spacing_mm, rng, aug.elastic_spacing_mm) * (aug.elastic_mm / spacing_mm[a])
    return coords.astype(np.float32)


def sample(data: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``data`` at voxel ``coords`` ``(3, ...)``; 0 outside."""
    return ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def synthesize(probs: np.ndarray, rng: np.random.Generator, spacing_mm: np.ndarray, aug: Augmentation) -> np.ndarray:
    """A random-contrast image from tissue probabilities ``(K, X, Y, Z)`` (the background is ``1 - sum``, stays 0).

    >>> p = np.zeros((2, 8, 8, 8), np.float32); p[0, :4] = 1; p[1, 4:] = 1
    >>> img = synthesize(p, np.random.default_rng(0), np.ones(3), Augmentation(texture=0, bias=0))
    >>> bool(abs(img[:4].mean() - img[4:].mean()) > 0.01), round(float(img.max()), 2) <= 1.0
    (True, True)
    """
    k = probs.shape[0]
    shape = probs.shape[1:]
    gamma = rng.uniform(*aug.sharpness_range)
    weights = np.clip(probs, 0, 1) ** gamma
    background = np.clip(1 - probs.sum(axis=0), 0, 1) ** gamma
    weights /= weights.sum(axis=0) + background + 1e-6
    means = rng.uniform(0.05, 1.0, size=k)
    for _ in range(10):  # tissues that all look alike teach nothing: ask for some contrast
        if k < 2 or np.ptp(means) >= 0.25:
            break
        means = rng.uniform(0.05, 1.0, size=k)
    means *= rng.uniform(0.85, 1.0) / means.max()
    image = np.zeros(shape, dtype=np.float32)
    for t in range(k):
        tissue = np.float32(means[t])
        if aug.texture > 0:
            sigma = rng.uniform(0.5, 2.0) / float(np.min(spacing_mm))
            tissue = tissue * (1 + aug.texture * rng.uniform(0.3, 1.0) * smooth_noise(shape, rng, sigma))
        image += weights[t] * tissue
    if aug.bias > 0:
        image *= bias_field(shape, spacing_mm, rng, aug.bias * rng.uniform(0, 1))
    return np.clip(image, 0, None)


@dataclass
class TissueMaps:
    """Tissue probability maps on one grid, ``probs`` ``(K, X, Y, Z)`` in ``[0, 1]``, for :func:`synthesize`."""

    probs: np.ndarray
    affine: np.ndarray
    name: str = "tissues"

    @property
    def spacing(self) -> np.ndarray:
        return voxel_spacing(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.probs.shape[1:])

    def foreground(self) -> np.ndarray:
        """Voxel indices ``(M, 3)`` where the tissues cover at least half the voxel."""
        fg = np.argwhere(self.probs.sum(axis=0) > 0.5)
        return fg if len(fg) else np.array([np.asarray(self.shape) // 2])

    def split(self, val_fraction: float) -> tuple[TissueMaps, TissueMaps | None]:
        """Training and validation parts along the third voxel axis (as :func:`~inrsr.arssr.data.split_volume`)."""
        n = self.shape[2]
        n_val = int(round(n * val_fraction))
        if n_val < 1 or n - n_val < 1:
            return self, None
        shift = np.eye(4)
        shift[2, 3] = n - n_val
        return (
            TissueMaps(self.probs[..., : n - n_val], self.affine, self.name),
            TissueMaps(self.probs[..., n - n_val :], self.affine @ shift, self.name),
        )


def load_tissue_maps(paths: Sequence[str | os.PathLike]) -> TissueMaps:
    """Tissue maps from NIfTI files: one probability map per tissue (values in ``[0, 1]``, same grid), or one
    integer segmentation whose non-zero labels are the tissues."""
    from ..io.nifti import load_volume

    if not paths:
        raise InputError("--tissue: give one segmentation, or one probability map per tissue")
    vols = [load_volume(p) for p in paths]
    first = vols[0]
    for p, v in zip(paths, vols, strict=True):
        if v.shape != first.shape or not np.allclose(v.affine, first.affine, atol=1e-3):
            raise InputError(f"{p}: tissue map on another grid than {paths[0]}; resample the maps onto one grid")
    if len(vols) == 1:
        data = first.data
        if not np.allclose(data, np.round(data)) or data.min() < 0:
            raise InputError(f"{paths[0]}: one tissue map must be an integer segmentation (labels >= 0)")
        labels = [int(v) for v in np.unique(data) if v != 0]
        if not labels:
            raise InputError(f"{paths[0]}: the segmentation holds no non-zero label")
        if len(labels) > MAX_LABELS:
            raise InputError(f"{paths[0]}: {len(labels)} labels (at most {MAX_LABELS}); is it a segmentation?")
        probs = np.stack([(data == v).astype(np.float32) for v in labels])
    else:
        for p, v in zip(paths, vols, strict=True):
            if v.data.min() < -1e-3 or v.data.max() > 1 + 1e-3:
                raise InputError(f"{p}: a tissue probability map needs values in [0, 1]")
        probs = np.clip(np.stack([v.data for v in vols]), 0, 1).astype(np.float32)
        if float(probs.sum(axis=0).max()) > 1.5:
            raise InputError(f"{paths[0]}...: the probability maps sum to more than 1; give one map per tissue")
    return TissueMaps(probs, first.affine, name=",".join(os.path.basename(str(p)) for p in paths))
