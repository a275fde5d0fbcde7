"""User-facing errors.

An :class:`InputError` is raised for anything the user can fix (a missing file, a bad option, a grid too large).
The CLI turns it into one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input that the user can fix; the message is shown as is, on one line."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), cut to ``limit`` characters, for
    wrapping a library's error in an :class:`InputError` on one line."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
