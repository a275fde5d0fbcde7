"""inrsr: MRI super-resolution and accelerated reconstruction with implicit neural representations.

The public Python API; names are imported lazily so that ``import inrsr`` (and the CLI's ``--help``) stay fast.

>>> import inrsr
>>> inrsr.FitConfig().encoding.value
'hash'
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that wait for work spin briefly, then sleep (unless the user chose a policy). Workers that spin
# long (the GNU runtime's default) make a run on shared cores crawl: on 2 cores busy with two other processes a
# recon step took up to 2.4 s instead of 0.17 s. Workers that sleep at once pay a wake-up for every operation: a
# recon step on an idle machine took 80 ms instead of 66 ms. A spin of 10,000 rounds keeps both (68 ms idle,
# 0.17 s shared). Read once, when PyTorch loads its OpenMP runtime: before ``import torch``.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"

_EXPORTS = {
    "FitConfig": "inrsr.config",
    "Motion": "inrsr.config",
    "fit_stacks": "inrsr.fit",
    "SRModel": "inrsr.model",
    "render": "inrsr.render",
    "Volume": "inrsr.volume",
    "Grid": "inrsr.geometry",
    "output_grid": "inrsr.geometry",
    "load_volume": "inrsr.io.nifti",
    "save_volume": "inrsr.io.nifti",
    "simulate_stack": "inrsr.simulate",
    "psnr": "inrsr.metrics",
    "ssim": "inrsr.metrics",
    "nrmse": "inrsr.metrics",
    "InputError": "inrsr.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'inrsr' has no attribute {name!r}")
