"""The slice PSF for slices with their own rigid poses: what slice-to-volume reconstruction needs.

A stack is a set of slices. Slice ``k`` of a stack with voxel -> world affine ``A`` sees the object through the
rigid world -> world transform ``M_k`` (the head's motion, inverted): its voxel ``(i, j, k)`` averages the image
around ``M_k A (i, j, k)`` with the stack's Gaussian PSF (:func:`~inrsr.forward.slice_psf.psf_sigmas_mm`).

:class:`PosedStackOperator` maps a volume on a regular lattice (trilinear in between) to the stack:

* through-plane, the Gaussian is integrated by Gauss-Hermite quadrature (a few nodes per slice, exact for
  polynomials of degree ``2n - 1`` times the Gaussian), so a slice touches only a thin slab of the lattice;
* in-plane, the slab is sampled on a grid ``ratio`` times finer than the stack and filtered with strided
  Gaussian taps (:func:`~inrsr.forward.slice_psf.gaussian_taps`).

All slices are read in one ``grid_sample`` call, so the cost does not depend on the poses. The operator is linear
in the volume (its adjoint is the vector-Jacobian product) and differentiable in the pose parameters, which is
how slice-to-volume registration gets its gradients.

When every posed slice's voxel axes run within :data:`SEPARABLE_MAX_DEG` of the lattice axes (stacks aligned with
the output grid, small motion), the same PSF is applied as a separable Gaussian blur of the lattice followed by
one trilinear read per stack voxel: about ten times fewer reads, with the blur's axes off the slice's own by at
most that angle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import Grid, sampling_affine, voxel_spacing
from .slice_psf import gaussian_taps

# Largest angle (degrees) between a posed slice's voxel axes and the lattice axes for the separable path. Against a
# finely sampled reference (StackOperator) on a brain, 1x1x5 mm stacks: the separable path is off by ~0.12% per
# degree of tilt, the quadrature path by ~0.55% at any tilt; at 3 degrees the separable path is still the closer.
SEPARABLE_MAX_DEG = 3.0


def rigid_matrices(params: torch.Tensor, centre_mm: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of :func:`inrsr.geometry.rigid_matrix`: ``(n, 6)`` (degrees, mm) -> ``(n, 4, 4)``,
    about one centre ``(3,)`` or one per transform ``(n, 3)``.

    >>> from inrsr.geometry import rigid_matrix
    >>> p = torch.tensor([[3.0, -4.0, 5.0, 1.0, 2.0, -3.0]], dtype=torch.float64)
    >>> c = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64)
    >>> bool(torch.allclose(rigid_matrices(p, c)[0], torch.as_tensor(rigid_matrix(p[0], c))))
    True
    """
    a = torch.deg2rad(params[:, :3])
    cx, cy, cz = torch.cos(a).unbind(-1)
    sx, sy, sz = torch.sin(a).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    r = rz @ ry @ rx
    c = centre_mm.to(params.dtype).expand(len(params), 3)
    t = c + params[:, 3:6] - torch.einsum("nij,nj->ni", r, c)
    bottom = torch.zeros(len(params), 1, 4, dtype=params.dtype, device=params.device)
    bottom[:, 0, 3] = 1
    return torch.cat([torch.cat([r, t[:, :, None]], 2), bottom], 1)


def rigid_parameters(matrices: torch.Tensor, centre_mm: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of :func:`inrsr.geometry.rigid_params`: ``(n, 4, 4)`` -> ``(n, 6)`` (degrees, mm).

    >>> p = torch.tensor([[3.0, -4.0, 5.0, 1.0, 2.0, -3.0]], dtype=torch.float64)
    >>> c = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64)
    >>> bool(torch.allclose(rigid_parameters(rigid_matrices(p, c), c), p))
    True
    """
    r = matrices[:, :3, :3]
    ay = torch.asin((-r[:, 2, 0]).clamp(-1, 1))
    ax = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    az = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    c = centre_mm.to(matrices.dtype)
    t = matrices[:, :3, 3] - c + r @ c
    return torch.cat([torch.rad2deg(torch.stack([ax, ay, az], 1)), t], 1)


def hermite_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for a standard normal weight: ``E[f(Z)] ~ sum w_i f(z_i)``.

    >>> z, w = hermite_nodes(3)
    >>> np.round(z, 6), np.round(w, 6)
    (array([-1.732051,  0.      ,  1.732051]), array([0.166667, 0.666667, 0.166667]))
    """
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / w.sum()


