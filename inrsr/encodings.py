"""Coordinate encodings: ``(N, in_dim)`` coordinates in ``[-1, 1]`` -> ``(N, out_dim)`` features.

Each encoding declares ``in_dim`` and ``out_dim``. All are pure PyTorch and run on the CPU and on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# Primes of the spatial hash (Teschner et al.; Instant-NGP). Dimension 0 uses 1 so that it stays coherent.
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)


class _Gather(torch.autograd.Function):
    """``table[index]`` whose backward is one ``index_add_`` (much faster on the CPU than advanced indexing)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        out = torch.zeros(ctx.n_rows, grad.shape[1], dtype=grad.dtype, device=grad.device)
        out.index_add_(0, index, grad)
        return out, None


def _per_axis(value: int | Sequence[int], in_dim: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (in_dim,)).copy()
    if np.any(arr < 2):
        raise ValueError(f"grid resolutions must be >= 2 vertices per axis, got {arr}")
    return arr


class HashGridEncoding(nn.Module):
    """Multiresolution hash-grid encoding (Instant-NGP) in pure PyTorch.

    Level ``l`` is a grid of ``resolution_l`` vertices per axis spanning ``[-1, 1]``, with resolutions growing
    geometrically from ``base_resolution`` to ``finest_resolution`` (either may be given per axis, so that cells
    can be isotropic in mm on an anisotropic box). Levels whose vertex count fits the table are indexed densely
    (no collisions); finer ones are hashed into ``2**log2_table_size`` rows. All levels live in one table and are
    gathered in one vectorised call; features are interpolated multilinearly.

    Shapes: ``(N, in_dim)`` -> ``(N, n_levels * features_per_level)``.
    """

    def __init__(
        self,
        in_dim: int = 3,
        n_levels: int = 12,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int | Sequence[int] = 16,
        finest_resolution: int | Sequence[int] = 256,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if not 1 <= in_dim <= len(HASH_PRIMES):
            raise ValueError(f"in_dim must be 1..{len(HASH_PRIMES)}")
        self.in_dim = in_dim
        self.n_levels = n_levels
        self.features_per_level = features_per_level
        self.log2_table_size = log2_table_size
        self.out_dim = n_levels * features_per_level
        base = _per_axis(base_resolution, in_dim)
        finest = np.maximum(_per_axis(finest_resolution, in_dim), base)
        steps = np.arange(n_levels)[:, None] / max(n_levels - 1, 1)
        resolutions = np.rint(base * (finest / base) ** steps).astype(np.int64)  # (L, D)
        table_size = 2**log2_table_size
        sizes, dense, offsets = [], [], [0]
        for res in resolutions:
            n_vertices = int(np.prod(res))
            is_dense = n_vertices <= table_size
            dense.append(is_dense)
            sizes.append(n_vertices if is_dense else table_size)
            offsets.append(offsets[-1] + sizes[-1])
        self.register_buffer("resolutions", torch.as_tensor(resolutions, dtype=torch.int64), persistent=False)
        strides = np.ones_like(resolutions)
        for d in range(1, in_dim):
            strides[:, d] = strides[:, d - 1] * resolutions[:, d - 1]
        self.register_buffer("dense_strides", torch.as_tensor(strides, dtype=torch.int64), persistent=False)
        self.register_buffer("is_dense", torch.as_tensor(dense), persistent=False)
        self.register_buffer("level_offsets", torch.as_tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        self.register_buffer(
            "primes", torch.as_tensor(HASH_PRIMES[:in_dim], dtype=torch.int64), persistent=False
        )
        corners = torch.tensor(
            [[(c >> d) & 1 for d in range(in_dim)] for c in range(2**in_dim)], dtype=torch.int64
        )
        self.register_buffer("corners", corners, persistent=False)  # (C, D)
        self.table = nn.Parameter(torch.empty(offsets[-1], features_per_level).uniform_(-init_scale, init_scale))

    @property
    def level_resolutions(self) -> np.ndarray:
        """Vertices per axis of each level: ``(n_levels, in_dim)``."""
        return self.resolutions.cpu().numpy()

    def level_slices(self) -> list[slice]:
        """Rows of ``table`` that belong to each level."""
        ends = [*self.level_offsets.tolist()[1:], self.table.shape[0]]
        return [slice(s, e) for s, e in zip(self.level_offsets.tolist(), ends, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, in_dim)`` in ``[-1, 1]`` -> ``(N, n_levels * features_per_level)``."""
        n = x.shape[0]
        res = self.resolutions.to(x.dtype)  # (L, D)
        pos = (x.clamp(-1, 1)[:, None, :] + 1) * 0.5 * (res - 1)  # (N, L, D) in vertex units
        base = pos.floor().long()
        base = torch.minimum(base, self.resolutions - 2).clamp_min(0)
        frac = pos - base.to(pos.dtype)  # (N, L, D)
        vertex = base[:, :, None, :] + self.corners  # (N, L, C, D)
        dense_index = (vertex * self.dense_strides[:, None, :]).sum(-1)
        hashed = vertex[..., 0] * self.primes[0]
        for d in range(1, self.in_dim):
            hashed = hashed ^ (vertex[..., d] * self.primes[d])
        hashed = hashed & (2**self.log2_table_size - 1)
        index = torch.where(self.is_dense[:, None], dense_index, hashed) + self.level_offsets[:, None]
        # Multilinear weights of the 2^D corners.
        w = torch.where(self.corners.bool(), frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)  # (N, L, C)
        feats = _Gather.apply(self.table, index.reshape(-1)).view(n, self.n_levels, -1, self.features_per_level)
        out = (feats * w[..., None]).sum(2)  # (N, L, F)
        return out.reshape(n, self.out_dim)


class FourierEncoding(nn.Module):
    """Gaussian random Fourier features: ``[sin(2 pi B u), cos(2 pi B u)]`` with ``B ~ N(0, sigma^2)``.

    ``sigma`` is in cycles per unit of the input coordinate. For world coordinates normalised by
    ``u = x / half_extent_mm``, pass ``half_extent_mm`` and give ``sigma`` in **cycles per mm**: the
    frequencies are then drawn in mm^-1 and rescaled to the normalised box.
    Shapes: ``(N, in_dim)`` -> ``(N, 2 * n_frequencies [+ in_dim])``.
    """

    def __init__(
        self,
        in_dim: int = 3,
        n_frequencies: int = 256,
        sigma: float = 0.05,
        half_extent_mm: Sequence[float] | None = None,
        include_input: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.include_input = include_input
        b = torch.randn(in_dim, n_frequencies, generator=generator) * sigma
        if half_extent_mm is not None:
            b = b * torch.as_tensor(np.asarray(half_extent_mm, dtype=np.float32))[:, None]
        self.register_buffer("frequencies", b)  # (D, K), cycles per unit coordinate
        self.out_dim = 2 * n_frequencies + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = (2 * math.pi) * (x @ self.frequencies)
        parts = [torch.sin(phase), torch.cos(phase)]
        if self.include_input:
            parts.insert(0, x)
        return torch.cat(parts, dim=-1)


class PositionalEncoding(nn.Module):
    """NeRF positional encoding: ``[u, sin(2^k pi u), cos(2^k pi u)]`` for ``k = 0 .. n_frequencies - 1``.

    Shapes: ``(N, in_dim)`` -> ``(N, in_dim * (1 + 2 * n_frequencies))``.
    """

    def __init__(self, in_dim: int = 3, n_frequencies: int = 10) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.register_buffer("scales", (2.0 ** torch.arange(n_frequencies)) * math.pi)
        self.out_dim = in_dim * (1 + 2 * n_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = (x[:, :, None] * self.scales).reshape(x.shape[0], -1)
        return torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=-1)


class IdentityEncoding(nn.Module):
    """The coordinates themselves (used by SIREN fields, whose first layer is the encoding)."""

    def __init__(self, in_dim: int = 3) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
