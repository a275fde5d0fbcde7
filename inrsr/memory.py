"""Memory checks made before the long work; no PyTorch, so the commands can run them before PyTorch loads."""

from __future__ import annotations

import os

from .errors import InputError


def available_memory_bytes() -> int:
    """Memory available to this process now (Linux ``MemAvailable``; total physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def ensure_memory(n_bytes: float, what: str) -> None:
    """Raise an :class:`InputError` saying what ``what`` would need when it cannot fit in memory."""
    available = available_memory_bytes()
    if n_bytes > 0.8 * available:
        raise InputError(
            f"{what} would need about {n_bytes / 2**30:.1f} GiB of memory but only "
            f"{available / 2**30:.1f} GiB is available; use a coarser spacing or a smaller field of view"
        )
