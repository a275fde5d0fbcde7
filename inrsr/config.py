"""Settings of the fit, in a module without heavy imports so that the CLI can read its defaults instantly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CALIBRATION_TOLERANCE = 0.02  # relative intensity differences below this are not corrected up front


@dataclass
class FitConfig:
    """Settings of :func:`fit_stacks`. The CLI reads its defaults from here."""

    encoding: str = "hash"
    steps: int = 300
    batch_size: int = 2048  # stack voxels per step
    psf_samples: int = 8  # points drawn inside each voxel's PSF
    lr: float = 1e-2
    hidden: int = 32
    n_hidden_layers: int = 1
    levels: int = 8
    features_per_level: int = 2
    log2_table_size: int = 23
    coarsest_mm: float = 16.0
    fourier_features: int = 256
    fourier_sigma_per_mm: float = 0.15  # std of the random frequencies, cycles per mm
    positional_frequencies: int = 8
    siren_w0: float = 30.0
    init: str = "tv"  # tv | tikhonov | mean | none
    tikhonov_iterations: int = 20  # CG; also the warm start of tv
    tikhonov_lambda: float = 1e-2
    tv_iterations: int = 150  # L-BFGS
    tv_lambda: float = 1e-3
    auto_mask: bool = True
    seed: int = 0
    device: str = "auto"
    thickness_mm: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
