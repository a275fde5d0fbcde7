"""The recon loss evaluated frame by frame (value and gradient together) equals autograd through the same terms
written on the whole cine."""

import threading

import pytest
import torch

from inrsr.forward.kspace import SenseColumns
from inrsr.recon.loss import SenseDataTerm, TotalVariation, frame_loss


def _rand(shape, seed, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)).to(dtype)
    return torch.randn(shape, generator=g).to(dtype)


def _reference(planes, op, y, w_train, w_hold, scale, space, time, weight, eps=1e-8):
    """The terms on the whole cine with plain torch operations (standard k-space layout)."""
    x = torch.complex(planes[0], planes[1])
    r = op(x) - y
    power = r.real**2 + r.imag**2
    loss = scale * (w_train * power).sum()
    for dim in (1, 2):
        d = torch.diff(x, dim=dim)
        loss = loss + space * torch.sqrt(d.real**2 + d.imag**2 + eps).mean()
    d = torch.diff(x, dim=0)
    loss = loss + time * (torch.sqrt(d.real**2 + d.imag**2 + eps) * weight).mean()
    return loss, float((w_hold * power.detach()).sum())


@pytest.mark.parametrize("nx", [10, 9])  # even: k-space signs moved onto the data
@pytest.mark.parametrize("columns", ["shared", "per_frame", "all_sparse"])
@pytest.mark.parametrize("lines", [False, True])  # whole readout lines held out: compared in hybrid space
@pytest.mark.parametrize("threads", [1, 2])  # two: the frames shared between threads, TV on a gradient of its own
def test_frame_loss_equals_autograd_of_the_same_terms(columns, nx, lines, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # the CPU's thread count, as frame_loss reads it
    t, c, ny = 4, 3, 8
    maps = _rand((c, nx, ny), 1).to(torch.complex64)
    cols = {
        "shared": torch.tensor([1, 3, 4, 6]),
        "per_frame": torch.tensor([[0, 3, 5], [1, 2, 7], [4, 5, 6], [0, 1, 2]]),
        "all_sparse": torch.arange(ny),
    }[columns]
    op = SenseColumns(maps, cols, t)
    g = torch.Generator().manual_seed(3)
    oshape = op.oshape
    if columns == "all_sparse":  # a few points per frame, as radial k-t sampling measures
        sampled = torch.rand(t, 1, nx, ny, generator=g) < 0.2
    else:
        sampled = torch.ones(t, 1, nx, oshape[-1], dtype=torch.bool)
    hold_shape = (t, 1, 1, sampled.shape[-1]) if lines else sampled.shape
    hold = sampled & (torch.rand(hold_shape, generator=g) < 0.3)
    w_train, w_hold = (sampled & ~hold).float(), hold.float()
    y = _rand(oshape, 4).to(torch.complex64) * sampled
    planes = _rand((2, t, nx, ny), 5, torch.float32)
    weight = torch.rand(nx, ny, generator=g)
    scale, space, time = 0.3, 0.05, 0.07

    ref_planes = planes.clone().requires_grad_(True)
    ref_loss, ref_hold = _reference(ref_planes, op, y, w_train, w_hold, scale, space, time, weight)
    ref_loss.backward()

    data = SenseDataTerm(op, op.native_data(y), op.native_layout(w_train), op.native_layout(w_hold), scale)
    assert (data.index is not None) == (columns == "all_sparse")
    assert data.hybrid == (lines and columns != "all_sparse")
    assert (data.unused_lines is not None) == data.hybrid  # 0/1 weights by line: lines out of the loss zeroed
    assert (data.hold_lines is not None) == data.hybrid  # whole lines held out: read as rows
    tv = TotalVariation((t, nx, ny), space, time, weight)
    fused_planes = planes.clone().requires_grad_(True)
    loss = frame_loss(fused_planes, [data, tv])
    (2 * loss).backward()  # the gradient is scaled by the incoming one
    torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-5, atol=1e-6)
    assert data.hold == pytest.approx(ref_hold, rel=1e-5)
    assert data.hold_norm == pytest.approx(float((w_hold * y.abs() ** 2).sum()), rel=1e-5)
    torch.testing.assert_close(fused_planes.grad, 2 * ref_planes.grad, rtol=1e-4, atol=1e-6)


def _count_in_a_new_thread() -> int:
    seen: list[int] = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    return seen[0]


