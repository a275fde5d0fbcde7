"""Multi-stack super-resolution: fit a continuous model of the image to low-res stacks in world space.

1. Geometry: every stack voxel is placed in world mm by its affine; a regular lattice (the output grid) and the
   model's normalisation box (the inputs' bounding box) are derived from the stacks.
2. Initial estimate on the lattice: the voxel-grid least-squares solution through each stack's slice PSF
   (:mod:`inrsr.classic`): conjugate gradients with a first-order Tikhonov prior, then L-BFGS with a total
   variation prior.
3. INR: an encoding + MLP learns the residual, trained on random batches of stack voxels, each predicted as the
   average of the model at several points drawn inside that voxel's PSF; each stack has a learnable intensity
   scale and offset.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from . import geometry
from .classic import VoxelGridProblem
from .config import CALIBRATION_TOLERANCE, FitConfig
from .devices import ensure_memory, resolve_device, seed_everything
from .errors import InputError
from .forward.slice_psf import StackOperator, psf_offsets, psf_sigmas_mm
from .geometry import Grid, Normalization
from .model import ENCODINGS, SRModel
from .progress import Progress
from .volume import Volume


@dataclass
class FitResult:
    model: SRModel
    report: dict[str, Any]


VALIDATION_FRACTION = 0.05  # of the training voxels, held out to choose which INR weights to keep
VALIDATION_LIMIT = 20_000


def thicknesses(stacks: Sequence[Volume], thickness_mm: Sequence[float] | None) -> list[float]:
    """Slice thickness (mm) per stack: one value for all, one per stack, or the slice spacing by default."""
    if not thickness_mm:
        return [float(s.meta.get("thickness_mm", s.spacing[s.slice_axis])) for s in stacks]
    values = [float(t) for t in thickness_mm]
    if len(values) == 1:
        values = values * len(stacks)
    if len(values) != len(stacks):
        raise InputError(
            f"--thickness has {len(values)} values but there are {len(stacks)} stacks "
            "(give one value, or one per stack)"
        )
    if any(not math.isfinite(t) or t <= 0 for t in values):
        raise InputError(f"--thickness values must be positive mm, got {values}")
    return values


def foreground(stack: Volume) -> np.ndarray:
    """Automatic foreground of a stack: above 10% of its 99th percentile, closed, holes filled, dilated."""
    data = stack.data
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    mask = data > 0.1 * float(np.percentile(positive, 99))
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    return ndimage.binary_dilation(mask, iterations=2)


def relative_intensity(reference: Volume, ref_mask: np.ndarray, stack: Volume, mask: np.ndarray) -> float:
    """Factor bringing ``stack``'s intensities to ``reference``'s: the ratio of their means over the world
    positions where both have foreground (so different fields of view do not bias it; means, unlike medians, are
    kept by the different slice blurs); 1 without enough overlap."""
    if stack is reference:
        return 1.0
    ijk = np.argwhere(mask)
    if len(ijk) > 200_000:
        ijk = ijk[np.random.default_rng(0).choice(len(ijk), 200_000, replace=False)]
    in_ref = geometry.apply_affine(np.linalg.solve(reference.affine, stack.affine), ijk)
    ref_values = ndimage.map_coordinates(reference.data, in_ref.T, order=1, mode="constant", cval=np.nan)
    ref_inside = ndimage.map_coordinates(ref_mask.astype(np.float32), in_ref.T, order=0, mode="constant", cval=0)
    both = np.isfinite(ref_values) & (ref_inside > 0.5)
    if both.sum() < 100:
        return 1.0
    own = stack.data[tuple(ijk[both].T)]
    return float(np.mean(ref_values[both]) / max(float(np.mean(own)), 1e-12))


def check_overlap(stacks: Sequence[Volume]) -> None:
    """Every stack must overlap the first one in world space."""
    first = (stacks[0].shape, stacks[0].affine)
    for s in stacks[1:]:
        if not geometry.boxes_overlap(first, (s.shape, s.affine)):
            raise InputError(f"{s.name}: does not overlap {stacks[0].name} in world space (check the affines)")


def support_on_lattice(lattice: Grid, stacks: Sequence[Volume], masks: Sequence[np.ndarray]) -> np.ndarray:
    """Lattice voxels whose centre falls in at least one stack's foreground (nearest stack voxel)."""
    support = np.zeros(lattice.shape, dtype=bool)
    for stack, mask in zip(stacks, masks, strict=True):
        to_stack = np.linalg.solve(stack.affine, lattice.affine)  # lattice voxel -> stack voxel
        support |= (
            ndimage.affine_transform(
                mask.astype(np.uint8), to_stack, output_shape=lattice.shape, order=0, mode="constant", cval=0
            )
            > 0
        )
    return support


