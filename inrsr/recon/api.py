"""The ``recon`` pipeline: read k-space slice by slice, build the mask, reconstruct, score against a
reference.

:func:`reconstruct_file` is what the CLI calls; :func:`reconstruct_slice` works on arrays (benchmarks,
notebooks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..io.kspace import KSpaceReader, read_mask
from ..progress import Progress
from . import masks as M
from .coils import calibration_block, espirit_maps
from .config import Pattern, ReconConfig
from .scoring import ranking_slices, score_cine

if TYPE_CHECKING:  # PyTorch loads when a slice is reconstructed, after the inputs are checked
    import torch


@dataclass
class SliceResult:
    image: np.ndarray  # (t, x, y) magnitude, in the input's intensity units
    info: dict = field(default_factory=dict)
    rendered: np.ndarray | None = None  # (frames, x, y) magnitude over the cycle, with ReconConfig.frames


@dataclass
class ReconResult:
    magnitude: np.ndarray  # (x, y, slice, t) float32
    slices: list[int]
    report: dict


def build_mask(
    kspace: np.ndarray,
    config: ReconConfig,
    file_mask: np.ndarray | None,
    mask_name: str | None,
    name_accel: int | None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The sampling mask ``(t, kx, ky)`` of one slice, the k-space restricted to it, and whether the input was
    fully sampled (then the input is the reference)."""
    nt, _, nx, ny = kspace.shape
    measured = M.mask_from_data(kspace)
    full = bool(measured.all())
    if config.pattern is not Pattern.uniform and (file_mask is not None or not full):
        raise InputError(
            f"--pattern {config.pattern.value} simulates sampling of fully sampled k-space; "
            + ("--mask gives the sampling already" if file_mask is not None else "this k-space is undersampled")
        )
    if file_mask is not None:
        mask = M.mask_from_file(file_mask, nx, ny, nt, mask_name or "mask")
        if config.accel is not None:
            _check_accel(mask, config.accel, f"the mask {mask_name}")
    elif full:
        if config.accel is None:
            if config.method == "zerofill":
                return measured, kspace, True
            raise InputError("the k-space is fully sampled: give --accel R to undersample it, or --mask FILE")
        mask = M.pattern_mask(config.pattern, nx, ny, nt, config.accel, config.acs, seed=config.seed)
    else:
        mask = measured
        if config.accel is not None:
            if name_accel is not None and name_accel != config.accel:
                raise InputError(f"--accel {config.accel} disagrees with the data, undersampled at R = {name_accel}")
            _check_accel(mask, config.accel, "the data's mask")
    return mask, np.where(mask[:, None], kspace, 0).astype(np.complex64), full


def _check_accel(mask: np.ndarray, accel: int, what: str) -> None:
    step = M.regular_step(mask)
    if step is not None and step != accel:
        raise InputError(f"--accel {accel} disagrees with {what}, which samples every {step}th line")


