"""Coordinate encodings and fields: shapes, interpolation against manual formulas, gradients, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from inrsr.encodings import (
    FourierEncoding,
    HashGridEncoding,
    IdentityEncoding,
    PositionalEncoding,
    _spatial_hash,
)
from inrsr.fields import Field, SirenField


def small_hash(**kw) -> HashGridEncoding:
    args = dict(in_dim=3, n_levels=4, features_per_level=2, log2_table_size=9, base_resolution=(3, 5, 4),
                finest_resolution=(12, 16, 10), init_scale=1.0)
    args.update(kw)
    return HashGridEncoding(**args)


def lattice_points(shape) -> torch.Tensor:
    axes = [torch.linspace(-1, 1, n) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


def manual_multilinear(grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multilinear interpolation of a ``(1, F, *res)`` vertex grid spanning [-1, 1] at points ``(N, D)``."""
    res = torch.tensor(grid.shape[2:], dtype=torch.float64)
    pos = (x.double() + 1) / 2 * (res - 1)
    i0 = pos.floor().clamp(max=res - 2).long()
    frac = pos - i0
    d = x.shape[1]
    out = torch.zeros(x.shape[0], grid.shape[1], dtype=torch.float64)
    g = grid[0].double()
    for corner in range(2**d):
        bits = [(corner >> a) & 1 for a in range(d)]
        w = torch.ones(x.shape[0], dtype=torch.float64)
        idx = []
        for a, b in enumerate(bits):
            w = w * (frac[:, a] if b else 1 - frac[:, a])
            idx.append(i0[:, a] + b)
        vals = g[(slice(None), *idx)].t()  # (N, F)
        out += w[:, None] * vals
    return out


# --- hash grid ---------------------------------------------------------------------------------------------


def test_hash_grid_levels_dense_and_hashed():
    enc = small_hash()
    assert enc.out_dim == 8
    assert enc.resolutions[0] == (3, 5, 4) and enc.resolutions[-1] == (12, 16, 10)
    for a in range(3):  # geometric growth per axis
        r = np.array([res[a] for res in enc.resolutions], dtype=float)
        assert np.all(np.diff(r) >= 0)
    # dense exactly when the level's vertices fit the 2^9 = 512-row table
    expected = [int(np.prod(r)) <= 512 for r in enc.resolutions]
    assert enc.dense == expected
    assert any(enc.dense) and not all(enc.dense)
    assert len(enc.dense_grids) == sum(expected)
    assert tuple(enc.table.shape) == (512, 2)
    # all dense with a big table: no hashed rows at all
    big = small_hash(log2_table_size=14)
    assert all(big.dense) and big.table.shape[0] == 0 and big.hashed_index.numel() == 0
    x = torch.rand(33, 3) * 2 - 1
    assert enc(x).shape == (33, 8) and big(x).shape == (33, 8)


def test_hashed_level_vertices_read_the_table_at_the_spatial_hash():
    enc = small_hash()
    grids = enc.level_grids()
    level = enc.dense.index(False)
    res = enc.resolutions[level]
    g = grids[level]
    assert tuple(g.shape) == (1, 2, *res)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = [int(rng.integers(0, n)) for n in res]
        h = int(_spatial_hash(torch.tensor(v), enc.log2_table_size))
        expected_h = (v[0] * 1) ^ (v[1] * 2654435761) ^ (v[2] * 805459861)
        assert h == expected_h % 512
        torch.testing.assert_close(g[0, :, v[0], v[1], v[2]], enc.table[h], rtol=0, atol=0)


@pytest.mark.parametrize("log2_table_size", [9, 14])
def test_forward_equals_lattice_at_lattice_points(log2_table_size):
    torch.manual_seed(0)
    enc = small_hash(log2_table_size=log2_table_size)
    shape = (7, 9, 5)
    with torch.no_grad():
        lat = enc.lattice(shape)
        pts = enc(lattice_points(shape))
    assert lat.shape == (enc.out_dim, *shape)
    torch.testing.assert_close(pts.t().reshape(enc.out_dim, *shape), lat, rtol=1e-5, atol=1e-6)


def test_forward_is_multilinear_interpolation_of_each_level():
    torch.manual_seed(1)
    enc = small_hash()
    x = torch.rand(200, 3) * 2 - 1
    x[:5] = torch.tensor(
        [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.5]]
    )
    with torch.no_grad():
        out = enc(x).double()
        grids = enc.level_grids()
    for level, g in enumerate(grids):  # dense and hashed levels alike
        expected = manual_multilinear(g.detach(), x)
        torch.testing.assert_close(out[:, 2 * level : 2 * level + 2], expected, rtol=1e-5, atol=1e-5)
    # vertices are read exactly at the box corners: level 0 at (-1, -1, -1) is vertex (0, 0, 0)
    torch.testing.assert_close(out[0, :2], grids[0][0, :, 0, 0, 0].double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1, :2], grids[0][0, :, -1, -1, -1].double(), rtol=1e-6, atol=1e-6)


