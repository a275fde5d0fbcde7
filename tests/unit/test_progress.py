"""Progress reporting: counts never pass the total and the ETA never goes negative."""

from __future__ import annotations

import io
import re

from inrsr.progress import Progress


def test_log_lines_never_overshoot():
    stream = io.StringIO()
    with Progress(5, "work", stream=stream) as bar:
        for _ in range(8):  # more updates than announced, as a line search may make
            bar.update(1, loss=0.5)
    counts = [tuple(map(int, m)) for m in re.findall(r"(\d+)/(\d+)", stream.getvalue())]
    assert counts and all(done <= total == 5 for done, total in counts)
    etas = [float(v) for v in re.findall(r"eta (-?[\d.]+)s", stream.getvalue())]
    assert etas and min(etas) >= 0
    assert bar.done == 5