def field_spec(config: FitConfig, normalization: Normalization, target_spacing_mm: float) -> dict[str, Any]:
    """The plain description of the INR stored with the model."""
    if config.encoding not in ENCODINGS:
        raise InputError(f"--encoding {config.encoding!r}: expected one of {', '.join(ENCODINGS)}")
    box_mm = 2 * normalization.half_extent
    finest = np.maximum(np.ceil(box_mm / target_spacing_mm) + 1, 2).astype(int)
    coarsest = np.maximum(np.ceil(box_mm / config.coarsest_mm) + 1, 2).astype(int)
    return {
        "encoding": config.encoding,
        "hidden": config.hidden,
        "n_hidden_layers": config.n_hidden_layers,
        "levels": config.levels,
        "features_per_level": config.features_per_level,
        "log2_table_size": config.log2_table_size,
        "base_resolution": coarsest.tolist(),
        "finest_resolution": finest.tolist(),
        "fourier_features": config.fourier_features,
        "fourier_sigma_per_mm": config.fourier_sigma_per_mm,
        "half_extent_mm": normalization.half_extent.tolist(),
        "positional_frequencies": config.positional_frequencies,
        "siren_w0": config.siren_w0,
    }


class _TrainingVoxels:
    """The stack voxels used for training, concatenated over stacks, with what a step needs to sample them."""

    def __init__(self, model: SRModel, stacks, masks, ys, base_preds, sigmas_mm, device) -> None:
        idx, target, base, sid = [], [], [], []
        unit_affines, sigma_vox, slice_axes = [], [], []
        lattice_inv = np.linalg.inv(model.lattice.affine)
        for s, (stack, mask, y, bp, sig) in enumerate(zip(stacks, masks, ys, base_preds, sigmas_mm, strict=True)):
            ijk = np.argwhere(mask)
            # keep voxels whose centre lies inside the lattice (the output field of view)
            lat = geometry.apply_affine(lattice_inv @ stack.affine, ijk)
            inside = np.all((lat > -0.5) & (lat < np.asarray(model.lattice.shape) - 0.5), axis=1)
            ijk = ijk[inside]
            idx.append(torch.as_tensor(ijk, dtype=torch.float32))
            target.append(y[tuple(ijk.T)])
            base.append(bp[tuple(ijk.T)])
            sid.append(torch.full((len(ijk),), s, dtype=torch.int64))
            unit_affines.append(torch.as_tensor(model.normalization.unit_affine(stack.affine), dtype=torch.float32))
            sigma_vox.append(torch.as_tensor(sig / stack.spacing, dtype=torch.float32))
            slice_axes.append(stack.slice_axis)
        self.ijk = torch.cat(idx).to(device)
        self.target = torch.as_tensor(np.concatenate(target), device=device)
        self.base = torch.as_tensor(np.concatenate(base), device=device)
        self.stack_id = torch.cat(sid).to(device)
        self.unit_affines = torch.stack(unit_affines).to(device)
        self.sigma_vox = sigma_vox
        self.slice_axes = slice_axes
        self.counts = [len(i) for i in idx]
        self.device = device

    def __len__(self) -> int:
        return len(self.target)

    def split(self, fraction: float, limit: int, generator: torch.Generator) -> None:
        """Hold out a random ``fraction`` (at most ``limit``) of the voxels for validation; training draws from
        the rest."""
        order = torch.randperm(len(self), generator=generator).to(self.device)
        n_val = min(limit, int(fraction * len(self))) if len(self) >= 100 else 0
        self.val_rows, self.train_rows = order[:n_val], order[n_val:]

    def sample(self, n: int, n_psf: int, generator: torch.Generator):
        """``n`` random training voxels: see :meth:`points`."""
        pool = getattr(self, "train_rows", None)
        if pool is None:
            sel = torch.randint(len(self), (n,), generator=generator).to(self.device)
        else:
            sel = pool[torch.randint(len(pool), (n,), generator=generator).to(self.device)]
        return self.points(sel, n_psf, generator)

    def points(self, sel: torch.Tensor, n_psf: int, generator: torch.Generator):
        """Voxels ``sel``: their PSF sample points in unit coordinates ``(n, n_psf, 3)``, stack ids, base
        predictions and targets."""
        n = len(sel)
        sid = self.stack_id[sel]
        offsets = torch.empty(n, n_psf, 3)
        sid_cpu = sid.cpu()
        for s, (sig, axis) in enumerate(zip(self.sigma_vox, self.slice_axes, strict=True)):
            rows = torch.nonzero(sid_cpu == s)[:, 0]
            if len(rows):
                offsets[rows] = psf_offsets(len(rows), n_psf, sig, axis, generator)
        points = self.ijk[sel][:, None, :] + offsets.to(self.device)
        a = self.unit_affines[sid]
        unit = torch.einsum("bij,bmj->bmi", a[:, :3, :3], points) + a[:, None, :3, 3]
        return unit, sid, self.base[sel], self.target[sel]


