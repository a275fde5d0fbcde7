"""``inrsr recon``: INR reconstruction of undersampled multi-coil cardiac cine k-space (CMRxRecon
``.mat``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..recon.config import ReconConfig
from .common import DeviceOpt, QuietOpt, ReportOpt, SeedOpt, handle_errors

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
        help="hash (hash grid) or fourier (Fourier features: small matrices only, too weak and slow for a "
        "full-size cine on a CPU).",
    ),
]
CoilsOpt = Annotated[
    str, typer.Option("--coils", help="espirit (maps from the ACS lines) or joint (a coil INR learned too).")
]
LossOpt = Annotated[str, typer.Option("--loss", help="k-space loss: l2 or huber.")]
TvSpaceOpt = Annotated[float, typer.Option("--tv-space", help="Weight of the spatial total variation.")]
TvTimeOpt = Annotated[float, typer.Option("--tv-time", help="Weight of the temporal total variation.")]
DcOpt = Annotated[bool, typer.Option("--dc/--no-dc", help="Final hard data consistency with the measured k-space.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Most optimisation steps per slice.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate (decays 3x over --steps).")]
HoldoutOpt = Annotated[
    float,
    typer.Option("--holdout", help="Share of sampled lines outside the ACS held out to choose the step."),
]
PatienceOpt = Annotated[int, typer.Option("--patience", help="Stop after this many steps without held-out gain.")]
SpacingOpt = Annotated[str, typer.Option("--spacing", help="Pixel spacing in mm: DX[,DY[,DZ]] (DZ: slice distance).")]
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
    mask: MaskOpt = None,
    ref: RefOpt = None,
    method: MethodOpt = _D.method,
    encoding: EncodingOpt = _D.encoding,
    coils: CoilsOpt = _D.coils,
    loss: LossOpt = _D.loss,
    tv_space: TvSpaceOpt = _D.tv_space,
    tv_time: TvTimeOpt = _D.tv_time,
    dc: DcOpt = _D.dc,
    steps: StepsOpt = _D.steps,
    lr: LrOpt = _D.lr,
    holdout: HoldoutOpt = _D.holdout,
    patience: PatienceOpt = _D.patience,
    spacing: SpacingOpt = "1",
    save_mat: SaveMatOpt = None,
    device: DeviceOpt = _D.device,
    seed: SeedOpt = _D.seed,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
) -> None:
    """Reconstruct undersampled cine k-space with one INR per slice over (x, y, t).

    Reads CMRxRecon .mat files (v7.3 or v5) slice by slice. Fully sampled input is undersampled with --accel
    (24 central lines + every R-th line) and scored against itself; undersampled input uses --mask or the
    sampled lines themselves, and is scored when --ref gives the fully sampled k-space. Metrics follow the
    CMRxRecon 2023 rules (per-image max normalisation; full image and challenge crop).

    Example: inrsr recon cine_sax.mat --accel 8 -o cine.nii.gz --report report.json
    """
    from ..errors import InputError
    from ..recon.api import reconstruct_file
    from ..recon.output import print_summary, print_warnings, write_outputs

    if not (output.name.endswith(".nii") or output.name.endswith(".nii.gz")):
        raise InputError(f"{output}: the output must be a .nii or .nii.gz file")
    if save_mat is not None and save_mat.suffix != ".mat":
        raise InputError(f"{save_mat}: --save-mat must name a .mat file")
    config = ReconConfig(
        method=method,
        key=key,
        slices=_parse_ints(slices, "--slices"),
        accel=accel,
        acs=acs,
        mask=mask,
        ref=ref,
        encoding=encoding,
        coils=coils,
        loss=loss,
        tv_space=tv_space,
        tv_time=tv_time,
        dc=dc,
        steps=steps,
        lr=lr,
        holdout=holdout,
        patience=patience,
        device=device,
        seed=seed,
        quiet=quiet,
        ranking=save_mat is not None,
    )
    spacing_mm = _parse_spacing(spacing)
    result = reconstruct_file(str(kspace), config)
    write_outputs(result, output, spacing_mm, save_mat, Path(report) if report else None)
    if not quiet:
        print_summary(result, output)
    print_warnings(result)


def _parse_ints(text: str | None, option: str) -> list[int] | None:
    from ..errors import InputError

    if text is None or not text.strip():
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated integers, e.g. 0,3") from None


def _parse_spacing(text: str) -> tuple[float, float, float]:
    from ..errors import InputError

    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--spacing {text!r}: expected DX[,DY[,DZ]] in mm") from None
    if not 1 <= len(values) <= 3 or any(not v > 0 for v in values):
        raise InputError(f"--spacing {text!r}: expected 1 to 3 positive numbers (mm)")
    dx = values[0]
    dy = values[1] if len(values) > 1 else dx
    dz = values[2] if len(values) > 2 else dx
    return dx, dy, dz
