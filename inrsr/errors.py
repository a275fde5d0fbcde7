"""User-facing errors.

An :class:`InputError` is raised for anything the user can fix (a missing file, a bad option, a grid too large).
The CLI turns it into one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input that the user can fix; the message is shown as is, on one line."""
