"""Low-res training inputs made with the same slice PSF as ``inrsr simulate`` (:func:`inrsr.simulate.simulate_stack`).

Two kinds of degradation, both through the Gaussian PSF of :mod:`inrsr.forward.slice_psf` (FWHM = the low-res
spacing along every degraded axis):

* isotropic by ``s``: every axis ``s`` times coarser (``simulate_stack`` with ``inplane_mm = spacing_mm``, so the
  PSF acts along all three axes);
* through-plane only by ``s`` along one axis: thick slices, in-plane resolution kept.
"""

from __future__ import annotations

import numpy as np

from ..simulate import simulate_stack
from ..volume import Volume

#: Scales drawn for training: isotropic ``U[2, 4]``, through-plane ``U[2, 5]`` along a random axis.
ISO_RANGE = (2.0, 4.0)
THROUGH_RANGE = (2.0, 5.0)


def degrade(
    hr: Volume, scale: float, axis: int | None = None, noise: float = 0.0, seed: int = 0, thickness_ratio: float = 1.0
) -> Volume:
    """``hr`` seen at ``scale`` times its voxel size: isotropically (``axis=None``) or along ``axis`` only.

    Isotropic uses ``scale`` times ``hr``'s finest spacing on every axis. ``noise`` is Rician, relative to the
    99.9th percentile intensity (as in ``simulate``). ``thickness_ratio`` is the slice thickness over the slice
    spacing (below 1: a gap between slices). The result's grid is centred on ``hr``'s field of view.
    """
    if axis is None:
        step = float(scale * hr.spacing.min())
        return simulate_stack(
            hr, 2, thickness_mm=step * thickness_ratio, spacing_mm=step, inplane_mm=step, noise=noise, seed=seed
        )
    step = float(scale * hr.spacing[axis])
    return simulate_stack(hr, axis, thickness_mm=step * thickness_ratio, spacing_mm=step, noise=noise, seed=seed)


def lowres_spacing(spacing_mm: np.ndarray, scale: float, axis: int | None) -> np.ndarray:
    """Voxel size (mm) after :func:`degrade` of a volume with voxel size ``spacing_mm``.

    >>> lowres_spacing(np.array([1.0, 1.0, 2.0]), 3.0, None)
    array([3., 3., 3.])
    >>> lowres_spacing(np.array([1.0, 1.0, 2.0]), 3.0, 2)
    array([1., 1., 6.])
    """
    spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
    if axis is None:
        return np.full(3, float(scale) * float(spacing_mm.min()))
    out = spacing_mm.copy()
    out[axis] = float(scale) * spacing_mm[axis]
    return out


def random_degradation(rng: np.random.Generator) -> tuple[float, int | None]:
    """Half isotropic with ``s ~ U(ISO_RANGE)``, half through-plane with ``s ~ U(THROUGH_RANGE)`` on a random axis."""
    if rng.random() < 0.5:
        return float(rng.uniform(*ISO_RANGE)), None
    return float(rng.uniform(*THROUGH_RANGE)), int(rng.integers(3))
