"""``fit_stacks``: slice-to-volume reconstruction of several low-res stacks, coarse to fine.

measurements (stacks, masks, thickness) -> geometry (stack registration, slice poses) -> voxel-grid image
(weighted least squares through the posed-slice PSF + TV, robust weights) -> optional INR -> the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import geometry
from ..config import FitConfig, Motion
from ..devices import resolve_device, seed_everything
from ..errors import InputError
from ..forward.posed_slices import PosedStackOperator, rigid_matrices, rigid_parameters
from ..forward.slice_psf import psf_sigmas_mm
from ..geometry import Grid, Normalization
from ..model import SRModel
from ..volume import Volume
from . import register as reg
from .inr import TrainingVoxels, field_spec, train_inr
from .solver import Reconstruction, StackTerm, as_tensor, automatic_weight, robust_update, update_slice_scales
from .stacks import (
    acquisition_order,
    check_memory,
    check_overlap,
    coarser_stack,
    foreground,
    noise_sigma,
    relative_intensity,
    support_on_lattice,
    thicknesses,
)

# Automatic TV weight (normalised intensities): floor + PER_SIGMA * noise sigma, chosen on tuning cases with other
# stack rotations, motions and noise draws than benchmarks/fit.py's, never on the benchmark's scored cases. On a
# whole-brain tuning case with stack and slice motion and corrupted slices (1% noise) this rule's weight (5.8e-3)
# gave 26.8 dB where 3.3e-3 gave 25.3 dB (a noisier volume misleads slice registration); on motion-free crops of
# the brain scored inside only, lower weights (7e-4 to 3e-3) were up to 0.7 dB better: the rule favours motion.
LAMBDA_FLOOR = 5e-4
LAMBDA_PER_SIGMA = 0.5


@dataclass
class FitResult:
    """The fitted model, the JSON-ready report, each stack's slice transforms ``(n_slices, 4, 4)`` (world ->
    world, the slice's header positions to the output frame) and the uncertainty map on the output grid."""

    model: SRModel
    report: dict[str, Any]
    poses: list[np.ndarray]
    uncertainty: np.ndarray


def coarse_grid(grid: Grid, factor: int = 2) -> Grid:
    """A lattice ``factor`` times coarser over the same field of view (voxel centres at block centres)."""
    m = np.eye(4)
    m[:3, :3] = np.eye(3) * factor
    m[:3, 3] = (factor - 1) / 2
    shape = tuple(int(np.ceil(n / factor)) for n in grid.shape)
    return Grid(shape, grid.affine @ m)


def resample_lattice(x: torch.Tensor, source: Grid, target: Grid) -> torch.Tensor:
    """``x`` on ``source`` read at ``target``'s voxel centres (trilinear, 0 outside)."""
    m = geometry.sampling_affine(source.shape, source.affine) @ target.affine
    axes = [torch.arange(n, dtype=torch.float64) for n in target.shape]
    ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    g = ijk @ torch.as_tensor(m[:3, :3]).T + torch.as_tensor(m[:3, 3])
    out = F.grid_sample(x[None, None], g[None].to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0]


def _prepare_masks(stacks: Sequence[Volume], masks: Sequence[Volume | None] | None, auto: bool) -> list[np.ndarray]:
    from ..masks import mask_on_stack

    user = list(masks) if masks is not None else [None] * len(stacks)
    if len(user) != len(stacks):
        raise InputError(f"got {len(user)} masks for {len(stacks)} stacks")
    out = []
    for stack, m in zip(stacks, user, strict=True):
        if m is not None:
            fg = mask_on_stack(m, stack)
        elif auto:
            fg = foreground(stack)
        else:
            fg = np.ones(stack.shape, dtype=bool)
        if not fg.any():
            raise InputError(f"{stack.name}: empty foreground (all voxels masked out or zero)")
        out.append(fg)
    return out


