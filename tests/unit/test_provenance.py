"""Provenance sidecars (BIDS derivatives style) beside written NIfTI files."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import numpy as np

from inrsr import __version__
from inrsr.config import Motion
from inrsr.io.nifti import load_volume, save_volume
from inrsr.io.sidecar import command_line, write_provenance


class Kind(enum.Enum):
    PLAIN = "plain"


def test_sidecar_merges_acquisition_entries_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/bin/inrsr", "simulate", "my hr.nii.gz", "-o", "s.nii.gz"])
    out = tmp_path / "s.nii.gz"
    save_volume(out, np.ones((4, 4, 2), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    settings = {"motion": Motion.stack, "kind": Kind.PLAIN, "thickness_mm": np.float32(3.5), "order": np.arange(3),
                "like": Path("a/b")}  # fmt: skip
    side = write_provenance(out, ["my hr.nii.gz"], settings, "a stack", content={"SliceThickness": 3.5})
    assert side == tmp_path / "s.json"
    content = json.loads(side.read_text())
    assert list(content) == ["SliceThickness", "Description", "GeneratedBy", "Sources", "Settings"]
    assert content["GeneratedBy"] == [
        {"Name": "inrsr", "Version": __version__, "CommandLine": "inrsr simulate 'my hr.nii.gz' -o s.nii.gz"}
    ]
    assert content["Sources"] == ["my hr.nii.gz"]
    assert content["Settings"] == {"motion": "stack", "kind": "plain", "thickness_mm": 3.5, "order": [0, 1, 2],
                                   "like": "a/b"}  # fmt: skip
    # the stack's own entries stay readable: its thickness is what fit will use
    assert load_volume(out).meta["thickness_mm"] == 3.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.nii.gz"]


def test_command_line_quotes_what_a_shell_would_need():
    assert command_line(["inrsr", "fit", "a.nii.gz", "--thickness", "4,5", "-o", "x y.nii"]) == (
        "inrsr fit a.nii.gz --thickness 4,5 -o 'x y.nii'"
    )
