"""The slice acquisition model: a low-res voxel is the image averaged over that voxel's point-spread function.

The PSF of a stack is a 3D Gaussian aligned with the stack's voxel axes, in world mm: through-plane its FWHM is
the slice thickness, in-plane about the in-plane spacing. Two realisations share :func:`psf_sigmas_mm`:

* :class:`StackOperator`, a linear operator from a volume on a regular lattice (trilinear interpolation
  between lattice points) to a stack. It resamples the lattice onto a fine grid in the stack's frame and applies
  separable Gaussian filters with a stride, so it is fast and exact up to the fine-grid quadrature. Used by
  ``simulate`` (lattice-aligned stacks are resampled separably). Its adjoint comes from autograd.
  :class:`~inrsr.forward.posed_slices.PosedStackOperator` is its twin for slices with their own poses (``fit``).
* :func:`psf_offsets`, Gaussian sample offsets (in the stack's voxel units) for evaluating a continuous field
  at several points inside each voxel's PSF during training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import Grid, voxel_spacing

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def psf_sigmas_mm(affine: np.ndarray, slice_axis: int, thickness_mm: float | None) -> np.ndarray:
    """Gaussian PSF standard deviations (mm) along a stack's three voxel axes.

    Through-plane FWHM = ``thickness_mm`` (default: the slice spacing); in-plane FWHM = the in-plane spacing.

    >>> np.round(psf_sigmas_mm(np.diag([1.0, 1.0, 4.0, 1.0]), 2, 5.0), 3)
    array([0.425, 0.425, 2.123])
    """
    spacing = voxel_spacing(affine)
    fwhm = spacing.copy()
    fwhm[slice_axis] = spacing[slice_axis] if thickness_mm is None else float(thickness_mm)
    return fwhm * FWHM_TO_SIGMA


def gaussian_taps(sigma: float, step: float, truncate: float = 3.0) -> np.ndarray:
    """Weights at multiples of ``step`` that integrate a Gaussian PSF against a piecewise-linear signal.

    Tap ``k`` is ``integral g(t) hat((t - k step) / step) dt``: exact when the signal is linear between the
    samples (trilinear interpolation of a lattice sampled at ``step``). Normalised to sum to 1.
    """
    if sigma <= 1e-3 * step:
        return np.ones(1)
    half = int(math.ceil(truncate * sigma / step)) + 1
    # Integrate on a fine sub-grid of each step (the integrand is smooth; 32 sub-samples are plenty).
    sub = 32
    t = (np.arange(-half * sub, half * sub + 1) / sub) * step
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.arange(-half, half + 1)
    hat = np.clip(1 - np.abs(t[None, :] / step - k[:, None]), 0, None)
    w = (hat * g[None, :]).sum(axis=1)
    keep = np.flatnonzero(w > 1e-5 * w.max())
    w = w[keep.min() : keep.max() + 1]
    return w / w.sum()


def _axis_aligned_map(source_affine: np.ndarray, fine_affine: np.ndarray):
    """If each fine-grid axis runs along one source axis (any scale, sign and shift), return ``(perm, scale,
    shift)`` with ``source[perm[a]] = scale[a] * q[a] + shift[a]``; for oblique grids return ``None``."""
    m = np.linalg.solve(source_affine, fine_affine)
    lin, shift = m[:3, :3], m[:3, 3]
    tol = 1e-6 * np.abs(lin).max()
    perm = []
    for a in range(3):
        nonzero = np.flatnonzero(np.abs(lin[:, a]) > tol)
        if len(nonzero) != 1:
            return None
        perm.append(int(nonzero[0]))
    if sorted(perm) != [0, 1, 2]:
        return None
    scale = [float(lin[perm[a], a]) for a in range(3)]
    return perm, scale, [float(shift[perm[a]]) for a in range(3)]


def _linear_resample_axis(x: torch.Tensor, dim: int, positions: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional ``positions`` (zero outside)."""
    n = x.shape[dim]
    i0 = np.floor(positions).astype(np.int64)
    frac = positions - i0
    parts = []
    for idx, w in ((i0, 1 - frac), (i0 + 1, frac)):
        valid = (idx >= 0) & (idx < n) & (np.abs(w) > 1e-9)
        if not valid.any():
            continue
        weights = torch.as_tensor(np.where(valid, w, 0.0), dtype=x.dtype, device=x.device)
        shape = [1] * x.dim()
        shape[dim] = -1
        index = torch.as_tensor(np.clip(idx, 0, n - 1), device=x.device)
        parts.append(x.index_select(dim, index) * weights.view(shape))
    if not parts:
        out_shape = list(x.shape)
        out_shape[dim] = len(positions)
        return x.new_zeros(out_shape)
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


