"""The encoder-decoder model: an encoder's feature map read at query points by an MLP decoder.

For a low-res volume ``v`` (already intensity-normalised, see :class:`IntensityNorm`) and query points ``p`` in
``v``'s voxel coordinates (continuous, voxel centres at integers):

    value(p) = trilinear(v)(p) + MLP([trilinear(E(v))(p), sin(2 pi p), cos(2 pi p), s / 5])

``E`` is the encoder (:mod:`inrsr.arssr.encoders`); ``sin``/``cos`` of ``2 pi p`` say where the query lies
between low-res voxel centres (continuous, and unchanged by whole-voxel shifts, so tiles agree); ``s`` is the
per-axis scale (low-res spacing over output spacing, clamped to the trained range ``[1, 5]``), so the decoder
knows how much detail to restore along each axis. The trilinear base makes the network learn only what
interpolation misses. Queries are continuous, so any output grid works: the caller maps output voxel centres
through world mm into ``v``'s voxel grid, so the output stays aligned with the input (no half-voxel shift).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, first_line
from .config import SCALE_RANGE, ArchConfig, IntensityNorm
from .encoders import build_encoder

CHECKPOINT_KIND = "arssr"
#: Version of the model layout in the metadata; a checkpoint with a newer one is refused.
MODEL_VERSION = 1


class Decoder(nn.Module):
    """MLP ``(..., in_dim) -> (..., 1)``: two stages of ``layers // 2`` ReLU layers of ``width``, the input
    concatenated again at the start of the second stage (ArSSR's skip); the last layer starts at zero."""

    def __init__(self, in_dim: int, width: int, layers: int) -> None:
        super().__init__()
        first = max(layers // 2, 1)
        second = max(layers - first, 1)
        self.stage1 = nn.Sequential(*self._mlp(in_dim, width, first))
        self.stage2 = nn.Sequential(*self._mlp(width + in_dim, width, second - 1))
        self.out = nn.Linear(width if second > 1 else width + in_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _mlp(in_dim: int, width: int, n: int) -> list[nn.Module]:
        mods: list[nn.Module] = []
        for i in range(n):
            mods += [nn.Linear(in_dim if i == 0 else width, width), nn.ReLU(inplace=True)]
        return mods

    def forward(self, x: Tensor) -> Tensor:
        h = self.stage1(x)
        return self.out(self.stage2(torch.cat([h, x], dim=-1)))[..., 0]


def sample_trilinear(volume: Tensor, coords: Tensor) -> Tensor:
    """Trilinear samples of ``(B, C, X, Y, Z)`` at voxel coordinates ``(B, N, 3)``: ``(B, N, C)``.

    Coordinates beyond the outer voxel centres read the border value (edge replication)."""
    size = torch.as_tensor(volume.shape[2:], dtype=coords.dtype, device=coords.device)
    u = torch.where(size > 1, 2 * coords / (size - 1).clamp_min(1) - 1, torch.zeros_like(coords))
    grid = u.flip(-1)[:, :, None, None, :]  # grid_sample wants (x, y, z) = (Z, Y, X) axis order
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, :, 0, 0].transpose(1, 2)


class ArSSR(nn.Module):
    """Encoder + decoder; see the module docstring for the formula."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch.check()
        self.encoder = build_encoder(arch.encoder, arch.channels, arch.feature_dim, arch.blocks, arch.depth)
        self.decoder = Decoder(arch.feature_dim + 9, arch.decoder_width, arch.decoder_layers)

    @property
    def receptive_radius(self) -> int:
        return int(self.encoder.receptive_radius)

    def encode(self, lr: Tensor) -> Tensor:
        """``(B, 1, X, Y, Z)`` normalised low-res -> ``(B, feature_dim, X, Y, Z)``."""
        return self.encoder(lr)

    def decode(self, lr: Tensor, features: Tensor, coords: Tensor, scale: Tensor) -> Tensor:
        """Values ``(B, N)`` at ``coords`` ``(B, N, 3)`` (voxel coordinates of ``lr``); ``scale`` ``(B, 3)``."""
        base = sample_trilinear(lr, coords)[..., 0]
        feat = sample_trilinear(features, coords)
        phase = 2 * torch.pi * coords
        s = scale.clamp(*SCALE_RANGE)[:, None, :].expand(-1, coords.shape[1], -1) / SCALE_RANGE[1]
        return base + self.decoder(torch.cat([feat, torch.sin(phase), torch.cos(phase), s], dim=-1))

    def forward(self, lr: Tensor, coords: Tensor, scale: Tensor) -> Tensor:
        return self.decode(lr, self.encode(lr), coords, scale)

    def metadata(self) -> dict[str, Any]:
        return {"model_version": MODEL_VERSION, "arch": asdict(self.arch), "intensity": IntensityNorm.describe()}


def model_from_payload(payload: dict[str, Any], name: str) -> ArSSR:
    """Rebuild an :class:`ArSSR` from a loaded checkpoint payload; :class:`InputError` if it does not fit."""
    meta = payload.get("metadata") or {}
    version = meta.get("model_version")
    if not isinstance(version, int) or version > MODEL_VERSION:
        raise InputError(
            f"{name}: encoder-decoder model version {version!r} is not supported by this inrsr "
            f"(supports up to {MODEL_VERSION}); upgrade inrsr"
        )
    try:
        model = ArSSR(ArchConfig(**meta["arch"]))
        weights = {k[len("model.") :]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
        model.load_state_dict(weights)
    except InputError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise InputError(f"{name}: incompatible encoder-decoder checkpoint ({first})") from None
    return model.eval()