def through_plane_nodes(sigma_mm: float, lattice_mm: float) -> int:
    """Quadrature nodes per slice: enough that neighbouring nodes are about a lattice spacing apart.

    >>> through_plane_nodes(1.7, 1.0), through_plane_nodes(1.7, 2.0), through_plane_nodes(0.3, 1.0)
    (7, 5, 1)
    """
    if sigma_mm < 0.5 * lattice_mm:
        return 1
    return int(min(9, 2 * math.ceil(sigma_mm / lattice_mm) + 3))


class PosedStackOperator:
    """Linear map from a volume on ``source`` to a stack whose slices each have a rigid pose.

    ``forward(volume, poses)`` takes a ``(X, Y, Z)`` tensor on ``source`` and ``(n_slices, 4, 4)`` world -> world
    transforms (``None``: the header geometry), and returns the stack ``(nx, ny, nz)``. Points outside ``source``
    count as 0. ``adjoint`` is the exact transpose for fixed poses.
    """

    def __init__(
        self,
        stack_shape: Sequence[int],
        stack_affine: np.ndarray,
        sigmas_mm: Sequence[float],
        source: Grid,
        slice_axis: int,
    ) -> None:
        self.stack_shape = tuple(int(n) for n in stack_shape)
        self.stack_affine = np.asarray(stack_affine, dtype=np.float64)
        self.source = source
        self.slice_axis = int(slice_axis)
        self.inplane = [a for a in range(3) if a != self.slice_axis]
        spacing = voxel_spacing(self.stack_affine)
        lattice = float(source.spacing.min())
        self.n_slices = self.stack_shape[self.slice_axis]
        # in-plane: fine grid and strided taps
        self.ratios = [max(1, int(round(spacing[a] / lattice))) for a in self.inplane]
        self.taps = [
            torch.as_tensor(gaussian_taps(float(sigmas_mm[a]), float(spacing[a]) / r), dtype=torch.float32)
            for a, r in zip(self.inplane, self.ratios, strict=True)
        ]
        half = [(len(t) - 1) // 2 for t in self.taps]
        self.fine_shape = tuple(
            (self.stack_shape[a] - 1) * r + 2 * h + 1 for a, r, h in zip(self.inplane, self.ratios, half, strict=True)
        )
        # through-plane: Gauss-Hermite nodes in slice-index units
        sigma_z = float(sigmas_mm[self.slice_axis])
        z, w = hermite_nodes(through_plane_nodes(sigma_z, lattice))
        self.node_weights = torch.as_tensor(w, dtype=torch.float32)
        offsets = z * sigma_z / spacing[self.slice_axis]
        # Voxel coordinates (in the stack's own index space) of every sample of slice 0: (T, Fb, Fc, 3)
        local = np.zeros((len(offsets), *self.fine_shape, 3))
        for n, (a, r, h) in enumerate(zip(self.inplane, self.ratios, half, strict=True)):
            q = (np.arange(self.fine_shape[n]) - h) / r
            shape = [1, 1, 1]
            shape[n + 1] = -1
            local[..., a] = q.reshape(shape)
        local[..., self.slice_axis] = offsets.reshape(-1, 1, 1)
        self._local = torch.as_tensor(local.reshape(-1, 3), dtype=torch.float64)
        # world -> grid_sample coordinates of the source lattice (align_corners=True), axes reversed
        self._world_to_sample = torch.as_tensor(sampling_affine(source.shape, source.affine))
        self._cache: dict = {}
        self._init_separable(sigmas_mm)

    def _init_separable(self, sigmas_mm: Sequence[float]) -> None:
        """The separable path: which lattice axis each stack axis runs along, the blur taps per lattice axis and
        one read per stack voxel."""
        lattice_dirs = self.source.affine[:3, :3] / np.linalg.norm(self.source.affine[:3, :3], axis=0)
        stack_dirs = self.stack_affine[:3, :3] / np.linalg.norm(self.stack_affine[:3, :3], axis=0)
        nearest = np.abs(lattice_dirs.T @ stack_dirs).argmax(0)  # lattice axis of each stack axis
        self._separable_axes: list[int] | None = None
        if sorted(nearest.tolist()) != [0, 1, 2]:
            return
        self._separable_axes = nearest.tolist()
        self._lattice_dirs = torch.as_tensor(lattice_dirs[:, nearest])  # column a: the lattice axis of stack axis a
        self._stack_dirs = torch.as_tensor(stack_dirs)
        self.blur_taps = [torch.ones(1, dtype=torch.float64)] * 3
        for a, lat in enumerate(nearest):
            taps = gaussian_taps(float(sigmas_mm[a]), float(self.source.spacing[lat]))
            self.blur_taps[lat] = torch.as_tensor(taps, dtype=torch.float64)
        local = np.zeros((*[self.stack_shape[a] for a in self.inplane], 3))
        for n, a in enumerate(self.inplane):
            shape = [1, 1]
            shape[n] = -1
            local[..., a] = np.arange(self.stack_shape[a]).reshape(shape)
        self._sep_local = torch.as_tensor(local.reshape(-1, 3), dtype=torch.float64)

    def separable(self, poses: torch.Tensor | None) -> bool:
        """Whether the separable path applies: every posed slice's axes within :data:`SEPARABLE_MAX_DEG` of the
        lattice's."""
        if self._separable_axes is None:
            return False
        dirs = self._stack_dirs
        if poses is not None:
            dirs = poses.detach().cpu().to(torch.float64)[:, :3, :3] @ dirs
        cos = (dirs * self._lattice_dirs).sum(-2).abs().min()
        return bool(cos >= math.cos(math.radians(SEPARABLE_MAX_DEG)))

    @property
    def n_samples(self) -> int:
        """Lattice reads per application (all slices, all quadrature nodes, fine in-plane grid)."""
        return self.n_slices * len(self._local)

    def slice_affines(self, poses: torch.Tensor | None) -> torch.Tensor:
        """Voxel (of slice ``k``, in the stack's index space) -> world, per slice: ``(n_slices, 4, 4)``."""
        a = torch.as_tensor(self.stack_affine)
        shift = torch.eye(4, dtype=torch.float64).repeat(self.n_slices, 1, 1)
        shift[:, self.slice_axis, 3] = torch.arange(self.n_slices, dtype=torch.float64)
        base = a @ shift
        if poses is None:
            return base
        return poses.to(torch.float64) @ base

    def slice_centres(self, poses: torch.Tensor | None) -> torch.Tensor:
        """World position (mm) of each slice's centre under ``poses``: ``(n_slices, 3)``."""
        centre = torch.tensor([(n - 1) / 2 for n in self.stack_shape], dtype=torch.float64)
        centre[self.slice_axis] = 0
        a = self.slice_affines(None if poses is None else poses.cpu())
        return (a[:, :3, :3] @ centre + a[:, :3, 3]).to(poses.device if poses is not None else "cpu")

    def _coords(
        self, poses: torch.Tensor | None, device: torch.device, dtype: torch.dtype, separable: bool = False
    ) -> torch.Tensor:
        """``grid_sample`` coordinates of every sample: ``(1, n_slices * T, Fb, Fc, 3)`` (quadrature path) or
        ``(1, n_slices, nb, nc, 3)`` (separable path)."""
        key = (device, dtype, separable)
        if poses is None and key in self._cache:
            return self._cache[key]
        m = self._world_to_sample.to(poses.device if poses is not None else "cpu") @ self.slice_affines(poses)
        local = (self._sep_local if separable else self._local).to(m.device)
        g = torch.einsum("sij,nj->sni", m[:, :3, :3], local) + m[:, None, :3, 3]
        shape = [self.stack_shape[a] for a in self.inplane] if separable else self.fine_shape
        coords = g.to(device=device, dtype=dtype).reshape(1, -1, *shape, 3)
        if poses is None:
            self._cache[key] = coords
        return coords

    def forward(self, volume: torch.Tensor, poses: torch.Tensor | None = None) -> torch.Tensor:
        """The stack predicted from ``volume`` on the source lattice with slice ``poses``."""
        order = [self.slice_axis, *self.inplane]
        if self.separable(poses):
            blurred = volume
            for dim, taps in enumerate(self.blur_taps):
                blurred = _blur(blurred, dim, taps.to(volume.device, volume.dtype))
            coords = self._coords(poses, volume.device, volume.dtype, separable=True)
            out = F.grid_sample(blurred[None, None], coords, mode="bilinear", padding_mode="zeros", align_corners=True)
            return out[0, 0].permute(*np.argsort(order))
        coords = self._coords(poses, volume.device, volume.dtype)
        samples = F.grid_sample(
            volume[None, None], coords, mode="bilinear", padding_mode="zeros", align_corners=True
        ).view(self.n_slices, -1, *self.fine_shape)
        w = self.node_weights.to(volume.device, volume.dtype)
        out = torch.einsum("stbc,t->sbc", samples, w) if len(w) > 1 else samples[:, 0]
        for dim, (taps, stride, a) in enumerate(zip(self.taps, self.ratios, self.inplane, strict=True), start=1):
            out = _strided_filter(out, dim, taps.to(volume.device, volume.dtype), stride, self.stack_shape[a])
        # (slices, b, c) -> the stack's own axis order
        return out.permute(*np.argsort(order))

    __call__ = forward

    def adjoint(self, stack: torch.Tensor, poses: torch.Tensor | None = None) -> torch.Tensor:
        """The transpose for fixed ``poses``: a stack -> a volume on the source lattice."""
        x = torch.zeros(self.source.shape, dtype=stack.dtype, device=stack.device, requires_grad=True)
        with torch.enable_grad():
            y = self.forward(x, None if poses is None else poses.detach())
            (grad,) = torch.autograd.grad(y, x, grad_outputs=stack)
        return grad


def _blur(x: torch.Tensor, dim: int, taps: torch.Tensor) -> torch.Tensor:
    """Centred filter ``taps`` (odd length) along ``dim`` with zeros outside ``x`` (same shape as ``x``); its
    gradient is the same filter with the taps reversed (the exact transpose), without autograd's per-tap
    bookkeeping."""
    if len(taps) == 1:
        return x * taps[0]
    return _Blur.apply(x, dim, taps)


def _filter_same(x: torch.Tensor, dim: int, taps: torch.Tensor) -> torch.Tensor:
    h = (len(taps) - 1) // 2
    pad = [0, 0] * x.dim()
    pad[2 * (x.dim() - 1 - dim)] = h
    pad[2 * (x.dim() - 1 - dim) + 1] = h
    return _strided_filter(F.pad(x, pad), dim, taps, 1, x.shape[dim])


class _Blur(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, taps: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.dim = dim
        ctx.save_for_backward(taps)
        return _filter_same(x, dim, taps)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (taps,) = ctx.saved_tensors
        return _filter_same(grad, ctx.dim, taps.flip(0)), None, None


def _strided_filter(x: torch.Tensor, dim: int, taps: torch.Tensor, stride: int, n_out: int) -> torch.Tensor:
    """``out[i] = sum_k taps[k] x[i * stride + k]`` along ``dim`` (``n_out`` outputs)."""
    if len(taps) == 1 and stride == 1:
        return x * taps[0]
    span = (n_out - 1) * stride + 1
    acc = None
    for k in range(len(taps)):
        term = x.narrow(dim, k, span)
        if stride > 1:
            index = [slice(None)] * x.dim()
            index[dim] = slice(None, None, stride)
            term = term[tuple(index)]
        term = term * taps[k]
        acc = term if acc is None else acc + term
    return acc
