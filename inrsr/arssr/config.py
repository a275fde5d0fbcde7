"""Plain settings of the encoder-decoder (no torch import, so the CLI's ``--help`` stays instant)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

ENCODERS = ("rdn", "rescnn", "srresnet")
#: Per-axis scales the decoder is conditioned on are clamped to this (trained) range.
SCALE_RANGE = (1.0, 5.0)


@dataclass(frozen=True)
class ArchConfig:
    """Architecture of an encoder-decoder; the defaults are the ArSSR paper's (``rdn`` is its best encoder)."""

    encoder: str = "rescnn"
    channels: int = 64
    feature_dim: int = 128
    blocks: int = 3
    depth: int = 6
    decoder_width: int = 256
    decoder_layers: int = 8

    def check(self) -> ArchConfig:
        if self.encoder not in ENCODERS:
            raise InputError(f"encoder {self.encoder!r}: expected one of {', '.join(ENCODERS)}")
        for name in ("channels", "feature_dim", "blocks", "depth", "decoder_width", "decoder_layers"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} {getattr(self, name)}: must be a positive integer")
        return self


@dataclass(frozen=True)
class UpsampleConfig:
    """Settings of single-volume ``upsample``; the CLI reads its defaults from here."""

    #: End with the data-consistency step (:mod:`inrsr.arssr.consistency`).
    consistency: bool = True


@dataclass(frozen=True)
class IntensityNorm:
    """The intensity mapping the model expects: the input's robust range mapped to ``[0, 1]`` and back.

    ``low``/``high`` are the ``LOW_PERCENTILE``/``HIGH_PERCENTILE`` percentiles of the input's voxels that are
    not exactly 0 (so zero background does not count); ``x -> (x - low) / (high - low)`` before the model and the
    inverse after it. Stored in every checkpoint's metadata (``"intensity"``).
    """

    low: float
    high: float

    LOW_PERCENTILE = 0.5
    HIGH_PERCENTILE = 99.5

    @classmethod
    def from_data(cls, data: np.ndarray) -> IntensityNorm:
        values = np.asarray(data)
        values = values[values != 0]
        if values.size == 0:
            return cls(0.0, 1.0)
        low, high = np.percentile(values, [cls.LOW_PERCENTILE, cls.HIGH_PERCENTILE])
        low = min(float(low), 0.0)  # keep 0 at 0 for non-negative magnitude images
        if not high > low:
            high = low + max(abs(low), 1.0)
        return cls(float(low), float(high))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.low) / (self.high - self.low)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float32) * (self.high - self.low) + self.low

    @staticmethod
    def describe() -> dict[str, Any]:
        return {
            "method": "robust range of the non-zero input voxels mapped to [0, 1], inverted on the output",
            "low_percentile": IntensityNorm.LOW_PERCENTILE,
            "high_percentile": IntensityNorm.HIGH_PERCENTILE,
            "low_clamped_to_at_most_0": True,
            "range": [0.0, 1.0],
        }


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the training generator's random draws (:mod:`inrsr.arssr.synth`); the defaults are the shipped
    model's."""

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    elastic_mm: float = 2.0
    elastic_spacing_mm: float = 16.0
    sharpness_range: tuple[float, float] = (1.0, 4.0)
    texture: float = 0.06
    bias: float = 0.15
    thickness_range: tuple[float, float] = (0.75, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the CLI reads its defaults from here."""

    epochs: int = 20
    steps_per_epoch: int = 200
    batch_size: int = 8
    patch: int = 16
    queries: int = 2048
    lr: float = 5e-4
    lr_final_fraction: float = 0.05
    noise_max: float = 0.03
    #: Fraction of examples synthesised from tissue maps (when given); the rest come from the volumes.
    synth_fraction: float = 0.7
    #: Random deformations, bias fields and slice gaps (:class:`Augmentation`); ``None``: crops as they are.
    augmentation: Augmentation | None = field(default_factory=Augmentation)
    val_fraction: float = 0.15
    val_patches: int = 20
    seed: int = 0
    arch: ArchConfig = field(default_factory=ArchConfig)

    def check(self) -> TrainConfig:
        for name in ("epochs", "steps_per_epoch", "batch_size", "patch", "queries", "val_patches"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} {getattr(self, name)}: must be a positive integer")
        if self.patch < 4:
            raise InputError(f"patch {self.patch}: must be at least 4 low-res voxels")
        if not self.lr > 0:
            raise InputError(f"lr {self.lr}: must be positive")
        if not 0 <= self.synth_fraction <= 1:
            raise InputError(f"synth-fraction {self.synth_fraction}: must be in [0, 1]")
        if self.noise_max < 0:
            raise InputError(f"noise {self.noise_max}: must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val-fraction {self.val_fraction}: must be in [0, 1)")
        self.arch.check()
        return self
