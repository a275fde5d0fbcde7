"""Device selection and seeding shared by every command."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from .errors import InputError

T = TypeVar("T")


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


def flush_subnormals_from_the_start() -> bool:
    """Flush subnormal floats to zero (FTZ/DAZ) in this thread and in the OpenMP workers PyTorch starts later:
    call it first thing in a program, before any parallel PyTorch operation (the ``inrsr`` command does). A
    thread copies the flag of the thread that starts it, so the workers started afterwards share it, and
    :func:`run_flushing_subnormals` can then run its function in place. Returns whether the CPU has the flag."""
    return bool(torch.set_flush_denormal(True))


def threads_flush_subnormals() -> bool:
    """Whether this thread and the intra-op workers it uses flush subnormals: half of a subnormal, over a tensor
    large enough to be split between the threads, is zero everywhere.

    >>> import threading
    >>> box = []
    >>> worker = threading.Thread(target=lambda: box.append(threads_flush_subnormals())); worker.start(); worker.join()
    >>> box
    [False]
    """
    return int((torch.full((1 << 18,), 1e-39) * 0.5).count_nonzero()) == 0


def run_flushing_subnormals(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)`` with subnormal floats flushed to zero (FTZ/DAZ) in every CPU thread doing its work.

    Arithmetic on subnormal numbers (below 1.2e-38 in float32) can be tens of times slower on a CPU (on an AMD
    EPYC, ``sqrt`` of float32 subnormals is 20 times slower than of normal numbers), so a fit whose values drift
    into that range would slow down for reasons of content alone. The flag is a property of each thread, and
    ``torch.set_flush_denormal`` sets only the calling thread's: the intra-op (OpenMP) workers PyTorch has
    already started keep theirs, and half of a two-thread operation would still see subnormals.

    Where every thread flushes already (:func:`flush_subnormals_from_the_start` was called first), ``fn`` runs in
    place. Otherwise it runs on a fresh thread that sets the flag first; the workers it starts copy it. That
    works anywhere but is slower: two OpenMP teams then share the cores, and OpenMP makes waiting workers of
    oversubscribed teams sleep rather than spin (a recon step about 20% slower on 2 cores). The caller's thread
    is left as it was, and so is its grad mode inside ``fn``. Where the CPU has no such flag, ``fn`` just runs.
    """
    if threads_flush_subnormals():
        return fn(*args, **kwargs)
    grad = torch.is_grad_enabled()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            if not torch.set_flush_denormal(True):
                box["unsupported"] = True
                return
            with torch.set_grad_enabled(grad):
                box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="inrsr-ftz", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    if box.get("unsupported"):
        return fn(*args, **kwargs)
    return box["result"]  # type: ignore[return-value]