def test_frame_loss_shares_frames_between_threads_with_the_same_numbers_every_time(monkeypatch):
    """With several threads the frames go to whichever thread is free, but each frame's gradient has one writer
    and the sums a fixed order: repeated evaluations agree to the bit, and the caller's thread count is kept,
    also for threads started afterwards (PyTorch gives them the count last set by any thread: here the workers
    start late, after the caller has done every job)."""
    import time

    from inrsr.recon import loss as loss_module
    from inrsr.recon.loss import LocallyLowRank

    one_core = loss_module._one_core
    monkeypatch.setattr(loss_module, "_one_core", lambda: (time.sleep(0.2), one_core()))
    loss_module._one_core_pool.cache_clear()  # a new pool, whose workers start late

    t, c, nx, ny = 12, 3, 16, 12
    maps = _rand((c, nx, ny), 1).to(torch.complex64)
    cols = torch.stack([torch.randperm(ny, generator=torch.Generator().manual_seed(i))[:4] for i in range(t)])
    op = SenseColumns(maps, cols, t)
    y = op.native_data(_rand(op.oshape, 4).to(torch.complex64))
    ones = op.native_layout(torch.ones(t, 1, nx, 4))
    data = SenseDataTerm(op, y, ones, torch.zeros_like(ones), 0.3)
    terms = [data, TotalVariation((t, nx, ny), 0.05, 0.07), LocallyLowRank(block=4)]
    planes = _rand((2, t, nx, ny), 5, torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for _ in range(4):
            leaf = planes.clone().requires_grad_(True)
            loss = frame_loss(leaf, terms)
            loss.backward()
            runs.append((float(loss.detach()), leaf.grad))
            assert torch.get_num_threads() == 2
            assert _count_in_a_new_thread() == 2  # the caller's count, not the workers' one
        torch.set_num_threads(1)  # one thread: everything in turn on the caller's
        leaf = planes.clone().requires_grad_(True)
        serial = frame_loss(leaf, terms)
        serial.backward()
    finally:
        torch.set_num_threads(before)
        loss_module._one_core_pool.cache_clear()
    for value, grad in runs[1:]:
        assert value == runs[0][0] and torch.equal(grad, runs[0][1])
    torch.testing.assert_close(runs[0][1], leaf.grad, rtol=1e-5, atol=1e-7)
    assert runs[0][0] == pytest.approx(float(serial.detach()), rel=1e-6)


def test_native_frame_round_trips_through_the_standard_layout():
    t, c, nx, ny = 3, 2, 8, 6
    maps = _rand((c, nx, ny), 1).to(torch.complex64)
    op = SenseColumns(maps, torch.tensor([0, 2, 5]), t)
    k = _rand(op.oshape, 2).to(torch.complex64)
    torch.testing.assert_close(op.from_native(op.native_data(k)), k)
    x = _rand((t, nx, ny), 3).to(torch.complex64)
    torch.testing.assert_close(op.native(x), op.native_data(op(x)))


@pytest.mark.parametrize("frame_major", [False, True])  # grids stored (F, t, x, y) in memory, as CineField's
@pytest.mark.parametrize("frames", [6, 9])  # the acquired frames, and frames between them
def test_pyramid_render_equals_the_sum_of_separable_upsamplings_and_its_gradient(frames, frame_major):
    from inrsr.recon.model import pyramid_planes, resample_separable

    shapes = [(3, 4, 2), (5, 6, 3), (10, 8, 6)]  # (x, y, t) vertices; the last is the pixel grid
    grids = [_rand((2, *s), i, torch.float32) for i, s in enumerate(shapes)]
    grad = _rand((2, frames, 10, 8), 9, torch.float32)

    def reference(gs):
        cyclic_t = (True, False, False)
        return sum(resample_separable(g.permute(0, 3, 1, 2), (frames, 10, 8), periodic=cyclic_t) for g in gs)

    leaves = [g.clone().requires_grad_(True) for g in grids]
    ref = reference(leaves)
    ref.backward(grad)
    if frame_major:
        pairs = zip(grids, shapes, strict=True)
        grids = [g.new_empty(2, c, a, b).permute(0, 2, 3, 1).copy_(g) for g, (a, b, c) in pairs]
    fast_leaves = [g.clone().requires_grad_(True) for g in grids]
    out = pyramid_planes(fast_leaves, frames)
    out.backward(grad)
    torch.testing.assert_close(out, ref)
    for a, b in zip(fast_leaves, leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
        if frame_major:  # the gradient in the grid's own layout: nothing to copy
            assert a.grad.stride() == a.stride()