def test_axis_order_matters():
    """The first coordinate runs along the first resolution axis (not grid_sample's reversed order)."""
    enc = HashGridEncoding(3, n_levels=1, features_per_level=1, log2_table_size=10, base_resolution=(2, 3, 4),
                           finest_resolution=(2, 3, 4))
    with torch.no_grad():
        enc.dense_grids[0].zero_()
        enc.dense_grids[0][0, 0, 1, 0, 0] = 1.0  # vertex at x = +1, y = -1, z = -1
    out = enc(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [0.0, -1.0, -1.0]]))[:, 0]
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 0.5]))


def test_gradients_reach_dense_grids_and_table():
    torch.manual_seed(2)
    enc = small_hash()
    x = (torch.rand(500, 3) * 2 - 1).requires_grad_(True)
    (enc(x) ** 2).sum().backward()
    for p in enc.dense_grids:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert enc.table.grad is not None and float(enc.table.grad.abs().sum()) > 0
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # the table gradient equals the sum of the hashed levels' vertex gradients (index_add in _Gather)
    enc.zero_grad()
    grids = enc.level_grids()
    for g in grids:
        g.retain_grad()
    enc.level_grids = lambda: grids  # forward reads these very tensors, so their .grad gets filled
    (enc(x.detach()) ** 2).sum().backward()
    hashed_levels = [i for i, d in enumerate(enc.dense) if not d]
    expected = torch.zeros_like(enc.table)
    for i in hashed_levels:
        res = enc.resolutions[i]
        axes = [torch.arange(n) for n in res]
        vertex = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        rows = _spatial_hash(vertex, enc.log2_table_size)
        expected.index_add_(0, rows, grids[i].grad[0].reshape(2, -1).t())
    torch.testing.assert_close(enc.table.grad, expected, rtol=1e-5, atol=1e-7)


def test_gradcheck_tiny_double_instance():
    torch.manual_seed(3)
    enc = HashGridEncoding(3, n_levels=2, features_per_level=1, log2_table_size=4, base_resolution=2,
                           finest_resolution=4, init_scale=1.0).double()
    assert enc.dense == [True, False]
    # points away from cell boundaries (where the interpolation is not differentiable in x)
    x = torch.tensor([[0.1, -0.4, 0.7], [-0.8, 0.2, 0.45], [0.55, 0.9, -0.15]], dtype=torch.float64)
    params = dict(enc.named_parameters())
    names = list(params)

    def f(*tensors):
        *p, pts = tensors
        return functional_call(enc, dict(zip(names, p, strict=True)), (pts,))

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names) + (x.requires_grad_(True),)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_hash_grid_is_deterministic_under_the_torch_seed():
    x = torch.rand(50, 3) * 2 - 1
    torch.manual_seed(4)
    a = small_hash()
    torch.manual_seed(4)
    b = small_hash()
    torch.manual_seed(5)
    c = small_hash()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert not torch.equal(a(x), c(x))


def test_hash_grid_2d():
    torch.manual_seed(6)
    enc = HashGridEncoding(2, n_levels=3, features_per_level=2, log2_table_size=6, base_resolution=(4, 6),
                           finest_resolution=(16, 12), init_scale=1.0)
    assert enc.dense == [int(np.prod(r)) <= 64 for r in enc.resolutions]
    assert enc.dense[0] and not enc.dense[-1]
    x = torch.rand(40, 2) * 2 - 1
    out = enc(x)
    assert out.shape == (40, 6)
    with torch.no_grad():
        for level, g in enumerate(enc.level_grids()):
            assert g.dim() == 4
            torch.testing.assert_close(out[:, 2 * level : 2 * level + 2].double(), manual_multilinear(g, x),
                                       rtol=1e-5, atol=1e-5)
        lat = enc.lattice((5, 7))
        at_points = enc(lattice_points((5, 7))).t().reshape(6, 5, 7)
        torch.testing.assert_close(at_points, lat, rtol=1e-5, atol=1e-6)


def test_hash_grid_bad_arguments():
    with pytest.raises(ValueError):
        HashGridEncoding(4)
    with pytest.raises(ValueError):
        HashGridEncoding(3, base_resolution=1)


# --- Fourier and positional --------------------------------------------------------------------------------


