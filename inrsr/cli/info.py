"""``inrsr info``: what inrsr will make of a set of files, before a long job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors

FilesArg = Annotated[
    list[Path], typer.Argument(metavar="FILE", help="NIfTI volumes or stacks, and k-space .mat files.")
]
JsonOpt = Annotated[
    str | None,
    typer.Option("--json", help="Also write the description to this JSON file ('-': print only the JSON, to stdout)."),
]


@handle_errors
def info_command(files: FilesArg, json_out: JsonOpt = None) -> None:
    """Describe NIfTI and k-space files as inrsr reads them, without reading the voxel data.

    NIfTI: shape, voxel size, orientation code (nibabel's aff2axcodes), slice axis (the coarsest) and thickness
    (the JSON sidecar's SliceThickness, else the slice spacing), obliquity (the largest angle between a voxel
    axis and its nearest world axis), world bounding box, which of sform/qform gives the position and their
    codes, data type and scaling; for several files, the fraction of each one's field of view inside each
    other's.

    k-space .mat (MATLAB v5 or v7.3): the variables with their dimensions in MATLAB order, the k-space layout
    (coils, slices, frames) and the sampling mask (a mask variable, or the zeros of the data): fully sampled or
    not, ACS lines, nominal and effective acceleration.

    Examples:

      inrsr info axial.nii.gz coronal.nii.gz sagittal.nii.gz

      inrsr info cine_sax.mat --json cine_info.json

      inrsr info t1.nii.gz --json - | jq .files[0].orientation
    """
    import json

    from ..io.info import describe_mat, describe_nifti, is_mat, pairwise_overlap
    from .common import JSON, check_outputs, write_json

    to_stdout = json_out == "-"
    if json_out is not None and not to_stdout:
        check_outputs(("--json", json_out, JSON))
    described = [describe_mat(f) if is_mat(f) else describe_nifti(f) for f in files]
    volumes = [d for d in described if "shape" in d]
    payload: dict = {"files": described}
    if len(volumes) > 1:
        payload["overlap"] = {
            "files": [v["file"] for v in volumes],
            "fraction_inside": pairwise_overlap(volumes),
            "meaning": "fraction_inside[i][j]: the share of file i's field of view inside file j's",
        }
    if to_stdout:
        from .. import __version__

        print(json.dumps({"inrsr_version": __version__, **payload}, indent=2))
        return
    _print_tables(described, payload.get("overlap"))
    if json_out is not None:
        write_json(json_out, payload)
        print(f"wrote {json_out}")


def _labels(names: list[str]) -> list[str]:
    """File names for column headers: the base name, or the path where base names repeat."""
    bases = [Path(n).name for n in names]
    return [b if bases.count(b) == 1 else n for b, n in zip(bases, names, strict=True)]


def _print_tables(described: list[dict], overlap: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    volumes = [d for d in described if "shape" in d]
    if volumes:
        table = Table(title="NIfTI", title_justify="left")
        table.add_column("")
        for label in _labels([v["file"] for v in volumes]):
            table.add_column(label, overflow="fold")
        rows = {
            "shape": lambda v: " x ".join(map(str, v["shape"])),
            "voxel size (mm)": lambda v: " x ".join(f"{s:g}" for s in v["voxel_size_mm"]),
            "orientation": lambda v: v["orientation"],
            "slice axis": lambda v: f"{v['slice_axis']} ({v['slice_direction']})",
            "thickness (mm)": lambda v: f"{v['thickness_mm']:g} ({v['thickness_source'].split(' (')[0]})",
            "obliquity (deg)": lambda v: f"{v['obliquity_deg']:.2f}",
            "bounding box (mm)": lambda v: "\n".join(
                f"{a} {lo:.1f}..{hi:.1f}"
                for a, lo, hi in zip("xyz", v["bounding_box_mm"]["min"], v["bounding_box_mm"]["max"], strict=True)
            ),
            "position from": lambda v: v["affine_from"],
            "sform / qform code": lambda v: f"{v['sform_code']} / {v['qform_code']}",
            "data type": lambda v: v["dtype"],
            "scaling": lambda v: "none" if (v["scl_slope"], v["scl_inter"]) == (1, 0)
            else f"x {v['scl_slope']:g} + {v['scl_inter']:g}",
            "notes": lambda v: "; ".join(v["notes"]) or "-",
        }
        for name, cell in rows.items():
            table.add_row(name, *(cell(v) for v in volumes))
        console.print(table)
    if overlap is not None:
        labels = _labels(overlap["files"])
        table = Table(title="Overlap: share of the row's field of view inside the column's", title_justify="left")
        table.add_column("")
        for label in labels:
            table.add_column(label, justify="right", overflow="fold")
        for label, row in zip(labels, overlap["fraction_inside"], strict=True):
            table.add_row(label, *(f"{100 * f:.0f}%" for f in row))
        console.print(table)
    for d in described:
        if "variables" in d:
            _print_mat(console, d)


def _print_mat(console, d: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{d['file']} ({d['format']})", title_justify="left")
    for col in ("variable", "dimensions (MATLAB order)", "type"):
        table.add_column(col)
    for v in d["variables"]:
        table.add_row(v["name"], " x ".join(map(str, v["dims"])), v["type"])
    console.print(table)
    k = d["kspace"]
    if k is not None:
        console.print(
            f"k-space {k['variable']} {k['layout']}: {k['kx']} kx x {k['ky']} ky, {k['coils']} coils, "
            f"{k['slices']} slices, {k['frames']} frames",
            highlight=False,
            markup=False,
        )
    for m in d["masks"]:
        if m["fully_sampled"]:
            text = "fully sampled"
        else:
            nominal = f"R = {m['nominal_accel']:g}" if m["nominal_accel"] else "irregular"
            step = f", every {m['regular_step']}th line" if m["regular_step"] else ""
            varies = ", varies over time" if m["varies_over_time"] else ""
            text = (
                f"{nominal}{step} ({m['effective_accel']:.2f}x effective), {m['sampled_ky_lines']} ky lines, "
                f"ACS {m['acs_lines']} lines{varies}"
            )
        console.print(f"mask from {m['source']}: {text}", highlight=False, markup=False)
    for note in d["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False)
