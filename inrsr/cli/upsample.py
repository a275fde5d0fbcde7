"""``inrsr upsample``: arbitrary-resolution output from a fitted model, or from one low-res NIfTI volume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..arssr.config import UpsampleConfig
from .common import DeviceOpt, QcOpt, QuietOpt, ReportOpt, handle_errors

_U = UpsampleConfig()


@handle_errors
def upsample_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A model saved by `inrsr fit --save-model` (.pt), or a low-res NIfTI volume (.nii, .nii.gz)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="NIfTI to write.")],
    spacing: Annotated[str | None, typer.Option(help="Output spacing 'S' or 'Sx,Sy,Sz' in mm.")] = None,
    like: Annotated[Path | None, typer.Option(help="Render onto exactly this reference's grid.")] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            help="Upsampling factor 'S' or 'Sx,Sy,Sz' along the voxel axes of the model's grid or of the "
            "NIfTI volume (e.g. 2.5, or 1,1,4 for through-plane only)."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Encoder-decoder checkpoint from `inrsr train` for a NIfTI SOURCE (default: the pretrained "
            "weights shipped with inrsr, see docs/model_card.md).",
        ),
    ] = None,
    consistency: Annotated[
        bool,
        typer.Option(
            help="For a NIfTI SOURCE: end with a few iterations that make the output agree with the input through "
            "the slice PSF (stopping at the input's noise level); the report gives the data residual before and "
            "after."
        ),
    ] = _U.consistency,
    report: ReportOpt = None,
    qc: QcOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Upsample to any resolution or onto any grid: one command for both kinds of SOURCE.

    A fitted INR (SOURCE = a model from `inrsr fit --save-model`) is re-rendered without refitting, over its fitted
    field of view (axis-aligned with the fit's output grid) or onto --like's grid.

    A single low-res volume (SOURCE = a NIfTI file) is super-resolved in seconds by an encoder-decoder (ArSSR-style)
    trained on high-/low-res pairs, with no per-subject fitting: the pretrained weights shipped with inrsr, or
    --model from `inrsr train`. Any scale, different per axis; the output covers the input's field of view with
    the same centre and axes, so it stays aligned with the input. Intensities are mapped from the input's robust
    range to [0, 1] for the model and back.

    Examples:

      inrsr upsample lr.nii.gz -o sr.nii.gz --scale 2.5

      inrsr upsample thick_slices.nii.gz -o sr.nii.gz --scale 1,1,4 --report report.json

      inrsr upsample lr.nii.gz -o sr.nii.gz --like t1.nii.gz --model my_model.pt

      inrsr upsample model.pt -o hr_05mm.nii.gz --spacing 0.5 --qc hr_05mm.png

    Beside the output NIfTI a JSON sidecar (sr.json for sr.nii.gz) records the inrsr version, the command line,
    the source and the settings.
    """
    from ..errors import InputError
    from .common import JSON, NIFTI, PNG, check_outputs

    check_outputs(("-o", output, NIFTI), ("--report", report, JSON), ("--qc", qc, PNG))
    if sum(x is not None for x in (spacing, like, scale)) != 1:
        raise InputError("give exactly one of --spacing, --like or --scale")
    if not source.exists():
        raise InputError(f"{source}: no such file")
    from ..io.checkpoints import is_checkpoint

    if is_checkpoint(source):
        if model is not None:
            raise InputError("--model applies to a NIfTI SOURCE; a fitted model SOURCE is rendered as is")
        _render_fitted(source, output, spacing, like, scale, report, qc, device, quiet)
    else:
        _super_resolve(source, output, spacing, like, scale, model, consistency, report, qc, device, quiet)


def _render_fitted(source, output, spacing, like, scale, report, qc, device, quiet) -> None:
    import time

    import numpy as np

    from .. import geometry
    from ..devices import resolve_device
    from ..errors import InputError
    from ..io.checkpoints import load_checkpoint
    from ..io.nifti import load_volume, save_volume
    from ..io.sidecar import write_provenance
    from ..model import CHECKPOINT_KIND, model_from_checkpoint
    from ..render import render
    from .common import write_json

    payload = load_checkpoint(source)
    if payload.get("kind") == "arssr":
        raise InputError(
            f"{source}: is an encoder-decoder model; give a low-res NIfTI volume as SOURCE and this file as --model"
        )
    payload = load_checkpoint(source, kind=CHECKPOINT_KIND)
    model = model_from_checkpoint(payload)
    lattice = model.lattice
    if like is not None:
        grid = load_volume(like).grid
    else:
        if scale is not None:
            factors = geometry.parse_spacing(scale)  # same syntax and checks: positive numbers
            step = lattice.spacing / factors
        else:
            step = geometry.parse_spacing(spacing)
        grid = geometry.output_grid([(lattice.shape, lattice.affine)], step, "union")
    t0 = time.perf_counter()
    image = render(model, grid, device=resolve_device(device), quiet=quiet)
    elapsed = time.perf_counter() - t0
    save_volume(output, image, grid.affine)
    settings = {"mode": "fitted model", "like": str(like) if like else None, "spacing_mm": grid.spacing.tolist(),
                "shape": list(grid.shape)}  # fmt: skip
    write_provenance(output, [source], settings, "a fitted model rendered onto a new grid")
    if qc is not None:
        rows = _fitted_input_rows(payload, grid)
        caption = f"{source} -> {output}: shape {tuple(grid.shape)}, voxels {_mm(grid)}; render {elapsed:.1f} s"
        _write_qc(qc, rows, image, grid, f"inrsr upsample: {output}", caption)
    if report is not None:
        write_json(
            report,
            {
                "source": str(source),
                "output": str(output),
                "shape": list(grid.shape),
                "affine": np.asarray(grid.affine).tolist(),
                "render_s": elapsed,
            },
        )
    if not quiet:
        print(f"wrote {output}: shape {grid.shape}, spacing {tuple(round(float(s), 4) for s in grid.spacing)} mm")


