"""Benchmark of `inrsr fit` against interpolation and the classic voxel-grid reconstruction.

Data: the example data's 1 mm MNI152 reference. The stacks are simulated from a finer object (the reference
upsampled x2 with cubic B-splines, 0.5 mm) through the slice PSF (1x1x5 mm, thickness 5 mm, three orthogonal
stacks, 1% Rician noise), so that no method is fed data made by its own discrete operator. Every method is scored
on the 1 mm reference grid inside the brain mask, and timed in the same run.

    python benchmarks/fit.py [--quick] [--json benchmarks/results/fit.json] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from inrsr.classic import VoxelGridProblem
from inrsr.fit import FitConfig, fit_stacks
from inrsr.forward.slice_psf import StackOperator, psf_sigmas_mm
from inrsr.geometry import Grid
from inrsr.io.nifti import load_volume
from inrsr.metrics import psnr, resample_to_grid, ssim
from inrsr.render import render
from inrsr.simulate import simulate_stack
from inrsr.volume import Volume

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "example_data"
THICKNESS = 5.0
NOISE = 0.01
# Regularisation weights: chosen once on this case (a sweep of each) and shared by the classic baselines and
# inrsr's initial estimate (FitConfig's defaults).
TV_LAMBDA = FitConfig.tv_lambda
TIKHONOV_LAMBDA = FitConfig.tikhonov_lambda


def finer_object(hr: Volume, factor: int = 2) -> Volume:
    """``hr`` resampled with cubic B-splines onto a grid ``factor`` times finer over the same field of view."""
    to_hr = np.eye(4)
    to_hr[:3, :3] = np.eye(3) / factor
    to_hr[:3, 3] = -0.5 + 0.5 / factor
    grid = Grid(tuple(int(n * factor) for n in hr.shape), hr.affine @ to_hr)
    return Volume(resample_to_grid(hr, grid, order=3), grid.affine, "object")


def score(name: str, image: np.ndarray, ref: Volume, mask: np.ndarray, seconds: float, **extra) -> dict:
    row = {
        "method": name,
        "psnr_db": psnr(image, ref.data, mask),
        "ssim": ssim(image, ref.data, mask),
        "time_s": seconds,
        **extra,
    }
    print(
        f"  {name:<34s} PSNR {row['psnr_db']:6.2f} dB  SSIM {row['ssim']:.4f}  {seconds:7.1f} s", flush=True
    )
    return row


def classic(stacks: list[Volume], grid: Grid, regulariser: str, iterations: int) -> np.ndarray:
    """The classic voxel-grid SR reconstruction on the output grid (same PSF model, same normalisation)."""
    scale = float(np.percentile(stacks[0].data[stacks[0].data > 0], 99.5))
    ops = [
        StackOperator(s.shape, s.affine, psf_sigmas_mm(s.affine, s.slice_axis, THICKNESS), grid)
        for s in stacks
    ]
    problem = VoxelGridProblem(ops, [torch.as_tensor(s.data / scale) for s in stacks])
    if regulariser == "tikhonov":
        x = problem.solve_tikhonov(TIKHONOV_LAMBDA, iterations)
    else:
        x = problem.solve_tv(
            TV_LAMBDA, iterations, x0=problem.solve_tikhonov(TIKHONOV_LAMBDA, FitConfig.tikhonov_iterations)
        )
    return x.numpy() * scale


def run(quick: bool) -> dict:
    torch.set_flush_denormal(True)
    ref = load_volume(DATA / "mni_hr_1mm.nii.gz")
    mask = load_volume(DATA / "mni_brain_mask.nii.gz").data > 0.5
    obj = finer_object(ref)
    stacks = [
        simulate_stack(obj, axis, THICKNESS, noise=NOISE, seed=axis, inplane_mm=1.0) for axis in (2, 1, 0)
    ]
    for s, name in zip(stacks, ("axial", "coronal", "sagittal"), strict=True):
        s.name = name
    print(f"reference {ref.shape}, object {obj.shape} at 0.5 mm, stacks {[s.shape for s in stacks]}")
    rows = []

    t0 = time.perf_counter()
    resampled = [resample_to_grid(s, ref.grid, order=3) for s in stacks]
    t_resample = time.perf_counter() - t0
    singles = [
        score(f"B-spline: {s.name} stack", r, ref, mask, t_resample / 3)
        for s, r in zip(stacks, resampled, strict=True)
    ]
    best = max(singles, key=lambda r: r["psnr_db"])
    rows.append({**best, "method": "B-spline: best single stack"})
    rows.append(score("B-spline: mean of stacks", np.mean(resampled, axis=0), ref, mask, t_resample))

    iters = (20, 40) if quick else (100, 150)
    t0 = time.perf_counter()
    img = classic(stacks, ref.grid, "tikhonov", iters[0])
    rows.append(score(f"classic SRR: Tikhonov, CG {iters[0]}", img, ref, mask, time.perf_counter() - t0))
    t0 = time.perf_counter()
    img = classic(stacks, ref.grid, "tv", iters[1])
    rows.append(score(f"classic SRR: TV, L-BFGS {iters[1]}", img, ref, mask, time.perf_counter() - t0))

    variants = [
        ("inrsr fit (hash, default)", FitConfig()),
        ("inrsr fit (fourier)", FitConfig(encoding="fourier")),
        ("ablation: inrsr's initial estimate only", FitConfig(steps=0)),
    ]
    for name, config in variants:
        config.device = "cpu"
        config.thickness_mm = [THICKNESS]
        t0 = time.perf_counter()
        result = fit_stacks(stacks, ref.grid, config)
        image = render(result.model, ref.grid)
        elapsed = time.perf_counter() - t0
        rows.append(
            score(name, image, ref, mask, elapsed, timings=result.report["timings"], steps=config.steps)
        )

    baseline = next(r for r in rows if r["method"] == "B-spline: mean of stacks")
    for r in rows:
        r["psnr_gain_vs_mean_db"] = r["psnr_db"] - baseline["psnr_db"]
    return {
        "benchmark": "fit",
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "data": {
            "reference": "example_data/mni_hr_1mm.nii.gz",
            "object": "reference x2 cubic B-spline (0.5 mm)",
            "stacks": "3 orthogonal, 1x1x5 mm, thickness 5 mm",
            "noise": NOISE,
        },
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = ["| method | PSNR (dB) | SSIM | gain vs mean (dB) | wall time (s) |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['psnr_gain_vs_mean_db']:+.2f} "
            f"| {r['time_s']:.1f} |"
        )
    return "\n".join(lines)


def update_markdown(path: Path, section: str, body: str) -> None:
    """Replace (or append) the ``## section`` of a markdown file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"## {section}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer classic iterations (a smoke run)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "fit.json"))
    parser.add_argument("--markdown", default=None, help="update the '## fit' section of this file")
    args = parser.parse_args()
    result = run(args.quick)
    print()
    print(table(result))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    if args.markdown:
        m = result["machine"]
        body = (
            f"`python benchmarks/fit.py --markdown docs/benchmarks.md` on {m['platform']}, "
            f"{m['cpu_threads']} CPU threads, torch {m['torch']}.\n"
            f"Data: {result['data']['stacks']} simulated from {result['data']['object']}, "
            f"{result['data']['noise']:.0%} Rician noise; scored on the 1 mm reference inside the brain mask. "
            "Times include fitting and rendering the 1 mm output.\n\n" + table(result)
        )
        update_markdown(Path(args.markdown), "fit", body)


if __name__ == "__main__":
    main()
