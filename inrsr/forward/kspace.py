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


def _fft_x(z: torch.Tensor, inverse: bool = False, dim: int = -2) -> torch.Tensor:
    """The centred orthonormal 1D FFT (or its inverse) over the readout axis ``dim`` (second-to-last by default)."""
    fft = torch.fft.ifft if inverse else torch.fft.fft
    return torch.fft.fftshift(fft(torch.fft.ifftshift(z, dim=dim), dim=dim, norm="ortho"), dim=dim)


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

    A fit compares the output with data many times: :meth:`native` gives it in the operator's own frame, where it
    costs least, and :meth:`native_data` puts data into that frame once (``native(x) == native_data(op(x))``).
    There the column path's axes are ``(T, K, C, X)`` (each frame's column DFT is one matrix product, and the FFT
    over ``x`` runs along the contiguous last axis) and k-space's sign checkerboard is left out (it is moved onto
    the data: a squared error does not see a sign common to both sides). :meth:`native_layout` moves weights
    (masks) into the same axes without signs.

    With even ``X`` and ``Y`` and a frame's columns at least ``FFT_Y_SHARE`` of ``Y`` (the default of ``fft_y``),
    the DFT rows over ``y`` are an FFT over all of ``y`` (along the contiguous last axis) and a gather of the
    columns: ``Y log Y`` operations per row instead of ``Y * K``, cheaper than the matrix product from about a
    sixth of the columns on (a CPU, in the hybrid-space data term). Then k-space's signs along ``ky`` are moved
    onto the data like those along ``kx``.
    """

    FFT_Y_SHARE = 0.17

    def __init__(self, maps: torch.Tensor, cols: torch.Tensor, n_frames: int, fft_y: bool | None = None) -> None:
        nc, nx, ny = maps.shape
        self.columns = FFT2cColumns((n_frames, nc, nx, ny), cols.to(maps.device)).to(maps.dtype)
        super().__init__((n_frames, nx, ny), self.columns.oshape)
        # contiguous (C, X, Y): the coil images and their FFTs then run along contiguous rows (maps laid out
        # coil-last, as ESPIRiT's come, would stride every one of them)
        self.maps = maps.detach().contiguous()
        # even X: the shifts of the FFT over x are signs, (-1)^x on the maps and (-1)^(kx - X/2) on k-space
        self.kx_signs: torch.Tensor | None = None
        self.column_maps = self.maps
        if nx % 2 == 0:
            sx = _alternating(nx, self.maps)[:, None]
            self.kx_signs, self.column_maps = sx * (-1) ** (nx // 2), self.maps * sx
        self.all_columns = cols.ndim == 1 and torch.equal(cols.cpu(), torch.arange(ny))
        even = self.kx_signs is not None and ny % 2 == 0
        sy = _alternating(ny, self.maps) if even else None
        self.signs: tuple[torch.Tensor, torch.Tensor] | None = None  # (image, k-space), both axes
        if self.all_columns and sy is not None:
            self.signs = (self.column_maps * sy, self.kx_signs * sy * (-1) ** (ny // 2))
        if fft_y is None:
            fft_y = even and not self.all_columns and cols.shape[-1] >= self.FFT_Y_SHARE * ny
        if fft_y and (not even or self.all_columns):
            raise ValueError("the FFT over y needs an even matrix and a subset of the columns")
        self.fft_y = bool(fft_y)
        self.cols = cols.to(maps.device)
        self.ky_signs: torch.Tensor | None = None  # (K,) or (T, K), real
        if self.fft_y:
            # the FFT over y and a gather of the columns: the maps carry (-1)^y, k-space (-1)^(ky - Y/2) there
            self.column_maps = self.column_maps * sy
            self.ky_signs = sy[self.cols] * (-1) ** (ny // 2)
        else:
            self.dft_t = self.columns.dft.transpose(-1, -2).contiguous()  # (K, Y) or (T, K, Y)
            self.dft_t_conj = self.dft_t.conj().resolve_conj()
        self.column_maps_conj = self.column_maps.conj().resolve_conj()

    def frame_dft(self, dft: torch.Tensor, t: int) -> torch.Tensor:
        return dft[t] if dft.ndim == 3 else dft

    def frame_cols(self, t: int) -> torch.Tensor:
        return self.cols[t] if self.cols.ndim == 2 else self.cols

    def column_rows(self, t: int = 0) -> torch.Tensor:
        """Frame ``t``'s transform over y on the column path as a ``(K, Y)`` matrix ``R``: in hybrid space,
        ``native_frame(x, t, readout=False)[j, c] == (column_maps[c] * x) @ R[j]`` (the DFT rows, or those of the
        plain FFT whose signs the data carry)."""
        if self.signs is not None or self.all_columns:
            raise ValueError("column rows are the column path's")
        if not self.fft_y:
            return self.frame_dft(self.dft_t, t)
        ny = self.ishape[-1]
        y = torch.arange(ny, dtype=torch.float64, device=self.cols.device)
        k = (self.frame_cols(t).to(torch.float64)[:, None] * y) % ny
        rows = torch.polar(torch.full_like(k, ny**-0.5), -2 * torch.pi * k / ny)
        return rows.to(self.column_maps.dtype)

    def native_layout(self, v: torch.Tensor) -> torch.Tensor:
        """``(T, C or 1, X, K)`` -> the axes of :meth:`native` (no signs: for weights and masks)."""
        return v if self.all_columns else v.permute(0, 3, 1, 2).contiguous()

    def _native_signs(self) -> torch.Tensor | None:
        """k-space's signs in the axes of :meth:`native` on the column path: ``(X,)``, or ``(K or T K, 1, X)``
        with the FFT over y."""
        if self.kx_signs is None:
            return None
        if self.ky_signs is None:
            return self.kx_signs[:, 0]
        return self.ky_signs[..., None, None] * self.kx_signs[:, 0]

    def native_data(self, k: torch.Tensor) -> torch.Tensor:
        """Data ``(T, C, X, K)`` in the frame of :meth:`native`: its axes, and k-space's signs (their own
        inverse) moved onto the data."""
        if self.signs is not None:
            return k * self.signs[1]
        if self.all_columns:
            return k
        k = self.native_layout(k)
        signs = self._native_signs()
        return k * signs if signs is not None else k

    def from_native(self, k: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`native_data`."""
        if self.signs is not None:
            return k * self.signs[1]
        if self.all_columns:
            return k
        signs = self._native_signs()
        k = k * signs if signs is not None else k
        return k.permute(0, 2, 3, 1).contiguous()

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """The operator in its own frame (see the class), differentiable: ``(T, X, Y)`` -> ``(T, K, C, X)``
        (``(T, C, X, Y)`` with all columns)."""
        return _SenseColumnsFunction.apply(x, self)

    def native_frame(
        self, x: torch.Tensor, t: int, out: torch.Tensor | None = None, readout: bool = True
    ) -> torch.Tensor:
        """Frame ``t`` of :meth:`native`: ``(X, Y)`` -> ``(K, C, X)`` (``(C, X, Y)`` with all columns), into
        ``out`` when given. One frame's intermediates fit in a CPU's cache. ``readout=False`` (column path only)
        leaves out the last step, the FFT over x: the output is then in hybrid space (x, ky), to be compared with
        :meth:`readout_inverse` of the data."""
        if self.signs is not None or self.all_columns:
            if not readout:
                raise ValueError("hybrid space is the column path's")
            if self.signs is not None:
                return torch.fft.fft2(x * self.signs[0], norm="ortho", out=out)
            k = fft2c(x * self.maps)
            return k if out is None else out.copy_(k)
        nc, nx, ny = self.maps.shape
        coil = torch.mul(x, self.column_maps)
        if self.fft_y:
            # the columns as rows of the transposed spectrum: one contiguous (K, C, X) gather (indexing the last
            # axis and permuting costs seven times as much)
            spectrum = torch.fft.fft(coil, dim=-1, norm="ortho").view(nc * nx, ny).T
            z = torch.index_select(spectrum, 0, self.frame_cols(t)).view(-1, nc, nx)
        else:
            z = torch.mm(self.frame_dft(self.dft_t, t), coil.reshape(nc * nx, ny).T).view(-1, nc, nx)
        if not readout:
            return z.contiguous() if out is None else out.copy_(z)
        if self.kx_signs is not None:
            return torch.fft.fft(z, dim=-1, norm="ortho", out=out)
        k = _fft_x(z, dim=-1)
        return k if out is None else out.copy_(k)

    def readout_inverse(self, k: torch.Tensor) -> torch.Tensor:
        """The inverse of the FFT over x that :meth:`native_frame` ends with, over the last axis of native
        column-path data ``(..., X)``: data in the hybrid space of ``readout=False``. The FFT is unitary, so
        where the weights of a squared error are the same along x (whole readout lines), the error is the same
        in either space."""
        if self.kx_signs is not None:
            return torch.fft.ifft(k, dim=-1, norm="ortho")
        return _fft_x(k, inverse=True, dim=-1)

    def native_frame_adjoint(
        self, k: torch.Tensor, t: int, out: torch.Tensor | None = None, readout: bool = True
    ) -> torch.Tensor:
        """The adjoint of :meth:`native_frame`: ``(K, C, X)`` (``(C, X, Y)`` with all columns) -> ``(X, Y)``;
        ``readout=False``: of its hybrid-space form."""
        if self.signs is not None:
            coil = torch.fft.ifft2(k, norm="ortho").mul_(self.signs[0].conj())
        elif self.all_columns:
            coil = ifft2c(k).mul_(self.maps.conj())
        else:
            n_cols, nc, nx = k.shape
            z = self.readout_inverse(k) if readout else k
            if self.fft_y:
                z = z.permute(1, 2, 0)
                full = z.new_zeros(nc, nx, self.ishape[-1]).index_add_(-1, self.frame_cols(t), z)
                return torch.sum(torch.fft.ifft(full, dim=-1, norm="ortho").mul_(self.column_maps_conj), 0, out=out)
            coil = torch.mm(z.reshape(n_cols, nc * nx).T, self.frame_dft(self.dft_t_conj, t))
            coil = coil.view(nc, nx, -1).mul_(self.column_maps_conj)
        return torch.sum(coil, 0, out=out)

    def native_adjoint(self, k: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`native`."""
        out = k.new_empty(self.ishape)
        for t in range(len(k)):
            self.native_frame_adjoint(k[t], t, out=out[t])
        return out

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_native(self.native(x))

    def _adjoint(self) -> Linop:
        return _SenseColumnsAdjoint(self)


class _SenseColumnsAdjoint(_AdjointOf):
    op: SenseColumns

    def _apply(self, k: torch.Tensor) -> torch.Tensor:
        return self.op.native_adjoint(self.op.native_data(k))


class _SenseColumnsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: SenseColumns) -> torch.Tensor:  # type: ignore[override]
        ctx.op = op
        nt = x.shape[0]
        nc, nx, ny = op.maps.shape
        out = x.new_empty((nt, nc, nx, ny) if op.all_columns else (nt, op.oshape[-1], nc, nx))
        for t in range(nt):
            op.native_frame(x[t], t, out=out[t])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.op.native_adjoint(grad.contiguous()), None


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
