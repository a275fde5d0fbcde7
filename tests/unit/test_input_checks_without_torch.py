"""The checks every command makes before the long work need no PyTorch (seconds to load), so bad input fails at
once: the CLI, the settings and the input checks of fit and upsample import without it."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = [
    "inrsr.cli.main",
    "inrsr.config",
    "inrsr.recon.config",
    "inrsr.arssr.config",
    "inrsr.arssr.inputs",
    "inrsr.fit.stacks",
    "inrsr.io.nifti",
    "inrsr.io.checkpoints",
    "inrsr.memory",
]


def test_the_input_checks_import_without_torch():
    code = f"import sys\nfor m in {TORCH_FREE!r}: __import__(m)\nprint(sorted(m for m in sys.modules if m == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_fit_package_loads_its_pipeline_on_first_use():
    from inrsr import fit

    assert callable(fit.fit_stacks) and fit.FitResult.__name__ == "FitResult"
