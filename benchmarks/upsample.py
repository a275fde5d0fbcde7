"""Benchmark of single-volume `upsample` (encoder-decoder, shipped weights) against cubic B-spline upsampling.

Ground truth: the MNI152 2009 T1w template at 1 mm (nilearn, offline). The whole brain is degraded with the
shared slice PSF (:func:`inrsr.arssr.degrade.degrade`: isotropic x2, x3.2, x4 and through-plane-only x4 along z),
both methods produce the whole 1 mm brain from it (that is what is timed), and PSNR/SSIM are measured inside the
brain mask on the part of the brain held out from training (world z <= -6 mm, the inferior brain: temporal lobes,
cerebellum, brainstem; see docs/model_card.md). Needs nilearn (`pip install -e ".[data]"`).

    python benchmarks/upsample.py [--device cpu] [--json benchmarks/results/upsample.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_default_model import TEST_MAX_Z_MM, mni_volumes  # noqa: E402

from inrsr.arssr.data import crop  # noqa: E402
from inrsr.arssr.degrade import degrade  # noqa: E402
from inrsr.arssr.infer import load_model, upsample_volume  # noqa: E402
from inrsr.devices import resolve_device  # noqa: E402
from inrsr.metrics import psnr, resample_to_grid, ssim  # noqa: E402
from inrsr.volume import Volume  # noqa: E402

CASES = (("x2", 2.0, None), ("x3.2", 3.2, None), ("x4", 4.0, None), ("x4 through-plane (z)", 4.0, 2))


def brain_mask(like: Volume) -> np.ndarray:
    """nilearn's MNI152 brain mask resampled (nearest) onto ``like``'s grid."""
    import nibabel as nib
    from nilearn import datasets

    img = nib.as_closest_canonical(datasets.load_mni152_brain_mask(resolution=1))
    mask = Volume(np.asarray(img.get_fdata(), dtype=np.float32), img.affine, "mask")
    return resample_to_grid(mask, like.grid, order=0) > 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "upsample.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    model, model_name = load_model(args.model)
    t1 = mni_volumes()["t1"]
    z = t1.affine[2, 2] * np.arange(t1.shape[2]) + t1.affine[2, 3]
    held = np.flatnonzero(z <= TEST_MAX_Z_MM)
    region = (slice(None), slice(None), slice(held[0], held[-1] + 1))
    test = crop(t1, np.array([0, 0, held[0]]), np.array([t1.shape[0], t1.shape[1], len(held)]))
    mask = brain_mask(test)
    rows = []
    for name, scale, axis in CASES:
        lr = degrade(t1, scale, axis)
        t0 = time.perf_counter()
        sr, _ = upsample_volume(model, lr, t1.grid, device=device)
        t_sr = time.perf_counter() - t0
        t0 = time.perf_counter()
        spline = resample_to_grid(lr, t1.grid, order=3)
        t_spline = time.perf_counter() - t0
        row = {"case": name, "input_shape": list(lr.shape), "output_shape": list(t1.shape)}
        for method, image, seconds in (("inrsr", sr, t_sr), ("bspline", spline, t_spline)):
            row[method] = {
                "psnr_db": psnr(image[region], test.data, mask),
                "ssim": ssim(image[region], test.data, mask),
                "seconds": seconds,
            }
        rows.append(row)
        print(
            f"{name:22s} inrsr {row['inrsr']['psnr_db']:.2f} dB / {row['inrsr']['ssim']:.4f} ({t_sr:.1f} s)   "
            f"B-spline {row['bspline']['psnr_db']:.2f} dB / {row['bspline']['ssim']:.4f} ({t_spline:.1f} s)",
            flush=True,
        )
    print()
    print(
        "| scale | input -> output (voxels) | inrsr PSNR (dB) | B-spline PSNR (dB) | gain (dB) | inrsr SSIM | "
        "B-spline SSIM | inrsr time (s) | B-spline time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["inrsr"], r["bspline"]
        shape_in, shape_out = "x".join(map(str, r["input_shape"])), "x".join(map(str, r["output_shape"]))
        print(
            f"| {r['case']} | {shape_in} -> {shape_out} | {a['psnr_db']:.2f} | {b['psnr_db']:.2f} | "
            f"{a['psnr_db'] - b['psnr_db']:+.2f} | {a['ssim']:.4f} | {b['ssim']:.4f} | {a['seconds']:.1f} | "
            f"{b['seconds']:.1f} |"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    meta = {
        "model": model_name,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "test_region": f"MNI152 2009 T1w, world z <= {TEST_MAX_Z_MM} mm, inside the brain mask",
        "voxels_in_mask": int(mask.sum()),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
