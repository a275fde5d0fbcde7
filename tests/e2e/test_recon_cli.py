"""``inrsr recon`` run as a subprocess on small synthetic CMRxRecon files (v7.3 and v5)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from kspace_synth import cine_kspace, to_matlab, write_v5, write_v73  # noqa: E402

NX, NY, NT, NC = 48, 40, 8, 4


def run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny cines: threads would only add synchronisation
    return subprocess.run(
        [sys.executable, "-m", "inrsr.cli.main", "recon", *map(str, args)], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def full_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recon") / "cine_sax.mat"
    slices = [cine_kspace(NX, NY, NT, NC, noise=0.002, seed=s)[0] for s in range(2)]
    write_v73(path, {"kspace_full": to_matlab(slices)})
    return path, slices


def test_recon_full_input_with_retrospective_undersampling(tmp_path, full_file):
    path, _ = full_file
    out, rep = tmp_path / "cine.nii.gz", tmp_path / "report.json"
    res = run(
        path,
        "--accel",
        4,
        "--acs",
        12,
        "--slices",
        "1",
        "--steps",
        150,
        "-o",
        out,
        "--report",
        rep,
        "--spacing",
        "1.5,1.5,8",
        "--device",
        "cpu",
        "--seed",
        1,
    )
    assert res.returncode == 0, res.stderr
    img = nib.load(out)
    assert img.shape == (NX, NY, 1, NT)
    assert np.allclose(img.header.get_zooms()[:3], (1.5, 1.5, 8))
    report = json.loads(rep.read_text())
    entry = report["slices"][0]
    assert entry["slice"] == 1 and entry["nominal_accel"] == 4 and entry["effective_accel"] > 1.5
    m = entry["metrics"]
    assert m["inrsr"]["full"]["psnr"] > m["zerofill"]["full"]["psnr"] + 3
    assert set(m["inrsr"]["crop"]) == {"psnr", "ssim", "nmse"}
    assert "inrsr" in res.stdout and "zerofill" in res.stdout


def test_zerofill_of_undersampled_v5_with_mask_and_reference(tmp_path, full_file):
    path, slices = full_file
    lines = np.zeros(NY, bool)
    lines[::4] = True
    lines[NY // 2 - 6 : NY // 2 + 6] = True
    sub = [np.where(lines, s, 0) for s in slices]
    write_v5(tmp_path / "sub.mat", {"kspace_sub04": to_matlab(sub)})
    write_v5(tmp_path / "mask.mat", {"mask04": np.broadcast_to(lines, (NX, NY)).astype(float)})
    out, rep, mat = tmp_path / "zf.nii", tmp_path / "zf_report.json", tmp_path / "ranking.mat"  # zf.json: the sidecar
    res = run(
        tmp_path / "sub.mat",
        "--save-mat",
        mat,
        "--method",
        "zerofill",
        "--mask",
        f"{tmp_path / 'mask.mat'}:mask04",
        "--ref",
        path,
        "--accel",
        4,
        "-o",
        out,
        "--report",
        rep,
        "-q",
    )
    assert res.returncode == 0, res.stderr
    assert nib.load(out).shape == (NX, NY, 2, NT)
    report = json.loads(rep.read_text())
    assert report["slices"][0]["metrics"]["zerofill"]["full"]["psnr"] > 15
    assert report["summary"]["zerofill"]["challenge"]["psnr"] > 15
    # img4ranking as run4Ranking crops it: central round(x/3) x round(y/2), 2 slices, 3 frames; MATLAB order
    with h5py.File(mat, "r") as f:
        ranking = f["img4ranking"][()].T
        assert f["img4ranking"].attrs["MATLAB_class"] == b"single"
    x0, y0 = NX // 2 - round(NX / 3) // 2, NY // 2 - round(NY / 2) // 2
    expected = nib.load(out).get_fdata()[x0 : x0 + round(NX / 3), y0 : y0 + round(NY / 2), :, :3]
    assert ranking.dtype == np.float32 and ranking.shape == (16, 20, 2, 3)
    np.testing.assert_allclose(ranking, expected, rtol=1e-6)


def test_save_mat_needs_the_ranked_slices(tmp_path, full_file):
    path, _ = full_file
    out, mat = tmp_path / "cine.nii.gz", tmp_path / "cine.mat"
    res = run(path, "--accel", 4, "--slices", 1, "--save-mat", mat, "-o", out, "-q")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "inrsr: error: --save-mat writes the challenge's img4ranking, which needs slices 0,1: add 0 to --slices"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make,args,message",
    [
        (
            lambda p: write_v73(p, {"img": np.ones((3, 4), np.float32)}),
            [],
            "no k-space variable found; the file holds",
        ),
        (lambda p: write_v73(p, {"kspace_full": np.ones((3, 4, 5), np.complex64)}), [], "dimensions"),
        (lambda p: write_v5(p, {"kspace_full": np.ones((8, 6, 2, 1, 2))}), [], "real-valued"),
        (lambda p: p.write_bytes(b"garbage" * 20), [], "not a readable"),
        (None, ["--mask", "MASK"], "does not match"),
        (None, ["--accel", 8], "disagrees"),
    ],
)
def test_bad_input_fails_cleanly(tmp_path, make, args, message):
    path = tmp_path / "in.mat"
    if make is not None:
        make(path)
    else:
        k = cine_kspace(16, 12, 2, 2)[0]
        lines = np.zeros(12, bool)
        lines[::4] = True
        lines[4:8] = True
        write_v73(path, {"kspace_sub04": to_matlab([np.where(lines, k, 0)])})
        write_v73(tmp_path / "m.mat", {"mask": np.ones((12, 16))})
        args = [str(tmp_path / "m.mat") if a == "MASK" else a for a in args]
    out = tmp_path / "out.nii.gz"
    res = run(path, "-o", out, "--steps", 2, "-q", *args)
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], res.stderr
    assert not out.exists() and list(tmp_path.glob("*.nii*")) == []


def test_unreliable_slice_is_reported_on_stderr(tmp_path):
    """White-noise k-space: the held-out lines cannot be predicted, and the command says so even with -q."""
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((NT, NC, NX, NY)) + 1j * rng.standard_normal((NT, NC, NX, NY))).astype(np.complex64)
    path, out, rep = tmp_path / "noise.mat", tmp_path / "noise.nii.gz", tmp_path / "noise_report.json"
    write_v73(path, {"kspace_full": to_matlab([noise])})
    res = run(path, "--accel", 4, "--acs", 12, "--steps", 30, "-o", out, "--report", rep, "-q")
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("warning: slice 0: the model predicts the held-out k-space lines no better")
    assert "no better than zero-filling" in json.loads(rep.read_text())["slices"][0]["warning"]
