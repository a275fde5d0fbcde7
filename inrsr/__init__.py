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

# OpenMP threads that wait for work sleep instead of spinning (unless the user chose otherwise). Spinning workers
# make a run on shared cores crawl: on 2 cores busy with another process, a recon step of a 192 x 160 x 18 cine
# took 3-6 s instead of 0.25-0.4 s. Read once, when PyTorch loads its OpenMP runtime: before ``import torch``.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
