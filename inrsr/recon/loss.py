"""The terms of the recon loss: the data term (fused frame by frame for fixed coil maps), total variation and the
locally low-rank term. Each returns a sum that the solver weighs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from queue import Empty, SimpleQueue
from typing import Protocol

import torch

from ..forward.kspace import SenseColumns


class PartTerm(Protocol):
    """A term of the loss that :func:`frame_loss` evaluates in independent parts (frames, blocks of image rows),
    each computing its share of the value and of the gradient together, into a region of the gradient of its own."""

    def count(self, x: torch.Tensor) -> int:
        """The number of parts at the cine's planes ``x (2, t, x, y)``."""
        ...

    def part(self, x: torch.Tensor, i: int, grad: torch.Tensor) -> float:
        """Part ``i``'s share of the term's value at ``x``; adds its gradient into its region of ``grad`` (same
        shape as ``x``)."""
        ...


class CineTerm(Protocol):
    """A term of the loss that :func:`frame_loss` evaluates on the whole cine at once."""

    def cine(self, x: torch.Tensor, grad: torch.Tensor) -> float:
        """The term's value at the planes ``x (2, t, x, y)``; adds its gradient into ``grad``."""
        ...


def frame_loss(x: torch.Tensor, terms: Sequence[PartTerm | CineTerm]) -> torch.Tensor:
    """The sum of ``terms`` at a cine given as real and imaginary planes ``x (2, t, x, y)``, differentiable.

    Each :class:`PartTerm` works on one part of the cine (a frame, a block of rows) at a time, computing its value
    and its gradient together: a part's arrays stay in the CPU's cache from the prediction to the gradient.
    Element-wise work on the whole cine at once streams every intermediate (and autograd's copies of them) through
    main memory, which bounds the speed on a CPU. Real planes keep element-wise work on contiguous real arrays.

    On a CPU with several threads, the whole-cine terms (:class:`CineTerm`) and the parts are jobs that the
    threads take in turn, each thread on one core: a part's operations are too small to share between cores well
    (a frame of the k-t data term runs 1.1 times as fast on two as on one). Each region of a gradient has one
    writer and the sums a fixed order, so the numbers do not depend on the timing. With one thread, or on a GPU,
    the jobs run in turn.
    """
    return _FrameLoss.apply(x, terms)


