"""The optional INR stage: an encoding + MLP learns what the voxel-grid estimate lacks, through the PSF.

Training draws random stack voxels (in their slices' estimated poses), evaluates the model at several points inside
each voxel's PSF and minimises the squared error; the weights with the lowest error on held-out voxels are kept.
Off by default: on every benchmark case so far it does not lower the held-out error (docs/method.md).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from .. import geometry
from ..config import FitConfig
from ..errors import InputError
from ..forward.slice_psf import psf_offsets
from ..geometry import Normalization
from ..model import ENCODINGS, SRModel
from ..progress import Progress

VALIDATION_FRACTION = 0.05  # of the training voxels, held out to choose which INR weights to keep
VALIDATION_LIMIT = 20_000


def field_spec(config: FitConfig, normalization: Normalization, target_spacing_mm: float) -> dict[str, Any]:
    """The plain description of the INR stored with the model."""
    encoding = getattr(config.encoding, "value", config.encoding)
    if encoding not in ENCODINGS:
        raise InputError(f"--encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    box_mm = 2 * normalization.half_extent
    finest = np.maximum(np.ceil(box_mm / target_spacing_mm) + 1, 2).astype(int)
    coarsest = np.maximum(np.ceil(box_mm / config.coarsest_mm) + 1, 2).astype(int)
    return {
        "encoding": encoding,
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


class TrainingVoxels:
    """The stack voxels used for training, concatenated over stacks, with what a step needs to sample them.

    ``poses`` holds each stack's per-slice world -> world transforms ``(n_slices, 4, 4)``; ``weights`` each
    stack's per-voxel weight (voxels of weight below 0.5, outliers, are left out).
    """

    def __init__(self, model: SRModel, stacks, weights, ys, base_preds, sigmas_mm, poses, device) -> None:
        idx, target, base, sid, group = [], [], [], [], []
        unit_affines, sigma_vox, slice_axes = [], [], []
        lattice_inv = np.linalg.inv(model.lattice.affine)
        for s, (stack, w, y, bp, sig, pose) in enumerate(
            zip(stacks, weights, ys, base_preds, sigmas_mm, poses, strict=True)
        ):
            ijk = np.argwhere(w > 0.5)
            k = ijk[:, stack.slice_axis]
            slice_affines = np.asarray(pose) @ stack.affine  # (n_slices, 4, 4)
            world = np.einsum("nij,nj->ni", slice_affines[k][:, :3, :3], ijk) + slice_affines[k][:, :3, 3]
            # keep voxels whose centre lies inside the lattice (the output field of view)
            lat = geometry.apply_affine(lattice_inv, world)
            inside = np.all((lat > -0.5) & (lat < np.asarray(model.lattice.shape) - 0.5), axis=1)
            ijk, k = ijk[inside], k[inside]
            idx.append(torch.as_tensor(ijk, dtype=torch.float32))
            target.append(y[tuple(ijk.T)])
            base.append(bp[tuple(ijk.T)])
            sid.append(torch.full((len(ijk),), s, dtype=torch.int64))
            group.append(torch.as_tensor(k + len(unit_affines), dtype=torch.int64))
            unit_affines += [
                torch.as_tensor(model.normalization.unit_affine(a), dtype=torch.float32) for a in slice_affines
            ]
            sigma_vox.append(torch.as_tensor(sig / stack.spacing, dtype=torch.float32))
            slice_axes.append(stack.slice_axis)
        self.ijk = torch.cat(idx).to(device)
        self.target = torch.as_tensor(np.concatenate(target), device=device)
        self.base = torch.as_tensor(np.concatenate(base), device=device)
        self.stack_id = torch.cat(sid).to(device)
        self.slice_group = torch.cat(group).to(device)
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
        a = self.unit_affines[self.slice_group[sel]]
        unit = torch.einsum("bij,bmj->bmi", a[:, :3, :3], points) + a[:, None, :3, 3]
        return unit, sid, self.base[sel], self.target[sel]


def predict(model: SRModel, unit: torch.Tensor, sid: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Stack intensities predicted from PSF sample points ``(n, n_psf, 3)`` (no autocast; for evaluation)."""
    residual = torch.cat([model.residual_at_unit(u.reshape(-1, 3)) for u in unit.split(16384)])
    return (base + residual.view(unit.shape[0], -1).mean(1)) * model.log_scale[sid].exp() + model.offset[sid]


def train_inr(
    model: SRModel,
    voxels: TrainingVoxels,
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
            return float((predict(model, unit, sid, base) - target).square().mean())

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
