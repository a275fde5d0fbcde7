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
