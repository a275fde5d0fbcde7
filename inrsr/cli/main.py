"""The ``inrsr`` command: super-resolution and reconstruction of MRI with implicit neural representations."""

from __future__ import annotations

import typer

from .eval import eval_command
from .fit import fit_command
from .info import info_command
from .recon import recon_command
from .simulate import simulate_command
from .train import train_command
from .upsample import upsample_command

app = typer.Typer(
    name="inrsr",
    help=(
        "MRI super-resolution and accelerated reconstruction with implicit neural representations.\n\n"
        "Examples:\n\n"
        "  inrsr fit axial.nii.gz coronal.nii.gz sagittal.nii.gz -o hr.nii.gz --spacing 1\n\n"
        "  inrsr upsample model.pt -o hr_05mm.nii.gz --spacing 0.5\n\n"
        "  inrsr eval hr.nii.gz reference.nii.gz --mask brain.nii.gz --json metrics.json\n\n"
        "  inrsr recon cine_sax.mat --accel 8 -o cine.nii.gz\n\n"
        "  inrsr info axial.nii.gz coronal.nii.gz sagittal.nii.gz"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"inrsr {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """MRI super-resolution and accelerated reconstruction with implicit neural representations."""


app.command("fit", no_args_is_help=True)(fit_command)
app.command("upsample", no_args_is_help=True)(upsample_command)
app.command("simulate", no_args_is_help=True)(simulate_command)
app.command("eval", no_args_is_help=True)(eval_command)
app.command("train", no_args_is_help=True)(train_command)
app.command("recon", no_args_is_help=True)(recon_command)
app.command("info", no_args_is_help=True)(info_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
