"""The data term through per-row normal matrices (fixed-line masks) equals the frame-by-frame data term and
autograd through the same term on the whole cine: value, gradient and held-out error."""

import pytest
import torch

from inrsr.forward.kspace import SenseColumns
from inrsr.recon.gram import GramDataTerm
from inrsr.recon.loss import SenseDataTerm, TotalVariation, frame_loss


def _rand(shape, seed, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)).to(dtype)
    return torch.randn(shape, generator=g).to(dtype)


def _problem(nx, ny, fft_y, hold_lines, t=5, c=3, cols=(1, 2, 4, 5, 7)):
    maps = _rand((c, nx, ny), 1)
    op = SenseColumns(maps, torch.tensor(cols), t, fft_y=fft_y)
    k = op.oshape[-1]
    hold = torch.zeros(t, 1, 1, k, dtype=torch.bool)
    for frame, line in hold_lines:  # (frame, line): held out in that frame only
        hold[frame, 0, 0, line] = True
    sampled = torch.ones(t, 1, nx, k, dtype=torch.bool)
    w_train, w_hold = (sampled & ~hold).float(), (sampled & hold).float()
    y = _rand(op.oshape, 4)
    return op, y, w_train, w_hold


@pytest.mark.parametrize(("nx", "ny", "fft_y"), [(10, 8, True), (10, 8, False), (9, 8, False), (10, 9, False)])
@pytest.mark.parametrize("threads", [1, 2])  # two: in blocks of rows, shared between threads
def test_gram_term_equals_the_frame_term_and_autograd(nx, ny, fft_y, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # the CPU's thread count, as the terms read it
    op, y, w_train, w_hold = _problem(nx, ny, fft_y, hold_lines=[(0, 1), (0, 3), (2, 4), (4, 0)])
    scale = 0.3
    frames = SenseDataTerm(op, op.native_data(y), op.native_layout(w_train), op.native_layout(w_hold), scale)
    gram = GramDataTerm.of(frames)
    assert gram is not None
    planes = _rand((2, 5, nx, ny), 5, torch.float32)

    # autograd through the whole-cine operator in the standard layout
    ref_planes = planes.clone().requires_grad_(True)
    r = op(torch.complex(ref_planes[0], ref_planes[1])) - y
    power = r.real**2 + r.imag**2
    ref = scale * (w_train * power).sum()
    ref.backward()
    ref_hold = float((w_hold * power.detach()).sum())

    tv = TotalVariation((5, nx, ny), 0.05, 0.07)
    for term in (frames, gram):
        leaf = planes.clone().requires_grad_(True)
        loss = frame_loss(leaf, [term])
        loss.backward()
        torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(leaf.grad, ref_planes.grad, rtol=1e-4, atol=1e-5)
        assert term.hold == pytest.approx(ref_hold, rel=1e-5)
        assert term.hold_norm == pytest.approx(float((w_hold * y.abs() ** 2).sum()), rel=1e-5)
    assert gram.count(planes) == (1 if threads == 1 else min(nx, 4 * threads))
    # with a whole-cine term: the sum of both
    both = planes.clone().requires_grad_(True)
    tv_only = planes.clone().requires_grad_(True)
    frame_loss(both, [tv, gram]).backward()
    frame_loss(tv_only, [tv]).backward()
    torch.testing.assert_close(both.grad, tv_only.grad + ref_planes.grad, rtol=1e-4, atol=1e-5)


def test_gram_term_applies_to_fixed_lines_only():
    op, y, w_train, w_hold = _problem(10, 8, True, hold_lines=[])
    term = SenseDataTerm(op, op.native_data(y), op.native_layout(w_train), op.native_layout(w_hold))
    gram = GramDataTerm.of(term)
    assert gram is not None and gram.y_held is None and not gram.has_hold
    # per-frame columns (k-t sampling): the frames' normal matrices differ
    per_frame = SenseColumns(_rand((2, 10, 8), 1), torch.tensor([[0, 3], [1, 2], [4, 5]]), 3)
    ones = torch.ones(3, 1, 10, 2)
    kt = SenseDataTerm(per_frame, per_frame.native_data(_rand(per_frame.oshape, 2)),
                       per_frame.native_layout(ones), per_frame.native_layout(0 * ones))  # fmt: skip
    assert kt.hybrid and GramDataTerm.of(kt) is None
    # points held out, not whole lines: no hybrid space
    points = w_hold.clone().expand(5, 1, 10, 5).clone()
    points[0, 0, 3, 1] = 1
    train = (1 - points).expand(5, 1, 10, 5)
    mixed = SenseDataTerm(op, op.native_data(y), op.native_layout(train), op.native_layout(points))
    assert GramDataTerm.of(mixed) is None


@pytest.mark.parametrize("fft_y", [True, False])
def test_column_rows_are_the_hybrid_transform_over_y(fft_y):
    maps = _rand((2, 6, 8), 1)
    op = SenseColumns(maps, torch.tensor([0, 3, 6]), 2, fft_y=fft_y)
    x = _rand((6, 8), 2)
    z = op.native_frame(x, 1, readout=False)  # (K, C, X)
    rows = op.column_rows(1)
    expected = torch.einsum("cxy,ky->kcx", op.column_maps * x, rows)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)
