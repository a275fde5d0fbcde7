"""JSON sidecars beside NIfTI files, the slice thickness that load_volume reads from them, and sheared affines."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from inrsr.errors import InputError
from inrsr.io.nifti import load_volume, save_volume
from inrsr.io.sidecar import read_sidecar, sidecar_path, write_sidecar


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.nii.gz"
    save_volume(path, np.ones((4, 5, 3), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [("s.nii.gz", "s.json"), ("s.nii", "s.json"), ("s.NII.GZ", "s.json"), ("s.json", "s.json"), ("s.img", "s.json")],
)
def test_sidecar_path(tmp_path, name, expected):
    assert sidecar_path(tmp_path / "d.x" / name) == tmp_path / "d.x" / expected


def test_write_then_read_round_trip(stack):
    content = {"SliceThickness": np.float64(3.5), "AcquisitionOrder": np.arange(3), "nested": {"m": np.eye(2)}}
    written = write_sidecar(stack, content)
    assert written == stack.parent / "stack.json"
    expected = {"SliceThickness": 3.5, "AcquisitionOrder": [0, 1, 2], "nested": {"m": [[1, 0], [0, 1]]}}
    assert read_sidecar(stack) == expected
    assert read_sidecar(written) == read_sidecar(stack)
    assert [p.name for p in stack.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_absent_sidecar_is_empty(stack):
    assert read_sidecar(stack) == {}
    vol = load_volume(stack)
    assert vol.meta == {}


def test_load_volume_reads_the_thickness(stack):
    write_sidecar(stack, {"SliceThickness": 3, "Other": "kept"})
    vol = load_volume(stack)
    assert vol.meta["thickness_mm"] == 3.0 and isinstance(vol.meta["thickness_mm"], float)
    assert vol.meta["sidecar"] == {"SliceThickness": 3, "Other": "kept"}


def test_sidecar_without_thickness_is_kept(stack):
    write_sidecar(stack, {"RepetitionTime": 2.0})
    vol = load_volume(stack)
    assert vol.meta == {"sidecar": {"RepetitionTime": 2.0}}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_bad_json_names_the_sidecar(stack, text):
    (stack.parent / "stack.json").write_text(text)
    with pytest.raises(InputError, match=r"stack\.json: (not valid JSON|expected a JSON object)") as err:
        load_volume(stack)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", [0, -2.0, "5", None, True, 1e400])
def test_bad_thickness_names_the_sidecar(stack, value):
    text = json.dumps({"SliceThickness": value}) if value != 1e400 else '{"SliceThickness": Infinity}'
    (stack.parent / "stack.json").write_text(text)
    with pytest.raises(InputError, match=r"stack\.json: SliceThickness .* must be a positive number of mm"):
        load_volume(stack)


def sheared_affine(shear: float) -> np.ndarray:
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[0, 1] = shear  # voxel axis j leans towards world x
    affine[:3, 3] = [5.0, -3.0, 2.0]
    return affine


def write_sform(path, affine):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def test_sheared_affine_is_refused(tmp_path):
    path = write_sform(tmp_path / "sheared.nii.gz", sheared_affine(0.1))
    with pytest.raises(InputError) as err:
        load_volume(path)
    angle = np.degrees(np.arccos(0.1 / np.hypot(1.0, 0.1)))
    assert str(err.value) == f"{path}: affine is sheared (angle between voxel axes {angle:.2f} deg); reslice it first"


def test_tiny_shear_is_accepted_as_is(tmp_path):
    affine = sheared_affine(5e-4)
    vol = load_volume(write_sform(tmp_path / "tiny.nii.gz", affine))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
