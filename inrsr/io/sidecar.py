"""JSON sidecars beside NIfTI files (BIDS style): ``stack.nii.gz`` -> ``stack.json``.

A sidecar carries what the NIfTI header cannot: the slice thickness (``SliceThickness``, mm), the acquisition
order of the slices and, for simulated stacks, the motion that was simulated. Every NIfTI that ``inrsr`` writes
gets one with its provenance, in the manner of BIDS derivatives (:func:`write_provenance`): ``GeneratedBy``
(name, version, command line), ``Sources`` (the input files) and ``Settings`` (the key settings).
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import sys
from collections.abc import Sequence
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
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
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


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for ``GeneratedBy``: ``inrsr`` and the arguments, quoted for a POSIX shell.

    >>> command_line(["/usr/bin/inrsr", "fit", "a b.nii.gz", "-o", "hr.nii.gz"])
    "inrsr fit 'a b.nii.gz' -o hr.nii.gz"
    """
    args = list(sys.argv if argv is None else argv)[1:]
    return shlex.join(["inrsr", *args])


def provenance(
    sources: Sequence[str | os.PathLike],
    settings: dict | None = None,
    description: str | None = None,
    argv: Sequence[str] | None = None,
) -> dict:
    """The provenance entries of a derived file's sidecar (BIDS derivatives): ``Description`` (when given),
    ``GeneratedBy`` = ``[{"Name": "inrsr", "Version", "CommandLine"}]``, ``Sources`` (input paths as given)
    and ``Settings``.

    >>> p = provenance(["a.nii.gz"], {"steps": 0}, argv=["inrsr", "fit", "a.nii.gz"])
    >>> p["GeneratedBy"][0]["Name"], p["GeneratedBy"][0]["CommandLine"], p["Sources"], p["Settings"]
    ('inrsr', 'inrsr fit a.nii.gz', ['a.nii.gz'], {'steps': 0})
    """
    from .. import __version__

    content: dict[str, Any] = {}
    if description:
        content["Description"] = description
    content["GeneratedBy"] = [{"Name": "inrsr", "Version": __version__, "CommandLine": command_line(argv)}]
    content["Sources"] = [os.fspath(s) for s in sources]
    if settings is not None:
        content["Settings"] = settings
    return content


def write_provenance(
    nifti_path: str | os.PathLike,
    sources: Sequence[str | os.PathLike],
    settings: dict | None = None,
    description: str | None = None,
    content: dict | None = None,
) -> Path:
    """Write the sidecar of an output NIfTI: ``content`` (entries such as ``SliceThickness``, kept first) merged
    with :func:`provenance`; one file, atomically. Returns the sidecar's path."""
    return write_sidecar(nifti_path, {**(content or {}), **provenance(sources, settings, description)})
