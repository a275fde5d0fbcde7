"""End-to-end: `inrsr upsample` on a NIfTI volume (encoder-decoder) and `inrsr train`, as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cli
import nibabel as nib
import numpy as np
import pytest
import torch
from phantom import phantom

from inrsr.geometry import apply_affine
from inrsr.io.nifti import save_volume
from inrsr.simulate import rotation_matrix

TINY = ["--channels", "8", "--features", "8", "--blocks", "1", "--depth", "2"]
TINY += ["--decoder-width", "16", "--decoder-layers", "4", "--patch", "8", "--queries", "64", "--batch-size", "2"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli.run_cli(*args, check=check, env=ENV)


@pytest.fixture(scope="module")
def lr_file(tmp_path_factory) -> Path:
    """A low-res phantom: 3 x 3 x 4 mm voxels, a flipped first axis and a non-trivial origin."""
    d = tmp_path_factory.mktemp("upsample")
    hr = phantom((20, 18, 12))
    affine = hr.affine @ np.diag([3.0, 3.0, 4.0, 1.0])
    save_volume(d / "lr.nii.gz", hr.data, affine)
    return d / "lr.nii.gz"


def _centre(img: nib.Nifti1Image) -> np.ndarray:
    return apply_affine(img.affine, (np.asarray(img.shape) - 1) / 2)


def _check_scaled(out: Path, report: Path, lr_file: Path, shape: tuple, spacing: tuple) -> tuple[np.ndarray, dict]:
    """The geometry and the report of an upsampled volume; returns its data and report."""
    img, lr = nib.load(str(out)), nib.load(str(lr_file))
    assert img.shape == shape
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), spacing, atol=1e-5)
    np.testing.assert_allclose(np.sign(img.affine[:3, :3]), np.sign(lr.affine[:3, :3]))  # same axes
    np.testing.assert_allclose(_centre(img), _centre(lr), atol=1e-4)  # same field of view: no half-voxel shift
    data = np.asarray(img.dataobj)
    assert np.isfinite(data).all() and data.max() > 0.5
    rep = json.loads(report.read_text())
    assert rep["mode"] == "encoder-decoder" and rep["model"].endswith("arssr_default.pt")
    assert rep["intensity_normalisation"]["high_percentile"] == 99.5
    assert rep["shape"] == list(shape) and rep["inference_s"] > 0
    return data, rep


def test_upsample_nifti_isotropic_scale(tmp_path, lr_file):
    out, report = tmp_path / "sr.nii.gz", tmp_path / "report.json"
    run_cli("upsample", str(lr_file), "-o", str(out), "--scale", "2.5", "--report", str(report), "-q")
    _, rep = _check_scaled(out, report, lr_file, (50, 45, 30), (1.2, 1.2, 1.6))
    dc = rep["data_consistency"]
    assert dc["relative_residual_after"] <= dc["relative_residual_before"] + 1e-9, dc


def test_upsample_through_plane_with_and_without_consistency(tmp_path, lr_file):
    outs = {}
    for flag in ("--consistency", "--no-consistency"):
        out, report = tmp_path / f"sr{flag}.nii.gz", tmp_path / f"r{flag}.json"
        run_cli("upsample", str(lr_file), "-o", str(out), "--scale", "1,1,4", "--report", str(report), "-q", flag)
        data, rep = _check_scaled(out, report, lr_file, (20, 18, 48), (3, 3, 1))
        outs[flag] = (data, rep["data_consistency"])
    assert outs["--no-consistency"][1] == {"enabled": False}
    on = outs["--consistency"][1]
    assert on["iterations"] >= 1 and on["relative_residual_after"] < on["relative_residual_before"]
    assert not np.allclose(outs["--consistency"][0], outs["--no-consistency"][0])


def test_upsample_nifti_like(tmp_path, lr_file):
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix((0, 10, 15)) * 1.5
    affine[:3, 3] = [0.0, -15.0, -5.0]
    save_volume(tmp_path / "ref.nii.gz", np.zeros((16, 20, 12), np.float32), affine)
    out = tmp_path / "sr.nii.gz"
    run_cli("upsample", str(lr_file), "-o", str(out), "--like", str(tmp_path / "ref.nii.gz"), "-q")
    img = nib.load(str(out))
    assert img.shape == (16, 20, 12)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)


def _not_inrsr_checkpoint(d: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, d / "other.pt")
    return d / "other.pt"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("4d", "expected a 3D volume"),
        ("scale0", "positive factors"),
        ("huge", "memory"),
        ("other", "not an inrsr checkpoint"),
        ("constant", "same intensity"),
        ("negative", "magnitude image"),
        ("scale1", "nothing would change"),
    ],
)
def test_upsample_bad_input(tmp_path, lr_file, case, message):
    src, args = str(lr_file), ["--scale", "2"]
    if case == "4d":
        src = str(tmp_path / "4d.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), src)
    elif case == "scale0":
        args = ["--scale", "0"]
    elif case == "huge":
        args = ["--scale", "5000"]
    elif case in ("constant", "negative"):
        src = str(tmp_path / f"{case}.nii.gz")
        data = np.full((10, 10, 6), 7.0, np.float32) if case == "constant" else phantom((10, 10, 6)).data - 0.5
        save_volume(src, data, np.diag([2.0, 2.0, 4.0, 1.0]))
    elif case == "scale1":
        args = ["--scale", "1"]
    else:
        args += ["--model", str(_not_inrsr_checkpoint(tmp_path))]
    before = set(tmp_path.iterdir())
    out = tmp_path / "sr.nii.gz"
    proc = run_cli("upsample", src, "-o", str(out), *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inrsr: error:") and message in lines[0], proc.stderr
    assert set(tmp_path.iterdir()) == before  # nothing left behind


def test_train_resume_and_use(tmp_path):
    data = tmp_path / "hr"
    data.mkdir()
    hr = phantom((36, 36, 36))
    save_volume(data / "a.nii.gz", hr.data, hr.affine)
    model, report = tmp_path / "model.pt", tmp_path / "train.json"
    common = [str(data), "-o", str(model), "--steps", "2", "--device", "cpu", *TINY]
    run_cli("train", *common, "--epochs", "1", "--report", str(report), "-q")
    rep = json.loads(report.read_text())
    assert rep["history"][0]["epoch"] == 1 and "val_psnr_db" in rep["history"][0]
    again = run_cli("train", *common, "--epochs", "1", check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    proc = run_cli("train", *common, "--epochs", "2", "--resume")
    assert "epoch 2" in proc.stdout and "val_psnr_db" in proc.stdout
    out = tmp_path / "sr.nii.gz"
    run_cli("upsample", str(data / "a.nii.gz"), "-o", str(out), "--spacing", "0.75", "--model", str(model), "-q")
    assert nib.load(str(out)).shape == (48, 48, 48)
    fitted = run_cli("upsample", str(model), "-o", str(out), "--scale", "2", check=False)
    assert fitted.returncode == 2 and "--model" in fitted.stderr


def test_train_with_tissue_maps(tmp_path):
    """`--tissue`: random contrasts from probability maps; the maps are recorded in the checkpoint."""
    hr = phantom((32, 32, 32))
    save_volume(tmp_path / "t1.nii.gz", hr.data, hr.affine)
    levels = sorted(set(np.unique(hr.data)) - {0.0})
    for k, (lo, hi) in enumerate([(0.0, 0.5), (0.5, 2.0)]):
        band = ((hr.data > lo) & (hr.data <= hi)).astype(np.float32)
        save_volume(tmp_path / f"p{k}.nii.gz", band, hr.affine)
    assert len(levels) > 2
    model, report = tmp_path / "model.pt", tmp_path / "train.json"
    tissue = ["--tissue", str(tmp_path / "p0.nii.gz"), "--tissue", str(tmp_path / "p1.nii.gz")]
    run_cli("train", str(tmp_path / "t1.nii.gz"), *tissue, "-o", str(model), "--steps", "2", "--epochs", "1",
            "--device", "cpu", "--report", str(report), "-q", *TINY)  # fmt: skip
    meta = torch.load(model, weights_only=True)["metadata"]["training"]
    assert meta["files"] == ["t1.nii.gz", "p0.nii.gz", "p1.nii.gz"]
    assert meta["config"]["synth_fraction"] == 0.7 and meta["config"]["augmentation"]["elastic_mm"] > 0
    bad = run_cli("train", str(tmp_path / "t1.nii.gz"), "--tissue", str(tmp_path / "missing.nii.gz"),
                  "-o", str(tmp_path / "m2.pt"), check=False)  # fmt: skip
    assert bad.returncode == 2 and "missing.nii.gz" in bad.stderr and not (tmp_path / "m2.pt").exists()


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_train_distributed_two_cpu_processes(tmp_path):
    """Two processes under torchrun, gloo backend on the CPU: one model, written once by rank 0."""
    hr = phantom((32, 32, 32))
    save_volume(tmp_path / "a.nii.gz", hr.data, hr.affine)
    model, report = tmp_path / "model.pt", tmp_path / "train.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["-m", "inrsr", "train", str(tmp_path / "a.nii.gz"), "-o", str(model), "--epochs", "1", "--steps", "2"]
    proc = subprocess.run(
        [*torchrun, *args, "--device", "cpu", "--report", str(report), "-q", *TINY],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["world_size"] == 2 and rep["history"][-1]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "model.pt", "train.json"]
