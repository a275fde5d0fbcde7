"""Model checkpoints: a state dict plus plain metadata, loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError, first_line
from .nifti import atomic_path

FORMAT = "inrsr-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, kind: str, state_dict: dict, metadata: dict[str, Any]) -> None:
    """Write ``{format, version, kind, metadata, state_dict}`` atomically. ``metadata`` holds plain values only."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "metadata": metadata,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    with atomic_path(path) as tmp:
        import torch

        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it is an inrsr model of ``kind``."""
    name = str(path)
    if not Path(path).is_file():
        raise InputError(f"{name}: no such file")
    try:
        import torch

        payload = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = first_line(exc)
        raise InputError(f"{name}: not a readable inrsr checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{name}: not an inrsr checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"{name}: checkpoint format version {version} is newer than this inrsr supports "
            f"({FORMAT_VERSION}); upgrade inrsr"
        )
    if kind is not None and payload.get("kind") != kind:
        raise InputError(f"{name}: holds a {payload.get('kind')!r} model, expected {kind!r}")
    return payload


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a torch checkpoint (a zip archive) rather than an image."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False
