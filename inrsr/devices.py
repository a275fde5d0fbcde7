"""Device selection and seeding shared by every command."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .errors import InputError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r}: CUDA is not available on this machine (use --device cpu)")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for sampling that does not depend on global state."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
