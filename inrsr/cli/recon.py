"""``inrsr recon``: INR reconstruction of undersampled multi-coil cardiac cine k-space (CMRxRecon
``.mat``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..recon.config import Pattern, ReconConfig
from .common import DeviceOpt, QcOpt, QuietOpt, ReportOpt, SeedOpt, handle_errors

_D = ReconConfig()  # defaults live in the config dataclass

KspaceArg = Annotated[
    Path,
    typer.Argument(metavar="KSPACE", help="k-space .mat file (MATLAB v7.3 or v5), CMRxRecon layout."),
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output magnitude NIfTI, shaped (x, y, slice, t).")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="The k-space variable (default: kspace_full, kspace_subNN, kus, kspace_single_*)."),
]
SlicesOpt = Annotated[str | None, typer.Option("--slices", help="Slices to reconstruct, e.g. 0,3 (default: all).")]
AccelOpt = Annotated[
    int | None,
    typer.Option(
        "--accel",
        help="Undersample fully sampled input retrospectively at this R (challenge rule); "
        "with undersampled input, a check of the data's mask.",
    ),
]
AcsOpt = Annotated[int, typer.Option("--acs", help="Central fully sampled ky lines of the --accel mask.")]
PatternOpt = Annotated[
    Pattern,
    typer.Option(
        "--pattern",
        case_sensitive=False,
        help="Sampling simulated by --accel on fully sampled input: uniform (the same lines in every frame: ACS + "
        "every R-th line), or a CMRxRecon 2024 k-t pattern that changes from frame to frame: ktUniform (every "
        "R-th line, shifted per frame), ktGaussian (random lines, Gaussian density), ktRadial (golden-angle "
        "spokes + an ACS square). For the k-t patterns R counts the samples outside the ACS.",
    ),
]
MaskOpt = Annotated[
    str | None,
    typer.Option("--mask", help="Sampling mask FILE[:VAR], (kx, ky) or k-t (kx, ky, t) (default: from the data)."),
]
RefOpt = Annotated[
    str | None,
    typer.Option("--ref", help="Fully sampled k-space .mat for the metrics (never used for fitting)."),
]
MethodOpt = Annotated[str, typer.Option("--method", help="inr, or zerofill (coil-combined zero-filled baseline).")]
EncodingOpt = Annotated[
    str,
    typer.Option(
        "--encoding",
        help="pyramid (multi-resolution grids over (x, y, t) summed: a linear decoder), hash (the same grids + "
        "an MLP: about twice the time per step), fourier (Fourier features: small matrices only, too weak and slow "
        "for a full-size cine on a CPU) or pixel (no field: a plain pixel tensor under the same loss, the ablation).",
    ),
]
CoilsOpt = Annotated[
    str, typer.Option("--coils", help="espirit (maps from the ACS lines) or joint (a coil INR learned too).")
]
VirtualCoilsOpt = Annotated[
    int | None,
    typer.Option(
        "--virtual-coils",
        help="Compress the coils to this many virtual coils first (SVD over the coils, as BART's cc): under k-t "
        "masks each step costs about as many coils; 0 keeps every coil. Default: under k-t masks 6; when every "
        "frame has the same lines 8 at R <= 4 and every coil above (a step costs nearly the same there).",
    ),
]
LossOpt = Annotated[str, typer.Option("--loss", help="k-space loss: l2 or huber.")]
TvSpaceOpt = Annotated[float, typer.Option("--tv-space", help="Weight of the spatial total variation.")]
TvTimeOpt = Annotated[float, typer.Option("--tv-time", help="Weight of the temporal total variation.")]
TvStagesOpt = Annotated[
    int,
    typer.Option(
        "--tv-stages",
        help="Times the regularisation weights (TV and --llr) may be lowered (by --tv-factor) when the held-out "
        "k-space lines have settled and still improved at the current weights: the weights chosen per case from "
        "the data. A lowering that does not help is undone once and the fit trains on. 0 keeps them fixed.",
    ),
]
TvFactorOpt = Annotated[
    float | None,
    typer.Option(
        "--tv-factor",
        help="Factor of each --tv-stages step, in (0, 1). Default: 0.1 under k-t masks, 0.3 otherwise.",
    ),
]
LlrOpt = Annotated[
    float | None,
    typer.Option(
        "--llr",
        help="Weight of the locally low-rank term: nuclear norm of each 8 x 8 block's pixels-by-frames matrix, on a "
        "grid shifted at random every step (as BART's -R L). 0 turns it off. Default: 0.1 when the sampled "
        "lines change from frame to frame (k-t masks) or every frame has the same lines at R <= 4; 0 when every "
        "frame has the same lines at a higher R.",
    ),
]
AcsMotionOpt = Annotated[
    float | None,
    typer.Option(
        "--acs-motion",
        help="Temporal terms (--tv-time, --llr) weighted per pixel from the low-resolution cine of the ACS lines: "
        "1 / (1 + m / VALUE), m its temporal deviation relative to the image maximum; where the heart moves they "
        "relax. 0: the same weight everywhere. Default: 0.03 under k-t masks, 0 otherwise.",
    ),
]
DcOpt = Annotated[bool, typer.Option("--dc/--no-dc", help="Final hard data consistency with the measured k-space.")]
FramesOpt = Annotated[
    int | None,
    typer.Option(
        "--frames",
        help="Render this many frames evenly over the cardiac cycle from the fitted model (temporal "
        "super-resolution; time is periodic; no final data consistency). Default: the acquired frames.",
    ),
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Most optimisation steps per slice.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate (at the first step; see --lr-decay).")]
LrDecayOpt = Annotated[
    float | None,
    typer.Option(
        "--lr-decay",
        help="The learning rate falls exponentially to --lr times this at --steps, in (0, 1] (1: constant). "
        "Default: 1 (the fits are still improving at their last weights when their steps end); 1/3 with --frames "
        "(the frames between the acquired ones come out steadier).",
    ),
]
HoldoutOpt = Annotated[
    float,
    typer.Option("--holdout", help="Share of sampled lines outside the ACS held out to choose the step."),
]
PatienceOpt = Annotated[
    int,
    typer.Option(
        "--patience",
        help="Steps over which the held-out error is watched: when it has settled (see --settle-tol), the weights "
        "are lowered (--tv-stages) or the fit stops.",
    ),
]
SettleTolOpt = Annotated[
    float,
    typer.Option(
        "--settle-tol",
        help="The held-out error has settled when its best value fell by at most this share over the last "
        "--patience steps (0: when it did not fall at all).",
    ),
]
WeightRampOpt = Annotated[
    int,
    typer.Option(
        "--weight-ramp",
        help="Steps over which a lowering of the weights by --tv-factor is spread, geometrically (0: at once).",
    ),
]
LlrEveryOpt = Annotated[
    int,
    typer.Option(
        "--llr-every",
        help="Evaluate the locally low-rank term on every n-th step only, n times as strong (its "
        "eigendecompositions are the costliest part of a step).",
    ),
]
LlrRaceOpt = Annotated[
    float,
    typer.Option(
        "--llr-race",
        help="A second lowering factor for the locally low-rank weight alone: from the first lowering of the "
        "weights, the fit runs --race-steps steps with the low-rank weight lowered by this factor and as many with "
        "it lowered by --tv-factor, from the same state, and goes on from the one with the lower held-out error "
        "(that factor kept for the later lowerings). 0 (default): the low-rank weight is lowered with the TV "
        "weights. Try 0.3 under k-t masks on textured anatomy (docs/recon.md).",
    ),
]
RaceStepsOpt = Annotated[int, typer.Option("--race-steps", help="Steps each factor of --llr-race runs.")]
SpacingOpt = Annotated[
    str, typer.Option("--spacing", help="Pixel spacing in mm: DX[,DY[,DZ]] (DZ: the slice distance, if known).")
]
SliceDistanceOpt = Annotated[
    float | None,
    typer.Option(
        "--slice-distance",
        help="Distance between slice centres in mm (or the third value of --spacing); not known when not given.",
    ),
]
SaveMatOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-mat",
        help="Also write the challenge's img4ranking to this .mat (v7.3): single precision, (x/3, y/2, 2 central "
        "slices, 3 frames) as run4Ranking crops it; the central slices must be among --slices.",
    ),
]


@handle_errors
def recon_command(
    kspace: KspaceArg,
    output: OutputOpt,
    key: KeyOpt = None,
    slices: SlicesOpt = None,
    accel: AccelOpt = None,
    acs: AcsOpt = _D.acs,
    pattern: PatternOpt = _D.pattern,
    mask: MaskOpt = None,
    ref: RefOpt = None,
    method: MethodOpt = _D.method,
    encoding: EncodingOpt = _D.encoding,
    coils: CoilsOpt = _D.coils,
    virtual_coils: VirtualCoilsOpt = _D.virtual_coils,
    loss: LossOpt = _D.loss,
    tv_space: TvSpaceOpt = _D.tv_space,
    tv_time: TvTimeOpt = _D.tv_time,
    tv_stages: TvStagesOpt = _D.tv_stages,
    tv_factor: TvFactorOpt = _D.tv_factor,
    llr: LlrOpt = _D.llr,
    llr_every: LlrEveryOpt = _D.llr_every,
    acs_motion: AcsMotionOpt = _D.acs_motion,
    dc: DcOpt = _D.dc,
    frames: FramesOpt = _D.frames,
    steps: StepsOpt = _D.steps,
    lr: LrOpt = _D.lr,
    lr_decay: LrDecayOpt = _D.lr_decay,
    holdout: HoldoutOpt = _D.holdout,
    patience: PatienceOpt = _D.patience,
    settle_tol: SettleTolOpt = _D.settle_tol,
    weight_ramp: WeightRampOpt = _D.weight_ramp,
    llr_race: LlrRaceOpt = _D.llr_race,
    race_steps: RaceStepsOpt = _D.race_steps,
    spacing: SpacingOpt = "1",
    slice_distance: SliceDistanceOpt = None,
    save_mat: SaveMatOpt = None,
    qc: QcOpt = None,
    device: DeviceOpt = _D.device,
    seed: SeedOpt = _D.seed,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
) -> None:
    """Reconstruct undersampled cine k-space with one INR per slice over (x, y, t).

    Reads CMRxRecon .mat files (v7.3 or v5) slice by slice. Fully sampled input is undersampled with --accel
    (24 central lines + every R-th line, or a k-t --pattern that changes per frame) and scored against itself;
    undersampled input uses --mask (also k-t masks) or the sampled points themselves, and is scored when --ref
    gives the fully sampled k-space. Metrics follow the CMRxRecon 2023 rules (per-image max normalisation; full
    image and challenge crop). --frames N renders N frames over the cardiac cycle from the fitted model.

    The NIfTI has no scanner position (sform and qform codes 0): only its voxel sizes, --spacing and the slice
    distance, mean something. --qc FILE.png draws zero-filled vs reconstructed frames of the central slice.

    Example: inrsr recon cine_sax.mat --accel 8 -o cine.nii.gz --report report.json --qc cine.png
    """
    from .common import JSON, NIFTI, PNG, check_outputs

    check_outputs(
        ("-o", output, NIFTI), ("--save-mat", save_mat, (".mat",)), ("--report", report, JSON), ("--qc", qc, PNG)
    )
    spacing_mm = _parse_spacing(spacing, slice_distance)
    if frames is not None and (qc is not None or method != "inr"):
        from ..errors import InputError

        needs = "--method inr" if qc is None else "--method inr and no --qc"
        raise InputError(f"--frames renders the fitted model: it needs {needs}")
    config = ReconConfig(
        method=method,
        key=key,
        slices=_parse_ints(slices, "--slices"),
        accel=accel,
        acs=acs,
        pattern=pattern,
        mask=mask,
        ref=ref,
        encoding=encoding,
        coils=coils,
        virtual_coils=virtual_coils,
        loss=loss,
        tv_space=tv_space,
        tv_time=tv_time,
        tv_stages=tv_stages,
        tv_factor=tv_factor,
        llr=llr,
        llr_every=llr_every,
        acs_motion=acs_motion,
        dc=dc,
        frames=frames,
        steps=steps,
        lr=lr,
        lr_decay=lr_decay,
        holdout=holdout,
        patience=patience,
        settle_tol=settle_tol,
        weight_ramp=weight_ramp,
        llr_race=llr_race,
        race_steps=race_steps,
        device=device,
        seed=seed,
        quiet=quiet,
        ranking=save_mat is not None,
    )
    from ..recon.api import reconstruct_file
    from ..recon.output import print_summary, print_warnings, write_outputs

    result = reconstruct_file(str(kspace), config, on_checked=_flush_subnormals)
    write_outputs(result, output, spacing_mm, save_mat, Path(report) if report else None)
    _write_provenance(output, kspace, config, spacing_mm)
    if qc is not None:
        _write_qc(result, kspace, config, spacing_mm, qc)
    if not quiet:
        print_summary(result, output)
    print_warnings(result)


def _flush_subnormals() -> None:
    """Before any parallel PyTorch operation: the OpenMP workers started later flush subnormals too, and the fit
    runs on this thread (see ``run_flushing_subnormals``). PyTorch loads here, once the inputs are checked."""
    from ..devices import flush_subnormals_from_the_start

    flush_subnormals_from_the_start()


def _parse_ints(text: str | None, option: str) -> list[int] | None:
    from ..errors import InputError

    if text is None or not text.strip():
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated integers, e.g. 0,3") from None


def _parse_spacing(text: str, slice_distance: float | None = None) -> tuple[float, float, float | None]:
    """``(dx, dy, dz)`` in mm from ``--spacing DX[,DY[,DZ]]`` and ``--slice-distance``; ``dz`` is None when
    neither gives it (never guessed from the in-plane spacing)."""
    from ..errors import InputError

    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--spacing {text!r}: expected DX[,DY[,DZ]] in mm") from None
    if not 1 <= len(values) <= 3 or any(not 0 < v < float("inf") for v in values):
        raise InputError(f"--spacing {text!r}: expected 1 to 3 positive numbers (mm)")
    if slice_distance is not None and not 0 < slice_distance < float("inf"):
        raise InputError(f"--slice-distance {slice_distance}: expected a positive number of mm")
    dx = values[0]
    dy = values[1] if len(values) > 1 else dx
    dz = values[2] if len(values) > 2 else slice_distance
    if len(values) > 2 and slice_distance is not None and abs(values[2] - slice_distance) > 1e-9:
        raise InputError(f"--spacing {text!r} and --slice-distance {slice_distance:g} disagree on the slice distance")
    return dx, dy, dz


def _write_provenance(output: Path, kspace: Path, config: ReconConfig, spacing_mm: tuple) -> None:
    from dataclasses import asdict

    from ..io.sidecar import write_provenance

    mask_file = config.mask
    if mask_file and ":" in mask_file and not Path(mask_file).exists():
        mask_file = mask_file.rsplit(":", 1)[0]  # FILE:VAR, as --mask reads it
    sources = [str(kspace), *([mask_file] if mask_file else [])]
    settings = {k: v for k, v in asdict(config).items() if k not in ("quiet", "ranking", "ref", "ref_key")}
    settings["spacing_mm"] = list(spacing_mm)
    write_provenance(output, sources, settings, "magnitude cine reconstructed from undersampled k-space, "
                     "(x, y, slice, t); no scanner position (sform/qform code 0)")  # fmt: skip


def _write_qc(result, kspace: Path, config: ReconConfig, spacing_mm: tuple, path: Path) -> None:
    """The zero-filled image of the slice shown (same k-space and mask, no fitting), then the picture."""
    from dataclasses import replace

    from ..recon.api import reconstruct_file
    from ..recon.output import write_qc

    shown = result.slices[len(result.slices) // 2]
    zf_config = replace(config, method="zerofill", slices=[shown], ref=None, ranking=False, quiet=True)
    write_qc(result, reconstruct_file(str(kspace), zf_config), spacing_mm, path)
