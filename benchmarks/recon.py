"""Benchmark of ``inrsr recon`` against classic reconstructions on a realistic synthetic cardiac cine.

The cines: ``mrphantom`` (bSSFP contrast at 1.5 T, piecewise constant) with its cardiac motion amplitude raised
above the default, and a textured one (dipy's real T1w coronal slice warped by a periodic smooth non-rigid
deformation), each drawn on a 2x finer grid than the reconstruction together with its coil maps and smooth phase,
then cut down in k-space (no method gets its own forward model back), with complex Gaussian noise. 10 coils,
18 frames, readout 192 x phase encode 160. Undersampled with the CMRxRecon 2023 rule (24 ACS lines + every R-th
line) at R = 4, 8, 10, and with CMRxRecon 2024's ktUniform pattern at 8, 16 and 24. Scored with the CMRxRecon
2023 normalisation on the challenge crop (first 3 frames) and on the full field of view; the reference is the
root-sum-of-squares image of the noisy fully sampled k-space.

Methods, all measured in the same run on the same data: zero-filled RSS; per-frame sigpy SENSE, total
variation and L1-wavelet (ESPIRiT maps from sigpy); BART ``pics`` with temporal TV, with temporal TV +
spatial wavelets, and with locally low rank (BART's own ESPIRiT maps); inrsr. Regularisation weights were chosen
once on a separate case
(another phantom draw, R = 8; ``--tune`` re-runs that search) and are fixed here.

Needs the benchmark extras: ``pip install -e ".[bench]"`` (sigpy, mrphantom, dipy) and the ``bart`` command
(Debian package ``bart``).

    python benchmarks/recon.py            # the table, benchmarks/results/recon.json, docs/benchmarks.md
    python benchmarks/recon.py --tune     # the weight search on the tuning case
    python benchmarks/recon.py --seeds 4,5,6 --methods l1wav,bart_ttv_wav,bart_llr,inrsr --merge
                                          # the same rows on draws never tuned on: margins per draw, medians
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# inrsr first: it sets the OpenMP spin count the command runs with, read when PyTorch loads its OpenMP runtime
import inrsr  # noqa: E402, F401, I001
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inrsr.devices import flush_subnormals_from_the_start  # noqa: E402
from inrsr.forward.kspace import fft2c, ifft2c  # noqa: E402
from inrsr.recon import masks as M  # noqa: E402
from inrsr.recon.api import ReconConfig, reconstruct_slice  # noqa: E402
from inrsr.recon.config import FIXED_LINE_SETTINGS  # noqa: E402
from inrsr.recon.scoring import crop_box, score_cine  # noqa: E402
from inrsr.recon.solver import zero_filled  # noqa: E402

NX, NY, NT, NC = 192, 160, 18, 10
ACCELS = (4, 8, 10)
NOISE = 0.004  # noise std relative to the largest coil-image magnitude
CARDIAC_GAIN = 3.0  # x mrphantom's default cardiac motion amplitude
ZOOM = 1.3  # the textured cine's slice magnified so that the brain fills most of the field of view, inside its edges
TEXTURE_MOTION_PX = 6.0  # peak displacement of the textured cine's deformation, in pixels of a 384-pixel grid

# Chosen once with --tune on the tuning case (seed 1, R = 8), then fixed.
WEIGHTS = {
    "sense": 1e-4,
    "tv": 5e-3,
    "l1wav": 3e-5,
    "bart_ttv": 1e-2,
    "bart_ttv_wav": (1e-2, 1e-3),
    "bart_llr": 1e-4,
}
INR = {}  # inrsr runs with its defaults (ReconConfig)


def make_case(seed: int, kind: str = "phantom") -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled noisy k-space ``(t, C, kx, ky)`` and the reference RSS image ``(t, x, y)``.

    ``kind``: ``"phantom"`` (mrphantom's piecewise-constant cine) or ``"textured"`` (:func:`textured_frames`);
    both on the 2x finer grid, with the same kind of smooth phase, coil maps, noise and k-space truncation."""
    import mrphantom as mp

    np.random.seed(seed)
    mp.initSS_bSSFP(1.5)
    fx, fy = 2 * NX, 2 * NY
    phase = mp.genPhMap((fx, fy), std=np.pi / 8)
    if kind == "textured":
        frames = textured_frames(fx, fy, np.random.default_rng(seed + 200)) * phase
    else:
        amp = CARDIAC_GAIN * mp.genCarAmp(1.0, 1.0 / NT, 1.0)
        frames = np.stack([mp.Enum2SS(mp.genPhant((fx, fy), 0, float(a))) * phase for a in amp])
    maps = mp.genCsm((fx, fy), NC)
    coil = torch.from_numpy((frames[:, None] * maps[None]).astype(np.complex64))
    k = fft2c(coil)[:, :, fx // 2 - NX // 2 : fx // 2 + NX // 2, fy // 2 - NY // 2 : fy // 2 + NY // 2]
    k = k.numpy() / 2.0  # orthonormal FFT: keep image intensities on the coarse grid
    sigma = NOISE * float(np.abs(ifft2c(torch.from_numpy(k)).numpy()).max())
    rng = np.random.default_rng(seed + 100)
    k = k + sigma * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    k = k.astype(np.complex64)
    return k, zero_filled(torch.from_numpy(k)).numpy()


def textured_frames(fx: int, fy: int, rng: np.random.Generator) -> np.ndarray:
    """Real anatomy with texture, moving: dipy's T1w coronal slice (256 x 256) on the fine grid, warped in every
    frame by a periodic smooth non-rigid deformation (a contraction towards a point that beats once per cycle,
    plus a smooth random field with a phase of its own), ``(NT, fx, fy)`` real, peak 1."""
    from dipy.data import get_fnames
    from scipy import ndimage

    image = np.load(get_fnames(name="t1_coronal_slice")).astype(np.float64)
    image = ndimage.zoom(image, ZOOM * max(fx, fy) / image.shape[0], order=3)  # the brain fills the field of view
    # Centred on the brain, which stays inside the field of view: an object cut by the edges of the field of view
    # would wrap around in k-space against other coil sensitivities, which no scanner's data does without
    # oversampling (and which breaks every ESPIRiT calibration, BART's and sigpy's alike).
    inside = np.argwhere(image > 0.05 * image.max())
    cx0, cy0 = (inside.min(0) + inside.max(0)) // 2
    x0 = int(np.clip(cx0 - fx // 2, 0, image.shape[0] - fx))
    y0 = int(np.clip(cy0 - fy // 2, 0, image.shape[1] - fy))
    image = np.clip(image[x0 : x0 + fx, y0 : y0 + fy], 0, None)
    gx, gy = np.meshgrid(np.arange(fx, dtype=np.float64), np.arange(fy, dtype=np.float64), indexing="ij")
    cx, cy = fx * rng.uniform(0.4, 0.6), fy * rng.uniform(0.4, 0.6)
    r2 = ((gx - cx) ** 2 + (gy - cy) ** 2) / (0.2 * min(fx, fy)) ** 2
    pull = np.exp(-r2 / 2)  # contraction strongest at the centre, fading over ~20% of the field of view
    smooth = [ndimage.gaussian_filter(rng.standard_normal((fx, fy)), 0.08 * min(fx, fy)) for _ in range(2)]
    smooth = [f / np.abs(f).max() for f in smooth]
    amplitude = TEXTURE_MOTION_PX * min(fx, fy) / 384
    frames = []
    for t in range(NT):
        beat = 0.5 * (1 - np.cos(2 * np.pi * t / NT))  # 0 at end-diastole, 1 at end-systole
        drift = np.sin(2 * np.pi * t / NT + 1.0)
        dx = amplitude * (beat * pull * (gx - cx) / max(fx, fy) * 4 + 0.3 * drift * smooth[0])
        dy = amplitude * (beat * pull * (gy - cy) / max(fx, fy) * 4 + 0.3 * drift * smooth[1])
        frames.append(ndimage.map_coordinates(image, [gx + dx, gy + dy], order=3, mode="nearest"))
    out = np.clip(np.stack(frames), 0, None)
    return out / out.max()


def undersample(k: np.ndarray, accel: int, pattern: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """CMRxRecon 2023's rule (``uniform``) or a 2024 k-t pattern, 24 ACS lines."""
    mask = M.pattern_mask(pattern, NX, NY, NT, accel, 24)
    return np.where(mask[:, None], k, 0).astype(np.complex64), mask


# -- classic baselines
# -----------------------------------------------------------------------------------------
def sigpy_maps(kus: np.ndarray) -> np.ndarray:
    import sigpy.mri as mr

    calib = kus.sum(0) / np.maximum((kus != 0).sum(0), 1)  # time-averaged ACS
    return mr.app.EspiritCalib(calib, calib_width=24, show_pbar=False).run()


def sigpy_per_frame(kus: np.ndarray, method: str, lamda: float, maps: np.ndarray) -> np.ndarray:
    import sigpy.mri as mr

    apps = {"sense": mr.app.SenseRecon, "tv": mr.app.TotalVariationRecon, "l1wav": mr.app.L1WaveletRecon}
    out = []
    for frame in kus:
        kw = {"max_iter": 30} if method == "sense" else {"max_iter": 100}
        out.append(np.abs(apps[method](frame, maps, lamda, show_pbar=False, **kw).run()))
    return np.stack(out)


def _write_cfl(name: str, arr: np.ndarray) -> None:
    dims = list(arr.shape) + [1] * (16 - arr.ndim)
    Path(name + ".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    arr.astype(np.complex64).ravel(order="F").tofile(name + ".cfl")


def _read_cfl(name: str) -> np.ndarray:
    dims = [int(n) for n in Path(name + ".hdr").read_text().splitlines()[1].split()]
    data = np.fromfile(name + ".cfl", dtype=np.complex64)
    return data.reshape(dims, order="F")


def bart_pics(kus: np.ndarray, ttv: float | None, wav: float | None = None, llr: float | None = None) -> np.ndarray:
    """BART ``pics`` with temporal TV (time is BART dimension 10), optionally + spatial L1-wavelets, or with
    locally low rank (8 x 8 blocks over x, y: the rank of each block's Casorati matrix over the frames)."""
    with tempfile.TemporaryDirectory() as tmp:
        ks = kus.transpose(2, 3, 1, 0)  # (x, y, C, t)
        arr = np.zeros((NX, NY, 1, NC) + (1,) * 6 + (NT,), np.complex64)
        arr[:, :, 0, :, 0, 0, 0, 0, 0, 0, :] = ks
        _write_cfl(f"{tmp}/k", arr)
        _write_cfl(f"{tmp}/kc", arr.mean(axis=10))  # time-averaged ACS for the calibration
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        run = lambda *a: subprocess.run(["bart", *a], check=True, capture_output=True, env=env)  # noqa: E731
        run("ecalib", "-m1", "-r", "24", f"{tmp}/kc", f"{tmp}/s")
        regs = ["-R", f"T:1024:0:{ttv}"] if ttv is not None else []
        if wav is not None:
            regs += ["-R", f"W:3:0:{wav}"]
        if llr is not None:
            regs += ["-R", f"L:3:3:{llr}", "-b", "8"]
        run("pics", "-S", "-i", "100", *regs, f"{tmp}/k", f"{tmp}/s", f"{tmp}/x")
        x = _read_cfl(f"{tmp}/x")
    return np.abs(x.reshape(NX, NY, NT)).transpose(2, 0, 1)


def run_inrsr(kus: np.ndarray, mask: np.ndarray, **overrides) -> np.ndarray:
    cfg = ReconConfig(quiet=True, device="cpu", **{**INR, **overrides})
    return reconstruct_slice(kus, mask, cfg).image


def run_method(name: str, kus: np.ndarray, mask: np.ndarray, weight=None, maps=None) -> np.ndarray:
    w = WEIGHTS.get(name) if weight is None else weight
    if name == "zerofill":
        return zero_filled(torch.from_numpy(kus)).numpy()
    if name in ("sense", "tv", "l1wav"):
        return sigpy_per_frame(kus, name, w, sigpy_maps(kus) if maps is None else maps)
    if name == "bart_ttv":
        return bart_pics(kus, w)
    if name == "bart_ttv_wav":
        return bart_pics(kus, *w)
    if name == "bart_llr":
        return bart_pics(kus, None, llr=w)
    if name in INRSR_VARIANTS:
        return run_inrsr(kus, mask, **INRSR_VARIANTS[name].overrides, **(weight or {}))
    raise ValueError(name)


def temporal_sr(k: np.ndarray, gt: np.ndarray, accel: int) -> list[dict]:
    """Every other frame's k-space dropped (the even frames acquired at ``accel``), the model rendered at the full
    frame rate (``--frames NT``); the odd frames, never measured, scored against the truth, against linear
    interpolation of the reconstructed neighbours (around the cycle) and against the pixel tensor's own
    interpolation."""
    even, odd = np.arange(0, NT, 2), np.arange(1, NT, 2)
    mask = M.pattern_mask("uniform", NX, NY, len(even), accel, 24)
    kus = np.where(mask[:, None], k[even], 0).astype(np.complex64)
    rows = []
    for name, encoding in (("inrsr_tsr", ReconConfig.encoding), ("inrsr_pixel_tsr", "pixel")):
        start = time.perf_counter()
        res = reconstruct_slice(kus, mask, ReconConfig(quiet=True, device="cpu", frames=NT, encoding=encoding))
        seconds = time.perf_counter() - start
        rendered = res.rendered
        methods = {name: rendered[odd]}
        if name == "inrsr_tsr":
            acquired = res.image  # (NT / 2, x, y), frame j at full-rate index 2 j
            methods["linear_tsr"] = 0.5 * (acquired + np.roll(acquired, -1, axis=0))
        for method, pred in methods.items():
            rows.append({"case_frames": "odd frames (never acquired)", "method": method, "accel": accel,
                         "effective_accel": M.effective_accel(mask), "seconds": seconds,
                         **scores(gt[odd], pred)})  # fmt: skip
    return rows


def scaled_psnr(gt: np.ndarray, pred: np.ndarray, crop: bool = False) -> float:
    """Mean PSNR over frames after the least-squares intensity scale of each prediction to the truth (peak = the
    truth's maximum): unlike CMRxRecon's per-image max normalisation, a few bright pixels cannot rescale a whole
    image. Reported beside the challenge score."""
    if crop:
        sx, sy = crop_box(gt.shape[1], gt.shape[2])
        gt, pred = gt[:3, sx, sy], pred[:3, sx, sy]
    out = []
    for g, q in zip(np.abs(gt).astype(np.float64), np.abs(pred).astype(np.float64), strict=True):
        a = float((g * q).sum() / max((q * q).sum(), 1e-30))
        mse = float(np.mean((g - a * q) ** 2))
        out.append(10 * np.log10(float(g.max()) ** 2 / max(mse, 1e-30)))
    return float(np.mean(out))


def scores(gt: np.ndarray, pred: np.ndarray) -> dict:
    crop, full = score_cine(gt, pred, crop=True), score_cine(gt, pred)
    crop["psnr_scaled"], full["psnr_scaled"] = scaled_psnr(gt, pred, crop=True), scaled_psnr(gt, pred)
    return {"crop": crop, "full": full}


@dataclass(frozen=True)
class Variant:
    """inrsr with ``overrides`` of its defaults, run at the rows ``(pattern, R)`` listed in ``rows`` (every row
    when None)."""

    overrides: dict
    label: str
    rows: tuple[tuple[str, int], ...] | None


KT_ROWS = ("ktUniform:8", "ktUniform:16", "ktUniform:24", "ktGaussian:16", "ktRadial:8")


def kt_rows(rows: list[str] | tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``PATTERN:R`` rows as ``(pattern, R)``."""
    return tuple((row.split(":")[0], int(row.split(":")[1])) for row in rows if row)


R8 = (("uniform", 8),)
R4 = (("uniform", 4),)
KT16 = (("ktUniform", 16),)
# inrsr with its defaults, and one row per default stage turned off or option, at the rows where it matters.
INRSR_VARIANTS = {
    "inrsr": Variant({}, "inrsr (default)", None),
    "inrsr_fixed_tv": Variant({"tv_stages": 0}, "inrsr --tv-stages 0 (TV weights fixed)", R8),
    "inrsr_six_coils": Variant(
        {"virtual_coils": 6}, "inrsr --virtual-coils 6 (compressed to 6 virtual coils, the default before)", R8
    ),
    "inrsr_hash": Variant({"encoding": "hash"}, "inrsr --encoding hash (grids + MLP)", R8),
    "inrsr_pixel": Variant({"encoding": "pixel"}, "inrsr --encoding pixel (no field: ablation)", R8),
    "inrsr_joint": Variant({"coils": "joint"}, "inrsr --coils joint", R8),
    "inrsr_no_dc": Variant({"dc": False}, "inrsr --no-dc (no final data consistency)", R8 + KT16),
    "inrsr_lr_decay": Variant(
        {"lr_decay": 1 / 3},
        "inrsr --lr-decay 0.33 (the rate falling 3x over the steps, the default before)",
        R4 + R8 + KT16,
    ),
    "inrsr_settle_strict": Variant(
        {"settle_tol": 0.0},
        "inrsr --settle-tol 0 (weights lowered only when the held-out error stops improving)",
        R4 + R8,
    ),
    # the low-rank term (on by default under k-t masks and at low R) and its options
    "inrsr_no_llr": Variant({"llr": 0.0}, "inrsr --llr 0 (no low-rank term)", R4 + KT16),
    "inrsr_llr_every_step": Variant(
        {"llr_every": 1}, "inrsr --llr-every 1 (the low-rank term on every step)", R4 + KT16
    ),
    "inrsr_race": Variant(
        {"llr_race": 0.3},
        "inrsr --llr-race 0.3 (the low-rank weight's lowering factor raced on the held-out error)",
        kt_rows(KT_ROWS),
    ),
    "inrsr_kt_no_motion": Variant(
        {"acs_motion": 0.0}, "inrsr --acs-motion 0 (the same temporal weight everywhere)", KT16
    ),
    "inrsr_kt_fixed_line": Variant(
        FIXED_LINE_SETTINGS,
        "inrsr with the fixed-line settings (--llr 0 --acs-motion 0 --tv-factor 0.3)",
        KT16,
    ),
}
# rows of earlier runs under the names they had then (read by --merge and --render)
RENAMED = {
    "inrsr_kt_no_llr": "inrsr_no_llr",
    "inrsr_low_r_no_llr": "inrsr_no_llr",
    "inrsr_kt_llr_every_step": "inrsr_llr_every_step",
    "inrsr_low_r_llr_every_step": "inrsr_llr_every_step",
    "inrsr_low_r_settle_strict": "inrsr_settle_strict",
}
CASES = ("phantom", "textured")
KT_METHODS = ("zerofill", "l1wav", "bart_ttv", "bart_ttv_wav", "bart_llr", *INRSR_VARIANTS)
CLASSIC = ("sense", "tv", "l1wav", "bart_ttv", "bart_ttv_wav", "bart_llr")
METHODS = ("zerofill", "sense", "tv", "l1wav", "bart_ttv", "bart_ttv_wav", "bart_llr", *INRSR_VARIANTS)
LABELS = {
    "zerofill": "zero-filled RSS",
    "sense": "SENSE (sigpy, per frame)",
    "tv": "TV (sigpy, per frame)",
    "l1wav": "L1-wavelet (sigpy, per frame)",
    "bart_ttv": "BART pics temporal TV",
    "bart_ttv_wav": "BART pics temporal TV + wavelets",
    "bart_llr": "BART pics locally low rank",
    **{name: v.label for name, v in INRSR_VARIANTS.items()},
    "inrsr_tsr": "inrsr --frames 18 (half the frames acquired)",
    "inrsr_pixel_tsr": "pixel tensor --frames 18 (half the frames acquired)",
    "linear_tsr": "linear interpolation of inrsr's acquired frames",
}


def available(name: str) -> bool:
    if name.startswith("bart"):
        return shutil.which("bart") is not None
    if name in ("sense", "tv", "l1wav"):
        try:
            import sigpy  # noqa: F401
        except ImportError:
            return False
    return True


def tune(methods: list[str]) -> None:
    k, gt = make_case(seed=1)
    kus, mask = undersample(k, 8)
    grids = {
        "sense": [1e-4, 1e-3, 1e-2],
        "tv": [5e-4, 2e-3, 5e-3, 1e-2],
        "l1wav": [3e-5, 1e-4, 3e-4, 1e-3],
        "bart_ttv": [1e-3, 3e-3, 1e-2, 3e-2],
        "bart_ttv_wav": [(1e-2, 3e-4), (1e-2, 1e-3), (3e-2, 1e-3), (1e-2, 3e-3)],
        "bart_llr": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "inrsr": [{}, {"tv_time": 0.01}, {"tv_space": 0.004, "tv_time": 0.01}],
    }
    maps = sigpy_maps(kus)
    for name, grid in grids.items():
        if not available(name) or name not in methods:
            continue
        for w in grid:
            pred = run_method(name, kus, mask, w, maps=maps)
            s = score_cine(gt, pred, crop=True)
            print(f"{name:14s} {w!s:22s} crop PSNR {s['psnr']:.2f}  SSIM {s['ssim']:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="search the regularisation weights on the tuning case")
    parser.add_argument("--accels", default=",".join(map(str, ACCELS)))
    parser.add_argument("--cases", default=",".join(CASES), help="phantom, textured")
    parser.add_argument("--kt", default=",".join(KT_ROWS), help="k-t rows PATTERN:R (all cases)")
    parser.add_argument("--kt-methods", default=",".join(KT_METHODS))
    parser.add_argument("--temporal", default="8", help="R of the temporal super-resolution rows ('' for none)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--seeds", default="0", help="draws of each cine (0: the table's; 4,5,6: draws never tuned on, for medians)"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--render", action="store_true", help="only re-render the table from the saved JSON")
    parser.add_argument(
        "--merge", action="store_true", help="keep the saved JSON's rows (case, mask, R, method) not run now"
    )
    args = parser.parse_args()
    flush_subnormals_from_the_start()  # as the command does: before any parallel PyTorch operation
    out = ROOT / "benchmarks" / "results" / "recon.json"
    if args.render:
        saved = load_results(out)
        table = render_table(saved)
        print(table)
        write_docs(table, saved.get("cpu", ""))
        return
    methods = [m for m in args.methods.split(",") if available(m)]
    if args.tune:
        tune(methods)
        return
    accels = [int(a) for a in args.accels.split(",") if a]
    kt_plan = kt_rows(args.kt.split(","))
    kt_methods = [m for m in args.kt_methods.split(",") if available(m)]
    results: dict = {
        "case": {"nx": NX, "ny": NY, "nt": NT, "nc": NC, "noise": NOISE, "cardiac_gain": CARDIAC_GAIN,
                 "texture_motion_px": TEXTURE_MOTION_PX},  # fmt: skip
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "weights": {k: WEIGHTS[k] for k in WEIGHTS},
        "runs": [],
    }
    run = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # each row says which run it comes from (--merge)
    for case, seed in [(c, int(d)) for c in args.cases.split(",") for d in args.seeds.split(",")]:
        k, gt = make_case(seed=seed, kind=case)
        plan = [("uniform", a, methods) for a in accels] + [(p, a, kt_methods) for p, a in kt_plan]
        for pattern, accel, names in plan:
            kus, mask = undersample(k, accel, pattern)
            for name in names:
                rows = INRSR_VARIANTS[name].rows if name in INRSR_VARIANTS else None
                if rows is not None and (pattern, accel) not in rows:
                    continue
                start, cpu0 = time.perf_counter(), _cpu()
                pred = run_method(name, kus, mask)
                seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
                s = scores(gt, pred)
                row = {
                    "case": case,
                    "pattern": pattern,
                    "accel": accel,
                    "effective_accel": M.effective_accel(mask),
                    "method": name,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "run": run,
                    "seed": seed,
                    **s,
                }
                results["runs"].append(row)
                _print(row)
        for accel in [int(a) for a in args.temporal.split(",") if a] if seed == 0 else []:  # the table's draw
            for row in temporal_sr(k, gt, accel):
                row |= {"case": case, "pattern": "uniform, even frames", "run": run}
                results["runs"].append(row)
                _print(row)
    if args.merge and out.exists():
        def row_key(r: dict) -> tuple:
            return r["case"], r["pattern"], r["accel"], r["method"], r.get("seed", 0)

        rerun = {row_key(r) for r in results["runs"]}
        kept = [r for r in load_results(out)["runs"] if row_key(r) not in rerun]
        results["runs"] = kept + results["runs"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    table = render_table(results)
    print(table)
    if not args.no_docs:
        write_docs(table, results["cpu"])


def load_results(path: Path) -> dict:
    """A saved benchmark JSON, its rows' methods under today's names (``RENAMED``)."""
    results = json.loads(path.read_text())
    for r in results["runs"]:
        r["method"] = RENAMED.get(r["method"], r["method"])
    return results


def _print(row: dict) -> None:
    s, c = row["crop"], row["full"]
    print(
        f"{row['case']:9s} {row['pattern']:10s} R={row['accel']:2d} {row['method']:14s} crop PSNR {s['psnr']:6.2f} "
        f"SSIM {s['ssim']:.4f} | full PSNR {c['psnr']:6.2f} | LS-scaled crop/full {s['psnr_scaled']:6.2f} "
        f"{c['psnr_scaled']:6.2f} | {row['seconds']:7.1f} s wall",
        flush=True,
    )


def cpu_model() -> str:
    """The processor's name as the kernel reports it (timings differ several-fold between machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cpu() -> float:
    """CPU seconds of this process and its finished children (BART) together."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _group(r: dict) -> tuple[str, str, int]:
    """A row's cine, mask pattern and R (rows of early runs had no case or pattern: the phantom, uniform)."""
    return r.get("case", "phantom"), r.get("pattern", "uniform"), r["accel"]


def _group_order(group: tuple[str, str, int]) -> tuple:
    """Tables list the cines in ``CASES`` order, each with its uniform masks first, then by pattern and R."""
    case, pattern, accel = group
    return CASES.index(case) if case in CASES else 9, pattern != "uniform", pattern, accel


def render_table(results: dict) -> str:
    """The table of the benchmark's draw (seed 0), its summary, and the margins over every draw run."""
    everything, results = results, {**results, "runs": [r for r in results["runs"] if r.get("seed", 0) == 0]}
    lines = [
        "| cine | mask | R (effective) | method | crop PSNR (dB) | crop SSIM | full PSNR (dB) | full SSIM "
        "| crop / full PSNR, LS-scaled (dB) | wall (s) | CPU (s) | dB over zero-filling per wall second |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    zerofill = {_group(r): r["crop"]["psnr"] for r in results["runs"] if r["method"] == "zerofill"}
    for r in sorted(results["runs"], key=lambda r: (*_group_order(_group(r)), order.get(r["method"], 99))):
        c, f = r["crop"], r["full"]
        base = zerofill.get(_group(r))
        rate = "" if base is None or r["method"] == "zerofill" else f"{(c['psnr'] - base) / r['seconds']:.2f}"
        lines.append(
            f"| {r.get('case', 'phantom')} | {r.get('pattern', 'uniform')} | "
            f"{r['accel']} ({r['effective_accel']:.1f}x) | {LABELS[r['method']]} | {c['psnr']:.2f} | "
            f"{c['ssim']:.4f} | {f['psnr']:.2f} | {f['ssim']:.4f} | "
            f"{c.get('psnr_scaled', float('nan')):.2f} / {f.get('psnr_scaled', float('nan')):.2f} | "
            f"{r['seconds']:.1f} | "
            f"{r.get('cpu_seconds', float('nan')):.1f} | {rate} |"
        )
    runs: dict[str, set[str]] = {}
    for r in results["runs"]:
        runs.setdefault(r.get("run", "an earlier run"), set()).add(LABELS[r["method"]])
    if len(runs) > 1:
        lines += ["", "Rows from more than one run (`--merge`); times compare only within a run:"]
        lines += [f"- {run}: {', '.join(sorted(methods))}" for run, methods in sorted(runs.items())]
    lines += ["", *summary_lines(results), *draw_lines(everything)]
    return "\n".join(lines)


# the classic methods inrsr is held against on every draw: per-frame L1-wavelet (fixed-line masks), BART T+W and LLR
DRAW_CLASSIC = ("l1wav", "bart_ttv_wav", "bart_llr")


def draw_lines(results: dict) -> list[str]:
    """inrsr against the classic methods on every draw of a row that has them all (seed 0 and the draws never
    tuned on): the median of the per-draw margins (crop PSNR), their range, and on how many draws inrsr is ahead."""
    rows: dict[tuple, dict[int, dict[str, dict]]] = {}
    for r in results["runs"]:
        rows.setdefault(_group(r), {}).setdefault(r.get("seed", 0), {})[r["method"]] = r
    out = []
    for (case, pattern, accel), draws in sorted(rows.items(), key=lambda kv: _group_order(kv[0])):
        wanted = [m for m in DRAW_CLASSIC if m != "l1wav" or pattern == "uniform"]
        full = {seed: runs for seed, runs in draws.items() if all(m in runs for m in ["inrsr", *wanted])}
        if len(full) < 2:
            continue
        ours = [runs["inrsr"]["crop"]["psnr"] for runs in full.values()]
        best = [o - max(runs[m]["crop"]["psnr"] for m in wanted) for o, runs in zip(ours, full.values(), strict=True)]
        bart = [o - runs["bart_ttv_wav"]["crop"]["psnr"] for o, runs in zip(ours, full.values(), strict=True)]
        secs = [runs["inrsr"]["seconds"] for runs in full.values()]

        def spread(values: list[float]) -> str:
            ahead = sum(v > 0 for v in values)
            return f"{np.median(values):+.2f} ({min(values):+.2f} to {max(values):+.2f}), ahead on {ahead}"

        out.append(
            f"| {case} | {pattern} | {accel} | {', '.join(map(str, sorted(full)))} | {np.median(ours):.2f} | "
            f"{spread(best)} | {spread(bart)} | {np.median(secs):.1f} |"
        )
    if not out:
        return []
    head = [
        "",
        "Over several draws of each cine (seed 0, the table's, and draws never tuned on), crop PSNR: inrsr against "
        f"the best of {', '.join(LABELS[m] for m in DRAW_CLASSIC)} (L1-wavelet on the fixed-line masks only) and "
        "against BART T+W, on each draw (the fits are deterministic: a method's score on a draw does not change "
        "from run to run, so rows of different runs compare):",
        "",
        "| cine | mask | R | draws (seeds) | inrsr median (dB) | vs best classic: median margin (range), draws "
        "ahead | vs BART T+W: median margin (range), draws ahead | inrsr median wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return head + out


def summary_lines(results: dict) -> list[str]:
    """Per R, inrsr against the best per-frame method and BART temporal TV measured in the same run."""
    out = []
    groups = sorted({_group(r) for r in results["runs"]})
    for case, pattern, accel in groups:
        runs = {r["method"]: r for r in results["runs"] if _group(r) == (case, pattern, accel)}
        if "inrsr_tsr" in runs and "linear_tsr" in runs:
            gain = runs["inrsr_tsr"]["crop"]["psnr"] - runs["linear_tsr"]["crop"]["psnr"]
            out.append(
                f"- {case}, temporal super-resolution at R = {accel} (odd frames never acquired): inrsr "
                f"{runs['inrsr_tsr']['crop']['psnr']:.2f} dB, {gain:+.2f} dB vs linear interpolation of its acquired "
                "frames."
            )
        if "inrsr" not in runs:
            continue
        ours = runs["inrsr"]
        parts = [f"{case}, {pattern} R = {accel}: inrsr {ours['crop']['psnr']:.2f} dB in {ours['seconds']:.0f} s"]
        classic = [runs[m] for m in CLASSIC if m in runs]
        if classic:
            best = max(classic, key=lambda r: r["crop"]["psnr"])
            gain = ours["crop"]["psnr"] - best["crop"]["psnr"]
            parts.append(f"{gain:+.2f} dB vs the best classic method ({LABELS[best['method']]})")
        if "bart_ttv_wav" in runs:
            bart = runs["bart_ttv_wav"]
            parts.append(
                f"{ours['crop']['psnr'] - bart['crop']['psnr']:+.2f} dB vs {LABELS['bart_ttv_wav']}, "
                f"{ours['seconds'] / bart['seconds']:.1f}x its wall time"
            )
        out.append("- " + "; ".join(parts) + ".")
    return out


def write_docs(table: str, cpu: str = "") -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = (
        "## recon\n\n"
        f"`python benchmarks/recon.py` on this project's 2-core CPU ({cpu or 'processor not recorded'}, "
        f"{torch.get_num_threads()} threads). Two cines, both drawn on a 2x finer grid than\n"
        f"the reconstruction with smooth phase, {NC} coil maps and complex noise, then cut down in k-space: "
        f"`phantom` (mrphantom, bSSFP, cardiac motion x{CARDIAC_GAIN:g}, piecewise constant) and `textured` "
        "(dipy's real T1w coronal slice, warped by a periodic smooth non-rigid deformation: real anatomy with "
        f"texture). Readout {NX} x phase encode {NY}, {NT} frames. Masks: `uniform` = CMRxRecon 2023 (24 ACS "
        "lines + every R-th line, the same in every frame); `ktUniform` = CMRxRecon 2024 k-t (shifted by one line "
        "per frame, 24 ACS lines). CMRxRecon 2023 metrics; crop = the challenge crop (central third x half, first 3 "
        "frames). Weights of the classic methods chosen once on another phantom draw at R = 8 (`--tune`) and fixed. "
        "inrsr's settings (encoding, steps, coil compression, TV stages) were chosen on that draw and on another "
        "textured draw at R = 4; its TV weights are then lowered per case from the held-out k-space lines "
        "(`--tv-stages`), never from the truth. One slice; wall and CPU seconds for the slice, on an "
        "otherwise idle machine. The table is one draw of each cine (seed 0); the last table gives inrsr's margins "
        "over several draws (`--seeds 4,5,6`: draws never tuned on), each against the methods run on that draw."
        "\n\n"
        f"{table}\n"
    )
    start = text.find("## recon")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.part")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    main()
