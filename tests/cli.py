"""Running the real `inrsr` command line as a subprocess, shared by the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m inrsr ARGS``; with ``check``, a non-zero exit fails the test showing stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "inrsr", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"inrsr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