class _Level:
    """The stacks, operators and terms of one lattice resolution."""

    def __init__(self, lattice: Grid, stacks, masks, ys, thick, poses, device) -> None:
        self.lattice = lattice
        h = float(lattice.spacing.min())
        self.terms: list[StackTerm] = []
        for stack, mask, y, t, pose in zip(stacks, masks, ys, thick, poses, strict=True):
            inplane = min(float(stack.spacing[a]) for a in range(3) if a != stack.slice_axis)
            factor = max(1, int(round(h / inplane)))
            vol, m = coarser_stack(Volume(y, stack.affine, stack.name), mask, factor)
            op = PosedStackOperator(vol.shape, vol.affine, psf_sigmas_mm(vol.affine, stack.slice_axis, t), lattice,
                                    stack.slice_axis)
            n = vol.shape[stack.slice_axis]
            self.terms.append(
                StackTerm(
                    operator=op,
                    y=as_tensor(vol.data, device),
                    mask=as_tensor(m, device),
                    poses=torch.as_tensor(pose, dtype=torch.float64, device=device),
                    voxel_weight=torch.ones(vol.shape, device=device),
                    slice_weight=torch.ones(n, device=device),
                    slice_scale=torch.ones(n, device=device),
                )
            )
        self.problem = Reconstruction(self.terms, lattice.shape, lattice.spacing)


def _slice_weights_from(level: _Level, target: _Level) -> None:
    """Carry robust slice weights and scales from one level to another (slices are the same)."""
    for a, b in zip(level.terms, target.terms, strict=True):
        b.slice_weight = a.slice_weight.clone()
        b.slice_scale = a.slice_scale.clone()


