"""``inrsr train``: train an encoder-decoder for single-volume ``upsample`` on your own high-res volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..arssr.config import ArchConfig, Augmentation, TrainConfig
from .common import DeviceOpt, QuietOpt, ReportOpt, SeedOpt, handle_errors

_T = TrainConfig()
_A = ArchConfig()


@handle_errors
def train_command(
    inputs: Annotated[list[Path], typer.Argument(help="High-res NIfTI volumes, or folders of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model checkpoint to write (.pt).")],
    epochs: Annotated[int, typer.Option(help="Epochs (the checkpoint is written after each).")] = _T.epochs,
    steps: Annotated[int, typer.Option("--steps", help="Optimisation steps per epoch.")] = _T.steps_per_epoch,
    batch_size: Annotated[int, typer.Option(help="Patches per step (per process).")] = _T.batch_size,
    patch: Annotated[int, typer.Option(help="Low-res patch edge in voxels.")] = _T.patch,
    queries: Annotated[int, typer.Option(help="High-res query points per patch.")] = _T.queries,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (cosine decay to 5%).")] = _T.lr,
    noise: Annotated[float, typer.Option(help="Max Rician noise (of the 99.9th pct) added to inputs.")] = _T.noise_max,
    tissue: Annotated[
        list[Path] | None,
        typer.Option(
            "--tissue",
            help="Tissue probability map (repeat: one per tissue, e.g. GM, WM, CSF) or one integer segmentation: "
            "examples then get random contrasts synthesised from the maps (SynthSR-style, see docs/model_card.md).",
        ),
    ] = None,
    synth_fraction: Annotated[
        float, typer.Option(help="With --tissue: fraction of examples synthesised from the maps.")
    ] = _T.synth_fraction,
    augment: Annotated[
        bool,
        typer.Option(help="Random deformations, bias fields and slice gaps (the generator of docs/model_card.md)."),
    ] = True,
    val_fraction: Annotated[
        float, typer.Option(help="Fraction of each volume (last slices along its 3rd axis) held out for validation.")
    ] = _T.val_fraction,
    encoder: Annotated[str, typer.Option(help="Encoder: rdn, rescnn or srresnet.")] = _A.encoder,
    channels: Annotated[int, typer.Option(help="Encoder channels.")] = _A.channels,
    features: Annotated[int, typer.Option(help="Channels of the feature map read by the decoder.")] = _A.feature_dim,
    blocks: Annotated[int, typer.Option(help="Encoder blocks (paper: rescnn 3, rdn 8, srresnet 18).")] = _A.blocks,
    depth: Annotated[
        int, typer.Option(help="Convs per block (paper: rescnn 6; rdn: 3 layers per dense block).")
    ] = _A.depth,
    decoder_width: Annotated[int, typer.Option(help="Decoder MLP width.")] = _A.decoder_width,
    decoder_layers: Annotated[int, typer.Option(help="Decoder MLP layers.")] = _A.decoder_layers,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUTPUT's training state (its architecture wins).")
    ] = False,
    report: ReportOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = _T.seed,
    quiet: QuietOpt = False,
) -> None:
    """Train an encoder-decoder (ArSSR-style) that super-resolves single low-res volumes at any scale.

    Random patches of the high-res volumes are degraded with the same slice PSF as `inrsr simulate`, at random
    scales (isotropic x2-x4 and through-plane only x2-x5), and the model learns to restore them (L1 loss, Adam).
    Each patch is randomly deformed, given a bias field, a slice gap and noise; with --tissue most patches get a
    random contrast drawn from tissue maps, so the model does not learn one scanner's contrast.
    A validation PSNR is printed after every epoch, when OUTPUT is also (atomically) written. Several GPUs (or
    CPU processes): start it with torchrun. Use the result with `inrsr upsample LR.nii.gz --model OUTPUT`.

    Examples:

      inrsr train hr_volumes/ -o model.pt --epochs 50

      inrsr train hr_volumes/ -o model.pt --epochs 80 --resume

      inrsr train t1.nii.gz -o model.pt --tissue gm.nii.gz --tissue wm.nii.gz --tissue csf.nii.gz

      torchrun --nproc_per_node 4 -m inrsr train hr_volumes/ -o model.pt --device cuda
    """
    import time

    from ..errors import InputError
    from .common import JSON, check_outputs, write_json

    check_outputs(("-o", output, (".pt",)), ("--report", report, JSON))
    if output.exists() and not resume:
        raise InputError(f"{output}: exists; pass --resume to continue training it, or choose another path")
    config = TrainConfig(
        epochs=epochs,
        steps_per_epoch=steps,
        batch_size=batch_size,
        patch=patch,
        queries=queries,
        lr=lr,
        noise_max=noise,
        synth_fraction=synth_fraction,
        augmentation=Augmentation() if augment else None,
        val_fraction=val_fraction,
        seed=seed,
        arch=ArchConfig(
            encoder=encoder,
            channels=channels,
            feature_dim=features,
            blocks=blocks,
            depth=depth,
            decoder_width=decoder_width,
            decoder_layers=decoder_layers,
        ),
    )
    from ..arssr.train import train_model

    t0 = time.perf_counter()
    result = train_model(
        [str(p) for p in inputs],
        output,
        config,
        device=device,
        resume=resume,
        quiet=quiet,
        tissues=[str(t) for t in tissue or []],
    )
    if result["rank"] != 0:
        return
    if report is not None:
        write_json(report, {"output": str(output), "train_s": time.perf_counter() - t0} | result)
    if not quiet:
        print(f"wrote {output}")
