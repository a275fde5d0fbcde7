"""`inrsr simulate` with motion and corruption, its JSON sidecar, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli import run_cli
from phantom import phantom

from inrsr.io.nifti import load_volume, save_volume


@pytest.fixture(scope="module")
def hr_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "hr.nii.gz"
    vol = phantom((32, 32, 32))
    save_volume(path, vol.data, vol.affine)
    return path


def test_sidecar_with_motion_and_thickness_read_back(hr_path, tmp_path):
    out = tmp_path / "out" / "stack.nii.gz"
    run_cli(
        "simulate", str(hr_path), "-o", str(out), "--thickness", "3", "--spacing", "4",
        "--motion-stack", "2,0,-3,1,0,0.5", "--motion-slices", "1,0.5", "--corrupt", "2", "--seed", "3", "-q",
    )  # fmt: skip
    side = json.loads((tmp_path / "out" / "stack.json").read_text())
    n = 8
    assert side["SliceThickness"] == 3.0 and side["SpacingBetweenSlices"] == 4.0 and side["SliceAxis"] == 2
    assert side["AcquisitionOrder"] == [0, 2, 4, 6, 1, 3, 5, 7]
    motion = side["SimulatedMotion"]
    assert motion["stack_params"] == [2.0, 0.0, -3.0, 1.0, 0.0, 0.5]
    assert np.asarray(motion["slice_params"]).shape == (n, 6)
    assert np.asarray(motion["slice_to_object"]).shape == (n, 4, 4)
    assert len(motion["centre_mm"]) == 3 and len(set(motion["corrupted_slices"])) == 2
    stack = load_volume(out)
    assert stack.shape == (32, 32, n)
    assert stack.meta["thickness_mm"] == 3.0 and stack.meta["sidecar"] == side
    np.testing.assert_allclose(stack.spacing, [1.0, 1.0, 4.0], atol=1e-6)  # header: the unmoved stack
    assert sorted(p.name for p in out.parent.iterdir()) == ["stack.json", "stack.nii.gz"]


def test_plain_stack_sidecar_has_no_motion(hr_path, tmp_path):
    out = tmp_path / "plain.nii"
    run_cli("simulate", str(hr_path), "-o", str(out), "--axis", "x", "--thickness", "4", "-q")
    side = json.loads((tmp_path / "plain.json").read_text())
    provenance = {"Description", "GeneratedBy", "Sources", "Settings"}
    assert {k: v for k, v in side.items() if k not in provenance} == {
        "SliceThickness": 4.0, "SpacingBetweenSlices": 4.0, "SliceAxis": 0, "AcquisitionOrder": [0, 2, 4, 6, 1, 3, 5, 7]
    }  # fmt: skip
    # one sidecar: the stack's acquisition and, merged into it, how it was made
    assert side["Sources"] == [str(hr_path)] and side["GeneratedBy"][0]["Name"] == "inrsr"
    assert side["Settings"]["axis"] == "x" and side["Settings"]["thickness_mm"] == 4.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--motion-stack", "1,2,3"], "--motion-stack '1,2,3': expected"),
        (["--motion-stack", "a,b,c,d,e,f"], "--motion-stack"),
        (["--motion-slices", "1"], "--motion-slices '1': expected"),
        (["--motion-slices", "1,-2"], "--motion-slices '1,-2': standard deviations must be >= 0"),
        (["--corrupt", "9"], "corrupt 9: the stack has only 8 slices"),
        (["--corrupt", "-1"], "--corrupt -1"),
        (["--rotate", "1,2"], "--rotate '1,2': expected"),
    ],
)
def test_bad_options_fail_on_one_line_without_output(hr_path, tmp_path, args, message):
    out = tmp_path / "bad.nii.gz"
    proc = run_cli("simulate", str(hr_path), "-o", str(out), "--thickness", "4", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inrsr: error:") and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