def fit_stacks(
    stacks: Sequence[Volume],
    output: Grid,
    config: FitConfig | None = None,
    masks: Sequence[Volume | None] | None = None,
    quiet: bool = True,
) -> FitResult:
    """Reconstruct ``stacks`` on the ``output`` lattice, correcting motion, and return the fitted model.

    ``masks`` (optional, one per stack, ``None`` for automatic) are resampled onto their stacks in world space.
    """
    config = config or FitConfig()
    motion = Motion(config.motion)
    if not stacks:
        raise InputError("no input stacks")
    if not 0 <= config.reference < len(stacks):
        raise InputError(f"--reference {config.reference}: expected 0 to {len(stacks) - 1}")
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    thick = thicknesses(stacks, config.thickness_mm)
    check_overlap(stacks)
    check_memory(stacks, output)
    fg = _prepare_masks(stacks, masks, config.auto_mask)
    ref = config.reference

    # Intensities: one global scale so that the reference's foreground is about 1; other stacks matched by mean.
    scale = float(np.percentile(stacks[ref].data[fg[ref]], 99.5)) or 1.0
    stack_scale = [relative_intensity(stacks[ref], fg[ref], s, m) for s, m in zip(stacks, fg, strict=True)]
    ys = [(s.data / scale * k).astype(np.float32) for s, k in zip(stacks, stack_scale, strict=True)]
    sigma = float(np.median([noise_sigma(Volume(y, s.affine), m) for y, s, m in zip(ys, stacks, fg, strict=True)]))
    lam = config.regularization if config.regularization is not None else automatic_weight(
        sigma, LAMBDA_FLOOR, LAMBDA_PER_SIGMA
    )
    centre = geometry.apply_affine(output.affine, (np.asarray(output.shape) - 1) / 2)
    warnings: list[str] = []
    timings["setup_s"] = time.perf_counter() - t_start

    # 1. Stack-level registration to the reference stack (mutual information).
    t0 = time.perf_counter()
    stack_matrices = [np.eye(4) for _ in stacks]
    registration = []
    if config.register and len(stacks) > 1:
        for s, stack in enumerate(stacks):
            if s == ref:
                continue
            r = reg.register_stack(stacks[ref], fg[ref], stack, fg[s], centre, seed=config.seed)
            stack_matrices[s] = r.matrix
            if r.warning:
                warnings.append(r.warning)
            registration.append(
                {
                    "stack": s,
                    "file": stack.name,
                    "params_deg_mm": geometry.rigid_params(r.matrix, centre).round(4).tolist(),
                    "metric": "Mattes mutual information (lower is better)",
                    "metric_before": r.metric_before,
                    "metric_after": r.metric_after,
                    "warning": r.warning,
                }
            )
    poses = [
        torch.as_tensor(m, dtype=torch.float64, device=device).repeat(s.shape[s.slice_axis], 1, 1)
        for m, s in zip(stack_matrices, stacks, strict=True)
    ]
    timings["stack_registration_s"] = time.perf_counter() - t0

    orders = [acquisition_order(s) for s in stacks]
    centre_t = torch.as_tensor(centre, dtype=torch.float64, device=device)

    def register_level(level: _Level, slice_level: bool, steps: int, lr: float, x: torch.Tensor) -> None:
        for s, term in enumerate(level.terms):
            if not slice_level and s == ref:
                continue
            poses[s] = reg.register_to_volume(
                term.operator, x, term.y, term.data_weight(), poses[s], not slice_level, steps, lr,
                order=orders[s], smoothness=config.motion_smoothness, centre_mm=centre_t,
            )
        if slice_level:  # the reference stack's mean pose defines the frame
            mean = rigid_parameters(poses[ref], centre_t).mean(0, keepdim=True)
            g_inv = torch.linalg.inv(rigid_matrices(mean, centre_t))[0]
            for s in range(len(poses)):
                poses[s] = g_inv @ poses[s]
        for s, term in enumerate(level.terms):
            term.poses = poses[s]

    robust_log: list[dict] = []

    def robust_step(level: _Level, x: torch.Tensor) -> None:
        if config.slice_scaling:
            update_slice_scales(level.terms, x)
        if config.robust:
            robust_log.append(robust_update(level.terms, level.problem.residuals(x)))

    # 2. Coarse lattice: reconstruction alternating with registration and robust weights; then the output lattice.
    t0 = time.perf_counter()
    poses_np = lambda: [p.cpu().numpy() for p in poses]  # noqa: E731

    def solve(level: _Level, x: torch.Tensor, reweightings: int, what: str) -> torch.Tensor:
        text = f"{what} ({level.lattice.spacing.min():.3g} mm)"
        return level.problem.solve(x, lam, reweightings, config.cg_iterations, quiet, text)

    x = None
    coarse = None
    if config.coarse and min(output.shape) >= 8:
        coarse = _Level(coarse_grid(output, 2), stacks, fg, ys, thick, poses_np(), device)
        x = torch.zeros(coarse.lattice.shape, device=device)
        for cycle in range(config.cycles):
            x = solve(coarse, x, config.tv_reweightings, f"reconstruction, cycle {cycle + 1}/{config.cycles}")
            if motion is not Motion.none:
                slice_level = motion is Motion.slice and cycle > 0
                register_level(coarse, slice_level, config.registration_steps, 1.0, x)
            robust_step(coarse, x)
    level = _Level(output, stacks, fg, ys, thick, poses_np(), device)
    if coarse is None:
        x = solve(level, torch.zeros(output.shape, device=device), config.tv_reweightings, "reconstruction")
        if motion is not Motion.none:
            register_level(level, motion is Motion.slice, config.registration_steps, 1.0, x)
    else:
        _slice_weights_from(coarse, level)
        x = solve(level, resample_lattice(x, coarse.lattice, output), 1, "reconstruction")
        for _ in range(config.fine_cycles if motion is Motion.slice else 0):
            register_level(level, True, config.registration_steps // 4, 0.2, x)
            robust_step(level, x)
            x = solve(level, x, 1, "reconstruction")
    robust_step(level, x)
    x = solve(level, x, config.final_reweightings, "final reconstruction")
    timings["reconstruction_s"] = time.perf_counter() - t0

    # 3. The model: the voxel-grid estimate (+ the optional INR residual).
    final_poses = poses_np()
    normalization = Normalization.from_volumes([(s.shape, s.affine) for s in stacks])
    spec = field_spec(config, normalization, float(output.spacing.min()))
    model = SRModel(spec, normalization, output, len(stacks), scale, generator=generator).to(device)
    model.base.copy_(x)
    moved = [Volume(s.data, _middle_pose(p) @ s.affine, s.name) for s, p in zip(stacks, final_poses, strict=True)]
    model.support.copy_(torch.as_tensor(support_on_lattice(output, moved, fg), device=device))
    t0 = time.perf_counter()
    inr_validation: dict[str, Any] = {}
    history: list[float] = []
    if config.steps > 0:
        weights = [t.data_weight().cpu().numpy() for t in level.terms]
        with torch.no_grad():
            base_preds = [t.predict(model.base).cpu().numpy() for t in level.terms]
        sigmas = [psf_sigmas_mm(s.affine, s.slice_axis, t) for s, t in zip(stacks, thick, strict=True)]
        targets = [t.target().cpu().numpy() for t in level.terms]
        voxels = TrainingVoxels(model, stacks, weights, targets, base_preds, sigmas, final_poses, device)
        if len(voxels) == 0:
            raise InputError("no stack voxel lies inside the output grid; check --like / the affines")
        history, inr_validation = train_inr(model, voxels, config, generator, device, quiet)
    timings["inr_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    residuals = level.problem.residuals(x)
    per_stack = []
    for s, (stack, term, r) in enumerate(zip(stacks, level.terms, residuals, strict=True)):
        m = term.mask > 0
        per_stack.append(
            {
                "file": stack.name,
                "shape": list(stack.shape),
                "spacing_mm": stack.spacing.tolist(),
                "slice_axis": stack.slice_axis,
                "thickness_mm": thick[s],
                "rmse": float(r[m].square().mean().sqrt()) * scale / stack_scale[s],
                "intensity_scale": 1.0 / stack_scale[s],
                "slice_scales": term.slice_scale.cpu().numpy().round(4).tolist(),
                "slice_inlier_probability": term.slice_weight.cpu().numpy().round(4).tolist(),
                "slice_transforms_deg_mm": [
                    geometry.rigid_params(p, centre).round(4).tolist() for p in final_poses[s]
                ],
            }
        )
    outliers = robust_log[-1]["outlier_slices"] if robust_log else []
    settings = {k: (getattr(v, "value", v)) for k, v in asdict(config).items() if k != "extra"}
    report = {
        "settings": settings,
        "thickness_mm": thick,
        "device": str(device),
        "output_grid": {
            "shape": list(output.shape),
            "affine": np.asarray(output.affine).tolist(),
            "spacing_mm": output.spacing.tolist(),
        },
        "pose_centre_mm": centre.tolist(),
        "regularization": {"weight": lam, "automatic": config.regularization is None, "noise_sigma": sigma},
        "stack_registration": registration,
        "outlier_slices": [{"stack": s, "file": stacks[s].name, "slice": k} for s, k in outliers],
        "robust": robust_log,
        "warnings": warnings,
        "timings": timings,
        "final_loss": history[-1] if history else None,
        "inr_validation": inr_validation,
        "stacks": per_stack,
    }
    return FitResult(model=model, report=report, poses=final_poses, uncertainty=_inverse_weight_map(level, x))


def _middle_pose(poses: np.ndarray) -> np.ndarray:
    """A representative rigid transform of a stack's slices (the one of its middle slice)."""
    return np.asarray(poses)[len(poses) // 2]


def _inverse_weight_map(level: _Level, x: torch.Tensor) -> np.ndarray:
    """Per lattice voxel, ``1 / (1 + sum of the data weights that reach it)``: high where few reliable
    measurements constrain the image (outside the stacks, in rejected slices, gaps)."""
    total = torch.zeros(level.lattice.shape, device=x.device)
    for t in level.terms:
        total = total + t.operator.adjoint(t.weights(), t.poses)
    return (1.0 / (1.0 + total)).cpu().numpy().astype(np.float32)
