"""``inrsr upsample``: arbitrary-resolution output from a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, QuietOpt, ReportOpt, handle_errors


@handle_errors
def upsample_command(
    source: Annotated[Path, typer.Argument(help="A model saved by `inrsr fit --save-model` (.pt).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="NIfTI to write.")],
    spacing: Annotated[str | None, typer.Option(help="Output spacing 'S' or 'Sx,Sy,Sz' in mm.")] = None,
    like: Annotated[Path | None, typer.Option(help="Render onto exactly this reference's grid.")] = None,
    scale: Annotated[
        str | None, typer.Option(help="Upsampling factor 'S' or 'Sx,Sy,Sz' relative to the model's grid.")
    ] = None,
    report: ReportOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Render a fitted INR at any resolution or onto any grid, without refitting.

    SOURCE is a model saved by `inrsr fit --save-model`; it is re-rendered over its fitted field of view
    (axis-aligned with the fit's output grid) or onto --like's grid.

    Examples:

      inrsr upsample model.pt -o hr_05mm.nii.gz --spacing 0.5

      inrsr upsample model.pt -o on_t1.nii.gz --like t1.nii.gz
    """
    import time

    import numpy as np

    from .. import geometry
    from ..devices import resolve_device
    from ..errors import InputError
    from ..io.checkpoints import is_checkpoint, load_checkpoint
    from ..io.nifti import load_volume, save_volume
    from ..model import CHECKPOINT_KIND, model_from_checkpoint
    from ..render import render
    from .fit import check_output_path, write_json

    check_output_path(output)
    if sum(x is not None for x in (spacing, like, scale)) != 1:
        raise InputError("give exactly one of --spacing, --like or --scale")
    if not source.exists():
        raise InputError(f"{source}: no such file")
    if not is_checkpoint(source):
        raise InputError(
            f"{source}: not an inrsr model checkpoint (a NIfTI volume needs the encoder-decoder "
            "mode, which this version does not provide)"
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
    save_volume(output, image, grid.affine)
    if report is not None:
        write_json(
            report,
            {
                "source": str(source),
                "output": str(output),
                "shape": list(grid.shape),
                "affine": np.asarray(grid.affine).tolist(),
                "render_s": time.perf_counter() - t0,
            },
        )
    if not quiet:
        print(
            f"wrote {output}: shape {grid.shape}, spacing {tuple(round(float(s), 4) for s in grid.spacing)} mm"
        )
