"""Training the encoder-decoder on high-res volumes: L1 loss, Adam, per-epoch validation PSNR and checkpoints.

Several processes (one per GPU, or CPU processes with the gloo backend) train one model with PyTorch's
``DistributedDataParallel`` when started by ``torchrun`` (``WORLD_SIZE > 1``): each process draws its own
examples (seed + rank), gradients are averaged, and only rank 0 validates, reports and writes checkpoints.
The effective batch is ``world_size x batch_size``.

Checkpoints (kind ``"arssr"``) hold the model's weights (``model.*``), Adam's state (``optim.*``, for
``--resume``) and plain metadata: the architecture, the intensity normalisation, the training settings and the
per-epoch history. :func:`strip_training_state` writes the weights alone (what ships in the package).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import resolve_device, seed_everything
from ..errors import InputError
from ..io.checkpoints import load_checkpoint, save_checkpoint
from ..io.nifti import load_volume
from ..progress import Progress
from .config import IntensityNorm, TrainConfig
from .data import Example, find_volumes, foreground_voxels, make_example, split_volume
from .model import CHECKPOINT_KIND, ArSSR, model_from_payload, sample_trilinear
from .synth import load_tissue_maps

#: Validation degradations: (scale, through-plane axis or None for isotropic).
VAL_CASES = ((2.0, None), (3.2, None), (4.0, 0), (4.0, 1), (4.0, 2))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_spec: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_spec)
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank), device


def _batch(examples: list[Example], device: torch.device) -> tuple[torch.Tensor, ...]:
    lr = torch.from_numpy(np.stack([e.lr for e in examples]))[:, None].to(device)
    coords = torch.from_numpy(np.stack([e.coords for e in examples])).to(device)
    target = torch.from_numpy(np.stack([e.target for e in examples])).to(device)
    scale = torch.from_numpy(np.stack([e.scale for e in examples])).to(device)
    return lr, coords, target, scale


def _optim_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Adam's state as flat tensors ``optim.<param>.<name>`` plus its plain param groups."""
    sd = optimizer.state_dict()
    flat = {f"optim.{i}.{k}": torch.as_tensor(v) for i, state in sd["state"].items() for k, v in state.items()}
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return flat, groups


