"""The data term through its normal operator, for masks that sample the same lines in every frame.

In hybrid space ``(x, ky)`` the SENSE operator acts on each readout row ``x`` of a frame on its own: with the
sampled columns' transform over y, ``R (K, Y)``, and the coil maps of the row, ``m_c (Y,)``,
``A_x = [R diag(m_c)]_c``. Its normal matrix ``A_x^H A_x = (R^H R) * (sum_c conj(m_c) m_c^T)`` (element-wise
product) is ``Y x Y``. When every frame measures the same lines, one such matrix per row serves all frames:
the data term of the whole cine and its gradient are one batched matrix product, ``G x - b``, instead of the
coil images, FFTs over y and adjoints of every frame. A frame's held-out lines are taken out of its normal matrix
by their own rows of ``A_x`` (a few per frame), which also give the held-out error.
"""

from __future__ import annotations

import torch

from .loss import SenseDataTerm

# the normal matrices (X Y^2 complex numbers) are made only up to this size
MAX_BYTES = 1 << 30


class GramDataTerm:
    """:class:`SenseDataTerm`'s value, gradient and held-out sum for the whole cine at once, through per-row normal
    matrices (see the module), in blocks of rows (a :class:`inrsr.recon.loss.PartTerm`). Build it with
    :meth:`of`, which says when it applies: whole lines in hybrid space, the same columns in every frame
    (fixed-line masks), weights 0 or 1 by line."""

    ROW_BLOCKS_PER_THREAD = 4

    def __init__(self, term: SenseDataTerm) -> None:
        op = term.op
        assert term.unused_lines is not None
        self.scale = term.scale
        maps = op.column_maps  # (C, X, Y)
        nc, nx, ny = maps.shape
        rows = op.column_rows()  # (K, Y)
        rows_gram = rows.mH @ rows  # (Y, Y)
        coil_gram = torch.bmm(maps.permute(1, 2, 0).conj(), maps.permute(1, 0, 2))  # (X, Y, Y)
        self.gram = coil_gram.mul_(rows_gram)
        # b = A_train^H y per frame, (X, Y, T); the constant sum |y_train|^2
        b, const = [], 0.0
        for t, y in enumerate(term.y):
            y = y.index_fill(0, term.unused_lines[t], 0)
            b.append(op.native_frame_adjoint(y, t, readout=False))
            const += float(torch.linalg.vector_norm(y) ** 2)
        self.b = torch.stack(b, dim=-1)
        self.const = const
        # the held-out lines of all frames, l = 0..L-1 (frame t_l, line j_l): their rows of R as (Y, L), the
        # frames' one-hot selection (T, L), the coil maps by row, and the data (X, C, L)
        frames = [t for t, lines in enumerate(term.unused_lines) for _ in range(len(lines))]
        lines = torch.cat(list(term.unused_lines)) if frames else torch.zeros(0, dtype=torch.long)
        self.rows_held = rows[lines].T.contiguous()  # (Y, L)
        self.rows_held_conj = self.rows_held.conj().resolve_conj()
        self.select = torch.zeros(len(term.y), len(frames), dtype=maps.dtype, device=maps.device)
        self.select[frames, torch.arange(len(frames))] = 1
        self.select_t = self.select.T.contiguous()
        self.maps_rows = maps.permute(1, 0, 2).contiguous()  # (X, C, Y)
        self.maps_rows_h = self.maps_rows.mH.contiguous()  # (X, Y, C)
        held = [term.y[t][j] for t, j in zip(frames, lines.tolist(), strict=True)]  # (C, X) each
        self.y_held = torch.stack(held, dim=-1).permute(1, 0, 2).contiguous() if held else None  # (X, C, L)
        self.has_hold, self.hold_norm = term.has_hold, term.hold_norm
        self.holds = [0.0]

    @classmethod
    def of(cls, term: SenseDataTerm) -> GramDataTerm | None:
        """The whole-cine form of ``term``, or None where it does not apply (or its matrices would be too large)."""
        op = term.op
        if not term.hybrid or term.unused_lines is None or term.hold_lines is None or op.cols.ndim != 1:
            return None
        nc, nx, ny = op.column_maps.shape
        if nx * ny * ny * op.column_maps.element_size() > MAX_BYTES:
            return None
        # the lines out of the loss must be exactly the held-out lines (whole lines held out, no padding)
        for lines, held in zip(term.unused_lines, term.hold_lines, strict=True):
            if not torch.equal(held, torch.sort(lines).values):
                return None
        return cls(term)

    def count(self, x: torch.Tensor) -> int:
        """The parts of an evaluation: blocks of image rows, several per CPU thread (one with one thread, or on a
        GPU, where one batched product serves best)."""
        threads = torch.get_num_threads()
        n = 1 if x.device.type != "cpu" or threads < 2 else min(x.shape[2], self.ROW_BLOCKS_PER_THREAD * threads)
        if len(self.holds) != n:
            self.holds = [0.0] * n
        return n

    def part(self, x: torch.Tensor, i: int, grad: torch.Tensor) -> float:
        """Rows block ``i`` of ``count(x)``: its share of the term's value at the planes ``x (2, T, X, Y)`` (the
        constant with block 0); adds its gradient into those rows of ``grad`` (same shape) and sets its share of
        :attr:`hold`."""
        nx, n = x.shape[2], len(self.holds)
        rows = slice(i * nx // n, (i + 1) * nx // n)
        xc = torch.complex(x[0, :, rows], x[1, :, rows]).permute(1, 2, 0).contiguous()  # (X, Y, T)
        u = torch.bmm(self.gram[rows], xc)
        if self.y_held is not None:
            # the held-out lines' predictions p = A_held x and the lines taken out: G_t x - A_held^H p
            lines = torch.matmul(xc, self.select).mul_(self.rows_held)  # (X, Y, L): each line's frame, times R
            p = torch.bmm(self.maps_rows[rows], lines)  # (X, C, L)
            self.holds[i] = float(torch.linalg.vector_norm(p - self.y_held[rows]) ** 2)
            back = torch.bmm(self.maps_rows_h[rows], p).mul_(self.rows_held_conj)  # (X, Y, L)
            u.sub_(torch.matmul(back, self.select_t))
        b = self.b[rows]
        u.sub_(b)  # G x - b: half the gradient
        xr, ur, br = (torch.view_as_real(v).reshape(-1) for v in (xc, u, b))
        # |A x - y|^2 = x^H G x - 2 Re x^H b + |y|^2 = Re x^H (G x - b) - Re x^H b + |y|^2
        value = float(torch.dot(xr, ur)) - float(torch.dot(xr, br)) + (self.const if i == 0 else 0.0)
        grad[:, :, rows].add_(torch.view_as_real(u).permute(3, 2, 0, 1), alpha=2 * self.scale)
        return self.scale * value

    @property
    def hold(self) -> float:
        """The held-out sum of the last evaluation."""
        return sum(self.holds)