class StackOperator:
    """Linear map from a volume on ``source`` (a lattice, trilinear in between) to a stack seen through its PSF.

    ``forward(volume)`` takes ``(X, Y, Z)`` (or ``(B, X, Y, Z)``) tensors on ``source`` and returns the stack
    ``(nx, ny, nz)`` (or batched). Differentiable, so ``adjoint`` is the exact vector-Jacobian product.
    Points outside ``source`` count as 0.
    """

    def __init__(
        self,
        stack_shape: Sequence[int],
        stack_affine: np.ndarray,
        sigmas_mm: Sequence[float],
        source: Grid,
    ) -> None:
        self.stack_shape = tuple(int(n) for n in stack_shape)
        self.stack_affine = np.asarray(stack_affine, dtype=np.float64)
        self.source = source
        spacing = voxel_spacing(self.stack_affine)
        finest_source = float(source.spacing.min())
        self.ratios = [max(1, int(math.ceil(s / finest_source - 1e-3))) for s in spacing]
        self.taps = [
            gaussian_taps(float(sig), float(s) / r)
            for sig, s, r in zip(sigmas_mm, spacing, self.ratios, strict=True)
        ]
        half = [(len(t) - 1) // 2 for t in self.taps]
        self.fine_shape = tuple(
            (n - 1) * r + 2 * h + 1 for n, r, h in zip(self.stack_shape, self.ratios, half, strict=True)
        )
        # fine index q -> stack voxel coordinate (q - half) / ratio -> world
        to_stack = np.eye(4)
        to_stack[:3, :3] = np.diag([1.0 / r for r in self.ratios])
        to_stack[:3, 3] = [-h / r for h, r in zip(half, self.ratios, strict=True)]
        self.fine_affine = self.stack_affine @ to_stack
        self.aligned = _axis_aligned_map(source.affine, self.fine_affine)
        self._coords: dict[tuple, torch.Tensor] = {}

    @property
    def n_fine(self) -> int:
        return int(np.prod(self.fine_shape))

    def _fine_coords(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``grid_sample`` coordinates of the fine grid in the source lattice, ``(1, *fine_shape, 3)``."""
        key = (device, dtype)
        if key not in self._coords:
            m = np.linalg.solve(self.source.affine, self.fine_affine)
            axes = [torch.arange(n, dtype=torch.float64) for n in self.fine_shape]
            q = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
            p = q @ torch.as_tensor(m[:3, :3].T) + torch.as_tensor(m[:3, 3])  # source voxel coords
            size = torch.as_tensor(self.source.shape, dtype=torch.float64)
            u = torch.where(size > 1, 2 * p / (size - 1).clamp_min(1) - 1, p * 2.0)  # align_corners=True
            # grid_sample wants (x, y, z) = (W, H, D) order, i.e. reversed source axes.
            self._coords[key] = u.flip(-1).to(device=device, dtype=dtype)[None]
        return self._coords[key]

    def _resample(self, vol: torch.Tensor) -> torch.Tensor:
        """``(B, X, Y, Z)`` source -> ``(B, *fine_shape)`` fine grid in the stack's frame."""
        if self.aligned is not None:
            # Separable: one 1D linear interpolation per axis (fast, cache-friendly).
            perm, scale, shift = self.aligned
            out = vol.permute(0, *(p + 1 for p in perm))
            for a in range(3):
                positions = scale[a] * np.arange(self.fine_shape[a]) + shift[a]
                out = _linear_resample_axis(out, a + 1, positions)
            return out
        coords = self._fine_coords(vol.device, vol.dtype)
        out = F.grid_sample(
            vol[:, None],
            coords.expand(vol.shape[0], -1, -1, -1, -1),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        return out[:, 0]

    def _blur(self, fine: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian filtering with stride: ``(B, *fine_shape)`` -> ``(B, *stack_shape)``.

        Each axis is a sum of strided slices (one per tap); the axis with the largest stride goes first so that
        later passes work on less data.
        """
        out = fine
        for a in sorted(range(3), key=lambda a: -self.ratios[a]):
            taps, stride, n_out = self.taps[a], self.ratios[a], self.stack_shape[a]
            if len(taps) == 1 and stride == 1:
                continue
            dim = a + 1
            span = (n_out - 1) * stride + 1
            acc = None
            for k, w in enumerate(taps):
                index = [slice(None)] * 4
                index[dim] = slice(k, k + span, stride)
                term = out[tuple(index)] * float(w)
                acc = term if acc is None else acc + term
            out = acc
        return out

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Predict the stack from a volume on the source lattice."""
        batched = volume.dim() == 4
        vol = volume if batched else volume[None]
        out = self._blur(self._resample(vol))
        return out if batched else out[0]

    __call__ = forward

    def adjoint(self, stack: torch.Tensor) -> torch.Tensor:
        """The transpose: a stack ``(nx, ny, nz)`` -> a volume on the source lattice."""
        x = torch.zeros(self.source.shape, dtype=stack.dtype, device=stack.device, requires_grad=True)
        with torch.enable_grad():
            y = self.forward(x)
            (grad,) = torch.autograd.grad(y, x, grad_outputs=stack)
        return grad


def psf_offsets(
    n_voxels: int,
    n_samples: int,
    sigmas_vox: torch.Tensor,
    slice_axis: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian PSF sample offsets in a stack's voxel units: ``(n_voxels, n_samples, 3)``.

    In-plane offsets are plain Gaussian draws; through-plane ones are stratified (one draw in each of
    ``n_samples`` equal-probability bins of the Gaussian), which lowers the variance of the PSF average.
    ``sigmas_vox``: PSF standard deviations in voxels along the stack's axes, ``(3,)``. Each sample has weight
    ``1 / n_samples``.
    """
    bins = torch.arange(n_samples, dtype=torch.float32)
    u = (bins + torch.rand(n_voxels, n_samples, generator=generator)) / n_samples
    offsets = torch.randn(n_voxels, n_samples, 3, generator=generator)
    offsets[..., slice_axis] = torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))
    return offsets * sigmas_vox.float()
