"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed; the same seed on the same CPU gives the same output.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ReportOpt = Annotated[
    str | None,
    typer.Option("--report", help="Write a JSON report (settings, timings, figures) to this path."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    one_line = " ".join(str(message).split())
    print(f"inrsr: error: {one_line}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn user-facing errors into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import InputError

        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise fail(str(exc)) from None
        except MemoryError:
            raise fail("out of memory; use a coarser spacing or a smaller field of view", code=1) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def check_output_path(path, suffixes: tuple[str, ...] = (".nii", ".nii.gz")) -> None:
    """Fail early (before any work) on an output path that cannot be written: a wrong suffix, a directory, a
    parent that is a file or cannot be created, or no write permission."""
    import os
    from pathlib import Path

    from ..errors import InputError

    path = Path(path)
    if suffixes and not any(str(path).endswith(s) for s in suffixes):
        raise InputError(f"{path}: output must end with {' or '.join(suffixes)}")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        if existing.is_symlink() or existing == existing.parent:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the folder {parent} ({existing} is not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: {existing} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: exists and is not writable")


def write_json(path, payload: dict) -> None:
    """Write a JSON report atomically."""
    import json
    from pathlib import Path

    from .. import __version__
    from ..io.nifti import atomic_path

    payload = {"inrsr_version": __version__, **payload}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, default=str) + "\n")
