"""inrsr: MRI super-resolution and accelerated reconstruction with implicit neural representations.

The public Python API; names are imported lazily so that ``import inrsr`` (and the CLI's ``--help``) stay fast.

>>> import inrsr
>>> inrsr.FitConfig().encoding.value
'hash'
"""

from __future__ import annotations

import importlib
from typing import Any

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
