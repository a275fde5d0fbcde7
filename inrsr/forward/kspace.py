"""The multi-coil Cartesian MRI forward model as composable linear operators with adjoints.

One FFT convention everywhere (forward model, data consistency, zero-filled images): the centred orthonormal
2D FFT over the last two axes, ``k = fftshift(fft2(ifftshift(x), norm="ortho"))``. The last two axes are
``(x, y)`` in the image and ``(kx, ky)`` in k-space: readout first, phase encode second.

Operators follow sigpy's ``Linop``: each has an input shape ``ishape`` and an output shape ``oshape``, a
public :meth:`Linop.apply` that validates the input shape and delegates to ``_apply``, an adjoint ``.H``, and
composition with ``*`` (``A * B`` applies ``B`` first). SENSE is ``Multiply(mask) * FFT2c * Coils(maps)``.
All operate on complex ``torch`` tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes (image -> k-space)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT over the last two axes (k-space -> image); the adjoint of :func:`fft2c`."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root-sum-of-squares coil combination over ``dim`` (coils; ``(..., C, X, Y) -> (..., X, Y)`` by
    default)."""
    return torch.sqrt((coil_images.real**2 + coil_images.imag**2).sum(dim))


class Linop:
    """A linear operator from tensors shaped ``ishape`` to tensors shaped ``oshape``."""

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int]) -> None:
        self.ishape = tuple(int(n) for n in ishape)
        self.oshape = tuple(int(n) for n in oshape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator; the input must be shaped ``ishape``."""
        if tuple(x.shape) != self.ishape:
            raise ValueError(f"{type(self).__name__}: input shape {tuple(x.shape)} != expected {self.ishape}")
        return self._apply(x)

    __call__ = apply

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self) -> Linop:
        raise NotImplementedError

    @property
    def H(self) -> Linop:  # noqa: N802 (the usual name of the adjoint)
        """The adjoint operator, ``oshape -> ishape``."""
        return self._adjoint()

    def __mul__(self, other: Linop) -> Linop:
        return Compose(self, other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ishape} -> {self.oshape})"


class Compose(Linop):
    """``outer * inner``: apply ``inner``, then ``outer``."""

    def __init__(self, outer: Linop, inner: Linop) -> None:
        if inner.oshape != outer.ishape:
            raise ValueError(f"cannot compose {outer} after {inner}: shapes differ")
        super().__init__(inner.ishape, outer.oshape)
        self.outer = outer
        self.inner = inner

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.apply(self.inner.apply(x))

    def _adjoint(self) -> Linop:
        return Compose(self.inner.H, self.outer.H)


class _AdjointOf(Linop):
    """The adjoint of ``op``: its shapes swapped, and ``op`` its own adjoint. Subclasses give ``_apply``."""

    def __init__(self, op: Linop) -> None:
        super().__init__(op.oshape, op.ishape)
        self.op = op

    def _adjoint(self) -> Linop:
        return self.op


class FFT2c(Linop):
    """Centred orthonormal 2D FFT over the last two axes; unitary, so its adjoint is its inverse."""

    def __init__(self, shape: Sequence[int], inverse: bool = False) -> None:
        super().__init__(shape, shape)
        self.inverse = inverse

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return ifft2c(x) if self.inverse else fft2c(x)

    def _adjoint(self) -> Linop:
        return FFT2c(self.ishape, inverse=not self.inverse)


def centred_dft_matrix(
    n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.complex64
) -> torch.Tensor:
    """``(n, n)``: the centred orthonormal 1D DFT as a matrix, ``k = D @ x`` (the convention of :func:`fft2c`)."""
    eye = torch.eye(n, dtype=torch.complex128)
    d = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(eye, dim=0), dim=0, norm="ortho"), dim=0)
    return d.to(device=device, dtype=dtype)


def _alternating(n: int, like: torch.Tensor) -> torch.Tensor:
    """``(-1)^j`` for ``j < n``, real, in the real dtype and on the device of ``like``.

    With an even ``n`` the centred DFT is a plain DFT between two of them:
    ``fftshift(fft(ifftshift(x)))[k] = (-1)^(k - n/2) fft((-1)^j x_j)[k]``.
    """
    return 1.0 - 2.0 * (torch.arange(n, device=like.device) % 2).to(like.real.dtype)


def _fft_x(z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """The centred orthonormal 1D FFT (or its inverse) over the second-to-last axis (readout)."""
    fft = torch.fft.ifft if inverse else torch.fft.fft
    return torch.fft.fftshift(fft(torch.fft.ifftshift(z, dim=-2), dim=-2, norm="ortho"), dim=-2)


class FFT2cColumns(Linop):
    """:func:`fft2c` evaluated on selected phase-encode columns only: ``(*batch, X, Y) -> (*batch, X, K)``
    equals ``fft2c(x)[..., cols]``.

    Cartesian sampling measures whole readout lines, so a training step needs only the ``K`` sampled ky
    columns: a matrix product with ``K`` rows of the DFT over ``y``, then a centred FFT over ``x`` of
    ``K / Y`` of the data (at R = 8, about a quarter). The adjoint is the inverse FFT over ``x`` and the
    conjugate-transposed DFT rows (zero-filling the other columns).

    ``cols`` is ``(K,)``, the same columns for the whole batch, or ``(T, K)``: columns of their own for each
    index of the first batch axis (k-t sampling, where every frame samples other lines), so that each frame
    costs its own ``K`` columns, not the union over frames. Then output ``[t, ..., j]`` is column ``cols[t, j]``.
    """

    def __init__(self, shape: Sequence[int], cols: torch.Tensor, _dft: torch.Tensor | None = None) -> None:
        shape = tuple(int(n) for n in shape)
        cols = torch.as_tensor(cols).long()
        if cols.ndim == 2 and (len(shape) < 3 or cols.shape[0] != shape[0]):
            raise ValueError(f"per-frame columns {tuple(cols.shape)} need an input (T, ..., X, Y) with T = "
                             f"{cols.shape[0]}, got {shape}")  # fmt: skip
        super().__init__(shape, (*shape[:-1], cols.shape[-1]))
        self.cols = cols
        if _dft is None:
            # (Y, K), or (T, Y, K) per frame
            _dft = centred_dft_matrix(shape[-1], cols.device)[cols].transpose(-1, -2).contiguous()
        self.dft = _dft

    def to(self, dtype: torch.dtype) -> FFT2cColumns:
        """The same operator with its DFT rows in another complex dtype."""
        return FFT2cColumns(self.ishape, self.cols, self.dft.to(dtype))

    def _rows(self, x: torch.Tensor, dft: torch.Tensor) -> torch.Tensor:
        if dft.ndim == 2:
            return x @ dft
        lead = x.shape[:-1]
        return torch.bmm(x.reshape(lead[0], -1, x.shape[-1]), dft).reshape(*lead, dft.shape[-1])

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return _fft_x(self._rows(x, self.dft))

    def _adjoint(self) -> Linop:
        return _FFT2cColumnsAdjoint(self)


class _FFT2cColumnsAdjoint(_AdjointOf):
    op: FFT2cColumns

    def _apply(self, k: torch.Tensor) -> torch.Tensor:
        return self.op._rows(_fft_x(k, inverse=True), self.op.dft.conj().transpose(-1, -2))


class SenseColumns(Linop):
    """``FFT2cColumns * Coils(maps)`` in one operator: a cine ``(T, X, Y)`` -> its coil k-space on the sampled
    columns ``(T, C, X, K)``, with fixed maps ``(C, X, Y)``.

    The same numbers as composing the two, computed frame by frame (a frame's coil images stay in the CPU's
    cache between the coil product and the column DFT) and differentiated through the adjoint (inverse FFT over
    ``x``, conjugate DFT rows, conjugate-map coil combination) instead of through autograd's copies of the
    coil images. When the columns are all of them, in order (radial k-t sampling crosses every column), a full
    2D FFT replaces the DFT matrix: ``Y log Y`` operations per row instead of ``Y * K``. With even ``X`` and
    ``Y`` its shifts are signs instead of copies: the centred DFT of ``x`` is ``(-1)^(k - n/2)`` times the DFT of
    ``(-1)^j x_j``, so the maps carry one checkerboard and k-space the other.
    """

    def __init__(self, maps: torch.Tensor, cols: torch.Tensor, n_frames: int) -> None:
        nc, nx, ny = maps.shape
        self.columns = FFT2cColumns((n_frames, nc, nx, ny), cols.to(maps.device)).to(maps.dtype)
        super().__init__((n_frames, nx, ny), self.columns.oshape)
        self.maps = maps.detach()
        # even X: the shifts of the FFT over x are signs, (-1)^x on the maps and (-1)^(kx - X/2) on k-space
        self.kx_signs: torch.Tensor | None = None
        self.column_maps = self.maps
        if nx % 2 == 0:
            sx = _alternating(nx, self.maps)[:, None]
            self.kx_signs, self.column_maps = sx * (-1) ** (nx // 2), self.maps * sx
        self.column_maps_conj = self.column_maps.conj().resolve_conj()
        dft = self.columns.dft
        self.dft_h = dft.conj().transpose(-1, -2).resolve_conj().contiguous()
        self.all_columns = cols.ndim == 1 and torch.equal(cols.cpu(), torch.arange(ny))
        self.signs: tuple[torch.Tensor, torch.Tensor] | None = None  # (image, k-space), both axes
        if self.all_columns and self.kx_signs is not None and ny % 2 == 0:
            sy = _alternating(ny, self.maps)
            self.signs = (self.column_maps * sy, self.kx_signs * sy * (-1) ** (ny // 2))

    def frame_dft(self, dft: torch.Tensor, t: int) -> torch.Tensor:
        return dft[t] if dft.ndim == 3 else dft

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return _SenseColumnsFunction.apply(x, self)

    def _adjoint(self) -> Linop:
        return _SenseColumnsAdjoint(self)


class _SenseColumnsAdjoint(_AdjointOf):
    op: SenseColumns

    def _apply(self, k: torch.Tensor) -> torch.Tensor:
        op = self.op
        if op.signs is not None:
            return (torch.fft.ifft2(k * op.signs[1], norm="ortho") * op.signs[0].conj()).sum(-3)
        if op.all_columns:
            return (ifft2c(k) * op.maps.conj()).sum(-3)
        nt, nc, nx, n_cols = k.shape
        if op.kx_signs is not None:
            z = torch.fft.ifft(k * op.kx_signs, dim=-2, norm="ortho").reshape(nt, nc * nx, n_cols)
        else:
            z = _fft_x(k, inverse=True).reshape(nt, nc * nx, n_cols)
        out = k.new_empty(op.ishape)
        buf = k.new_empty(nc * nx, op.ishape[-1])
        for t in range(nt):
            torch.mm(z[t], op.frame_dft(op.dft_h, t), out=buf)
            torch.sum(buf.view(nc, nx, -1).mul_(op.column_maps_conj), 0, out=out[t])
        return out


class _SenseColumnsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: SenseColumns) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        if op.signs is not None:
            return torch.fft.fft2(x.unsqueeze(-3) * op.signs[0], norm="ortho").mul_(op.signs[1])
        if op.all_columns:
            return fft2c(x.unsqueeze(-3) * op.maps)
        nt, nx, ny = x.shape
        nc = op.maps.shape[0]
        z = x.new_empty(nt, nc * nx, op.oshape[-1])
        coil = x.new_empty(nc, nx, ny)
        for t in range(nt):
            coil = torch.mul(x[t], op.column_maps, out=coil)
            torch.mm(coil.view(nc * nx, ny), op.frame_dft(op.columns.dft, t), out=z[t])
        if op.kx_signs is not None:
            return torch.fft.fft(z.view(op.oshape), dim=-2, norm="ortho").mul_(op.kx_signs)
        return _fft_x(z.view(op.oshape))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.op.H(grad.contiguous()), None


class Multiply(Linop):
    """Element-wise product with a fixed (broadcastable) tensor, e.g. a sampling mask; adjoint: the
    conjugate."""

    def __init__(self, shape: Sequence[int], factor: torch.Tensor) -> None:
        super().__init__(shape, shape)
        torch.broadcast_shapes(tuple(factor.shape), self.ishape)
        self.factor = factor

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def _adjoint(self) -> Linop:
        factor = self.factor.conj() if self.factor.is_complex() else self.factor
        return Multiply(self.ishape, factor)


class Coils(Linop):
    """Coil sensitivities: image ``(*batch, X, Y)`` -> coil images ``(*batch, C, X, Y)``, ``S_c * x``.

    The adjoint combines coil images with the conjugate maps, ``sum_c conj(S_c) y_c``.
    """

    def __init__(self, maps: torch.Tensor, batch: Sequence[int] = ()) -> None:
        if maps.ndim != 3:
            raise ValueError(f"coil maps must be (C, X, Y), got shape {tuple(maps.shape)}")
        batch = tuple(batch)
        super().__init__((*batch, *maps.shape[1:]), (*batch, *maps.shape))
        self.maps = maps

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-3) * self.maps

    def _adjoint(self) -> Linop:
        return _CoilCombine(self)


class _CoilCombine(_AdjointOf):
    op: Coils

    def _apply(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.op.maps.conj()).sum(-3)


def sense_operator(maps: torch.Tensor, mask: torch.Tensor, batch: Sequence[int] = ()) -> Linop:
    """``mask * FFT2c * Coils(maps)``: image ``(*batch, X, Y)`` -> masked k-space ``(*batch, C, X, Y)``.

    ``mask`` must broadcast to ``(*batch, C, X, Y)`` (e.g. ``(T, 1, X, Y)`` for a k-t mask shared by the
    coils).
    """
    coils = Coils(maps, batch)
    return Multiply(coils.oshape, mask.to(maps.dtype)) * FFT2c(coils.oshape) * coils