def test_fourier_encoding_shapes_and_values():
    g = torch.Generator().manual_seed(0)
    enc = FourierEncoding(3, n_frequencies=16, sigma=2.0, generator=g)
    assert enc.out_dim == 3 + 32 and enc.frequencies.shape == (3, 16)
    x = torch.rand(10, 3) * 2 - 1
    out = enc(x)
    assert out.shape == (10, 35)
    phase = 2 * math.pi * x @ enc.frequencies
    torch.testing.assert_close(out, torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=1))
    no_input = FourierEncoding(2, n_frequencies=5, include_input=False)
    assert no_input.out_dim == 10 and no_input(torch.zeros(4, 2)).shape == (4, 10)
    # sin(0) = 0, cos(0) = 1
    torch.testing.assert_close(no_input(torch.zeros(1, 2)), torch.tensor([[0.0] * 5 + [1.0] * 5]))
    # frequencies drawn with std sigma
    wide = FourierEncoding(3, n_frequencies=4000, sigma=0.5, generator=torch.Generator().manual_seed(1))
    assert float(wide.frequencies.std()) == pytest.approx(0.5, rel=0.03)


def test_fourier_frequencies_are_per_mm_with_half_extent():
    half_extent = [40.0, 60.0, 25.0]
    plain = FourierEncoding(3, 32, sigma=0.1, generator=torch.Generator().manual_seed(2))
    scaled = FourierEncoding(3, 32, sigma=0.1, half_extent_mm=half_extent,
                             generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(scaled.frequencies, plain.frequencies * torch.tensor(half_extent)[:, None])
    # so that the features at normalised u equal the per-mm features at world x = u * half_extent
    u = torch.rand(20, 3) * 2 - 1
    world = u * torch.tensor(half_extent)
    torch.testing.assert_close(scaled(u)[:, 3:], plain(world)[:, 3:], rtol=1e-4, atol=1e-4)


def test_positional_encoding():
    enc = PositionalEncoding(3, n_frequencies=4)
    assert enc.out_dim == 3 * 9
    x = torch.tensor([[0.25, -0.5, 0.1], [0.0, 1.0, -1.0]])
    out = enc(x)
    assert out.shape == (2, 27)
    torch.testing.assert_close(out[:, :3], x)
    # sin block: index d * F + k is sin(2^k pi x_d); cos block follows
    for d in range(3):
        for k in range(4):
            torch.testing.assert_close(out[:, 3 + d * 4 + k], torch.sin(2**k * math.pi * x[:, d]))
            torch.testing.assert_close(out[:, 15 + d * 4 + k], torch.cos(2**k * math.pi * x[:, d]))
    ident = IdentityEncoding(3)
    assert ident.out_dim == 3 and torch.equal(ident(x), x)


# --- fields ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    [lambda: small_hash(), lambda: FourierEncoding(3, 8, 1.0), lambda: PositionalEncoding(3, 3)],
)
def test_field_shapes_and_zero_last(encoding):
    torch.manual_seed(7)
    x = torch.rand(25, 3) * 2 - 1
    f = Field(encoding(), out_dim=2, hidden=16, n_hidden_layers=2)
    assert f.in_dim == 3 and f.out_dim == 2
    out = f(x)
    assert out.shape == (25, 2) and float(out.detach().abs().max()) > 0
    c = f.complex(x)
    assert c.shape == (25,) and c.dtype == torch.complex64
    torch.testing.assert_close(c.real, out[:, 0])
    torch.testing.assert_close(c.imag, out[:, 1])
    zero = Field(encoding(), out_dim=1, hidden=16, zero_last=True)
    z = zero(x)
    assert z.shape == (25, 1) and torch.equal(z, torch.zeros_like(z))
    # but it still learns: the last layer gets a gradient
    z.sum().backward()
    assert float(zero.head.net[-1].weight.grad.abs().sum()) > 0


def test_siren_field():
    torch.manual_seed(8)
    x = torch.rand(30, 3) * 2 - 1
    f = SirenField(3, 2, hidden=32, n_hidden_layers=3, w0=30.0)
    out = f(x)
    assert out.shape == (30, 2) and float(out.detach().abs().max()) > 0
    assert len(f.body) == 3
    # SIREN first-layer init: uniform(-1/in, 1/in)
    assert float(f.body[0].linear.weight.detach().abs().max()) <= 1 / 3
    assert f.complex(x).shape == (30,)
    zero = SirenField(3, 1, hidden=16, n_hidden_layers=2, zero_last=True)
    z = zero(x)
    assert z.shape == (30, 1) and torch.equal(z, torch.zeros_like(z))
    f2 = SirenField(2, 1, hidden=8, n_hidden_layers=1)
    assert f2(torch.zeros(4, 2)).shape == (4, 1)
