"""Writing what ``recon`` produced: the magnitude NIfTI, the challenge ``.mat``, the JSON report, a printed
table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.kspace import write_mat73
from ..io.nifti import atomic_path, save_volume
from .api import ReconResult
from .scoring import ranking_array


def write_outputs(
    result: ReconResult,
    output: Path,
    spacing_mm: tuple[float, float, float],
    save_mat: Path | None = None,
    report: Path | None = None,
) -> None:
    """Write the NIfTI ``(x, y, slice, t)`` (axes: readout, phase encode; spacing in mm), and optionally
    the challenge's ``img4ranking`` (single, cropped: see :func:`~inrsr.recon.scoring.ranking_array`) to a
    v7.3 ``.mat``, and the report; every file atomically."""
    ranking = None
    if save_mat is not None:
        ranking = ranking_array(result.magnitude, result.slices, result.report["input"]["n_slices"])
        if ranking is None:
            raise InputError("--save-mat: the slices the challenge ranks were not reconstructed")
    affine = np.diag([*spacing_mm, 1.0])
    save_volume(output, result.magnitude, affine)
    if save_mat is not None:
        write_mat73(save_mat, {"img4ranking": ranking})
    if report is not None:
        rep = {
            **result.report,
            "outputs": {"nifti": str(output), "mat": str(save_mat) if save_mat else None},
            "spacing_mm": list(spacing_mm),
        }
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(rep, indent=2, default=_jsonable))


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def print_summary(result: ReconResult, output: Path) -> None:
    """A table per slice: sampling, stopping step, time and, with a reference, the CMRxRecon 2023 metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    rep = result.report
    info = rep["input"]
    console.print(
        f"{info['path']}: {info['key']} ({info['nx']} kx x {info['ny']} ky, {info['n_coils']} coils, "
        f"{info['n_slices']} slices, {info['n_frames']} frames, MATLAB v{info['version']})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table()
    for col in (
        "slice",
        "R (eff.)",
        "step",
        "time (s)",
        "method",
        "PSNR crop",
        "SSIM crop",
        "NMSE crop",
        "PSNR full",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for e in rep["slices"]:
        nominal = f"{e['nominal_accel']:.0f}" if e.get("nominal_accel") else "-"
        first = [
            str(e["slice"]),
            f"{nominal} ({e['effective_accel']:.1f}x)",
            f"{e['best_step']}/{e['steps_run']}" if "best_step" in e else "-",
            f"{e['seconds']:.1f}",
        ]
        metrics = e.get("metrics") or {"": None}
        for i, (m, s) in enumerate(metrics.items()):
            lead = first if i == 0 else [""] * 4
            if s is None:
                table.add_row(*lead, "", "", "", "", "")
            else:
                c = s["crop"]
                table.add_row(
                    *lead, m, f"{c['psnr']:.2f}", f"{c['ssim']:.4f}", f"{c['nmse']:.4f}", f"{s['full']['psnr']:.2f}"
                )
    console.print(table)
    for m, s in rep.get("summary", {}).items():
        line = f"{m}: mean crop PSNR {s['crop']['psnr']:.2f} dB, SSIM {s['crop']['ssim']:.4f}"
        if "challenge" in s:
            line += f"; challenge (central 2 slices) PSNR {s['challenge']['psnr']:.2f} dB"
        console.print(line, highlight=False, markup=False)
    console.print(f"wrote {output}", highlight=False, markup=False)


def print_warnings(result: ReconResult) -> None:
    """Each slice's warning (also in the report) on stderr, one line each; printed even with ``-q``."""
    for entry in result.report["slices"]:
        if "warning" in entry:
            print(f"warning: {entry['warning']}", file=sys.stderr)
