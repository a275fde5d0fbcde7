"""NIfTI reading and writing: which header affine is used, bad files, and atomic writes."""

from __future__ import annotations

import gzip
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from inrsr.errors import InputError
from inrsr.io.nifti import atomic_path, load_volume, save_volume


def rigid_affine(angle_deg: float, spacing, origin, flip: bool = False) -> np.ndarray:
    """A rotation about (1, 1, 1) times an anisotropic scale plus a translation (qform-representable)."""
    axis = np.ones(3) / np.sqrt(3)
    t = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    if flip:
        rot[:, 0] = -rot[:, 0]
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = origin
    return affine


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)


def write(path, data, sform=None, scode=0, qform=None, qcode=0):
    img = nib.Nifti1Image(data, None)
    if qform is not None:
        img.set_qform(qform, code=qcode)
    if sform is not None:
        img.set_sform(sform, code=scode)
    nib.save(img, str(path))
    return path


# --- which affine ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scode", [1, 2, 4])
def test_load_uses_sform_when_its_code_is_set(tmp_path, data, scode):
    sform = rigid_affine(20, [1.0, 1.5, 3.0], [10, -20, 5])
    qform = rigid_affine(-35, [0.8, 0.8, 2.0], [-3, 4, 50], flip=True)
    path = write(tmp_path / "s.nii.gz", data, sform, scode, qform, 1)
    hdr = nib.load(str(path)).header
    assert int(hdr["sform_code"]) == scode and int(hdr["qform_code"]) == 1
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, sform, atol=1e-5)
    assert not np.allclose(vol.affine, qform, atol=1e-2)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.name == str(path)


@pytest.mark.parametrize("flip", [False, True])
def test_load_uses_qform_when_sform_code_is_zero(tmp_path, data, flip):
    sform = rigid_affine(20, [1.0, 1.5, 3.0], [10, -20, 5])
    qform = rigid_affine(-35, [0.8, 0.9, 2.0], [-3, 4, 50], flip=flip)
    path = write(tmp_path / "q.nii", data, sform, 0, qform, 1)
    hdr = nib.load(str(path)).header
    assert int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 1
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, qform, atol=1e-5)
    assert np.sign(np.linalg.det(vol.affine[:3, :3])) == (-1 if flip else 1)


def test_load_without_any_form_uses_voxel_sizes(tmp_path, data):
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms((1.5, 2.0, 2.5))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "none.nii"))
    vol = load_volume(tmp_path / "none.nii")
    np.testing.assert_allclose(vol.affine, np.diag([1.5, 2.0, 2.5, 1.0]))


# --- shapes and bad voxels ---------------------------------------------------------------------------------


def test_4d_with_one_volume_loads_as_3d(tmp_path, data):
    affine = rigid_affine(10, [1, 1, 2], [1, 2, 3])
    img = nib.Nifti1Image(data[..., None], affine)
    nib.save(img, str(tmp_path / "one.nii.gz"))
    vol = load_volume(tmp_path / "one.nii.gz")
    assert vol.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.data, data)


def test_real_4d_volume_is_refused(tmp_path, data):
    img = nib.Nifti1Image(np.stack([data, data], axis=-1), np.eye(4))
    path = tmp_path / "four.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(InputError, match="4D") as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_nan_voxels_are_refused(tmp_path, data):
    bad = data.copy()
    bad[1, 2, 3] = np.nan
    bad[0, 0, 0] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(path))
    with pytest.raises(InputError, match="2 NaN or Inf") as info:
        load_volume(path)
    assert str(path) in str(info.value)


# --- unreadable files --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "missing.nii.gz"
    with pytest.raises(InputError, match="no such file") as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_directory_is_refused(tmp_path):
    with pytest.raises(InputError, match="directory") as info:
        load_volume(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_text_file_named_nifti(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(InputError) as info:
        load_volume(path)
    assert str(path) in str(info.value)
    # an uncompressed name too
    plain = tmp_path / "y.nii"
    plain.write_text("not an image either\n" * 40)
    with pytest.raises(InputError) as info:
        load_volume(plain)
    assert str(plain) in str(info.value)


def test_truncated_gzip_nifti(tmp_path):
    data = np.random.default_rng(1).random((20, 20, 20)).astype(np.float32)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(good))
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    # the header is intact: the damage only shows when the voxels are read
    assert nib.load(str(cut)).shape == (20, 20, 20)
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        load_volume(cut)
    assert str(cut) in str(info.value)
    # and a gzip holding a truncated (uncompressed) NIfTI
    short = tmp_path / "short.nii.gz"
    plain = gzip.decompress(raw)
    short.write_bytes(gzip.compress(plain[: len(plain) // 2]))
    with pytest.raises(InputError) as info:
        load_volume(short)
    assert str(short) in str(info.value)


# --- writing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_save_volume_header_and_affine(tmp_path, flip):
    affine = rigid_affine(27, [0.9, 1.1, 3.3], [-12.5, 30.25, 7.0], flip=flip)
    data = np.random.default_rng(2).random((6, 5, 4)) * 100  # float64 in, float32 on disk
    path = tmp_path / "out" / "vol.nii.gz"
    save_volume(path, data, affine)
    assert sorted(os.listdir(tmp_path / "out")) == ["vol.nii.gz"]  # no temporary file left behind
    img = nib.load(str(path))
    hdr = img.header
    assert hdr.get_data_dtype() == np.float32
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
    assert hdr.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(hdr.get_sform(), affine, atol=1e-6)
    np.testing.assert_allclose(hdr.get_qform(), affine, atol=1e-5)
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(vol.data, data.astype(np.float32))


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "v.nii"
    save_volume(path, np.zeros((2, 3, 4)), np.eye(4))
    save_volume(path, np.ones((3, 3, 3)), np.diag([2.0, 2.0, 2.0, 1.0]))
    vol = load_volume(path)
    assert vol.shape == (3, 3, 3) and float(vol.data.min()) == 1.0
    assert os.listdir(tmp_path) == ["v.nii"]


def test_atomic_path_keeps_suffix_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "sub" / "result.nii.gz"
    seen = {}
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            seen["tmp"] = tmp
            assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert not seen["tmp"].exists()
    assert not target.exists()
    assert os.listdir(target.parent) == []
    # an existing file is left untouched by a failed write
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert os.listdir(target.parent) == ["result.nii.gz"]
    # success replaces it
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["result.nii.gz"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_volume(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
        mode = stat.S_IMODE(os.stat(tmp_path / "a.nii.gz").st_mode)
        assert mode & 0o044, oct(mode)  # group and others can read (mkstemp alone gives 0o600)
        assert mode == 0o644
        os.umask(0o077)
        save_volume(tmp_path / "b.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
        assert stat.S_IMODE(os.stat(tmp_path / "b.nii.gz").st_mode) == 0o600
    finally:
        os.umask(old)
