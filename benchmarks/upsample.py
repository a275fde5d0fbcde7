"""Benchmark of single-volume `upsample` on anatomy and contrasts the shipped model never saw.

Ground truth: the MNI152 2009 T1w template at 1 mm and its tissue maps (nilearn, offline). Every row degrades a
whole 1 mm brain with the shared slice PSF (:func:`inrsr.arssr.degrade.degrade`), every method produces the whole
1 mm brain from it (that is what is timed), and PSNR/SSIM are measured inside the brain mask on the part of the
brain held out from training (world z <= -6 mm: temporal lobes, cerebellum, brainstem; docs/model_card.md).

Test images:
* ``T1 template``: the template itself (the held-out region);
* ``synthetic contrast k``: held-out draws of the training generator (``inrsr.arssr.synth``): random tissue
  intensities, sharpness, texture and bias field, on the whole brain deformed by a held-out random deformation
  (seeds the training never uses).

Methods, all in the same run: cubic B-spline; classic TV deconvolution through the same PSF (``inrsr fit`` on
the one stack, automatic weight); the previously shipped weights (``--old-model``, when given); the encoder-decoder
without and with the data-consistency step (the default). A last part super-resolves a real low-res scan without
ground truth (dipy's ``aniso_vox``, 4x4x5 mm EPI, when dipy is installed): a QC picture, and checks that tiles leave
no seams and that the border does not ring.

    python benchmarks/upsample.py [--old-model OLD.pt] [--json benchmarks/results/upsample.json]
        [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_default_model import TEST_MAX_Z_MM, TISSUES, mni_volumes  # noqa: E402

from inrsr.arssr.config import Augmentation  # noqa: E402
from inrsr.arssr.consistency import enforce_consistency  # noqa: E402
from inrsr.arssr.degrade import degrade  # noqa: E402
from inrsr.arssr.infer import load_model, upsample_volume  # noqa: E402
from inrsr.arssr.synth import deformed_coordinates, sample, synthesize  # noqa: E402
from inrsr.metrics import psnr, resample_to_grid, ssim  # noqa: E402
from inrsr.volume import Volume  # noqa: E402

#: (image, degradation name, scale, through-plane axis or None, noise)
CASES = (
    ("T1 template", "x4 through-plane", 4.0, 2, 0.0),
    ("T1 template", "x4 through-plane, 2% noise", 4.0, 2, 0.02),
    ("T1 template", "x3.3 through-plane, 2% noise", 3.3, 2, 0.02),
    ("T1 template", "x2 isotropic", 2.0, None, 0.0),
    ("synthetic contrast 1", "x4 through-plane", 4.0, 2, 0.0),
    ("synthetic contrast 1", "x4 through-plane, 2% noise", 4.0, 2, 0.02),
    ("synthetic contrast 2", "x4 through-plane", 4.0, 0, 0.0),
    ("synthetic contrast 2", "x2 isotropic, 2% noise", 2.0, None, 0.02),
    ("synthetic contrast 3", "x4 through-plane", 4.0, 1, 0.0),
    ("synthetic contrast 3", "x3.3 through-plane, 2% noise", 3.3, 2, 0.02),
)
#: Seeds of the held-out contrast draws and deformations (training draws come from another generator stream).
HELD_OUT_SEEDS = {"synthetic contrast 1": 90001, "synthetic contrast 2": 90002, "synthetic contrast 3": 90003}


def test_images() -> tuple[dict[str, Volume], dict[str, np.ndarray]]:
    """The test images on the template's grid, and their brain masks (deformed with them)."""
    vols = mni_volumes()
    t1 = vols["t1"]
    images = {"T1 template": t1}
    masks = {"T1 template": vols["mask"].data > 0.5}
    probs = np.stack([vols[k].data for k in TISSUES])
    for name, seed in HELD_OUT_SEEDS.items():
        rng = np.random.default_rng(seed)
        coords = deformed_coordinates(np.zeros(3), np.array(t1.shape), t1.spacing, rng, Augmentation())
        warped = np.stack([sample(p, coords) for p in probs])
        images[name] = Volume(synthesize(warped, rng, t1.spacing, Augmentation()), t1.affine, name=name)
        masks[name] = sample(vols["mask"].data, coords) > 0.5
    return images, masks


def tv_deconvolution(lr: Volume, grid) -> np.ndarray:
    """The classic baseline: ``inrsr fit`` on the one stack (TV through the same PSF, automatic weight)."""
    from inrsr.config import FitConfig, Motion
    from inrsr.fit import fit_stacks
    from inrsr.render import render

    config = FitConfig(device="cpu", register=False, motion=Motion.none, robust=False, slice_scaling=False)
    result = fit_stacks([lr], grid, config)
    return render(result.model, grid)


def score(image: np.ndarray, truth: Volume, region: tuple, mask: np.ndarray) -> dict:
    return {
        "psnr_db": psnr(image[region], truth.data[region], mask),
        "ssim": ssim(image[region], truth.data[region], mask),
    }


