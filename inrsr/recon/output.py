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
    spacing_mm: tuple[float, float, float | None],
    save_mat: Path | None = None,
    report: Path | None = None,
) -> None:
    """Write the NIfTI ``(x, y, slice, t)`` (axes: readout, phase encode; spacing in mm), and optionally
    the challenge's ``img4ranking`` (single, cropped: see :func:`~inrsr.recon.scoring.ranking_array`) to a
    v7.3 ``.mat``, and the report; every file atomically.

    k-space files carry no position or orientation, so the NIfTI's sform and qform codes are 0 (unknown): only
    the voxel sizes mean something. The third, the slice distance, is ``spacing_mm[2]`` when given; when it is
    None (not known) the header holds 1 and the report's ``spacing_mm`` ends with null."""
    ranking = None
    if save_mat is not None:
        ranking = ranking_array(result.magnitude, result.slices, result.report["input"]["n_slices"])
        if ranking is None:
            raise InputError("--save-mat: the slices the challenge ranks were not reconstructed")
    dx, dy, dz = spacing_mm
    affine = np.diag([dx, dy, 1.0 if dz is None else dz, 1.0])
    save_volume(output, result.magnitude, affine, code=0)
    if save_mat is not None:
        write_mat73(save_mat, {"img4ranking": ranking})
    if report is not None:
        rep = {
            **result.report,
            "outputs": {"nifti": str(output), "mat": str(save_mat) if save_mat else None},
            "spacing_mm": [dx, dy, dz],  # dz (the slice distance) null when not known
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


def write_qc(result: ReconResult, zero_filled: ReconResult, spacing_mm: tuple[float, ...], path: Path) -> None:
    """The QC picture of a reconstruction: zero-filled vs reconstructed frames and x-t profiles of the central
    reconstructed slice (``zero_filled`` holds that slice, from the same k-space and mask)."""
    from .. import qc

    index = len(result.slices) // 2
    s = result.slices[index]
    rec = result.magnitude[:, :, index, :]
    zf = zero_filled.magnitude[:, :, zero_filled.slices.index(s), :]
    rep = result.report
    info = rep["input"]
    entry = rep["slices"][index]
    settings = rep["settings"]
    nominal = f"R {entry['nominal_accel']:.0f}, " if entry.get("nominal_accel") else ""
    lines = [
        f"{info['path']}: {info['key']} ({info['nx']} kx x {info['ny']} ky, {info['n_coils']} coils, "
        f"{info['n_slices']} slices, {info['n_frames']} frames); slice {s} shown",
        f"{nominal}{entry['effective_accel']:.1f}x effective; method {settings['method']}"
        + (f", step {entry['best_step']}/{entry['steps_run']}" if "best_step" in entry else "")
        + f", {entry['seconds']:.1f} s",
    ]
    for method, scores in (entry.get("metrics") or {}).items():
        c = scores["crop"]
        lines.append(f"{method}: PSNR {c['psnr']:.2f} dB, SSIM {c['ssim']:.4f}, NMSE {c['nmse']:.4f} (challenge crop)")
    if "warning" in entry:
        lines.append(f"warning: {entry['warning']}")
    figure = qc.cine_montage(zf, rec, spacing_mm[:2], f"inrsr recon: slice {s}", "\n".join(lines))
    qc.save_png(figure, path)
