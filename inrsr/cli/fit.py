"""``inrsr fit``: multi-stack slice-to-volume reconstruction with motion correction."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..config import Encoding, FitConfig, Motion
from .common import (
    JSON,
    NIFTI,
    PNG,
    DeviceOpt,
    QcOpt,
    QuietOpt,
    ReportOpt,
    SeedOpt,
    check_outputs,
    handle_errors,
    write_json,
)

D = FitConfig()  # defaults live in the config dataclass


@handle_errors
def fit_command(
    stacks: Annotated[
        list[Path], typer.Argument(help="Low-res NIfTI stacks (any orientation, oblique allowed).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="High-res NIfTI to write.")],
    like: Annotated[
        Path | None, typer.Option(help="Render onto exactly this reference's grid (shape and affine).")
    ] = None,
    spacing: Annotated[
        str | None,
        typer.Option(help="Output spacing 'S' or 'Sx,Sy,Sz' in mm (default: finest input spacing)."),
    ] = None,
    extent: Annotated[
        str, typer.Option(help="Output field of view: union or intersection of the inputs.")
    ] = "union",
    thickness: Annotated[
        str | None,
        typer.Option(
            help="Slice thickness in mm: one value, or 'T1,T2,...' one per stack (default: SliceThickness of "
            "the JSON sidecar beside a stack, else its slice spacing)."
        ),
    ] = None,
    mask: Annotated[
        list[Path] | None,
        typer.Option(
            help="Foreground mask per stack (repeat once per stack, in order), resampled onto its stack in "
            "world space whatever its grid; default: automatic."
        ),
    ] = None,
    auto_mask: Annotated[
        bool, typer.Option(help="Detect each stack's foreground automatically when no --mask is given.")
    ] = D.auto_mask,
    register: Annotated[
        bool,
        typer.Option(help="Register every stack rigidly to the reference stack first (--no-register trusts "
                     "the headers)."),
    ] = D.register,
    motion: Annotated[
        Motion,
        typer.Option(help="Motion correction against the reconstruction: none, one pose per stack, or one per "
                     "slice (slice-to-volume registration)."),
    ] = D.motion,
    reference: Annotated[
        int, typer.Option(help="Index of the stack (0 = first) that defines the output frame.")
    ] = D.reference,
    robust: Annotated[
        bool, typer.Option(help="Down-weight outlier voxels and slices (EM robust statistics).")
    ] = D.robust,
    slice_scaling: Annotated[bool, typer.Option(help="Estimate an intensity scale per slice.")] = D.slice_scaling,
    regularization: Annotated[
        float | None,
        typer.Option(
            help="Total-variation weight in physical units (mean data term, gradients per mm); default: set "
            "from the stacks' noise level."
        ),
    ] = D.regularization,
    cycles: Annotated[
        int, typer.Option(help="Registration / reconstruction / outlier cycles on the coarse lattice.")
    ] = D.cycles,
    uncertainty: Annotated[
        Path | None,
        typer.Option(help="Write a per-voxel uncertainty map: 1 / (1 + the data weight reaching the voxel)."),
    ] = None,
    output_mask: Annotated[
        Path | None, typer.Option(help="Write the region the data supports (0/1) on the output grid.")
    ] = None,
    steps: Annotated[
        int, typer.Option(help="INR optimisation steps on top of the voxel-grid estimate (0: no INR).")
    ] = D.steps,
    encoding: Annotated[Encoding, typer.Option(help="INR encoding (with --steps).")] = D.encoding,
    batch_size: Annotated[int, typer.Option(help="INR: stack voxels per step.")] = D.batch_size,
    psf_samples: Annotated[
        int, typer.Option(help="INR: points drawn inside each voxel's PSF per step.")
    ] = D.psf_samples,
    lr: Annotated[float, typer.Option(help="INR: peak learning rate (Adam; warm-up then cosine decay).")] = D.lr,
    fourier_sigma: Annotated[
        float, typer.Option(help="INR Fourier encoding: frequency std in cycles per mm.")
    ] = D.fourier_sigma_per_mm,
    save_model: Annotated[
        Path | None,
        typer.Option(help="Save the fitted model with the slice transforms (re-render with `inrsr upsample`)."),
    ] = None,
    report: ReportOpt = None,
    qc: QcOpt = None,
    seed: SeedOpt = D.seed,
    device: DeviceOpt = D.device,
    quiet: QuietOpt = False,
) -> None:
    """Reconstruct a high-res volume from low-res stacks placed in world (scanner mm) space, correcting motion.

    Stacks are registered to the reference stack, then every slice gets its own rigid pose by slice-to-volume
    registration alternating with reconstruction; outlier voxels and slices are down-weighted. Each stack voxel
    is modelled as the image averaged over its slice PSF (Gaussian; through-plane FWHM = slice thickness). The
    output is float32 NIfTI with sform and qform set, in the reference stack's frame.

    Examples:

      inrsr fit axial.nii.gz coronal.nii.gz sagittal.nii.gz -o hr.nii.gz --spacing 1

      inrsr fit ax.nii.gz sag.nii.gz -o hr.nii.gz --like t1.nii.gz --thickness 4,5 --save-model model.pt

      inrsr fit a.nii.gz b.nii.gz c.nii.gz -o hr.nii.gz --motion stack --uncertainty u.nii.gz --report fit.json

      inrsr fit a.nii.gz b.nii.gz c.nii.gz -o hr.nii.gz --qc hr.png

    Beside each NIfTI written, a JSON sidecar (hr.json for hr.nii.gz) records how it was made: the inrsr
    version and command line, the input stacks and the settings.
    """
    import numpy as np

    from .. import geometry
    from ..errors import InputError
    from ..io.nifti import load_volume, save_volume
    from ..io.sidecar import write_provenance

    # Every input and output is checked before PyTorch loads (seconds), so that bad input fails at once.
    check_outputs(
        ("-o", output, NIFTI),
        ("--uncertainty", uncertainty, NIFTI),
        ("--output-mask", output_mask, NIFTI),
        ("--save-model", save_model, (".pt",)),
        ("--report", report, JSON),
        ("--qc", qc, PNG),
    )
    if like is not None and spacing is not None:
        raise InputError("give either --like or --spacing, not both")
    if steps < 0 or batch_size < 1 or psf_samples < 1 or lr <= 0 or cycles < 1:
        raise InputError("--steps must be >= 0, --batch-size, --psf-samples and --cycles >= 1 and --lr > 0")
    if regularization is not None and not regularization >= 0:
        raise InputError(f"--regularization {regularization}: must be >= 0")
    thickness_list = None
    if thickness:
        try:
            thickness_list = [float(v) for v in thickness.split(",")]
        except ValueError:
            raise InputError(f"--thickness {thickness!r}: expected 'T' or 'T1,T2,...' in mm") from None
    volumes = [load_volume(p) for p in stacks]
    if not 0 <= reference < len(volumes):
        raise InputError(f"--reference {reference}: expected 0 to {len(volumes) - 1}")
    masks = None
    if mask:
        if len(mask) != len(volumes):
            raise InputError(f"got {len(mask)} --mask files for {len(volumes)} stacks (give one per stack)")
        masks = [load_volume(m) for m in mask]
    from ..fit.stacks import check_memory, check_overlap, thicknesses

    thicknesses(volumes, thickness_list)
    check_overlap(volumes)
    if like is not None:
        grid = load_volume(like).grid
    else:
        step = geometry.parse_spacing(spacing) if spacing else min(float(v.spacing.min()) for v in volumes)
        order = [volumes[reference]] + [v for i, v in enumerate(volumes) if i != reference]
        grid = geometry.output_grid([(v.shape, v.affine) for v in order], step, extent)
    check_memory(volumes, grid)
    from ..fit import fit_stacks
    from ..io.checkpoints import save_checkpoint
    from ..model import CHECKPOINT_KIND
    from ..render import render

    config = FitConfig(
        register=register,
        motion=motion,
        reference=reference,
        robust=robust,
        slice_scaling=slice_scaling,
        regularization=regularization,
        cycles=cycles,
        steps=steps,
        encoding=encoding,
        batch_size=batch_size,
        psf_samples=psf_samples,
        lr=lr,
        fourier_sigma_per_mm=fourier_sigma,
        auto_mask=auto_mask,
        seed=seed,
        device=device,
        thickness_mm=thickness_list,
    )
    t0 = time.perf_counter()
    result = fit_stacks(volumes, grid, config, masks=masks, quiet=quiet)
    t1 = time.perf_counter()
    image = render(result.model, grid, device=result.model.base.device, quiet=quiet)
    t2 = time.perf_counter()
    sources = [*stacks, *(mask or [])]
    settings = {**result.report["settings"], "thickness_mm": result.report["thickness_mm"],
                "regularization": result.report["regularization"], "output_grid": result.report["output_grid"]}
    save_volume(output, image, grid.affine)
    write_provenance(output, sources, settings, "slice-to-volume reconstruction of the input stacks")
    if uncertainty is not None:
        save_volume(uncertainty, result.uncertainty, grid.affine)
        write_provenance(uncertainty, sources, settings, f"per-voxel uncertainty 1 / (1 + data weight) for {output}")
    if output_mask is not None:
        save_volume(output_mask, result.model.support.cpu().numpy().astype(np.float32), grid.affine)
        write_provenance(output_mask, sources, settings, f"region the data support (0/1) for {output}")
    if save_model is not None:
        meta = {
            "model": result.model.metadata(),
            "inputs": [
                {"file": str(p), "shape": list(v.shape), "affine": v.affine.tolist()}
                for p, v in zip(stacks, volumes, strict=True)
            ],
            "slice_transforms": [np.asarray(p).tolist() for p in result.poses],
            "thickness_mm": result.report["thickness_mm"],
            "settings": result.report["settings"],
        }
        save_checkpoint(save_model, CHECKPOINT_KIND, result.model.state_dict(), meta)
    if report is not None:
        payload = dict(result.report)
        payload["timings"] = {**payload["timings"], "fit_s": t1 - t0, "render_s": t2 - t1}
        payload["output"] = str(output)
        payload["inputs"] = [str(p) for p in stacks]
        write_json(report, payload)
    if qc is not None:
        _write_qc(qc, output, volumes[reference], grid, image, result, t1 - t0)
    for warning in result.report["warnings"]:
        typer.echo(f"inrsr: warning: {warning}", err=True)
    if not quiet:
        n_out = len(result.report["outlier_slices"])
        print(
            f"wrote {output}: shape {grid.shape}, spacing {tuple(round(float(s), 4) for s in grid.spacing)} mm "
            f"(fit {t1 - t0:.1f} s, render {t2 - t1:.1f} s; {n_out} outlier slices)"
        )


def _write_qc(path: Path, output: Path, stack, grid, image, result, fit_s: float) -> None:
    """The reference stack resampled onto the output grid, the output and the uncertainty; the report's key
    figures in the caption."""
    from .. import qc

    rep = result.report
    rows = [
        qc.input_row(f"input: {Path(stack.name).name} (trilinear)", stack, grid),
        qc.Row("output", qc.slabs(image)),
        qc.Row("uncertainty", qc.slabs(result.uncertainty), "map"),
    ]
    reg = rep["regularization"]
    settings = rep["settings"]
    caption = "\n".join(
        [
            f"{output}: shape {tuple(grid.shape)}, voxels {qc.format_mm(grid.spacing)}; {len(rep['stacks'])} stacks, "
            f"motion {getattr(settings.get('motion'), 'value', settings.get('motion'))}, "
            f"{len(rep['outlier_slices'])} outlier slices; fit {fit_s:.1f} s",
            f"TV weight {reg['weight']:.3g} ({'automatic' if reg['automatic'] else 'given'}; noise sigma "
            f"{reg['noise_sigma']:.3g}); stack RMSE: "
            + ", ".join(f"{Path(s['file']).name} {s['rmse']:.3g}" for s in rep["stacks"]),
        ]
        + [f"warning: {w}" for w in rep["warnings"]]
    )
    qc.save_png(qc.volume_montage(rows, grid.affine, f"inrsr fit: {output}", caption), path)
