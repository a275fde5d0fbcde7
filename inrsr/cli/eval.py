"""``inrsr eval``: PSNR, SSIM and NRMSE of a volume against a reference, optionally inside a mask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import QcOpt, handle_errors

PredArg = Annotated[
    Path, typer.Argument(metavar="PRED", help="The volume to score (NIfTI), e.g. a super-resolved output.")
]
RefArg = Annotated[
    Path,
    typer.Argument(metavar="REF", help="The reference volume (NIfTI); metrics are computed on its grid."),
]
MaskOpt = Annotated[
    Path | None,
    typer.Option("--mask", help="Only voxels where this NIfTI mask is above 0.5 count (any grid)."),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", help="Also write the metrics and the input paths to this JSON file."),
]


@handle_errors
def eval_command(
    pred: PredArg, ref: RefArg, mask: MaskOpt = None, json_out: JsonOpt = None, qc: QcOpt = None
) -> None:
    """Score PRED against REF: PSNR (dB), SSIM and NRMSE, inside an optional mask.

    The data range is max - min of REF inside the mask; SSIM uses a 7x7x7 uniform window and is averaged
    inside the mask; NRMSE is RMS error / RMS of REF. When PRED's grid differs from REF's, PRED is resampled
    onto REF's grid in world space (cubic B-spline, 0 outside PRED's field of view) and a mask on another grid
    is resampled with nearest neighbour.

    --qc FILE.png draws the central planes of PRED (on REF's grid), REF and |PRED - REF|.

    Example: inrsr eval sr.nii.gz ref.nii.gz --mask brain_mask.nii.gz --json metrics.json --qc eval.png
    """
    from rich.console import Console
    from rich.table import Table

    from ..io.nifti import load_volume
    from ..metrics import compare_volumes
    from .common import JSON, PNG, check_outputs

    check_outputs(("--json", json_out, JSON), ("--qc", qc, PNG))
    pred_vol = load_volume(pred)
    ref_vol = load_volume(ref)
    mask_vol = load_volume(mask) if mask is not None else None
    result = compare_volumes(pred_vol, ref_vol, mask_vol)

    console = Console()
    console.print(
        f"{pred} vs {ref}" + (f" inside {mask}" if mask is not None else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("PSNR (dB)", f"{result['psnr_db']:.3f}")
    table.add_row("SSIM", f"{result['ssim']:.4f}")
    table.add_row("NRMSE", f"{result['nrmse']:.4f}")
    table.add_row("data range", f"{result['data_range']:.6g}")
    table.add_row("voxels in mask" if mask is not None else "voxels", str(result["n_voxels_in_mask"]))
    console.print(table)
    if result["resampled"]:
        console.print(
            f"{pred} was resampled onto {ref}'s grid in world space (cubic B-spline).",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    if json_out is not None:
        _write_json(json_out, result, pred=pred, ref=ref, mask=mask)
        console.print(f"wrote {json_out}", highlight=False, markup=False)
    if qc is not None:
        _write_qc(qc, pred_vol, ref_vol, result, mask)
        console.print(f"wrote {qc}", highlight=False, markup=False)


def _write_qc(path: Path, pred, ref, result: dict, mask: Path | None) -> None:
    """PRED resampled onto REF's grid (as scored), REF and the absolute difference: central planes."""
    import numpy as np

    from .. import qc

    if result["resampled"]:
        pred_row = qc.input_row("PRED (on REF's grid, cubic)", pred, ref.grid, order=3)
    else:
        pred_row = qc.Row("PRED", qc.slabs(pred.data))
    ref_slabs = qc.slabs(ref.data)
    diff = [np.abs(p - r) for p, r in zip(pred_row.slabs, ref_slabs, strict=True)]
    rows = [pred_row, qc.Row("REF", ref_slabs), qc.Row("|PRED - REF|", diff, "map")]
    caption = (
        f"PRED {pred.name}\nREF {ref.name}" + (f"\nmask {mask}" if mask is not None else "")
        + f"\nPSNR {result['psnr_db']:.2f} dB, SSIM {result['ssim']:.4f}, NRMSE {result['nrmse']:.4f} "
        f"(data range {result['data_range']:.4g}, {result['n_voxels_in_mask']} voxels)"
    )  # fmt: skip
    qc.save_png(qc.volume_montage(rows, ref.affine, "inrsr eval", caption), path)


def _write_json(path: Path, result: dict, *, pred: Path, ref: Path, mask: Path | None) -> None:
    """Write the metrics atomically; an infinite PSNR (identical volumes) is written as ``null``."""
    import json
    import math

    from ..errors import InputError
    from ..io.nifti import atomic_path

    report = {
        key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in result.items()
    }
    report.update(pred=str(pred), ref=str(ref), mask=None if mask is None else str(mask))
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, allow_nan=False)
            fh.write("\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the JSON report ({exc.strerror or exc})") from None
