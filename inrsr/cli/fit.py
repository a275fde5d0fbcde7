"""``inrsr fit``: multi-stack INR super-resolution."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from ..config import FitConfig
from .common import DeviceOpt, QuietOpt, ReportOpt, SeedOpt, handle_errors

D = FitConfig()  # defaults live in the config dataclass


def check_output_path(path: Path, suffixes: tuple[str, ...] = (".nii", ".nii.gz")) -> None:
    """Fail early (before any work) on an output path that cannot be written."""
    from ..errors import InputError

    if not any(str(path).endswith(s) for s in suffixes):
        raise InputError(f"{path}: output must end with {' or '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{path}: {parent} is not a directory")


def write_json(path: str | Path, payload: dict) -> None:
    """Write a JSON report atomically."""
    from ..io.nifti import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, default=str) + "\n")


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
            help="Slice thickness in mm: one value, or 'T1,T2,...' one per stack (default: slice spacing)."
        ),
    ] = None,
    mask: Annotated[
        list[Path] | None,
        typer.Option(help="Foreground mask per stack (repeat once per stack, in order); default: automatic."),
    ] = None,
    auto_mask: Annotated[
        bool, typer.Option(help="Detect each stack's foreground automatically when no --mask is given.")
    ] = D.auto_mask,
    encoding: Annotated[
        str, typer.Option(help="INR encoding: hash, fourier, positional or siren.")
    ] = D.encoding,
    steps: Annotated[int, typer.Option(help="INR optimisation steps.")] = D.steps,
    batch_size: Annotated[int, typer.Option(help="Stack voxels per step.")] = D.batch_size,
    psf_samples: Annotated[
        int, typer.Option(help="Points drawn inside each voxel's PSF per step.")
    ] = D.psf_samples,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam; warm-up then cosine decay).")] = D.lr,
    init: Annotated[
        str,
        typer.Option(
            help="Initial estimate on the output grid: tv or tikhonov (voxel-grid least squares through "
            "the PSF with that prior), mean (of the stacks) or none."
        ),
    ] = D.init,
    tv_iterations: Annotated[
        int, typer.Option(help="L-BFGS iterations of the tv initial estimate.")
    ] = D.tv_iterations,
    tv_lambda: Annotated[
        float, typer.Option(help="Weight of total variation in the initial estimate.")
    ] = D.tv_lambda,
    tikhonov_iterations: Annotated[
        int, typer.Option(help="CG iterations of the Tikhonov estimate (also tv's warm start).")
    ] = D.tikhonov_iterations,
    fourier_sigma: Annotated[
        float, typer.Option(help="Fourier encoding: frequency std in cycles per mm.")
    ] = D.fourier_sigma_per_mm,
    save_model: Annotated[
        Path | None, typer.Option(help="Save the fitted model (re-render later with `inrsr upsample`).")
    ] = None,
    report: ReportOpt = None,
    seed: SeedOpt = D.seed,
    device: DeviceOpt = D.device,
    quiet: QuietOpt = False,
) -> None:
    """Fit an INR to low-res stacks placed in world (scanner mm) space and render a high-res volume.

    Each stack voxel is modelled as the image averaged over its slice PSF (Gaussian; through-plane FWHM = slice
    thickness). The output is float32 NIfTI with sform and qform set.

    Examples:

      inrsr fit axial.nii.gz coronal.nii.gz sagittal.nii.gz -o hr.nii.gz --spacing 1

      inrsr fit ax.nii.gz sag.nii.gz -o hr.nii.gz --like t1.nii.gz --thickness 4,5 --save-model model.pt
    """
    import torch

    from .. import geometry
    from ..errors import InputError
    from ..fit import fit_stacks
    from ..io.checkpoints import save_checkpoint
    from ..io.nifti import load_volume, save_volume
    from ..model import CHECKPOINT_KIND
    from ..render import render

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    check_output_path(output)
    if like is not None and spacing is not None:
        raise InputError("give either --like or --spacing, not both")
    thickness_list = None
    if thickness:
        try:
            thickness_list = [float(v) for v in thickness.split(",")]
        except ValueError:
            raise InputError(f"--thickness {thickness!r}: expected 'T' or 'T1,T2,...' in mm") from None
    volumes = [load_volume(p) for p in stacks]
    masks = None
    if mask:
        if len(mask) != len(volumes):
            raise InputError(f"got {len(mask)} --mask files for {len(volumes)} stacks (give one per stack)")
        masks = [load_volume(m) for m in mask]
    if like is not None:
        grid = load_volume(like).grid
    else:
        step = geometry.parse_spacing(spacing) if spacing else min(float(v.spacing.min()) for v in volumes)
        grid = geometry.output_grid([(v.shape, v.affine) for v in volumes], step, extent)
    config = FitConfig(
        encoding=encoding,
        steps=steps,
        batch_size=batch_size,
        psf_samples=psf_samples,
        lr=lr,
        init=init,
        tv_iterations=tv_iterations,
        tv_lambda=tv_lambda,
        tikhonov_iterations=tikhonov_iterations,
        fourier_sigma_per_mm=fourier_sigma,
        auto_mask=auto_mask,
        seed=seed,
        device=device,
        thickness_mm=thickness_list,
    )
    if steps < 0 or batch_size < 1 or psf_samples < 1 or lr <= 0:
        raise InputError("--steps must be >= 0, --batch-size and --psf-samples >= 1 and --lr > 0")
    t0 = time.perf_counter()
    result = fit_stacks(volumes, grid, config, masks=masks, quiet=quiet)
    t1 = time.perf_counter()
    image = render(result.model, grid, device=result.model.base.device, quiet=quiet)
    t2 = time.perf_counter()
    save_volume(output, image, grid.affine)
    if save_model is not None:
        meta = {
            "model": result.model.metadata(),
            "inputs": [
                {"file": str(p), "shape": list(v.shape), "affine": v.affine.tolist()}
                for p, v in zip(stacks, volumes, strict=True)
            ],
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
    if not quiet:
        print(
            f"wrote {output}: shape {grid.shape}, spacing {tuple(round(float(s), 4) for s in grid.spacing)} mm "
            f"(fit {t1 - t0:.1f} s, render {t2 - t1:.1f} s)"
        )
