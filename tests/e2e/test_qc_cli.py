"""``--qc`` pictures from fit, upsample, eval and recon (the real CLI), provenance sidecars beside their NIfTI
outputs, and recon's header: no scanner position, the slice distance only when given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli import run_cli
from matplotlib.image import imread
from phantom import phantom, write_orthogonal_stacks

from inrsr.io.nifti import save_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from kspace_synth import cine_kspace, to_matlab, write_v73  # noqa: E402

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("qc")
    hr = phantom((24, 24, 24))
    save_volume(d / "hr.nii.gz", hr.data, hr.affine)
    stacks = write_orthogonal_stacks(d, hr)
    slices = [cine_kspace(32, 24, 6, 2, seed=s)[0] for s in range(3)]
    write_v73(d / "cine.mat", {"kspace_full": to_matlab(slices)})
    return {"dir": d, "hr": str(d / "hr.nii.gz"), "stacks": stacks, "kspace": str(d / "cine.mat")}


def check_png(path: Path, rows: int) -> None:
    """A real picture: RGB(A), 1100 px wide, taller with more rows, not blank."""
    pixels = imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[1] == 1100
    assert pixels.shape[0] > 330 * rows and pixels[..., :3].std() > 0.05


def test_fit_qc_and_sidecars(data, tmp_path):
    out, qc = tmp_path / "hr.nii.gz", tmp_path / "hr_qc.png"
    run_cli("fit", *data["stacks"], "-o", str(out), "--like", data["hr"], "--motion", "none", "--cycles", "1",
            "--uncertainty", str(tmp_path / "u.nii.gz"), "--qc", str(qc), "-q", env=ENV)  # fmt: skip
    check_png(qc, rows=3)  # input, output, uncertainty
    for name in ("hr", "u"):
        side = json.loads((tmp_path / f"{name}.json").read_text())
        assert side["Sources"] == data["stacks"] and side["Settings"]["motion"] == "none"
        assert "--qc" in side["GeneratedBy"][0]["CommandLine"]
    assert "uncertainty" in json.loads((tmp_path / "u.json").read_text())["Description"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.json", "hr.nii.gz", "hr_qc.png", "u.json", "u.nii.gz"]


def test_upsample_and_eval_qc(data, tmp_path):
    sr, qc = tmp_path / "sr.nii.gz", tmp_path / "sr.png"
    run_cli("upsample", data["stacks"][2], "-o", str(sr), "--scale", "1,1,3", "--qc", str(qc), "-q", env=ENV)
    check_png(qc, rows=2)
    side = json.loads((tmp_path / "sr.json").read_text())
    assert side["Sources"] == [data["stacks"][2]] and side["Settings"]["scale"] == [1.0, 1.0, 3.0]
    # eval on another grid: PRED is resampled onto REF's, as it is scored
    eqc = tmp_path / "eval.png"
    proc = run_cli("eval", data["stacks"][0], data["hr"], "--qc", str(eqc), env=ENV)
    assert f"wrote {eqc}" in proc.stdout and "resampled onto" in proc.stdout
    check_png(eqc, rows=3)  # PRED, REF, |PRED - REF|


def test_recon_qc_header_and_slice_distance(data, tmp_path):
    out, qc, rep = tmp_path / "cine.nii.gz", tmp_path / "cine.png", tmp_path / "report.json"
    run_cli("recon", data["kspace"], "-o", str(out), "--accel", "4", "--acs", "6", "--slices", "0,2", "--steps",
            "20", "--spacing", "1.5", "--slice-distance", "8", "--qc", str(qc), "--report", str(rep), "-q",
            env=ENV)  # fmt: skip
    check_png(qc, rows=1)
    img = nib.load(str(out))
    assert img.shape == (32, 24, 2, 6)
    assert int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0  # no scanner position
    np.testing.assert_allclose(img.header.get_zooms()[:3], (1.5, 1.5, 8.0))
    assert json.loads(rep.read_text())["spacing_mm"] == [1.5, 1.5, 8.0]
    side = json.loads((tmp_path / "cine.json").read_text())
    assert side["Sources"] == [data["kspace"]] and side["Settings"]["accel"] == 4
    assert side["Settings"]["spacing_mm"] == [1.5, 1.5, 8.0]


def test_recon_slice_distance_is_not_guessed(data, tmp_path):
    out, rep = tmp_path / "zf.nii.gz", tmp_path / "report.json"
    run_cli("recon", data["kspace"], "-o", str(out), "--method", "zerofill", "--spacing", "2", "--report", str(rep),
            "-q", env=ENV)  # fmt: skip
    img = nib.load(str(out))
    assert img.header.get_zooms()[:3] == (2.0, 2.0, 1.0)  # a placeholder, not the in-plane 2 mm
    assert json.loads(rep.read_text())["spacing_mm"] == [2.0, 2.0, None]
    proc = run_cli("recon", data["kspace"], "-o", str(out), "--method", "zerofill", "--spacing", "2,2,5",
                   "--slice-distance", "8", check=False, env=ENV)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "disagree" in proc.stderr
