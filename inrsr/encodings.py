"""Coordinate encodings: ``(N, in_dim)`` coordinates in ``[-1, 1]`` -> ``(N, out_dim)`` features.

Each encoding declares ``in_dim`` and ``out_dim``. All are pure PyTorch and run on the CPU and on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
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
        out.index_add_(0, index, grad.contiguous())
        return out, None


def _per_axis(value: int | Sequence[int], in_dim: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (in_dim,)).copy()
    if np.any(arr < 2):
        raise ValueError(f"grid resolutions must be >= 2 vertices per axis, got {arr}")
    return arr


def _spatial_hash(vertex: torch.Tensor, log2_table_size: int) -> torch.Tensor:
    """XOR-of-primes hash of integer vertex coordinates ``(..., D)`` into ``[0, 2**log2_table_size)``."""
    out = vertex[..., 0] * HASH_PRIMES[0]
    for d in range(1, vertex.shape[-1]):
        out = out ^ (vertex[..., d] * HASH_PRIMES[d])
    return out & (2**log2_table_size - 1)


class HashGridEncoding(nn.Module):
    """Multiresolution hash-grid encoding (Instant-NGP) in pure PyTorch, for 2D or 3D coordinates.

    Level ``l`` is a grid of ``resolution_l`` vertices per axis spanning ``[-1, 1]`` (vertex 0 at -1, the last at
    +1), with resolutions growing geometrically from ``base_resolution`` to ``finest_resolution``; either may be
    given per axis so that cells are isotropic in mm on an anisotropic box. Levels whose vertex count fits the
    table (``2**log2_table_size`` rows) are stored densely, without collisions; finer levels share a hashed table.
    The hashed levels' vertex grids are gathered from their table in one vectorised call.

    Each level is then read by multilinear interpolation: at arbitrary points with ``grid_sample``
    (:meth:`forward`), or on a whole regular lattice spanning the box with ``interpolate`` (:meth:`lattice`),
    which gives the same values far faster.

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
        if in_dim not in (2, 3):
            raise ValueError("HashGridEncoding supports 2D and 3D coordinates")
        self.in_dim = in_dim
        self.n_levels = n_levels
        self.features_per_level = features_per_level
        self.log2_table_size = log2_table_size
        self.out_dim = n_levels * features_per_level
        base = _per_axis(base_resolution, in_dim)
        finest = np.maximum(_per_axis(finest_resolution, in_dim), base)
        steps = np.arange(n_levels)[:, None] / max(n_levels - 1, 1)
        self.resolutions = [tuple(int(v) for v in r) for r in np.rint(base * (finest / base) ** steps)]
        table_size = 2**log2_table_size
        self.dense = [int(np.prod(r)) <= table_size for r in self.resolutions]
        # Dense levels: one (1, F, *resolution) parameter each, read directly by grid_sample / interpolate.
        self.dense_grids = nn.ParameterList(
            [
                nn.Parameter(torch.empty(1, features_per_level, *r).uniform_(-init_scale, init_scale))
                for r, d in zip(self.resolutions, self.dense, strict=True)
                if d
            ]
        )
        # Hashed levels share one table; their vertex -> row indices are fixed and precomputed.
        n_hash_rows = table_size if not all(self.dense) else 0
        self.table = nn.Parameter(
            torch.empty(n_hash_rows, features_per_level).uniform_(-init_scale, init_scale)
        )
        hashed_index = []
        for res, is_dense in zip(self.resolutions, self.dense, strict=True):
            if not is_dense:
                axes = [torch.arange(n, dtype=torch.int64) for n in res]
                vertex = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
                hashed_index.append(_spatial_hash(vertex, log2_table_size).reshape(-1))
        index = torch.cat(hashed_index) if hashed_index else torch.zeros(0, dtype=torch.int64)
        self.register_buffer("hashed_index", index, persistent=False)

    def level_grids(self) -> list[torch.Tensor]:
        """Each level's vertex features as a ``(1, F, *resolution)`` grid."""
        f = self.features_per_level
        # All hashed levels gathered in one call.
        hashed = _Gather.apply(self.table, self.hashed_index) if self.hashed_index.numel() else None
        grids, dense_i, hrow = [], 0, 0
        for res, is_dense in zip(self.resolutions, self.dense, strict=True):
            if is_dense:
                grids.append(self.dense_grids[dense_i])
                dense_i += 1
            else:
                n = int(np.prod(res))
                grids.append(hashed[hrow : hrow + n].t().reshape(1, f, *res))
                hrow += n
        return grids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, in_dim)`` in ``[-1, 1]`` (axis order as the resolutions) -> ``(N, out_dim)``."""
        n = x.shape[0]
        # grid_sample reads coordinates as (W, H[, D]) = reversed axis order.
        pts = x.flip(-1).reshape(1, n, *([1] * (self.in_dim - 1)), self.in_dim).to(self.table.dtype)
        feats = [
            F.grid_sample(g, pts, mode="bilinear", padding_mode="border", align_corners=True).reshape(
                self.features_per_level, n
            )
            for g in self.level_grids()
        ]
        return torch.cat(feats, dim=0).t()

    def lattice(self, shape: Sequence[int]) -> torch.Tensor:
        """Features on the regular lattice of ``shape`` points spanning ``[-1, 1]`` per axis (the first and last
        points on the box's faces): ``(out_dim, *shape)``. Equal to :meth:`forward` at those points."""
        mode = "trilinear" if self.in_dim == 3 else "bilinear"
        feats = [
            F.interpolate(g, size=tuple(int(s) for s in shape), mode=mode, align_corners=True)
            for g in self.level_grids()
        ]
        return torch.cat(feats, dim=1)[0]


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
