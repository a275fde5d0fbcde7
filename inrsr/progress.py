"""Progress reporting for long work: a rich bar on a terminal, plain log lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Report ``total`` steps of work named ``description``.

    On a terminal a rich progress bar shows the latest metrics and the ETA; when stdout is not a terminal (a
    pipeline log) about ten plain lines are printed instead; with ``quiet`` nothing is printed.
    Use as a context manager and call :meth:`update` after each step.
    """

    def __init__(self, total: int, description: str, quiet: bool = False, stream: Any = None) -> None:
        self.total = max(int(total), 1)
        self.description = description
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar = None
        self._task = None
        self._start = 0.0
        self._next_log = 0

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if not self.quiet and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, metrics="")
        return self

    def update(self, n: int = 1, **metrics: float) -> None:
        """Count ``n`` more steps (never past ``total``: a solver that takes extra evaluations does not overshoot)."""
        self.done = min(self.done + n, self.total)
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, metrics=text)
        elif not self.quiet and (self.done >= self._next_log or self.done >= self.total):
            elapsed = time.perf_counter() - self._start
            eta = max(elapsed / self.done * (self.total - self.done), 0.0) if self.done else 0.0
            print(
                f"{self.description}: {self.done}/{self.total} {text} elapsed {elapsed:.1f}s eta {eta:.1f}s",
                file=self.stream,
                flush=True,
            )
            self._next_log = self.done + max(self.total // 10, 1)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
