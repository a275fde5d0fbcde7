"""Every command checks every output path before any work: an unwritable output gives exit code 2, one line on
stderr, nothing else printed (no progress, no table) and nothing written. The real CLI, as a subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cli import run_cli
from phantom import phantom, write_orthogonal_stacks

from inrsr.io.nifti import save_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from kspace_synth import cine_kspace, to_matlab, write_v73  # noqa: E402

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Valid inputs for every command: a small volume, three stacks, a folder to train on, a k-space file."""
    d = tmp_path_factory.mktemp("inputs")
    hr = phantom((16, 16, 16))
    save_volume(d / "hr.nii.gz", hr.data, hr.affine)
    stacks = write_orthogonal_stacks(d, hr)
    (d / "train").mkdir()
    save_volume(d / "train" / "a.nii.gz", hr.data, hr.affine)
    write_v73(d / "cine.mat", {"kspace_full": to_matlab([cine_kspace(16, 12, 4, 2)[0]])})
    return {"hr": str(d / "hr.nii.gz"), "stacks": stacks, "train": str(d / "train"), "kspace": str(d / "cine.mat")}


# command, the option that gets the bad path (or "sidecar": the output's JSON sidecar is a directory), its file
CASES = [
    ("fit", "-o", "out.nii.gz"),
    ("fit", "--qc", "qc.png"),
    ("fit", "--report", "r.json"),
    ("fit", "sidecar", ""),
    ("upsample", "-o", "out.nii.gz"),
    ("upsample", "--report", "r.json"),
    ("upsample", "--qc", "qc.png"),
    ("train", "-o", "model.pt"),
    ("train", "--report", "r.json"),
    ("simulate", "-o", "out.nii.gz"),
    ("simulate", "sidecar", ""),
    ("eval", "--json", "m.json"),
    ("eval", "--qc", "qc.png"),
    ("recon", "-o", "out.nii.gz"),
    ("recon", "--save-mat", "r.mat"),
    ("recon", "--report", "r.json"),
    ("recon", "--qc", "qc.png"),
    ("recon", "sidecar", ""),
    ("info", "--json", "info.json"),
]


def command_args(command: str, inputs: dict, output: str | None) -> list[str]:
    """The command with valid inputs and settings that would run (briefly) if the outputs were fine."""
    out = ["-o", output] if output is not None else []
    if command == "fit":
        return ["fit", *inputs["stacks"], *out, "--motion", "none", "--cycles", "1"]
    if command == "upsample":
        return ["upsample", inputs["hr"], *out, "--scale", "2"]
    if command == "train":
        return ["train", inputs["train"], *out, "--epochs", "1", "--steps", "1"]
    if command == "simulate":
        return ["simulate", inputs["hr"], *out, "--thickness", "3"]
    if command == "eval":
        return ["eval", inputs["hr"], inputs["hr"]]
    if command == "recon":
        return ["recon", inputs["kspace"], *out, "--accel", "2", "--acs", "4", "--steps", "5"]
    return ["info", inputs["hr"]]


@pytest.mark.parametrize("command,option,name", CASES, ids=[f"{c}{o}" for c, o, _ in CASES])
def test_unwritable_output_fails_at_once(inputs, tmp_path, command, option, name):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    primary = {"train": "ok.pt"}.get(command, "ok.nii.gz")
    if option == "sidecar":
        (tmp_path / "out.json").mkdir()  # the sidecar of out.nii.gz cannot be written
        bad, expect = tmp_path / "out.nii.gz", tmp_path / "out.json"
        args = command_args(command, inputs, str(bad))
    else:
        bad = expect = blocker / "sub" / name
        if option == "-o":
            args = command_args(command, inputs, str(bad))
        else:
            output = None if command in ("eval", "info") else str(tmp_path / primary)
            args = [*command_args(command, inputs, output), option, str(bad)]
    before = sorted(os.listdir(tmp_path))

    proc = run_cli(*args, check=False, env=ENV)

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line: no progress output, no traceback
    assert lines[0].startswith("inrsr: error: ") and str(expect) in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing computed: no table, no "wrote"
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, no temporary left
    assert not bad.exists()


def test_two_outputs_on_one_file_fail_at_once(inputs, tmp_path):
    """A report given the name of the output's sidecar would be overwritten: refused before any work."""
    out, report = tmp_path / "hr.nii.gz", tmp_path / "hr.json"
    proc = run_cli(*command_args("fit", inputs, str(out)), "--report", str(report), check=False, env=ENV)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sidecar" in lines[0] and "--report" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_good_run_writes_everything(inputs, tmp_path):
    """The same kind of command with writable paths does run (so the failures above are the checks')."""
    out = tmp_path / "sim.nii.gz"
    proc = run_cli(*command_args("simulate", inputs, str(out)), "-q", env=ENV)
    assert proc.returncode == 0 and out.stat().st_size > 0
    assert json.loads((tmp_path / "sim.json").read_text())["Sources"] == [inputs["hr"]]