def run_cases(model, old_model) -> list[dict]:
    images, masks = test_images()
    t1 = images["T1 template"]
    z = t1.affine[2, 2] * np.arange(t1.shape[2]) + t1.affine[2, 3]
    held = np.flatnonzero(z <= TEST_MAX_Z_MM)
    region = (slice(None), slice(None), slice(held[0], held[-1] + 1))
    rows = []
    for image_name, case, scale, axis, noise in CASES:
        truth = images[image_name]
        mask = masks[image_name][region]
        lr = degrade(truth, scale, axis, noise=noise, seed=7)
        methods = {}
        t0 = time.perf_counter()
        methods["cubic B-spline"] = (resample_to_grid(lr, t1.grid, order=3), time.perf_counter() - t0)
        t0 = time.perf_counter()
        methods["TV deconvolution (fit, one stack)"] = (tv_deconvolution(lr, t1.grid), time.perf_counter() - t0)
        if old_model is not None:
            t0 = time.perf_counter()
            methods["previous weights"] = (upsample_volume(old_model, lr, t1.grid)[0], time.perf_counter() - t0)
        t0 = time.perf_counter()
        net, norm = upsample_volume(model, lr, t1.grid)
        t_net = time.perf_counter() - t0
        methods["network, --no-consistency"] = (net, t_net)
        dc = enforce_consistency(net, t1.grid, lr, norm.high)
        methods["inrsr default (network + consistency)"] = (dc.image, t_net + dc.seconds)
        row = {"image": image_name, "case": case, "input_shape": list(lr.shape), "methods": {}}
        row["consistency"] = dc.report()
        for method, (image, seconds) in methods.items():
            row["methods"][method] = score(image, truth, region, mask) | {"seconds": seconds}
        base = row["methods"]["cubic B-spline"]["psnr_db"]
        print(
            f"{image_name:22s} {case:30s} "
            + "  ".join(f"{m.split(' (')[0]} {v['psnr_db'] - base:+.2f}" for m, v in row["methods"].items())
            + f"  (B-spline {base:.2f} dB; DC iters {dc.iterations})",
            flush=True,
        )
        rows.append(row)
    return rows


def real_scan(model, qc_path: Path | None) -> dict | None:
    """dipy's aniso_vox (4x4x5 mm EPI) to 2 mm: tiles against one pass, border against interior."""
    try:
        from dipy.data import get_fnames
    except ImportError:
        print("dipy is not installed: the real-scan part is skipped")
        return None
    from inrsr.arssr.infer import super_resolve
    from inrsr.arssr.inputs import target_grid
    from inrsr.io.nifti import load_volume

    lr = load_volume(get_fnames(name="aniso_vox"))
    grid = target_grid(lr, spacing="2")
    t0 = time.perf_counter()
    image, norm, dc = super_resolve(model, lr, grid)
    seconds = time.perf_counter() - t0
    one_pass, _ = upsample_volume(model, lr, grid, lr_tile=max(lr.shape) + 8)
    tiled, _ = upsample_volume(model, lr, grid, lr_tile=16)
    spline = resample_to_grid(lr, grid, order=3)
    # the border shell: output voxels within 2 input voxels (8-10 mm) of the input's field of view's edge
    inside = resample_to_grid(Volume(np.ones(lr.shape, np.float32), lr.affine), grid, order=0) > 0.5
    from scipy import ndimage

    interior = ndimage.binary_erosion(inside, iterations=5)
    shell = inside & ~interior
    diff = image - spline
    top = float(np.percentile(lr.data, 99.9))
    out = {
        "input": "dipy aniso_vox.nii.gz (58x58x24, 4x4x5 mm, oblique EPI)",
        "output_shape": list(grid.shape),
        "seconds": seconds,
        "tile_seam_max_abs_relative": float(np.abs(tiled - one_pass).max() / top),
        "rms_vs_bspline_border_relative": float(np.sqrt(np.mean(diff[shell] ** 2)) / top),
        "rms_vs_bspline_interior_relative": float(np.sqrt(np.mean(diff[interior] ** 2)) / top),
        "overshoot_voxels_above_1.1x_input_max": int((image > 1.1 * float(lr.data.max())).sum()),
        "consistency": dc.report() if dc else None,
    }
    if qc_path is not None:
        from inrsr import qc

        rows = [qc.input_row("input (trilinear)", lr, grid), qc.Row("inrsr upsample", qc.slabs(image))]
        caption = f"aniso_vox 4x4x5 mm -> 2 mm; {seconds:.1f} s; tile seam {out['tile_seam_max_abs_relative']:.1e}"
        qc.save_png(qc.volume_montage(rows, grid.affine, "upsample on a real low-res EPI", caption), qc_path)
    print(json.dumps(out, indent=1))
    return out


def table(rows: list[dict]) -> str:
    methods = list(rows[0]["methods"])
    head = "| image | degradation | " + " | ".join(methods) + " | gain over B-spline (dB) |"
    lines = [head, "|---|---|" + "---:|" * (len(methods) + 1)]
    for r in rows:
        base = r["methods"]["cubic B-spline"]["psnr_db"]
        ours = r["methods"]["inrsr default (network + consistency)"]["psnr_db"]
        cells = [f"{v['psnr_db']:.2f} / {v['ssim']:.3f} / {v['seconds']:.1f} s" for v in r["methods"].values()]
        lines.append(f"| {r['image']} | {r['case']} | " + " | ".join(cells) + f" | {ours - base:+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--old-model", default=None, help="another checkpoint to compare (e.g. earlier weights)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "upsample.json"))
    parser.add_argument("--qc", default=str(Path(__file__).parent / "results" / "upsample_aniso_vox_qc.png"))
    args = parser.parse_args()
    import torch

    model, model_name = load_model(args.model)
    old = load_model(args.old_model)[0] if args.old_model else None
    t0 = time.perf_counter()
    rows = run_cases(model, old)
    real = real_scan(model, Path(args.qc) if args.qc else None)
    print()
    print("PSNR (dB) / SSIM / seconds for the whole 1 mm brain, scored in the held-out region\n")
    print(table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": model_name,
        "old_model": args.old_model,
        "torch_threads": torch.get_num_threads(),
        "test_region": f"world z <= {TEST_MAX_Z_MM} mm, inside the (deformed) brain mask",
        "total_s": time.perf_counter() - t0,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows, "real_scan": real}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