def _load_optim_state(optimizer: torch.optim.Optimizer, state_dict: dict, groups: list[dict]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in state_dict.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def strip_training_state(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Write ``source``'s model weights and metadata without the optimizer state (e.g. to ship them)."""
    payload = load_checkpoint(source, kind=CHECKPOINT_KIND)
    weights = {k: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
    meta = dict(payload["metadata"])
    training = dict(meta.get("training", {}))
    training.pop("optimizer_param_groups", None)
    meta["training"] = training
    save_checkpoint(target, CHECKPOINT_KIND, weights, meta)


def validation_set(volumes: list[tuple], patches: int, cfg: TrainConfig) -> list[Example]:
    """Fixed examples (seeded, no augmentation) from the validation parts, cycling through :data:`VAL_CASES`;
    tissue maps' examples get seeded random contrasts."""
    rng = np.random.default_rng(cfg.seed + 12345)
    out = []
    for i in range(patches):
        vol, norm, fg = volumes[i % len(volumes)]
        scale, axis = VAL_CASES[i % len(VAL_CASES)]
        out.append(
            make_example(vol, norm, fg, rng, cfg.patch, cfg.queries, scale, axis, augment=False, synth=cfg.augmentation)
        )
    return out


def evaluate(model: ArSSR, examples: list[Example], device: torch.device) -> tuple[float, float]:
    """PSNR (dB, normalised intensities, peak 1) of the model and of its trilinear base on ``examples``."""
    model.eval()
    se = se_base = 0.0
    n = 0
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            lr, coords, target, scale = _batch(examples[i : i + 8], device)
            pred = model(lr, coords, scale)
            base = sample_trilinear(lr, coords)[..., 0]
            se += float(((pred - target) ** 2).sum())
            se_base += float(((base - target) ** 2).sum())
            n += target.numel()
    model.train()
    return -10 * math.log10(max(se / n, 1e-12)), -10 * math.log10(max(se_base / n, 1e-12))


def train_model(
    inputs: list[str | os.PathLike],
    output: str | os.PathLike,
    config: TrainConfig,
    device: str = "auto",
    resume: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    tissues: list[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue training) an encoder-decoder on ``inputs``; write it to ``output``.

    ``inputs``: high-res NIfTI files or folders of them. ``tissues``: tissue probability maps or a segmentation
    (:func:`~inrsr.arssr.synth.load_tissue_maps`); a fraction ``config.synth_fraction`` of the examples then get
    random contrasts synthesised from them. Each volume's (and the maps') last ``val_fraction`` along the third
    voxel axis is held out for the per-epoch validation PSNR. Returns the training history.
    """
    config.check()
    maps = load_tissue_maps(tissues) if tissues else None
    dist_info, dev = _init_distributed(device)
    quiet = quiet or not dist_info.main
    files = find_volumes(list(inputs))
    payload = None
    if resume:
        if not Path(output).exists():
            raise InputError(f"{output}: --resume needs an existing checkpoint to continue")
        payload = load_checkpoint(output, kind=CHECKPOINT_KIND)
        model = model_from_payload(payload, str(output))
        if "training" not in payload["metadata"] or not any(k.startswith("optim.") for k in payload["state_dict"]):
            raise InputError(f"{output}: holds no training state to resume (weights only)")
        arch = model.arch
    else:
        arch = config.arch
        seed_everything(config.seed)
        model = ArSSR(arch)
    seed_everything(config.seed + 1000 * dist_info.rank)
    rng = np.random.default_rng([config.seed, dist_info.rank, 0 if payload is None else 1 + _epoch(payload)])

    train_vols, val_vols = [], []
    for f in files:
        vol = load_volume(f)
        norm = IntensityNorm.from_data(vol.data)
        tr, va = split_volume(vol, config.val_fraction)
        train_vols.append((tr, norm, foreground_voxels(tr)))
        if va is not None:
            val_vols.append((va, norm, foreground_voxels(va)))
    synth_sources = []
    if maps is not None:
        tr_maps, va_maps = maps.split(config.val_fraction)
        synth_sources.append((tr_maps, None, tr_maps.foreground()))
        if va_maps is not None:
            val_vols.append((va_maps, None, va_maps.foreground()))
    val_set = validation_set(val_vols, config.val_patches, config) if val_vols and dist_info.main else []

    model = model.to(dev)
    net: torch.nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if payload is not None:
        training = payload["metadata"]["training"]
        _load_optim_state(optimizer, payload["state_dict"], training["optimizer_param_groups"])
        start_epoch = int(training["epoch"])
        history = list(training.get("history", []))
    total_steps = config.epochs * config.steps_per_epoch
    if dist_info.main and not quiet:
        log(
            f"training {arch.encoder} encoder-decoder ({sum(p.numel() for p in model.parameters())} parameters) "
            f"on {len(files)} volume(s){'' if maps is None else f' and {len(maps.probs)} tissue map(s)'}, "
            f"{dist_info.world} process(es) on {dev}, epochs {start_epoch + 1}.."
            f"{config.epochs}"
        )
    t0 = time.perf_counter()
    with Progress(max(total_steps - start_epoch * config.steps_per_epoch, 1), "training", quiet=quiet) as bar:
        for epoch in range(start_epoch, config.epochs):
            losses = []
            for step in range(config.steps_per_epoch):
                it = epoch * config.steps_per_epoch + step
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(config, it, total_steps)
                examples = []
                for _ in range(config.batch_size):
                    pool = synth_sources if synth_sources and rng.random() < config.synth_fraction else train_vols
                    vol, norm, fg = pool[int(rng.integers(len(pool)))]
                    examples.append(
                        make_example(
                            vol,
                            norm,
                            fg,
                            rng,
                            config.patch,
                            config.queries,
                            noise_max=config.noise_max,
                            synth=config.augmentation,
                        )
                    )
                lr, coords, target, scale = _batch(examples, dev)
                loss = F.l1_loss(net(lr, coords, scale), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                bar.update(1, loss=losses[-1])
            record: dict[str, Any] = {"epoch": epoch + 1, "train_l1": float(np.mean(losses))}
            if dist_info.main:
                if val_set:
                    record["val_psnr_db"], record["val_psnr_trilinear_db"] = evaluate(model, val_set, dev)
                record["elapsed_s"] = time.perf_counter() - t0
                history.append(record)
                _save(output, model, optimizer, config, epoch + 1, history, files + list(tissues or []))
                if not quiet:
                    log("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if dist_info.world > 1:
                import torch.distributed as dist

                dist.barrier()
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"history": history, "world_size": dist_info.world, "rank": dist_info.rank, "device": str(dev)}


def _epoch(payload: dict) -> int:
    return int(payload["metadata"].get("training", {}).get("epoch", 0))


def _lr_at(config: TrainConfig, step: int, total: int) -> float:
    """Cosine decay from ``lr`` to ``lr * lr_final_fraction`` over the run."""
    t = min(step / max(total - 1, 1), 1.0)
    return config.lr * (config.lr_final_fraction + (1 - config.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def _save(output, model: ArSSR, optimizer, config: TrainConfig, epoch: int, history: list, files: list) -> None:
    optim_flat, groups = _optim_state(optimizer)
    state = {f"model.{k}": v for k, v in model.state_dict().items()} | optim_flat
    cfg = asdict(config)
    meta = model.metadata() | {
        "training": {
            "epoch": epoch,
            "config": cfg,
            "history": history,
            "files": [Path(f).name for f in files],
            "optimizer_param_groups": groups,
            "torch_version": str(torch.__version__),
        }
    }
    save_checkpoint(output, CHECKPOINT_KIND, state, meta)
