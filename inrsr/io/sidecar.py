"""JSON sidecars beside NIfTI files (BIDS style): ``stack.nii.gz`` -> ``stack.json``.

A sidecar carries what the NIfTI header cannot: the slice thickness (``SliceThickness``, mm), the acquisition
order of the slices and, for simulated stacks, the motion that was simulated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, first_line
from .nifti import atomic_path


def sidecar_path(nifti_path: str | os.PathLike) -> Path:
    """The JSON sidecar of a NIfTI file: the same name without ``.nii`` / ``.nii.gz``, plus ``.json``.

    A path that already ends in ``.json`` is returned as is; any other suffix is replaced.

    >>> sidecar_path("out/stack.nii.gz").as_posix()
    'out/stack.json'
    >>> sidecar_path("a.b/sub-01_T2w.nii").as_posix()
    'a.b/sub-01_T2w.json'
    >>> sidecar_path("stack.json").as_posix()
    'stack.json'
    """
    p = Path(nifti_path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".json"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON object in the sidecar of ``path`` (a NIfTI file or the ``.json`` itself); ``{}`` when absent.

    A sidecar that cannot be read, is not valid JSON or is not a JSON object raises :class:`InputError`.
    """
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        text = side.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{side}: could not read the sidecar ({first_line(exc)})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{side}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(value, dict):
        raise InputError(f"{side}: expected a JSON object, found {type(value).__name__}")
    return value


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists, for :func:`json.dumps`."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_sidecar(path: str | os.PathLike, content: dict) -> Path:
    """Write ``content`` as the sidecar of ``path`` (a NIfTI file or the ``.json`` itself), atomically.

    numpy values are converted to plain numbers and lists; NaN and Inf are refused. Returns the sidecar's path.
    """
    side = sidecar_path(path)
    text = json.dumps(content, indent=2, default=_plain, allow_nan=False) + "\n"
    with atomic_path(side) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return side
