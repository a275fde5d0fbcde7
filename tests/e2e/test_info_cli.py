"""``inrsr info`` as a subprocess on NIfTI stacks with known geometry and on k-space .mat files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli import run_cli

from inrsr.io.nifti import save_volume
from inrsr.io.sidecar import write_sidecar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from kspace_synth import cine_kspace, to_matlab, write_v5, write_v73  # noqa: E402

SHAPE = (20, 24, 6)
AXIAL = np.array([[-1.0, 0, 0, 40.0], [0, 1.0, 0, -30.0], [0, 0, 4.0, -12.0], [0, 0, 0, 1]])  # LAS, 4 mm slices


def rotation_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    r = np.eye(4)
    r[:2, :2] = [[c, -s], [s, c]]
    return r


def corners(shape, affine) -> np.ndarray:
    """World positions of the field of view's corners (voxel edges at -0.5 and n - 0.5), computed by hand."""
    edges = [(-0.5, n - 0.5) for n in shape]
    pts = np.array([[i, j, k, 1.0] for i in edges[0] for j in edges[1] for k in edges[2]])
    return (pts @ affine.T)[:, :3]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("info")
    data = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    files = {}
    files["axial"] = d / "axial.nii.gz"
    save_volume(files["axial"], data, AXIAL)
    write_sidecar(files["axial"], {"SliceThickness": 3.0})
    oblique = rotation_z(20.0) @ AXIAL
    files["oblique"] = d / "oblique.nii.gz"
    save_volume(files["oblique"], data, oblique)
    # the axial stack moved by half its width along x, qform only, stored as scaled int16
    shifted = AXIAL.copy()
    shifted[0, 3] += 10.0
    img = nib.Nifti1Image((data * 1000).astype(np.int16), None)
    img.set_qform(shifted, code=1)
    img.set_sform(None, code=0)
    files["shifted"] = d / "shifted.nii"
    nib.save(img, str(files["shifted"]))
    with open(files["shifted"], "r+b") as raw:  # scl_slope, scl_inter at bytes 112 and 116 (nibabel rescales)
        raw.seek(112)
        raw.write(np.array([2.0, 1.0], "<f4").tobytes())
    return {"dir": d, "files": files, "affines": {"axial": AXIAL, "oblique": oblique, "shifted": shifted}}


def test_nifti_description_and_overlap(stacks, tmp_path):
    files, affines = stacks["files"], stacks["affines"]
    out = tmp_path / "info.json"
    proc = run_cli("info", *(str(files[k]) for k in ("axial", "oblique", "shifted")), "--json", str(out))
    for needle in ("axial.nii.gz", "oblique.nii.gz", "LAS", "Overlap", "sidecar", "x 2 + 1", f"wrote {out}"):
        assert needle in proc.stdout, needle
    report = json.loads(out.read_text())
    axial, oblique, shifted = report["files"]
    for entry, key in zip(report["files"], ("axial", "oblique", "shifted"), strict=True):
        assert entry["shape"] == list(SHAPE)
        np.testing.assert_allclose(entry["voxel_size_mm"], [1, 1, 4])
        assert entry["orientation"] == "".join(nib.aff2axcodes(affines[key]))
        assert entry["slice_axis"] == 2 and entry["slice_direction"] == "S"
        c = corners(SHAPE, affines[key])
        np.testing.assert_allclose(entry["bounding_box_mm"]["min"], c.min(axis=0), atol=1e-3)
        np.testing.assert_allclose(entry["bounding_box_mm"]["max"], c.max(axis=0), atol=1e-3)
    assert axial["orientation"] == "LAS"
    assert axial["thickness_mm"] == 3.0 and "sidecar" in axial["thickness_source"]
    assert oblique["thickness_mm"] == 4.0 and "slice spacing" in oblique["thickness_source"]
    assert axial["obliquity_deg"] == 0.0 and oblique["obliquity_deg"] == pytest.approx(20.0, abs=1e-3)
    assert (axial["sform_code"], axial["qform_code"], axial["affine_from"]) == (1, 1, "sform")
    assert (shifted["sform_code"], shifted["qform_code"], shifted["affine_from"]) == (0, 1, "qform")
    assert axial["dtype"] == "float32" and (axial["scl_slope"], axial["scl_inter"]) == (1.0, 0.0)
    assert shifted["dtype"] == "int16" and (shifted["scl_slope"], shifted["scl_inter"]) == (2.0, 1.0)
    overlap = np.asarray(report["overlap"]["fraction_inside"])
    np.testing.assert_allclose(np.diag(overlap), 1.0)
    assert overlap[0, 2] == pytest.approx(0.5) and overlap[2, 0] == pytest.approx(0.5)  # half the width apart
    # the oblique stack (rotated about the world origin): against a Monte-Carlo estimate
    rng = np.random.default_rng(1)
    points = rng.uniform(-0.5, np.asarray(SHAPE) - 0.5, (200_000, 3))
    world = points @ AXIAL[:3, :3].T + AXIAL[:3, 3]
    inv = np.linalg.inv(affines["oblique"])
    in_oblique = world @ inv[:3, :3].T + inv[:3, 3]
    expected = np.mean(np.all((in_oblique >= -0.5) & (in_oblique <= np.asarray(SHAPE) - 0.5), axis=1))
    assert 0.05 < expected < 0.95 and overlap[0, 1] == pytest.approx(expected, abs=0.02)
    assert report["inrsr_version"]


