"""Multi-stack slice-to-volume reconstruction (``inrsr fit``).

The package follows the command's story: ``stacks`` (the measurements: thickness, masks, intensities, noise),
``register`` (stack- and slice-level rigid poses), ``solver`` (the voxel-grid reconstruction with robust weights),
``inr`` (the optional INR stage) and ``pipeline`` (coarse-to-fine orchestration: :func:`fit_stacks`).
"""

from ..config import FitConfig, Motion
from .pipeline import FitResult, fit_stacks

__all__ = ["FitConfig", "FitResult", "Motion", "fit_stacks"]
