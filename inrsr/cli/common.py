"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import InputError

F = TypeVar("F", bound=Callable[..., Any])

NIFTI = (".nii", ".nii.gz")
JSON = (".json",)
PNG = (".png",)

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed; the same seed on the same CPU gives the same output.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ReportOpt = Annotated[
    str | None,
    typer.Option("--report", help="Write a JSON report (settings, timings, figures) to this path."),
]
QcOpt = Annotated[
    Path | None,
    typer.Option(
        "--qc",
        help="Write a quality-control picture (PNG): central planes of the input and the output, a scale bar in mm "
        "and the key figures.",
    ),
]


def parse_numbers(text: str, count: int, option: str, expected: str) -> list[float]:
    """``count`` comma-separated finite numbers from an option's text; otherwise an :class:`InputError` saying
    what ``option`` expects.

    >>> parse_numbers("1, 2,3", 3, "--rotate", "three angles")
    [1.0, 2.0, 3.0]
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} {text!r}: expected {expected}")
    return values


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    one_line = " ".join(str(message).split())
    print(f"inrsr: error: {one_line}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn user-facing errors into one line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            raise fail(str(exc)) from None
        except MemoryError:
            raise fail("out of memory; use a coarser spacing or a smaller field of view", code=1) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=130) from None
        except RuntimeError as exc:
            message = gpu_memory_message(exc)
            if message is None:
                raise
            raise fail(message, code=1) from None

    return wrapper  # type: ignore[return-value]


def gpu_memory_message(exc: BaseException) -> str | None:
    """One line for a CUDA out-of-memory error (``torch.cuda.OutOfMemoryError``, or the RuntimeError of older
    builds): the memory asked for and free when the message gives them, and what to do; None for other errors.

    >>> line = gpu_memory_message(RuntimeError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a "
    ...                                        "total capacity of 7.79 GiB of which 1.02 GiB is free."))
    >>> line.split(";")[0]
    'out of GPU memory: tried to allocate 2.50 GiB (GPU 0: 1.02 GiB free of 7.79 GiB)'
    >>> "--device cpu" in line
    True
    >>> gpu_memory_message(RuntimeError("shape mismatch")) is None
    True
    """
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    text = str(exc)
    if not ((oom_type is not None and isinstance(exc, oom_type)) or "CUDA out of memory" in text):
        return None
    size = r"([\d.]+ ?[KMGT]?i?B)"
    asked = re.search(rf"[Tt]ried to allocate {size}", text)
    free = re.search(rf"(GPU \d+) has a total capacity of {size} of which {size} is free", text)
    line = "out of GPU memory"
    if asked:
        line += f": tried to allocate {asked.group(1)}"
    if free:
        line += f" ({free.group(1)}: {free.group(3)} free of {free.group(2)})"
    return (
        line + "; run with --device cpu, or use smaller chunks of work (a smaller --batch-size, a coarser --spacing "
        "or a smaller field of view)"
    )


def check_output_path(path, suffixes: tuple[str, ...] = NIFTI) -> None:
    """Fail early (before any work) on an output path that cannot be written: a wrong suffix, a directory, a
    parent that is a file or cannot be created, or no write permission."""
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


def check_outputs(*outputs: tuple[str, str | os.PathLike | None, tuple[str, ...]]) -> None:
    """Check every output of a command before any work: ``(option, path or None, suffixes)`` each.

    Each path goes through :func:`check_output_path`; a NIfTI output's provenance sidecar (same name, ``.json``)
    is checked too; and no two outputs (sidecars included) may be the same file.
    """
    from ..io.sidecar import sidecar_path

    seen: dict[str, str] = {}

    def claim(what: str, path: Path) -> None:
        key = os.path.realpath(path)
        if key in seen:
            raise InputError(f"{path}: both {seen[key]} and {what}; give them different names")
        seen[key] = what

    for option, path, suffixes in outputs:
        if path is None:
            continue
        path = Path(path)
        check_output_path(path, suffixes)
        claim(f"{option} {path}", path)
        if suffixes == NIFTI:
            side = sidecar_path(path)
            try:
                check_output_path(side, JSON)
            except InputError as exc:
                raise InputError(f"{exc} (the JSON sidecar of {path})") from None
            claim(f"the JSON sidecar of {option} {path}", side)


def write_json(path, payload: dict) -> None:
    """Write a JSON report atomically."""
    import json

    from .. import __version__
    from ..io.nifti import atomic_path

    payload = {"inrsr_version": __version__, **payload}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, default=str) + "\n")