class _FrameLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, terms: Sequence[PartTerm | CineTerm]) -> torch.Tensor:  # type: ignore[override]
        whole = [term for term in terms if hasattr(term, "cine")]
        split = [term for term in terms if not hasattr(term, "cine")]
        jobs: list[tuple[Callable[[torch.Tensor], float], int]] = []  # (job, the term it belongs to)
        for k, term in enumerate(whole):
            jobs.append((functools.partial(term.cine, x), k))  # type: ignore[union-attr]
        for k, term in enumerate(split, start=len(whole)):
            n = term.count(x)  # type: ignore[union-attr]
            jobs.extend((functools.partial(term.part, x, i), k) for i in range(n))  # type: ignore[union-attr]
        grad = torch.zeros_like(x)
        values = [0.0] * len(jobs)
        threads = torch.get_num_threads()
        workers = min(threads, len(jobs)) - 1  # threads besides this one
        if x.device.type != "cpu" or workers < 1:
            for j, (job, _) in enumerate(jobs):
                values[j] = job(grad)
        else:
            # each term's gradient of its own (the first split term's parts write into disjoint regions of one)
            own = {k: grad if k == len(whole) else torch.zeros_like(x) for k in range(len(terms))}
            todo: SimpleQueue[int] = SimpleQueue()
            for j in range(len(jobs)):
                todo.put(j)

            def work() -> None:
                with torch.no_grad():  # grad mode is per thread: a worker's is on
                    while True:
                        try:
                            j = todo.get_nowait()
                        except Empty:
                            return
                        job, k = jobs[j]
                        values[j] = job(own[k])

            others = [_one_core_pool(workers).submit(work) for _ in range(workers)]
            torch.set_num_threads(1)
            try:
                work()
            finally:
                for f in others:
                    f.result()
                # last, after the workers: the count each thread has is its own, but PyTorch also keeps the last
                # count set by any thread, and threads that start later take that one
                torch.set_num_threads(threads)
            for k in range(len(terms)):
                if own[k] is not grad:
                    grad.add_(own[k])
        ctx.save_for_backward(grad)
        return torch.tensor(sum(values), dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None


def _weigh(r: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Complex ``r`` times real ``w`` (broadcast) without promoting ``w`` to complex."""
    return torch.view_as_complex(torch.view_as_real(r) * w.unsqueeze(-1))


class SenseDataTerm:
    """The data term for fixed coil maps, ``scale * sum w_train |A x - y|^2``, frame by frame (a
    :class:`PartTerm`); after each evaluation :attr:`hold` is the held-out sum ``sum w_hold |A x - y|^2``.

    Everything is in the frame of :meth:`SenseColumns.native` (``y`` through ``native_data``, the 0/1 weights
    through ``native_layout``, broadcastable to ``y``). Where the weights are the same along the readout (whole
    lines measured and held out, :attr:`hybrid`), prediction and data are compared before the FFT over x, which
    is unitary: the same error without that FFT and its adjoint. Where most computed samples are not measured
    (radial k-t masks cross every column, each frame in a few points), each frame's residual is taken at its
    measured samples only.
    """

    def __init__(
        self, op: SenseColumns, y: torch.Tensor, w_train: torch.Tensor, w_hold: torch.Tensor, scale: float = 1.0
    ) -> None:
        self.op, self.scale = op, scale
        shape = y.shape
        measured = ((w_train + w_hold) > 0).expand(shape)
        self.index: list[torch.Tensor] | None = None
        # whole readout lines (weights the same along x, the last axis of the column path): compared in hybrid
        # space (x, ky), without the FFT over x and its adjoint in every evaluation (SenseColumns.readout_inverse)
        self.hybrid = not (op.all_columns or op.signs is not None) and all(
            torch.equal(w, w[..., :1].expand_as(w)) for w in (w_train, w_hold)
        )
        if self.hybrid:
            y = op.readout_inverse(y)
        elif float(measured.float().mean()) < 0.5:
            self.index = [torch.nonzero(m.reshape(-1)).squeeze(1) for m in measured]
            y, w_train, w_hold = (
                [v.expand(shape)[t].reshape(-1)[i] for t, i in enumerate(self.index)] for v in (y, w_train, w_hold)
            )
        self.y, self.w_train = list(y), list(w_train)  # per frame
        # hybrid space: the lines (first axis) each frame leaves out of the loss (held out, or padding), when each
        # line's training weight is one 0 or 1 for all its samples
        self.unused_lines: list[torch.Tensor] | None = None
        if self.hybrid:
            lines = [w.expand(v.shape).reshape(len(v), -1) for w, v in zip(self.w_train, self.y, strict=True)]
            if all(bool(((w == 0) | (w == 1)).all() and (w == w[:, :1]).all()) for w in lines):
                self.unused_lines = [torch.nonzero(w[:, 0] == 0).squeeze(1) for w in lines]
        # the held-out samples of each frame (a few percent), read by index
        self.hold_index = [
            torch.nonzero(w.expand(v.shape).reshape(-1)).squeeze(1) for w, v in zip(w_hold, self.y, strict=True)
        ]
        self.has_hold = any(len(i) > 0 for i in self.hold_index)
        # hybrid space with whole lines held out: the held-out lines (first axis) of each frame, read as rows
        self.hold_lines: list[torch.Tensor] | None = None
        if self.hybrid:
            per_line = [v[0].numel() for v in self.y]
            lines = [
                torch.unique(torch.div(i, n, rounding_mode="floor"))
                for i, n in zip(self.hold_index, per_line, strict=True)
            ]
            if all(len(i) == len(j) * n for i, j, n in zip(self.hold_index, lines, per_line, strict=True)):
                self.hold_lines = lines
        self.hold_norm = sum(
            float(torch.linalg.vector_norm(v.reshape(-1)[i]) ** 2) for i, v in zip(self.hold_index, self.y, strict=True)
        )
        self.holds = [0.0] * len(self.y)  # each frame's held-out sum at its last evaluation

    @property
    def hold(self) -> float:
        """The held-out sum of the last evaluation."""
        return sum(self.holds)

    def count(self, x: torch.Tensor) -> int:
        return x.shape[1]  # the frames

    def part(self, x: torch.Tensor, t: int, grad: torch.Tensor) -> float:
        k = self.op.native_frame(torch.complex(x[0, t], x[1, t]), t, readout=not self.hybrid)
        if self.index is not None:
            r = k.reshape(-1)[self.index[t]].sub_(self.y[t])
        else:
            r = k.sub_(self.y[t])
        if self.has_hold:
            if self.hold_lines is not None:
                held = r.index_select(0, self.hold_lines[t])
            else:
                held = r.reshape(-1)[self.hold_index[t]]
            self.holds[t] = float(torch.linalg.vector_norm(held) ** 2)
        if self.unused_lines is not None:  # 0/1 weights by whole line: the lines out of the loss zeroed in place
            weighted = r.index_fill_(0, self.unused_lines[t], 0)
            flat = weighted.reshape(-1)
            value = float(torch.vdot(flat, flat).real)
        else:
            weighted = _weigh(r, self.w_train[t])
            value = float(torch.vdot(weighted.reshape(-1), r.reshape(-1)).real)
        if self.index is not None:
            weighted = torch.zeros_like(k).reshape(-1).index_copy_(0, self.index[t], weighted).view_as(k)
        g = torch.view_as_real(self.op.native_frame_adjoint(weighted, t, readout=not self.hybrid))
        grad[:, t].add_(g.permute(2, 0, 1), alpha=2 * self.scale)
        return self.scale * value


class TotalVariation:
    """``space * (mean |d_x x| + mean |d_y x|) + time * mean(weight |d_t x|)`` with forward differences (not
    round the cycle) and ``|d| = sqrt(|d|^2 + eps)``, evaluated on blocks of ``block`` frames at a time (a
    :class:`CineTerm`). ``weight (x, y)`` weighs the temporal differences per pixel (None: 1). Set
    :attr:`space` and :attr:`time` between evaluations to change the weights."""

    def __init__(
        self,
        shape: Sequence[int],
        space: float,
        time: float,
        weight: torch.Tensor | None = None,
        eps: float = 1e-8,
        block: int = 6,
    ) -> None:
        nt, nx, ny = (int(n) for n in shape)
        self.space, self.time, self.weight, self.eps, self.block = space, time, weight, eps, block
        self.counts = (nt * (nx - 1) * ny, nt * nx * (ny - 1), max(nt - 1, 1) * nx * ny)

    def _term(self, d: torch.Tensor, factor: float, weight: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        """``factor * sum(weight |d|)`` for the differences' planes ``d (2, ..., X, Y)``, and its gradient with
        respect to ``d`` (computed in place of ``d``)."""
        sq = d.square()
        mag = sq[0].add_(sq[1]).add_(self.eps).sqrt_()
        if weight is None:
            value = float(mag.sum())
        else:
            value = float((mag.reshape(-1, weight.numel()) @ weight.reshape(-1)).sum())
        scale = mag.reciprocal_().mul_(factor)
        if weight is not None:
            scale.mul_(weight)
        return value * factor, d.mul_(scale)

    def frames(self, x: torch.Tensor, start: int, stop: int, grad: torch.Tensor) -> float:
        """The share of frames ``start .. stop - 1`` (their spatial differences and those to their next frame)
        of the term's value at the planes ``x (2, t, x, y)``; adds its gradient into ``grad``."""
        value = 0.0
        if self.space > 0:
            g = grad[:, start:stop]
            for dim in (2, 3):
                v, u = self._term(torch.diff(x[:, start:stop], dim=dim), self.space / self.counts[dim - 2], None)
                value += v
                n = u.shape[dim]
                g.narrow(dim, 1, n).add_(u)
                g.narrow(dim, 0, n).sub_(u)
        end = min(stop + 1, x.shape[1])
        if self.time > 0 and end - start > 1:
            v, u = self._term(torch.diff(x[:, start:end], dim=1), self.time / self.counts[2], self.weight)
            value += v
            grad[:, start + 1 : end].add_(u)
            grad[:, start : end - 1].sub_(u)
        return value

    def cine(self, x: torch.Tensor, grad: torch.Tensor) -> float:
        nt = x.shape[1]
        return sum(self.frames(x, t, min(t + self.block, nt), grad) for t in range(0, nt, self.block))


def _one_core() -> None:
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)  # this thread's operations stay on its own core (the setting is per thread)


@lru_cache(maxsize=4)
def _one_core_pool(workers: int) -> ThreadPoolExecutor:
    # the workers of frame_loss and batched_eigh: flushing subnormals as the fit's threads do (inrsr.devices),
    # one core each
    return ThreadPoolExecutor(workers, thread_name_prefix="inrsr-loss", initializer=_one_core)


def batched_eigh(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of Hermitian matrices ``(B, n, n)``. On a CPU the batch is split over
    PyTorch's intra-op thread count, one share per thread: LAPACK decomposes a batch one matrix after another
    on a single core. Each matrix's decomposition is the same call either way. (Inside :func:`frame_loss` on
    several threads the low-rank term is one job on one core, and its batch is not split.)

    >>> g = torch.eye(3).repeat(8, 1, 1) * torch.arange(1.0, 9.0)[:, None, None]
    >>> lam, vec = batched_eigh(g)
    >>> lam[:, 0].tolist() == torch.arange(1.0, 9.0).tolist(), vec.shape
    (True, torch.Size([8, 3, 3]))
    """
    threads = torch.get_num_threads()
    if g.device.type != "cpu" or threads < 2 or len(g) < 2 * threads:
        return torch.linalg.eigh(g)
    first, *rest = g.chunk(threads)
    others = [_one_core_pool(len(rest)).submit(torch.linalg.eigh, part) for part in rest]
    parts = [torch.linalg.eigh(first)] + [f.result() for f in others]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class LocallyLowRank:
    """``strength * sum_b w_b ||C_b||_* / N``: the nuclear norms of the ``block x block`` Casorati matrices
    (pixels x frames) ``C_b`` of a cine, on a grid shifted by :attr:`shift` (wrapping round), each times its
    block's mean ``weight (x, y)`` (None: 1), over the number of pixels ``N`` (a :class:`CineTerm`). The singular
    values are the square roots of the eigenvalues ``lambda`` of the frames' Gram matrices ``C^H C``, smoothed as
    ``sqrt(lambda + eps)``; the gradient, ``C V diag(1 / sqrt(lambda + eps)) V^H`` (zero on eigenvalues clamped at
    zero), comes from the same eigendecompositions. Set :attr:`strength` and :attr:`shift` between evaluations;
    :attr:`value` is the sum of the weighted nuclear norms over ``N`` at the last one (strength 1).

    >>> x = torch.zeros(2, 3, 4, 4); x[0] = 1.0  # a constant cine: rank 1, each block's norm sqrt(4 * 3)
    >>> term = LocallyLowRank(block=2)
    >>> round(term.cine(x, torch.zeros_like(x)) * x[0].numel() / 4, 4), round(12 ** 0.5, 4)
    (3.4641, 3.4641)
    """

    def __init__(self, block: int, weight: torch.Tensor | None = None, eps: float = 1e-12) -> None:
        self.block, self.weight, self.eps = block, weight, eps
        self.strength, self.shift = 1.0, (0, 0)
        self.value = 0.0

    def cine(self, x: torch.Tensor, grad: torch.Tensor) -> float:
        b, shift = self.block, self.shift
        _, nt, nx, ny = x.shape
        bx, by = nx // b, ny // b
        if bx == 0 or by == 0:  # no whole block
            self.value = 0.0
            return 0.0
        # the blocks of the shifted cine as complex Casorati matrices (B, b b, t), from the planes in one copy
        xs = torch.roll(x, shifts=shift, dims=(2, 3))[:, :, : bx * b, : by * b]
        planes = xs.reshape(2, nt, bx, b, by, b).permute(2, 4, 3, 5, 1, 0).contiguous()
        p = torch.view_as_complex(planes).view(bx * by, b * b, nt)
        lam, vec = batched_eigh(p.mH @ p)
        root = torch.sqrt(lam.clamp_min(0) + self.eps)
        inv_root = torch.where(lam > 0, 1 / root, 0.0)
        nuc = root.sum(-1)
        scale = self.strength / (nt * nx * ny)
        if self.weight is not None:
            w = torch.roll(self.weight, shifts=shift, dims=(0, 1))[: bx * b, : by * b]
            w = w.reshape(bx, b, by, b).mean((1, 3)).reshape(-1)
            nuc, inv_root = nuc * w, inv_root * w[:, None]
        self.value = float(nuc.sum()) / (nt * nx * ny)
        q = p @ ((vec * (scale * inv_root).unsqueeze(-2).to(vec.dtype)) @ vec.mH)  # (B, b b, t)
        g = torch.view_as_real(q).view(bx, by, b, b, nt, 2).permute(5, 4, 0, 2, 1, 3).reshape(2, nt, bx * b, by * b)
        if (bx * b, by * b) != (nx, ny):  # the pixels beyond the last whole block have no gradient
            g = torch.nn.functional.pad(g, (0, ny - by * b, 0, nx - bx * b))
        _add_unrolled(grad, g, shift)
        return self.strength * self.value


def _add_unrolled(grad: torch.Tensor, g: torch.Tensor, shift: tuple[int, int]) -> None:
    """``grad += torch.roll(g, (-shift[0], -shift[1]), dims=(-2, -1))`` without the rolled copy (four slices).

    >>> g = torch.arange(12.0).view(1, 3, 4); out = torch.zeros(1, 3, 4)
    >>> _add_unrolled(out, g, (1, 3)); torch.equal(out, torch.roll(g, (-1, -3), dims=(-2, -1)))
    True
    """
    nx, ny = g.shape[-2:]
    sx, sy = shift[0] % nx, shift[1] % ny
    for dst_x, src_x, n_x in ((0, sx, nx - sx), (nx - sx, 0, sx)):
        for dst_y, src_y, n_y in ((0, sy, ny - sy), (ny - sy, 0, sy)):
            if n_x and n_y:
                part = g[..., src_x : src_x + n_x, src_y : src_y + n_y]
                grad[..., dst_x : dst_x + n_x, dst_y : dst_y + n_y].add_(part)
