"""The continuous models of one cine slice: a complex image field over ``(x, y, t)`` and a coil-map field.

Coordinates are normalised to ``[-1, 1]`` per axis with the first and last pixel centres at the ends, the
convention of :class:`~inrsr.encodings.HashGridEncoding`; time (a cardiac cycle) is periodic instead: frame
``t`` of ``nt`` sits at phase ``t / nt`` and the hash grid's vertices along t are evenly spaced around the cycle.
Training evaluates the field at every pixel of every frame, always the same points: there a hash grid's features
are the multilinear upsampling of each level's vertex grid, which :func:`grid_features` computes separably with
matrix products (same numbers as the encoding; other encodings are evaluated point by point).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..encodings import FourierEncoding, HashGridEncoding
from ..fields import Field
from ..optim import FusedAdam


def grid_coords(shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(*shape, len(shape))`` coordinates of a pixel grid in ``[-1, 1]`` (end pixels at -1 and 1)."""
    axes = [torch.linspace(-1, 1, n, device=device) if n > 1 else torch.zeros(1, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def interpolation_matrix(n: int, r: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n, r)``: linear interpolation from ``r`` grid vertices to ``n`` pixels, both spanning ``[-1, 1]``
    with the end vertices on the end pixels (the hash grid's convention). Cached: treat it as read-only."""
    return _interpolation_matrix(int(n), int(r), str(device))


@functools.lru_cache(maxsize=256)
def _interpolation_matrix(n: int, r: int, device: str) -> torch.Tensor:
    u = torch.linspace(-1, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    pos = (u + 1) * 0.5 * (r - 1)
    i0 = pos.floor().long().clamp(0, max(r - 2, 0))
    frac = pos - i0
    w = torch.zeros(n, r, dtype=torch.float64)
    w[torch.arange(n), i0] = 1 - frac
    if r > 1:
        w[torch.arange(n), i0 + 1] += frac
    return w.float().to(device)


def periodic_interpolation_matrix(n: int, r: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(n, r)``: linear interpolation around a cycle, from ``r`` vertices at phases ``i / r`` to ``n`` samples
    at phases ``j / n`` (the last vertex is followed by the first). Cached: treat it as read-only.

    >>> periodic_interpolation_matrix(4, 2)
    tensor([[1.0000, 0.0000],
            [0.5000, 0.5000],
            [0.0000, 1.0000],
            [0.5000, 0.5000]])
    """
    return _periodic_matrix(int(n), int(r), str(device))


@functools.lru_cache(maxsize=256)
def _periodic_matrix(n: int, r: int, device: str) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float64) * r / n
    i0 = pos.floor().long()
    frac = pos - i0
    w = torch.zeros(n, r, dtype=torch.float64)
    rows = torch.arange(n)
    w.index_put_((rows, i0 % r), 1 - frac, accumulate=True)
    w.index_put_((rows, (i0 + 1) % r), frac, accumulate=True)
    return w.float().to(device)


def resample_separable(
    grid: torch.Tensor, out_shape: Sequence[int], periodic: Sequence[bool] | None = None
) -> torch.Tensor:
    """Multilinear resampling of a vertex grid ``(F, *r)`` onto pixels ``(F, *out_shape)``, one matrix product
    per axis: end vertices on end pixels, or, along a ``periodic`` axis, vertices and pixels evenly spaced around
    a cycle (:func:`periodic_interpolation_matrix`).

    Axes are taken last to first, each as a product over an axis of a contiguous tensor (no transposed copies);
    an axis whose vertices already are the pixels is left as it is.
    """
    d = len(out_shape)
    periodic = tuple(periodic) if periodic is not None else (False,) * d
    for k in reversed(range(d)):
        r, n = int(grid.shape[k + 1]), int(out_shape[k])
        if r == n:
            continue
        w = periodic_interpolation_matrix(n, r, grid.device) if periodic[k] else interpolation_matrix(n, r, grid.device)
        if k == d - 1:
            grid = grid @ w.T
        else:
            lead, trail = grid.shape[: k + 1], grid.shape[k + 2 :]
            stacked = grid.reshape(math.prod(lead), r, math.prod(trail))
            grid = torch.matmul(w, stacked).reshape(*lead, n, *trail)
    return grid


def pyramid_planes(grids: Sequence[torch.Tensor], n_frames: int) -> torch.Tensor:
    """The sum of the multilinear upsamplings of vertex grids ``(F, x_l, y_l, t_l)`` (``t`` periodic) to the pixel
    grid of the finest one, with ``n_frames`` frames: ``(F, n_frames, X, Y)``.

    The same numbers as summing :func:`resample_separable` over the levels, with about one pass over the
    full-size cine: each level is upsampled along y and t at its own size into its block of one stack of all
    levels' rows along x, ``(F, n_frames, x_l, Y)`` per level, and the upsampling along x of every level, feature
    and frame at once is one product with a sparse matrix of their interpolation weights (two per output row and
    level; a dense product would mostly multiply zeros). The backward pass is the same products transposed.
    Levels that already are the pixel grid are added as they are. Grids stored frame-major (``(F, t, x, y)`` in
    memory, as :class:`CineField` keeps them) are read and given their gradients without copies.
    """
    return _Pyramid.apply(n_frames, *grids)


@dataclass(frozen=True)
class _PyramidPlan:
    """The interpolation matrices of a pyramid: per upsampled level its ``(T, t_l)`` periodic matrix along t and
    ``(Y, y_l)`` matrix along y (None where the vertices are the pixels) and its first row in the stack
    (``(F, T, x_l, Y)`` per level, one after the other); the sparse matrix along x, ``(F T X, F T sum x_l)``, and
    its transpose; which levels are the pixel grid."""

    wt: tuple[torch.Tensor | None, ...]
    wy: tuple[torch.Tensor | None, ...]
    offsets: tuple[int, ...]
    wx: torch.Tensor | None
    wx_t: torch.Tensor | None
    direct: tuple[bool, ...]


@functools.lru_cache(maxsize=16)
def _pyramid_plan(
    shapes: tuple[tuple[int, int, int], ...], out: tuple[int, int, int, int], device: str
) -> _PyramidPlan:
    """The :class:`_PyramidPlan` of levels of vertex shapes ``(x, y, t)`` onto ``out = (F, frames, X, Y)``."""
    f, n_t, nx, ny = out
    direct = tuple((a, b, c) == (nx, ny, n_t) for a, b, c in shapes)
    up = [s for s, d in zip(shapes, direct, strict=True) if not d]
    wt = tuple(periodic_interpolation_matrix(n_t, c, device) if c != n_t else None for _, _, c in up)
    wy = tuple(interpolation_matrix(ny, b, device) if b != ny else None for _, b, _ in up)
    offsets = tuple(int(v) for v in np.cumsum([0] + [f * n_t * a for a, _, _ in up]))
    wx = wx_t = None
    if up:
        k = torch.arange(f * n_t)[:, None]  # (feature, frame)
        index, values = [], []
        for (a, _, _), start in zip(up, offsets, strict=False):
            one = interpolation_matrix(nx, a).to_sparse_coo()
            rows, cols = one.indices()
            index.append(torch.stack([(k * nx + rows).reshape(-1), (start + k * a + cols).reshape(-1)]))
            values.append(one.values().repeat(f * n_t))
        size = (f * n_t * nx, offsets[-1])
        with warnings.catch_warnings():  # sparse CSR is marked beta; its products with dense matrices are plain
            warnings.simplefilter("ignore", UserWarning)
            block = torch.sparse_coo_tensor(torch.cat(index, 1), torch.cat(values), size).coalesce()
            wx, wx_t = block.to_sparse_csr().to(device), block.t().coalesce().to_sparse_csr().to(device)
    return _PyramidPlan(wt, wy, offsets, wx, wx_t, direct)


def _sparse_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sparse ``a`` times dense ``b`` into a new uninitialised tensor: ``torch.mm`` zero-fills its result and
    copies it once more (on a CPU the transposed product of a pyramid took 14 ms this way, 3 ms as here)."""
    out = b.new_empty(a.shape[0], b.shape[1])
    return torch.addmm(out, a, b, beta=0, out=out)


class _Pyramid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, n_frames: int, *grids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f, nx, ny = grids[-1].shape[0], grids[-1].shape[1], grids[-1].shape[2]
        plan = _pyramid_plan(tuple(tuple(g.shape[1:]) for g in grids), (f, n_frames, nx, ny), str(grids[0].device))
        if plan.wx is not None:
            stack = grids[0].new_empty(plan.offsets[-1], ny)  # every upsampled level's rows along x, level by level
            up = [g for g, d in zip(grids, plan.direct, strict=True) if not d]
            for i, g in enumerate(up):
                _, a, b, c = g.shape
                z = g.permute(0, 3, 1, 2)  # (F, c, a, b)
                z = torch.matmul(z, plan.wy[i].T) if plan.wy[i] is not None else z  # (F, c, a, Y)
                block = stack[plan.offsets[i] : plan.offsets[i + 1]].view(f, n_frames, a * ny)
                if plan.wt[i] is not None:
                    torch.matmul(plan.wt[i], z.reshape(f, c, a * ny), out=block)  # (F, T, a Y)
                else:
                    block.copy_(z.reshape(f, n_frames, a * ny))
            out = _sparse_mm(plan.wx, stack).view(f, n_frames, nx, ny)
        else:
            out = grids[0].new_zeros(f, n_frames, nx, ny)
        for g, d in zip(grids, plan.direct, strict=True):
            if d:
                out.add_(g.permute(0, 3, 1, 2))
        ctx.plan = plan
        ctx.shapes = [tuple(g.shape) for g in grids]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        plan: _PyramidPlan = ctx.plan
        f, n_frames, nx, ny = grad.shape
        grad = grad.contiguous()
        stack = None
        if plan.wx_t is not None:
            stack = _sparse_mm(plan.wx_t, grad.view(-1, ny))
        out: list[torch.Tensor | None] = [None]
        i = 0
        for shape, d in zip(ctx.shapes, plan.direct, strict=True):
            if d:
                out.append(grad.permute(0, 2, 3, 1))
                continue
            assert stack is not None
            _, a, b, c = shape
            z = stack[plan.offsets[i] : plan.offsets[i + 1]].view(f, n_frames, a * ny)
            z = torch.matmul(plan.wt[i].T, z) if plan.wt[i] is not None else z  # (F, c, a Y)
            z = z.reshape(f, c, a, ny)
            z = torch.matmul(z, plan.wy[i]) if plan.wy[i] is not None else z  # (F, c, a, b)
            out.append(z.permute(0, 2, 3, 1))
            i += 1
        return tuple(out)


def grid_features(
    encoding: nn.Module,
    shape: Sequence[int],
    order: Sequence[int] | None = None,
    chunk: int = 1 << 18,
    periodic: Sequence[bool] | None = None,
) -> torch.Tensor:
    """The encoding at every point of a pixel grid, channels first: ``(out_dim, *[shape[a] for a in order])``.

    ``shape`` is in the encoding's coordinate order; ``order`` (default: as is) permutes the output axes.
    ``periodic`` (coordinate order; hash grids only) reads an axis's vertices as evenly spaced around a cycle.
    For a hash grid each level's vertex grid (:meth:`HashGridEncoding.level_grids`) is resampled separably,
    one matrix product per axis (multilinear interpolation is separable): the same values as the encoding at
    those points, with a backward pass made of matrix products too (several times faster on a CPU than
    ``interpolate``'s).
    """
    shape = tuple(int(n) for n in shape)
    d = len(shape)
    order = tuple(range(d)) if order is None else tuple(order)
    out_shape = [shape[a] for a in order]
    if isinstance(encoding, HashGridEncoding):
        cyclic = [bool(periodic[a]) for a in order] if periodic is not None else None
        levels = []
        for g in encoding.level_grids():  # (1, F, *resolution), axes in coordinate order
            grid = g[0].permute(0, *[a + 1 for a in order])  # (F, r_order...)
            levels.append(resample_separable(grid, out_shape, cyclic))
        return torch.cat(levels, dim=0)
    if periodic is not None and any(periodic):
        raise ValueError("periodic axes need a hash-grid encoding")
    coords = grid_coords(shape, device=next(encoding.parameters(), torch.empty(0)).device)
    coords = coords.permute(*order, d).reshape(-1, d)
    out = torch.cat([encoding(c) for c in coords.split(chunk)], dim=0)  # (N, D)
    return out.T.reshape(-1, *out_shape)


class _ChunkedMLP(torch.autograd.Function):
    """A ReLU MLP on channels-first columns ``(D, N)``, run in blocks of columns that stay in the CPU's cache.

    Forward keeps only the input; backward recomputes each block's activations. On a cine of half a million
    pixels this is about 1.5x faster than autograd over whole-grid matrix products, which stream every
    ``(hidden, N)`` intermediate (and its gradient) through main memory several times.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, chunk: int, *params: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weights, biases = params[0::2], params[1::2]
        out = x.new_empty(weights[-1].shape[0], x.shape[1])
        for start in range(0, x.shape[1], chunk):
            h = x[:, start : start + chunk]
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                if i < len(weights) - 1:
                    h = torch.addmm(b[:, None], w, h).relu_()
                else:
                    torch.addmm(b[:, None], w, h, out=out[:, start : start + chunk])
        ctx.chunk = chunk
        ctx.save_for_backward(x, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, *params = ctx.saved_tensors
        weights, biases = params[0::2], params[1::2]
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [torch.zeros_like(b) for b in biases]
        for start in range(0, x.shape[1], ctx.chunk):
            block = slice(start, start + ctx.chunk)
            acts = [x[:, block]]  # the input of each layer
            for w, b in zip(weights[:-1], biases[:-1], strict=True):
                acts.append(torch.addmm(b[:, None], w, acts[-1]).relu_())
            g = grad_out[:, block]
            for i in range(len(weights) - 1, -1, -1):
                grad_w[i].addmm_(g, acts[i].T)
                grad_b[i] += g.sum(1)
                if i > 0:
                    g = torch.ops.aten.threshold_backward(weights[i].T @ g, acts[i], 0.0)
                elif grad_x is not None:
                    torch.mm(weights[0].T, g, out=grad_x[:, block])
        grads: list[torch.Tensor | None] = [grad_x, None]
        for gw, gb in zip(grad_w, grad_b, strict=True):
            grads += [gw, gb]
        return tuple(grads)


def head_channels_first(mlp: nn.Module, x: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Apply an MLP of ``Linear`` and ``ReLU`` layers (ReLU after every layer but the last) to channels-first
    features ``(D, *grid)`` -> ``(out, *grid)``, without moving the channels last."""
    layers = list(mlp.net)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    expected = [type(m) for m in layers] == [nn.Linear, nn.ReLU] * (len(linears) - 1) + [nn.Linear]
    if not expected:
        raise TypeError("head_channels_first takes Linear layers with a ReLU between each pair")
    grid = x.shape[1:]
    params = [p for m in linears for p in (m.weight, m.bias)]
    out = _ChunkedMLP.apply(x.reshape(x.shape[0], -1), chunk, *params)
    return out.reshape(out.shape[0], *grid)


def hash_encoding(
    shape: Sequence[int],
    n_levels: int = 16,
    features_per_level: int = 2,
    base_resolution: Sequence[int] | int = 16,
) -> HashGridEncoding:
    """A hash grid whose finest level matches the pixel grid ``shape`` and whose levels are all dense (no hash
    collisions)."""
    finest = np.asarray(shape, dtype=np.int64)
    base = np.minimum(np.broadcast_to(np.asarray(base_resolution), finest.shape), finest).clip(min=2)
    finest = np.maximum(finest, 2)
    log2_table = int(np.ceil(np.log2(max(int(np.prod(finest)), 2))))
    return HashGridEncoding(
        in_dim=len(shape),
        n_levels=n_levels,
        features_per_level=features_per_level,
        log2_table_size=log2_table,
        base_resolution=[int(b) for b in base],
        finest_resolution=[int(f) for f in finest],
    )


class CineField(nn.Module):
    """A complex image field over ``(x, y, t)``; :meth:`render` gives the ``(t, x, y)`` complex cine.

    ``encoding``: ``"pyramid"`` (the same dense multi-resolution grids as ``"hash"``, two features per level read
    as real and imaginary parts and summed over the levels: a linear decoder, no MLP), ``"hash"`` (those grids +
    an MLP), ``"fourier"`` (random Fourier features + MLP), or ``"pixel"``: no field at all, a plain pixel tensor
    under the same loss (the ablation that shows what the parameterisation adds; other frames are linear
    interpolation around the cycle). Time is periodic with ``"pyramid"`` and ``"hash"``.
    """

    def __init__(
        self,
        shape_xyt: Sequence[int],
        encoding: str = "hash",
        n_levels: int = 16,
        features_per_level: int = 2,
        base_resolution: Sequence[int] = (16, 16, 4),
        fourier_frequencies: int = 128,
        fourier_sigma: float = 0.08,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.shape_xyt = tuple(int(n) for n in shape_xyt)
        self.pixels: nn.Parameter | None = None
        if encoding == "pixel":
            # the ablation: the same loss on a plain complex pixel tensor (real, imaginary) x (t, x, y)
            nx, ny, nt = self.shape_xyt
            self.pixels = nn.Parameter(torch.zeros(2, nt, nx, ny))
            return
        self.pyramid: HashGridEncoding | None = None
        if encoding == "pyramid":
            # two features per level: the level's real and imaginary parts, summed over the levels
            self.pyramid = hash_encoding(self.shape_xyt, n_levels, 2, base_resolution)
            # each level's vertices stored frame-major, (F, t, x, y) in memory (the layout of the rendered planes;
            # the same values): the render reads them and the backward writes their gradients without copies
            for i, g in enumerate(self.pyramid.dense_grids):
                _, f, a, b, c = g.shape
                self.pyramid.dense_grids[i] = nn.Parameter(g.new_empty(1, f, c, a, b).permute(0, 1, 3, 4, 2).copy_(g))
            return
        if encoding == "hash":
            enc: nn.Module = hash_encoding(self.shape_xyt, n_levels, features_per_level, base_resolution)
        elif encoding == "fourier":
            # sigma in cycles per pixel (per frame along t).
            half = [max(n - 1, 1) / 2 for n in self.shape_xyt]
            enc = FourierEncoding(3, fourier_frequencies, fourier_sigma, half_extent_mm=half, generator=generator)
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
        self.field = Field(enc, out_dim=2, hidden=hidden, n_hidden_layers=n_hidden_layers)

    def render(self, n_frames: int | None = None) -> torch.Tensor:
        """The cine on its pixel grid, complex ``(t, x, y)``; ``n_frames`` frames evenly over the cardiac cycle
        (default: the acquired ones, frame ``t`` at phase ``t / nt``)."""
        planes = self.render_planes(n_frames)
        return torch.complex(planes[0], planes[1])

    def render_planes(self, n_frames: int | None = None) -> torch.Tensor:
        """:meth:`render` as real and imaginary planes, ``(2, t, x, y)`` float32.

        With the grids (``"pyramid"``, ``"hash"``), time is periodic: each level's vertices along t are evenly
        spaced around the cycle, the last one followed by the first, so any phase has a value and the cycle closes
        on itself.
        """
        nx, ny, nt = self.shape_xyt
        shape = (nx, ny, n_frames or nt)
        if self.pixels is not None:
            # frames between the acquired ones: linear interpolation around the cycle
            out = resample_separable(self.pixels.reshape(2, nt, nx * ny).transpose(1, 2), (nx * ny, shape[2]),
                                     periodic=(False, True))  # fmt: skip
            return out.transpose(1, 2).reshape(2, shape[2], nx, ny).float()
        if self.pyramid is not None:
            return pyramid_planes([g.squeeze(0) for g in self.pyramid.level_grids()], shape[2])  # views: no copies back
        if isinstance(self.field.encoding, HashGridEncoding):
            feats = grid_features(self.field.encoding, shape, order=(2, 0, 1), periodic=(False, False, True))
        elif shape[2] == nt:
            feats = grid_features(self.field.encoding, shape, order=(2, 0, 1))  # (D, t, x, y)
        else:
            raise ValueError("rendering other frames than the acquired ones needs the hash-grid encoding")
        return head_channels_first(self.field.head, feats).float()  # (2, t, x, y)


class CoilField(nn.Module):
    """Coil sensitivities as a small field over ``(x, y)``: ``(C, x, y)`` complex with unit
    root-sum-of-squares."""

    def __init__(
        self,
        shape_xy: Sequence[int],
        n_coils: int,
        n_levels: int = 4,
        features_per_level: int = 8,
        finest: int = 32,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.shape_xy = tuple(int(n) for n in shape_xy)
        self.n_coils = n_coils
        finest_xy = [min(finest, n) for n in self.shape_xy]
        enc = hash_encoding(finest_xy, n_levels, features_per_level, base_resolution=4)
        self.field = Field(enc, out_dim=2 * n_coils, hidden=hidden, n_hidden_layers=1)

    def maps(self) -> torch.Tensor:
        out = head_channels_first(self.field.head, grid_features(self.field.encoding, self.shape_xy))  # (2C, x, y)
        c = torch.complex(out[: self.n_coils].float(), out[self.n_coils :].float())
        return c / torch.sqrt((c.real**2 + c.imag**2).sum(0, keepdim=True) + 1e-12)

    @torch.no_grad()
    def fit_to(self, maps: torch.Tensor, steps: int = 200, lr: float = 1e-2) -> None:
        """Initialise the field to given maps (e.g. from the low-resolution ACS images)."""
        opt = FusedAdam(self.parameters(), lr=lr)
        for _ in range(steps):
            with torch.enable_grad():
                opt.zero_grad()
                loss = (self.maps() - maps).abs().pow(2).mean()
                loss.backward()
            opt.step()