def _super_resolve(source, output, spacing, like, scale, model, consistency, report, qc, device, quiet) -> None:
    import time

    import numpy as np

    from ..arssr.inputs import check_input, target_grid
    from ..io.nifti import load_volume, save_volume
    from ..io.sidecar import write_provenance
    from .common import write_json

    volume = load_volume(source)
    grid = target_grid(volume, scale=scale, spacing=spacing, like=load_volume(like).grid if like else None)
    check_input(volume, grid)
    from ..arssr.infer import load_model, output_scale, super_resolve  # PyTorch loads once the input is checked
    from ..devices import resolve_device

    net, model_name = load_model(model)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    image, norm, dc = super_resolve(net, volume, grid, device=dev, consistency=consistency, quiet=quiet)
    elapsed = time.perf_counter() - t0
    dc_report = dc.report() if dc is not None else {"enabled": False}
    save_volume(output, image, grid.affine)
    settings = {
        "mode": "encoder-decoder",
        "model": model_name,
        "architecture": net.metadata()["arch"],
        "scale": output_scale(volume, grid).tolist(),
        "spacing_mm": grid.spacing.tolist(),
        "shape": list(grid.shape),
        "intensity_normalisation": {"low": norm.low, "high": norm.high},
        "data_consistency": consistency,
    }
    write_provenance(output, [source], settings, "a low-res volume super-resolved by an encoder-decoder")
    if qc is not None:
        scale_text = " x ".join(f"{v:.3g}" for v in output_scale(volume, grid))
        caption = (
            f"{source} ({_mm(volume.grid)}) -> {output}: shape {tuple(grid.shape)}, voxels {_mm(grid)}\n"
            f"scale {scale_text}; model {model_name}; {elapsed:.1f} s on {dev}"
            + (
                ""
                if dc is None
                else f"; data residual {100 * dc.residual_before:.2f}% -> {100 * dc.residual_after:.2f}%"
            )
        )
        _write_qc(qc, [_input_row(volume, grid)], image, grid, f"inrsr upsample: {output}", caption)
    if report is not None:
        write_json(
            report,
            {
                "source": str(source),
                "mode": "encoder-decoder",
                "model": model_name,
                "architecture": net.metadata()["arch"],
                "output": str(output),
                "input_shape": list(volume.shape),
                "input_spacing_mm": volume.spacing.tolist(),
                "shape": list(grid.shape),
                "spacing_mm": grid.spacing.tolist(),
                "affine": np.asarray(grid.affine).tolist(),
                "scale": output_scale(volume, grid).tolist(),
                "intensity_normalisation": {"low": norm.low, "high": norm.high} | net.metadata()["intensity"],
                "data_consistency": dc_report,
                "device": str(dev),
                "inference_s": elapsed,
            },
        )
    if not quiet:
        print(
            f"wrote {output}: shape {grid.shape}, spacing {tuple(round(float(s), 4) for s in grid.spacing)} mm "
            f"({elapsed:.1f} s)"
        )


def _mm(grid) -> str:
    from ..qc import format_mm

    return format_mm(grid.spacing)


def _input_row(volume, grid):
    from ..qc import input_row

    return input_row(f"input: {Path(volume.name).name} (trilinear)", volume, grid)


def _fitted_input_rows(payload, grid) -> list:
    """The first stack the model was fitted to, resampled, when it is still where the fit read it; else none."""
    from ..errors import InputError
    from ..io.nifti import load_volume

    inputs = payload.get("metadata", {}).get("inputs") or []
    if not inputs or not Path(str(inputs[0].get("file", ""))).is_file():
        return []
    try:
        return [_input_row(load_volume(inputs[0]["file"]), grid)]
    except InputError:
        return []


def _write_qc(path, rows, image, grid, title, caption) -> None:
    """The input (when known) resampled onto the output grid and the output, central planes."""
    from .. import qc

    rows = [*rows, qc.Row("output", qc.slabs(image))]
    qc.save_png(qc.volume_montage(rows, grid.affine, title, caption), path)
