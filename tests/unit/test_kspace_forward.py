"""The k-space forward operators: FFT convention, adjointness and linearity (as sigpy tests its Linops)."""

import numpy as np
import pytest
import torch

from inrsr.forward.kspace import (
    Coils,
    FFT2c,
    FFT2cColumns,
    Multiply,
    SenseColumns,
    fft2c,
    ifft2c,
    rss,
    sense_operator,
)


def _rand(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )


def _inner(a, b):
    return torch.sum(a * b.conj())


def test_fft_convention_matches_numpy_centred_orthonormal():
    x = _rand((3, 8, 6))
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(ifft2c(fft2c(x)).numpy(), x.numpy(), atol=1e-12)


def test_centre_of_kspace_is_the_dc_term():
    x = torch.ones(1, 8, 6, dtype=torch.complex128)
    k = fft2c(x)
    assert abs(k[0, 4, 3]) == pytest.approx(np.sqrt(48))
    assert float(k.abs().sum()) == pytest.approx(np.sqrt(48))


@pytest.mark.parametrize("odd", [False, True])
def test_operators_are_adjoint_and_linear(odd):
    t, c, nx, ny = 2, 3, 8 + odd, 6 + odd
    maps = _rand((c, nx, ny), 1)
    mask = torch.rand(t, 1, nx, ny, generator=torch.Generator().manual_seed(2)) > 0.5
    ops = [
        FFT2c((t, c, nx, ny)),
        FFT2c((t, c, nx, ny)).H,
        Coils(maps, (t,)),
        Multiply((t, c, nx, ny), mask.to(torch.complex128)),
        Multiply((t, nx, ny), _rand((nx, ny), 3)),
        sense_operator(maps, mask, (t,)),
        FFT2cColumns((t, c, nx, ny), torch.tensor([1, ny // 2, ny - 2])).to(torch.complex128),
        FFT2cColumns((t, c, nx, ny), torch.tensor([[1, 3], [0, ny - 1]])[:t]).to(torch.complex128),
        SenseColumns(maps, torch.tensor([0, 2, ny - 1]), t),
        SenseColumns(maps, torch.tensor([[1, 3], [0, ny - 1]])[:t], t),
        SenseColumns(maps, torch.tensor([0, 2, ny - 1]), t, fft_y=not odd),
        SenseColumns(maps, torch.tensor([[1, 1, 3], [0, 4, ny - 1]])[:t], t, fft_y=not odd),  # a repeated column
        SenseColumns(maps, torch.tensor([1, ny - 2]), t, fft_y=False),
        SenseColumns(maps, torch.arange(ny), t),
        SenseColumns(_rand((c, 2 * nx, 2 * ny), 7), torch.arange(2 * ny), t),
    ]
    for op in ops:
        x, y = _rand(op.ishape, 4), _rand(op.oshape, 5)
        lhs, rhs = _inner(op(x), y), _inner(x, op.H(y))
        assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10), op
        x2 = _rand(op.ishape, 6)
        a, b = 0.3 - 1.2j, 2.0 + 0.5j
        assert torch.allclose(op(a * x + b * x2), a * op(x) + b * op(x2), atol=1e-10), op
        assert op.H.H.ishape == op.ishape


def test_shape_errors_name_the_operator():
    op = Coils(_rand((3, 8, 6)), (2,))
    with pytest.raises(ValueError, match="Coils"):
        op(_rand((2, 8, 7)))
    with pytest.raises(ValueError, match="compose"):
        FFT2c((2, 8, 6)) * op


def test_rss_of_unit_maps_returns_the_image_magnitude():
    maps = _rand((4, 8, 6))
    maps = maps / rss(maps, dim=0)
    x = _rand((2, 8, 6))
    torch.testing.assert_close(rss(Coils(maps, (2,))(x)), x.abs())


def test_column_fft_equals_the_full_fft_on_its_columns():
    for nx, ny in [(8, 6), (7, 9)]:
        x = _rand((2, 3, nx, ny))
        cols = torch.tensor([0, 2, ny // 2, ny - 1])
        torch.testing.assert_close(
            FFT2cColumns(x.shape, cols)(x.to(torch.complex64)), fft2c(x)[..., cols].to(torch.complex64)
        )


def test_per_frame_columns_equal_each_frames_own_columns():
    x = _rand((3, 2, 7, 9))
    cols = torch.tensor([[0, 4, 8], [1, 4, 5], [2, 3, 7]])
    out = FFT2cColumns(x.shape, cols)(x.to(torch.complex64))
    full = fft2c(x).to(torch.complex64)
    for t in range(3):
        torch.testing.assert_close(out[t], full[t][..., cols[t]])
    with pytest.raises(ValueError, match="per-frame columns"):
        FFT2cColumns((2, 2, 7, 9), cols)


@pytest.mark.parametrize("fft_y", [None, False])  # None: the FFT over y where the matrix is even
@pytest.mark.parametrize("nx", [9, 10])  # even: the FFT's shifts are signs
@pytest.mark.parametrize("columns", ["shared", "per_frame", "all"])
def test_fused_sense_columns_equal_the_composition_and_its_gradient(columns, nx, fft_y):
    t, c, ny = 3, 4, 8
    maps = _rand((c, nx, ny), 1).to(torch.complex64)
    cols = {
        "shared": torch.tensor([1, 4, 6]),
        "per_frame": torch.tensor([[0, 3, 5], [1, 2, 7], [4, 5, 6]]),
        "all": torch.arange(ny),
    }[columns]
    x = _rand((t, nx, ny), 2).to(torch.complex64)
    y = _rand((t, c, nx, cols.shape[-1]), 3).to(torch.complex64)

    def loss_and_grad(fn):
        xr = x.clone().requires_grad_(True)
        r = fn(xr) - y
        loss = (r.real**2 + r.imag**2).sum()
        loss.backward()
        return loss.detach(), xr.grad

    composed = FFT2cColumns((t, c, nx, ny), cols)
    ref_loss, ref_grad = loss_and_grad(lambda v: composed(v[:, None] * maps))
    # the maps laid out coil-last in memory, as ESPIRiT's come: the same values
    coil_last = maps.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    op = SenseColumns(coil_last, cols, t, fft_y=fft_y)
    assert op.all_columns == (columns == "all")
    assert op.fft_y == (fft_y is None and columns != "all" and nx % 2 == 0)
    assert (op.signs is not None) == (columns == "all" and nx % 2 == 0)
    assert (op.kx_signs is not None) == (nx % 2 == 0)
    loss, grad = loss_and_grad(op)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-4)


def test_fft_over_y_needs_an_even_matrix_and_a_subset_of_the_columns():
    maps = _rand((2, 9, 8), 1).to(torch.complex64)
    with pytest.raises(ValueError, match="even matrix"):
        SenseColumns(maps, torch.tensor([1, 4]), 2, fft_y=True)
    with pytest.raises(ValueError, match="even matrix"):
        SenseColumns(_rand((2, 10, 8), 1), torch.arange(8), 2, fft_y=True)
    # the default: the matrix product for a few columns, the FFT from FFT_Y_SHARE of them
    assert not SenseColumns(_rand((2, 10, 40), 1), torch.tensor([3, 20, 31]), 2).fft_y
    assert SenseColumns(_rand((2, 10, 40), 1), torch.arange(0, 40, 4), 2).fft_y
