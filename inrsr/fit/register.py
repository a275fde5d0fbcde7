"""Rigid registration: stacks to the reference stack (SimpleITK, mutual information), and slices or stacks to the
current reconstruction (gradients through the posed-slice forward model).

Poses are world -> world rigid transforms ``M`` applied to a slice's header positions (``M A ijk`` is where the
slice really sampled the object, in the reference frame), parametrised as ``(rx, ry, rz, tx, ty, tz)`` in degrees
and mm about a fixed centre (:func:`inrsr.geometry.rigid_matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import geometry
from ..forward.posed_slices import PosedStackOperator, rigid_matrices, rigid_parameters
from ..volume import Volume

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS (NIfTI) <-> LPS (ITK) world
MAX_ANGLE_DEG = 30.0  # a stack registration beyond these is taken as diverged
MAX_SHIFT_MM = 40.0


@dataclass
class StackRegistration:
    """The outcome of registering one stack to the reference: ``matrix`` (world -> world, RAS), the metric
    (Mattes mutual information, lower is better) before and after, and a warning when it fell back."""

    matrix: np.ndarray
    metric_before: float
    metric_after: float
    warning: str | None = None


def _to_sitk(volume: Volume, data: np.ndarray | None = None):
    import SimpleITK as sitk

    arr = volume.data if data is None else data
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))).astype(np.float32))
    img.SetSpacing(tuple(float(s) for s in volume.spacing))
    lps = LPS @ volume.affine
    img.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    img.SetDirection(tuple(float(v) for v in geometry.direction_cosines(lps).flatten()))
    return img


def register_stack(
    fixed: Volume,
    fixed_mask: np.ndarray,
    moving: Volume,
    moving_mask: np.ndarray,
    centre_mm: Sequence[float],
    seed: int = 0,
) -> StackRegistration:
    """Rigidly register ``moving`` to ``fixed`` (Mattes mutual information, coarse to fine, masked); the result
    is the transform ``M`` with ``moving``'s true affine ``= M @ moving.affine``. Falls back to the header
    (identity) with a warning when the optimiser fails, diverges or does not improve the metric."""
    import SimpleITK as sitk

    f_img = _to_sitk(fixed)
    m_img = _to_sitk(moving)
    f_mask = _to_sitk(fixed, fixed_mask.astype(np.float32)) > 0.5
    m_mask = _to_sitk(moving, moving_mask.astype(np.float32)) > 0.5
    centre_lps = (LPS[:3, :3] @ np.asarray(centre_mm, dtype=np.float64)).tolist()
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre_lps)

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed % (2**31 - 1) + 1)  # SimpleITK reads seed 0 as "wall clock"
    method.SetMetricFixedMask(f_mask)
    method.SetMetricMovingMask(m_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=150, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1, 1])
    method.SetSmoothingSigmasPerLevel([4.0, 2.0, 0.5])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=False)
    identity = sitk.Euler3DTransform()
    identity.SetCenter(centre_lps)

    def metric(t) -> float:
        method.SetInitialTransform(t, inPlace=False)
        return float(method.MetricEvaluate(f_img, m_img))

    try:
        before = metric(identity)
        method.SetInitialTransform(transform, inPlace=False)
        result = method.Execute(f_img, m_img)
        after = metric(result)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return StackRegistration(np.eye(4), math.nan, math.nan, f"{moving.name}: registration failed ({first})")
    # ITK maps fixed points to moving points (LPS): T(p_fixed) = p_moving. A moving voxel at header position q
    # sampled the object at T^-1(q) in the reference frame, so M = T^-1 (in RAS).
    m = LPS @ np.linalg.inv(_as_matrix(result)) @ LPS
    params = geometry.rigid_params(m, centre_mm)
    if np.abs(params[:3]).max() > MAX_ANGLE_DEG or np.abs(params[3:]).max() > MAX_SHIFT_MM:
        return StackRegistration(
            np.eye(4), before, after, f"{moving.name}: stack registration diverged; using its header"
        )
    if not after < before:  # the header is already the best alignment found
        return StackRegistration(np.eye(4), before, before)
    return StackRegistration(m, before, after)


def _as_matrix(transform) -> np.ndarray:
    """The 4x4 matrix of an ITK transform that is affine (read off the images of the origin and unit vectors)."""
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    m = np.eye(4)
    for i in range(3):
        e = [0.0, 0.0, 0.0]
        e[i] = 1.0
        m[:3, i] = np.asarray(transform.TransformPoint(tuple(e))) - origin
    m[:3, 3] = origin
    return m


def register_to_volume(
    operator: PosedStackOperator,
    volume: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    poses: torch.Tensor,
    shared: bool,
    steps: int,
    lr: float,
    order: Sequence[int] | None = None,
    smoothness: float = 0.0,
    centre_mm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Refine a stack's slice poses ``(n_slices, 4, 4)`` against ``volume`` by gradient descent (Adam) on the
    weighted squared error after a per-slice least-squares intensity scale (so, in effect, on each slice's
    normalised cross-correlation with the prediction). The update is a rigid transform about each slice's own
    centre (``shared``: one update about the stack's centre), so that rotations and translations decouple.

    ``smoothness`` > 0 adds ``smoothness * mean |p_next - p|^2`` over slices consecutive in acquisition ``order``
    (``p``: pose parameters in degrees and mm about ``centre_mm``): heads move smoothly in time, and a thick
    slice alone constrains its out-of-plane rotation weakly.
    """
    volume = volume.detach()
    start = poses.detach()
    centres = operator.slice_centres(start)
    if shared:
        centres = centres.mean(0, keepdim=True)
    delta = torch.zeros(len(centres), 6, dtype=start.dtype, device=start.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    axes = tuple(a for a in range(3) if a != operator.slice_axis)
    denom = weight.sum().clamp_min(1e-12)
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        posed = rigid_matrices(delta, centres) @ start
        pred = operator(volume, posed)
        wp = weight * pred
        scale = (wp * y).sum(axes, keepdim=True) / (wp * pred).sum(axes, keepdim=True).clamp_min(1e-12)
        loss = (weight * (scale.detach() * pred - y) ** 2).sum() / denom
        if smoothness > 0 and not shared and order is not None and len(order) > 1:
            p = rigid_parameters(posed, centre_mm)[list(order)]
            loss = loss + smoothness * ((p[1:] - p[:-1]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (rigid_matrices(delta.detach(), centres) @ start).detach()
