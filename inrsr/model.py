"""The fitted super-resolution model: a continuous image in world space.

``value(x) = base(x) + field(u(x))`` where ``u`` is the stored world -> ``[-1, 1]`` normalisation, ``base`` an
initial voxel-grid estimate read by trilinear interpolation and ``field`` an INR (encoding + MLP head) that
learns what the estimate lacks. Per-stack intensity scales and offsets map the image to each stack's intensities.
Everything needed to evaluate it again is in the state dict and in :meth:`SRModel.metadata` (plain values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encodings import FourierEncoding, HashGridEncoding, PositionalEncoding
from .fields import Field, SirenField
from .geometry import Grid, Normalization, sampling_affine

ENCODINGS = ("hash", "fourier", "positional", "siren")


def build_field(spec: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    """An INR from a plain spec (``{"encoding": ..., "hidden": ..., ...}``), as stored in checkpoints."""
    kind = spec["encoding"]
    hidden, layers = int(spec["hidden"]), int(spec["n_hidden_layers"])
    if kind == "siren":
        return SirenField(3, 1, hidden, max(layers, 1), w0=float(spec["siren_w0"]), zero_last=True)
    if kind == "hash":
        enc: nn.Module = HashGridEncoding(
            3,
            n_levels=int(spec["levels"]),
            features_per_level=int(spec["features_per_level"]),
            log2_table_size=int(spec["log2_table_size"]),
            base_resolution=spec["base_resolution"],
            finest_resolution=spec["finest_resolution"],
        )
    elif kind == "fourier":
        enc = FourierEncoding(
            3,
            int(spec["fourier_features"]),
            float(spec["fourier_sigma_per_mm"]),
            half_extent_mm=spec["half_extent_mm"],
            generator=generator,
        )
    elif kind == "positional":
        enc = PositionalEncoding(3, int(spec["positional_frequencies"]))
    else:
        raise ValueError(f"unknown encoding {kind!r}; expected one of {', '.join(ENCODINGS)}")
    return Field(enc, out_dim=1, hidden=hidden, n_hidden_layers=layers, zero_last=True)


def _torch_affine(a: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float32, device=device)


class SRModel(nn.Module):
    """A continuous image in world mm: trilinear base lattice + INR residual, with per-stack intensity maps.

    ``intensity_scale`` converts model units back to the inputs' intensities. ``support`` marks lattice voxels
    covered by the inputs' foreground; rendering returns 0 elsewhere.
    """

    def __init__(
        self,
        field_spec: dict[str, Any],
        normalization: Normalization,
        lattice: Grid,
        n_stacks: int,
        intensity_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.field_spec = dict(field_spec)
        self.normalization = normalization
        self.lattice = lattice
        self.intensity_scale = float(intensity_scale)
        self.field = build_field(self.field_spec, generator)
        self.register_buffer("base", torch.zeros(lattice.shape))
        self.register_buffer("support", torch.ones(lattice.shape, dtype=torch.bool))
        self.log_scale = nn.Parameter(torch.zeros(n_stacks))
        self.offset = nn.Parameter(torch.zeros(n_stacks))
        # world -> normalised unit box, and world -> lattice grid_sample coordinates (align_corners=True)
        self.register_buffer(
            "world_to_unit", _torch_affine(normalization.unit_affine(np.eye(4))), persistent=False
        )
        self.register_buffer(
            "world_to_lattice", _torch_affine(sampling_affine(lattice.shape, lattice.affine)), persistent=False
        )

    def _sample_lattice(self, volume: torch.Tensor, world: torch.Tensor, mode: str) -> torch.Tensor:
        """``volume`` on the lattice read at world points ``(N, 3)``; 0 outside the lattice."""
        m = self.world_to_lattice
        g = world @ m[:3, :3].T + m[:3, 3]  # (x, y, z) = reversed lattice axes, as grid_sample wants
        g = g.view(1, -1, 1, 1, 3)
        out = F.grid_sample(
            volume[None, None].to(world.dtype), g, mode=mode, padding_mode="zeros", align_corners=True
        )
        return out.view(-1)

    def to_unit(self, world: torch.Tensor) -> torch.Tensor:
        """World mm ``(N, 3)`` -> the field's normalised coordinates."""
        m = self.world_to_unit
        return world @ m[:3, :3].T + m[:3, 3]

    def base_at(self, world: torch.Tensor) -> torch.Tensor:
        return self._sample_lattice(self.base, world, "bilinear")

    def residual_at_unit(self, unit: torch.Tensor) -> torch.Tensor:
        return self.field(unit)[:, 0]

    def forward(self, world: torch.Tensor) -> torch.Tensor:
        """Image values (model units) at world points ``(N, 3)``."""
        return self.base_at(world) + self.residual_at_unit(self.to_unit(world)).to(world.dtype)

    def in_support(self, world: torch.Tensor) -> torch.Tensor:
        """Whether world points ``(N, 3)`` lie in the inputs' (dilated) foreground."""
        return self._sample_lattice(self.support.float(), world, "nearest") > 0.5

    def metadata(self) -> dict[str, Any]:
        """Plain values (numbers, strings, lists) that rebuild this model around its state dict."""
        return {
            "field": self.field_spec,
            "normalization": self.normalization.to_dict(),
            "lattice": {
                "shape": list(self.lattice.shape),
                "affine": np.asarray(self.lattice.affine).tolist(),
            },
            "n_stacks": int(self.log_scale.numel()),
            "intensity_scale": self.intensity_scale,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> SRModel:
        lattice = Grid(shape=tuple(meta["lattice"]["shape"]), affine=np.asarray(meta["lattice"]["affine"]))
        return cls(
            meta["field"],
            Normalization.from_dict(meta["normalization"]),
            lattice,
            int(meta["n_stacks"]),
            float(meta["intensity_scale"]),
        )


CHECKPOINT_KIND = "fit"


def model_from_checkpoint(payload: dict[str, Any]) -> SRModel:
    """Rebuild an :class:`SRModel` from a loaded checkpoint payload (see :mod:`inrsr.io.checkpoints`)."""
    from .errors import InputError, first_line

    try:
        model = SRModel.from_metadata(payload["metadata"]["model"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = first_line(exc)
        raise InputError(f"checkpoint does not hold a compatible inrsr fit model ({first})") from None
    return model.eval()
