"""``inrsr eval`` as a subprocess on small synthetic NIfTI files with known geometry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio

SHAPE = (16, 18, 14)
AFFINE = np.array([[1.0, 0, 0, -8.0], [0, 1.0, 0, -9.0], [0, 0, 2.0, -14.0], [0, 0, 0, 1.0]])


def run_eval(*args: str | Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "inrsr.cli.main", "eval", *(str(a) for a in args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture
def volumes(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.random(SHAPE), 1.5).astype(np.float32)
    pred = (ref + rng.normal(0, 0.01, SHAPE)).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[3:13, 4:14, 2:12] = 1
    return {
        "ref": ref,
        "pred": pred,
        "mask": mask.astype(bool),
        "ref_path": write_nifti(tmp_path / "ref.nii.gz", ref),
        "pred_path": write_nifti(tmp_path / "pred.nii.gz", pred),
        "mask_path": write_nifti(tmp_path / "mask.nii.gz", mask),
    }


def test_eval_writes_the_metrics(volumes, tmp_path):
    out = tmp_path / "metrics.json"
    proc = run_eval(volumes["pred_path"], volumes["ref_path"], "--mask", volumes["mask_path"], "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "PSNR" in proc.stdout and "SSIM" in proc.stdout and "NRMSE" in proc.stdout
    assert "resampled" not in proc.stdout
    report = json.loads(out.read_text())
    ref, pred, mask = volumes["ref"], volumes["pred"], volumes["mask"]
    rng = float(ref[mask].max() - ref[mask].min())
    assert report["resampled"] is False
    assert report["n_voxels_in_mask"] == int(mask.sum())
    assert report["data_range"] == pytest.approx(rng, rel=1e-6)
    assert report["psnr_db"] == pytest.approx(
        peak_signal_noise_ratio(ref[mask], pred[mask], data_range=rng), rel=1e-5
    )
    expected_nrmse = normalized_root_mse(ref[mask], pred[mask], normalization="euclidean")
    assert report["nrmse"] == pytest.approx(expected_nrmse, rel=1e-5)
    assert 0.9 < report["ssim"] <= 1.0
    assert report["pred"] == str(volumes["pred_path"])
    assert report["ref"] == str(volumes["ref_path"])
    assert report["mask"] == str(volumes["mask_path"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mask.nii.gz",
        "metrics.json",
        "pred.nii.gz",
        "ref.nii.gz",
    ]


def test_eval_resamples_pred_on_another_grid(volumes, tmp_path):
    # The same image on a grid that starts 2 voxels earlier along x: a pure shift in world space.
    ref = volumes["ref"]
    padded = np.zeros((SHAPE[0] + 2, *SHAPE[1:]), dtype=np.float32)
    padded[2:] = ref
    shifted = AFFINE.copy()
    shifted[0, 3] -= 2.0
    pred_path = write_nifti(tmp_path / "pred_shifted.nii.gz", padded, shifted)
    out = tmp_path / "metrics.json"
    proc = run_eval(pred_path, volumes["ref_path"], "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "resampled onto" in proc.stdout
    report = json.loads(out.read_text())
    assert report["resampled"] is True
    assert report["mask"] is None
    assert report["n_voxels_in_mask"] == ref.size
    assert report["nrmse"] < 1e-4
    assert report["ssim"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("which", ["missing", "not_nifti"])
def test_eval_bad_input_is_one_line_and_no_json(volumes, tmp_path, which):
    bad = tmp_path / f"{which}.nii.gz"
    if which == "not_nifti":
        bad.write_text("this is not a NIfTI file\n")
    out = tmp_path / "metrics.json"
    proc = run_eval(bad, volumes["ref_path"], "--json", out)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert bad.name in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not any(p.name.startswith(".metrics.json") for p in tmp_path.iterdir())
