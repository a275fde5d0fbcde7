"""The recon benchmark's table over several draws: per-draw margins against the classic methods, medians."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_recon", ROOT / "benchmarks" / "recon.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _row(method: str, psnr: float, seed: int | None, pattern: str = "uniform", seconds: float = 10.0) -> dict:
    row = {"case": "phantom", "pattern": pattern, "accel": 4, "method": method, "effective_accel": 3.5,
           "seconds": seconds, "crop": {"psnr": psnr, "ssim": 0.9}, "full": {"psnr": psnr, "ssim": 0.9}}  # fmt: skip
    if seed is not None:
        row["seed"] = seed
    return row


def test_draw_margins_are_taken_per_draw_against_that_draws_best(bench):
    runs = []
    # seed 0 (rows without a seed: the table's draw), inrsr 0.2 dB below BART LLR; draws 4 and 5 ahead
    draws = [(None, 40.1, 40.3, 29.3, 37.9), (4, 40.2, 39.7, 29.0, 38.0), (5, 41.0, 40.0, 29.5, 40.5)]
    for seed, ours, llr, tw, wav in draws:
        runs += [_row("inrsr", ours, seed), _row("bart_llr", llr, seed), _row("bart_ttv_wav", tw, seed)]
        runs += [_row("l1wav", wav, seed)]
    runs.append(_row("inrsr", 45.0, 6))  # a draw without the classic methods is not counted
    lines = bench.draw_lines({"runs": runs})
    row = [line for line in lines if line.startswith("| phantom")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[3] == "0, 4, 5"
    assert cells[4] == "40.20"  # median of 40.1, 40.2, 41.0
    # margins against the best of the three on each draw: -0.2, +0.5, +0.5 -> median +0.50, ahead on two
    assert cells[5] == "+0.50 (-0.20 to +0.50), ahead on 2"
    assert cells[6] == "+11.20 (+10.80 to +11.50), ahead on 3"  # against BART T+W alone


def test_one_draw_gives_no_draw_table_and_the_main_table_keeps_seed_zero(bench):
    runs = [_row("inrsr", 40.0, None), _row("bart_llr", 39.0, None), _row("bart_ttv_wav", 30.0, None)]
    runs += [_row("l1wav", 38.0, None), _row("inrsr", 20.0, 4), _row("bart_llr", 45.0, 4)]
    assert bench.draw_lines({"runs": runs}) == []
    table = bench.render_table({"runs": runs})
    assert "| 40.00 |" in table and "| 20.00 |" not in table