def test_json_to_stdout_is_only_json(stacks):
    proc = run_cli("info", str(stacks["files"]["axial"]), "--json", "-")
    report = json.loads(proc.stdout)
    assert report["files"][0]["orientation"] == "LAS" and "overlap" not in report


def test_kspace_mat_files(tmp_path):
    nx, ny, nt, nc = 16, 32, 4, 3
    lines = np.zeros(ny, bool)
    lines[::4] = True
    lines[14:18] = True  # 4 central lines
    slices = [np.where(lines, cine_kspace(nx, ny, nt, nc, seed=s)[0], 0) for s in range(2)]
    write_v73(tmp_path / "sub.mat", {"kspace_sub04": to_matlab(slices)})
    write_v5(tmp_path / "full.mat", {"kspace_full": to_matlab(slices), "mask04": np.tile(lines, (nx, 1)).astype(float)})
    out = tmp_path / "k.json"
    proc = run_cli("info", str(tmp_path / "sub.mat"), str(tmp_path / "full.mat"), "--json", str(out))
    assert "kspace_sub04" in proc.stdout and "R = 4" in proc.stdout
    sub, full = json.loads(out.read_text())["files"]
    assert sub["format"] == "MATLAB v7.3" and full["format"] == "MATLAB v5"
    assert sub["variables"] == [{"name": "kspace_sub04", "dims": [nx, ny, nc, 2, nt], "type": "complex"}]
    assert sub["kspace"] == {
        "variable": "kspace_sub04", "layout": "(kx, ky, coils, slices, t)", "kx": nx, "ky": ny, "coils": nc,
        "slices": 2, "frames": nt, "accel_in_name": 4,
    }  # fmt: skip
    (mask,) = sub["masks"]
    assert mask["fully_sampled"] is False and mask["regular_step"] == 4 and mask["nominal_accel"] == 4
    assert mask["acs_lines"] == 4 and mask["sampled_ky_lines"] == 11
    assert mask["effective_accel"] == pytest.approx(ny / 11, abs=1e-3)
    # v5: the mask variable is described too; the data here is zero outside the mask as well
    assert [m["source"] for m in full["masks"]] == ["the data (zeros in slice 0)", "variable mask04"]
    assert full["masks"][1]["nominal_accel"] == 4 and full["masks"][1]["acs_lines"] == 4


@pytest.mark.parametrize("kind", ["missing", "text", "garbage_mat", "blocked_json"])
def test_bad_files_give_one_line(stacks, tmp_path, kind):
    args = [str(stacks["files"]["axial"])]
    if kind == "missing":
        args, needle = [str(tmp_path / "nothere.nii.gz")], "no such file"
    elif kind == "text":
        (tmp_path / "notes.nii").write_text("not an image")
        args, needle = [str(tmp_path / "notes.nii")], "notes.nii"
    elif kind == "garbage_mat":
        (tmp_path / "bad.mat").write_bytes(b"garbage" * 20)
        args, needle = [str(tmp_path / "bad.mat")], "bad.mat"
    else:
        (tmp_path / "file").write_text("")
        args, needle = [*args, "--json", str(tmp_path / "file" / "i.json")], "not a directory"
    proc = run_cli("info", *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
