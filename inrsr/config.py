"""Settings of the fit, in a module without heavy imports so that the CLI can read its defaults instantly."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

CALIBRATION_TOLERANCE = 0.02  # relative intensity differences below this are not corrected up front


class Motion(str, Enum):
    """How head motion is corrected: not at all, one rigid pose per stack, or one per slice."""

    none = "none"
    stack = "stack"
    slice = "slice"


class Encoding(str, Enum):
    """The INR's input encoding."""

    hash = "hash"
    fourier = "fourier"
    positional = "positional"
    siren = "siren"


@dataclass
class FitConfig:
    """Settings of :func:`inrsr.fit.fit_stacks`. The CLI reads its defaults from here."""

    # geometry and motion
    register: bool = True  # stack-to-reference rigid registration before reconstruction
    motion: Motion = Motion.slice
    reference: int = 0  # the stack that defines the output frame
    # reconstruction (voxel grid, coarse to fine)
    regularization: float | None = None  # TV weight in physical units; None: set from the stacks' noise level
    cycles: int = 5  # registration / reconstruction / robust-weight cycles at the coarse level
    fine_cycles: int = 3  # slice registration / reconstruction cycles on the output lattice (--motion slice)
    registration_steps: int = 40  # gradient steps per registration in a cycle
    motion_smoothness: float = 1e-4  # penalty on pose changes between slices consecutive in acquisition time
    cg_iterations: int = 8  # conjugate-gradient iterations per TV reweighting
    tv_reweightings: int = 2  # lagged-diffusivity reweightings per reconstruction
    final_reweightings: int = 2
    coarse: bool = True  # start on a lattice twice as coarse
    robust: bool = True  # EM inlier weights per voxel and per slice
    slice_scaling: bool = True  # per-slice intensity scale
    auto_mask: bool = True
    # INR on top of the voxel-grid estimate (off by default: see docs/method.md)
    steps: int = 0
    encoding: Encoding = Encoding.hash
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
    seed: int = 0
    device: str = "auto"
    thickness_mm: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
