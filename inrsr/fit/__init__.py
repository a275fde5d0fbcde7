"""Multi-stack slice-to-volume reconstruction (``inrsr fit``).

The package follows the command's story: ``stacks`` (the measurements: thickness, masks, intensities, noise),
``register`` (stack- and slice-level rigid poses), ``solver`` (the voxel-grid reconstruction with robust weights),
``inr`` (the optional INR stage) and ``pipeline`` (coarse-to-fine orchestration: :func:`fit_stacks`).

``stacks`` needs no PyTorch, so the command checks its inputs with it before PyTorch loads; the rest loads on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import FitConfig, Motion

if TYPE_CHECKING:
    from .pipeline import FitResult, fit_stacks

__all__ = ["FitConfig", "FitResult", "Motion", "fit_stacks"]


def __getattr__(name: str):
    if name in ("FitResult", "fit_stacks"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