def _predict(model: SRModel, unit: torch.Tensor, sid: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Stack intensities predicted from PSF sample points ``(n, n_psf, 3)`` (no autocast; for evaluation)."""
    residual = torch.cat([model.residual_at_unit(u.reshape(-1, 3)) for u in unit.split(16384)])
    return (base + residual.view(unit.shape[0], -1).mean(1)) * model.log_scale[sid].exp() + model.offset[sid]


def fit_stacks(
    stacks: Sequence[Volume],
    output: Grid,
    config: FitConfig | None = None,
    masks: Sequence[Volume | None] | None = None,
    quiet: bool = True,
) -> FitResult:
    """Fit a :class:`~inrsr.model.SRModel` to ``stacks`` with ``output`` as the working lattice.

    ``masks`` (optional, one per stack, ``None`` for automatic) restrict the training voxels.
    """
    config = config or FitConfig()
    if not stacks:
        raise InputError("no input stacks")
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    thick = thicknesses(stacks, config.thickness_mm)
    check_overlap(stacks)
    # float32 lattice copies (CG vectors, L-BFGS history) and stack-sized work arrays (fine grids, targets)
    ensure_memory(
        output.n_voxels * 4 * 40 + sum(s.data.size for s in stacks) * 4 * 20,
        f"fitting on a {output.shape} output grid",
    )

    # Intensities: one global scale so that the first stack's foreground is about 1.
    user_masks = list(masks) if masks is not None else [None] * len(stacks)
    if len(user_masks) != len(stacks):
        raise InputError(f"got {len(user_masks)} masks for {len(stacks)} stacks")
    fg = []
    for stack, m in zip(stacks, user_masks, strict=True):
        if m is not None:
            if m.shape != stack.shape:
                raise InputError(f"{m.name}: mask shape {m.shape} differs from its stack's {stack.shape}")
            fg.append(m.data > 0.5)
        elif config.auto_mask:
            fg.append(foreground(stack))
        else:
            fg.append(np.ones(stack.shape, dtype=bool))
    for stack, m in zip(stacks, fg, strict=True):
        if not m.any():
            raise InputError(f"{stack.name}: empty foreground (all voxels masked out or zero)")
    scale = float(np.percentile(stacks[0].data[fg[0]], 99.5)) or 1.0
    # Stacks within CALIBRATION_TOLERANCE of the reference are taken as calibrated: the estimate itself is biased
    # by ~0.5% by the stacks' different slice blurs. The INR stage refines every scale and offset.
    stack_scale = [relative_intensity(stacks[0], fg[0], s, m) for s, m in zip(stacks, fg, strict=True)]
    stack_scale = [k if abs(k - 1) > CALIBRATION_TOLERANCE else 1.0 for k in stack_scale]
    ys = [torch.as_tensor(s.data / scale * k, device=device) for s, k in zip(stacks, stack_scale, strict=True)]

    normalization = Normalization.from_volumes([(s.shape, s.affine) for s in stacks])
    spec = field_spec(config, normalization, float(output.spacing.min()))
    model = SRModel(spec, normalization, output, len(stacks), scale, generator=generator).to(device)
    sigmas = [psf_sigmas_mm(s.affine, s.slice_axis, t) for s, t in zip(stacks, thick, strict=True)]
    operators = [StackOperator(s.shape, s.affine, sig, output) for s, sig in zip(stacks, sigmas, strict=True)]
    timings["setup_s"] = time.perf_counter() - t_start

    # Initial estimate on the lattice.
    t0 = time.perf_counter()
    weights = [
        None if m is None else torch.as_tensor(f, dtype=torch.float32, device=device)
        for m, f in zip(user_masks, fg, strict=True)
    ]
    if config.init in ("tv", "tikhonov"):
        problem = VoxelGridProblem(operators, ys, weights)
        base = problem.solve_tikhonov(config.tikhonov_lambda, config.tikhonov_iterations, quiet=quiet)
        if config.init == "tv" and config.tv_iterations > 0:
            base = problem.solve_tv(config.tv_lambda, config.tv_iterations, x0=base, quiet=quiet)
    elif config.init == "mean":
        from .metrics import resample_to_grid

        base = torch.as_tensor(
            np.mean(
                [
                    resample_to_grid(Volume(y.cpu().numpy(), s.affine, s.name), output, order=1)
                    for y, s in zip(ys, stacks, strict=True)
                ],
                axis=0,
            ),
            device=device,
        )
    elif config.init == "none":
        base = torch.zeros(output.shape, device=device)
    else:
        raise InputError(f"init {config.init!r}: expected tv, tikhonov, mean or none")
    model.base.copy_(base)
    model.support.copy_(torch.as_tensor(support_on_lattice(output, stacks, fg), device=device))
    timings["init_s"] = time.perf_counter() - t0

    # INR: learn the residual through the PSF.
    t0 = time.perf_counter()
    with torch.no_grad():
        base_preds = [op(model.base).cpu().numpy() for op in operators]
    voxels = _TrainingVoxels(model, stacks, fg, [y.cpu().numpy() for y in ys], base_preds, sigmas, device)
    if len(voxels) == 0:
        raise InputError("no stack voxel lies inside the output grid; check --like / the affines")
    history, validation = _train(model, voxels, config, generator, device, quiet)
    timings["inr_s"] = time.perf_counter() - t0

    per_stack = _fit_errors(model, voxels, config, generator, stacks, scale, stack_scale)
    timings["total_s"] = time.perf_counter() - t_start
    report = {
        "settings": {k: v for k, v in asdict(config).items() if k != "extra"},
        "thickness_mm": thick,
        "device": str(device),
        "output_grid": {
            "shape": list(output.shape),
            "affine": np.asarray(output.affine).tolist(),
            "spacing_mm": output.spacing.tolist(),
        },
        "timings": timings,
        "final_loss": history[-1] if history else None,
        "loss_history": history[:: max(1, len(history) // 50)],
        "training_voxels": voxels.counts,
        "inr_validation": validation,
        "stacks": per_stack,
    }
    return FitResult(model=model, report=report)


def _train(
    model: SRModel,
    voxels: _TrainingVoxels,
    config: FitConfig,
    generator: torch.Generator,
    device: torch.device,
    quiet: bool,
) -> tuple[list[float], dict[str, Any]]:
    """Adam on random voxel batches; learning rate: 5% linear warm-up, then cosine decay to 5%."""
    if config.steps <= 0:
        return [], {}
    params = [
        {"params": list(model.field.parameters()), "lr": config.lr},
        {"params": [model.log_scale, model.offset], "lr": config.lr * 0.1},
    ]
    opt = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15, foreach=True)
    warmup = max(1, config.steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    use_amp = device.type == "cuda"
    history: list[float] = []
    # Held-out voxels (fixed PSF points) decide which weights to keep: the INR's correction is kept only as far
    # as it lowers the error on voxels it never trained on.
    voxels.split(VALIDATION_FRACTION, VALIDATION_LIMIT, generator)
    val = voxels.points(voxels.val_rows, config.psf_samples, generator) if len(voxels.val_rows) else None
    eval_every = max(10, config.steps // 15)

    def validation_error() -> float:
        with torch.no_grad():
            unit, sid, base, target = val
            return float((_predict(model, unit, sid, base) - target).square().mean())

    best = (validation_error(), 0, copy.deepcopy(model.state_dict())) if val is not None else None
    validation = [(0, best[0])] if best else []
    model.train()
    with Progress(config.steps, "fitting INR", quiet=quiet) as bar:
        for step in range(1, config.steps + 1):
            unit, sid, base, target = voxels.sample(config.batch_size, config.psf_samples, generator)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                residual = model.residual_at_unit(unit.reshape(-1, 3)).float()
            pred = base + residual.view(unit.shape[0], unit.shape[1]).mean(1)
            pred = pred * model.log_scale[sid].exp() + model.offset[sid]
            loss = (pred - target).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # the first stack is the intensity reference
                model.log_scale.grad[0] = 0
                model.offset.grad[0] = 0
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
            if best is not None and (step % eval_every == 0 or step == config.steps):
                err = validation_error()
                validation.append((step, err))
                if err < best[0]:
                    best = (err, step, copy.deepcopy(model.state_dict()))
            bar.update(1, loss=history[-1])
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return history, {"validation_mse": validation, "kept_step": best[1] if best else config.steps}


def _fit_errors(model, voxels, config, generator, stacks, scale, stack_scale) -> list[dict[str, Any]]:
    """Per stack: RMS error between the stack and the model seen through its PSF (stack intensity units)."""
    out = []
    with torch.no_grad():
        unit, sid, base, target = voxels.sample(min(len(voxels), 200_000), config.psf_samples, generator)
        pred = _predict(model, unit, sid, base)
        for s, stack in enumerate(stacks):
            rows = sid == s
            unit_factor = scale / stack_scale[s]  # back to this stack's own intensities
            rmse = float((pred[rows] - target[rows]).square().mean().sqrt()) * unit_factor if rows.any() else None
            out.append(
                {
                    "file": stack.name,
                    "shape": list(stack.shape),
                    "spacing_mm": stack.spacing.tolist(),
                    "slice_axis": stack.slice_axis,
                    "rmse": rmse,
                    "intensity_scale": float(model.log_scale[s].exp()) / stack_scale[s],
                    "intensity_offset": float(model.offset[s]) * unit_factor,
                }
            )
    return out