def coil_maps(kspace: np.ndarray, mask: np.ndarray, config: ReconConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """ESPIRiT maps ``(C, x, y)`` from the ACS region (ones for single-coil data) and the ACS lines used."""
    nt, nc, nx, ny = kspace.shape
    acs = M.detect_acs(mask)
    if nc == 1:
        return np.ones((1, nx, ny), np.complex64), acs
    n_acs = acs[1] - acs[0]
    if n_acs < 4:
        raise InputError(
            f"the mask has only {n_acs} fully sampled central ky lines; coil maps need an autocalibration region"
        )
    width_x = min(nx, max(24, int(round(n_acs * nx / ny))))
    calib = calibration_block(kspace, mask, acs, width_x)
    maps, _ = espirit_maps(calib, (nx, ny), kernel=config.espirit_kernel, threshold=config.espirit_threshold)
    return maps, acs


def compress_coils(kspace: np.ndarray, n_virtual: int) -> tuple[np.ndarray, float]:
    """Coil compression: ``kspace (t, C, kx, ky)`` projected onto the ``n_virtual`` strongest principal components
    over the coils (SVD of the sampled data, as BART's ``cc -S``), and the fraction of the energy kept.

    >>> rng = np.random.default_rng(0)
    >>> k = (rng.standard_normal((2, 1, 8, 8)) * np.array([1.0, 0.5, 0.01])[None, :, None, None]).astype(np.complex64)
    >>> kc, kept = compress_coils(k, 2)
    >>> kc.shape, kept > 0.999
    ((2, 2, 8, 8), True)
    """
    nc = kspace.shape[1]
    if n_virtual >= nc:
        return kspace, 1.0
    samples = np.moveaxis(kspace, 1, 0).reshape(nc, -1)
    samples = samples[:, np.any(samples != 0, axis=0)]
    u, sv, _ = np.linalg.svd(samples @ samples.conj().T)
    basis = u[:, :n_virtual].conj().T  # (V, C)
    kept = float(sv[:n_virtual].sum() / max(sv.sum(), 1e-30))
    return np.einsum("vc,tcxy->tvxy", basis, kspace).astype(np.complex64), kept


def reconstruct_slice(
    kspace: np.ndarray,
    mask: np.ndarray,
    config: ReconConfig,
    slice_index: int = 0,
    device: torch.device | None = None,
) -> SliceResult:
    """Reconstruct one slice. ``kspace (t, C, kx, ky)`` complex (zero where unsampled), ``mask (t, kx,
    ky)``."""
    import torch

    from ..devices import resolve_device, run_flushing_subnormals, seed_everything
    from .solver import data_consistency, fit_slice, lowres_maps, motion_weight, zero_filled

    device = device or resolve_device(config.device)
    start = time.perf_counter()
    config = config.for_mask(kt=M.changes_per_frame(mask), accel=M.nominal_accel(mask))
    kspace = np.where(mask[:, None], kspace, 0).astype(np.complex64)
    coil_energy = None
    if config.virtual_coils and config.method != "zerofill":
        kspace, coil_energy = compress_coils(kspace, config.virtual_coils)
    k = torch.from_numpy(kspace).to(device)
    zf = zero_filled(k)
    scale = float(zf.max())
    if not scale > 0:
        raise InputError(f"slice {slice_index}: the sampled k-space is all zeros")
    info: dict = {
        "nominal_accel": M.nominal_accel(mask),
        "effective_accel": M.effective_accel(mask),
        "acs_lines": int(np.subtract(*M.detect_acs(mask)[::-1])),
    }
    if config.method != "zerofill":
        info["virtual_coils"] = int(kspace.shape[1])  # the coils the fit uses, virtual or not
    if coil_energy is not None:
        info["coil_energy_kept"] = coil_energy
    if config.method == "zerofill":
        info["seconds"] = time.perf_counter() - start
        return SliceResult(zf.cpu().numpy(), info)

    maps_np, acs = coil_maps(kspace, mask, config)
    k = k / scale
    mask_t = torch.from_numpy(mask).to(device)
    maps = torch.from_numpy(maps_np).to(device)
    if config.coils == "joint" and kspace.shape[1] > 1:
        maps = lowres_maps(k, mask_t, acs)
    rng = np.random.default_rng([config.seed, slice_index])
    train, hold = M.holdout_split(mask, acs, config.holdout, rng)
    generator = seed_everything(config.seed * 1009 + slice_index)
    # On a CPU the fit runs with subnormals flushed to zero, so that its speed cannot depend on the image content.
    solve = run_flushing_subnormals if device.type == "cpu" else _call
    with Progress(config.steps, f"slice {slice_index}", quiet=config.quiet) as progress:
        fit = solve(
            fit_slice,
            k,
            torch.from_numpy(train).to(device),
            torch.from_numpy(hold).to(device),
            maps,
            config.fit_settings(),
            generator=generator,
            progress=progress,
            time_weight=motion_weight(k, mask_t, maps, acs, config.acs_motion) if config.acs_motion else None,
        )
    with torch.no_grad():
        if config.dc:
            image = data_consistency(fit.image, fit.maps, k, mask_t)
        else:
            image = fit.image
    info.update(
        {
            "steps_run": fit.steps_run,
            "best_step": fit.best_step,
            "best_holdout_nmse": min(fit.history["holdout"]) if hold.any() else None,
            "holdout_lines": int(M.sampled_lines(hold).sum()),
            "tv_scale": fit.history["tv_scale"][fit.best_step],
            "llr_factor": fit.llr_factor,  # the low-rank weight's lowering factor the held-out race chose
            "llr_race_holdout": fit.race,
            # the settings the mask chose (k-t or fixed lines) where they were not given
            "llr": config.llr,
            "acs_motion": config.acs_motion,
            "tv_factor": config.tv_factor,
            "lr_decay": config.decay(),
            "fit_seconds": fit.seconds,
            "seconds_per_step": fit.seconds / max(fit.steps_run, 1),
            "seconds": time.perf_counter() - start,
        }
    )
    if info["best_holdout_nmse"] is not None and info["best_holdout_nmse"] >= 0.95:
        # Zero-filling predicts the held-out lines with a relative error of exactly 1.
        info["warning"] = (
            f"slice {slice_index}: the model predicts the held-out k-space lines no better than zero-filling "
            f"(relative error {info['best_holdout_nmse']:.2f}); the result is not reliable"
        )
    rendered = None
    if fit.rendered is not None:
        rendered = (fit.rendered.abs() * scale).cpu().numpy()
        info["frames_rendered"] = int(rendered.shape[0])
    return SliceResult((image.abs() * scale).cpu().numpy(), info, rendered)


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def reconstruct_file(path: str, config: ReconConfig, on_checked: Callable[[], None] | None = None) -> ReconResult:
    """Reconstruct the selected slices of a k-space file; score them when a fully sampled reference exists.

    ``on_checked`` is called once the inputs are checked, before PyTorch loads (the CLI sets process-wide CPU
    flags there)."""
    config.validate()
    file_mask, mask_name = (None, None)
    if config.mask is not None:
        file_mask, mask_name = read_mask(config.mask)
        # Errors name the file and the variable: FILE:VAR.
        mask_name = config.mask if config.mask.endswith(f":{mask_name}") else f"{config.mask}:{mask_name}"
    started = time.perf_counter()
    with KSpaceReader(path, config.key) as reader:
        info = reader.info
        # Checked before any slice is read or fitted.
        if file_mask is not None:
            M.mask_from_file(file_mask, info.nx, info.ny, info.n_frames, mask_name or "mask")
        if config.accel is not None and config.pattern is not Pattern.uniform:
            M.check_pattern(config.pattern, info.ny, config.accel, config.acs)
        slices = _select_slices(config.slices, info.n_slices)
        ranked = ranking_slices(info.n_slices)
        missing = [s for s in ranked if s not in slices]
        if config.ranking and missing:
            raise InputError(
                f"--save-mat writes the challenge's img4ranking, which needs slices "
                f"{','.join(map(str, ranked))}: add {','.join(map(str, missing))} to --slices"
            )
        ref_reader = KSpaceReader(config.ref, config.ref_key) if config.ref else None
        try:
            if ref_reader is not None:
                r = ref_reader.info
                if (r.nx, r.ny, r.n_coils, r.n_slices, r.n_frames) != (
                    info.nx,
                    info.ny,
                    info.n_coils,
                    info.n_slices,
                    info.n_frames,
                ):
                    raise InputError(f"{config.ref}: reference k-space shape differs from {path}")
            if on_checked is not None:
                on_checked()
            import torch

            from ..devices import resolve_device
            from .solver import zero_filled

            device = resolve_device(config.device)
            images, per_slice = [], []
            for s in slices:
                kspace = reader.read_slice(s)
                mask, kus, full = build_mask(kspace, config, file_mask, mask_name, info.name_accel)
                reference = kspace if full else (ref_reader.read_slice(s) if ref_reader is not None else None)
                result = reconstruct_slice(kus, mask, config, s, device)
                entry = {"slice": s, **result.info}
                if reference is not None:
                    gt = zero_filled(torch.from_numpy(reference)).numpy()
                    zf = zero_filled(torch.from_numpy(kus)).numpy()
                    entry["metrics"] = {
                        "inrsr" if config.method == "inr" else "zerofill": _scores(gt, result.image),
                        **({"zerofill": _scores(gt, zf)} if config.method == "inr" else {}),
                    }
                per_slice.append(entry)
                # The metrics score the acquired frames; the output holds the rendered ones when asked for.
                images.append(result.rendered if result.rendered is not None else result.image)
        finally:
            if ref_reader is not None:
                ref_reader.__exit__()
    magnitude = np.stack([im.transpose(1, 2, 0) for im in images], axis=2).astype(np.float32)
    report = {
        "input": {**asdict(info), "name_accel": info.name_accel},
        "ranking_slices": ranked,
        "settings": asdict(config),
        "device": str(device),
        "slices": per_slice,
        "summary": _summary(per_slice, info.n_slices),
        "seconds": time.perf_counter() - started,
    }
    return ReconResult(magnitude, slices, report)


def _scores(gt: np.ndarray, pred: np.ndarray) -> dict:
    return {"full": score_cine(gt, pred), "crop": score_cine(gt, pred, crop=True)}


def _summary(per_slice: list[dict], n_slices: int) -> dict:
    out: dict = {}
    scored = [e for e in per_slice if "metrics" in e]
    if not scored:
        return out
    ranking = set(ranking_slices(n_slices))
    for method in scored[0]["metrics"]:
        for region in ("full", "crop"):
            for metric in ("psnr", "ssim", "nmse"):
                vals = [e["metrics"][method][region][metric] for e in scored]
                out.setdefault(method, {}).setdefault(region, {})[metric] = float(np.mean(vals))
        rank = [e for e in scored if e["slice"] in ranking]
        if len(rank) == len(ranking):
            out[method]["challenge"] = {
                m: float(np.mean([e["metrics"][method]["crop"][m] for e in rank])) for m in ("psnr", "ssim", "nmse")
            }
    return out


def _select_slices(slices: list[int] | None, n: int) -> list[int]:
    if not slices:
        return list(range(n))
    bad = [s for s in slices if not 0 <= s < n]
    if bad:
        raise InputError(f"--slices {','.join(map(str, slices))}: the file has slices 0..{n - 1}")
    return list(dict.fromkeys(slices))
