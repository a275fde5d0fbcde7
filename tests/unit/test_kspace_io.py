"""Reading CMRxRecon .mat files (v7.3 laid out as MATLAB writes it, and v5) and writing img4ranking."""

import h5py
import numpy as np
import pytest
from kspace_synth import cine_kspace, to_matlab, write_v5, write_v73

from inrsr.errors import InputError
from inrsr.io.kspace import KSpaceReader, MatFile, read_mask, write_mat73
from inrsr.recon import masks as M


@pytest.fixture(scope="module")
def slices():
    return [cine_kspace(nx=20, ny=12, nt=3, nc=2, seed=s)[0] for s in range(2)]


@pytest.mark.parametrize("writer,version", [(write_v73, "7.3"), (write_v5, "5")])
def test_multicoil_round_trip(tmp_path, slices, writer, version):
    path = tmp_path / "cine_sax.mat"
    writer(path, {"kspace_full": to_matlab(slices)})
    with KSpaceReader(path) as r:
        info = r.info
        assert (info.version, info.key, info.multicoil) == (version, "kspace_full", True)
        assert (info.nx, info.ny, info.n_coils, info.n_slices, info.n_frames) == (20, 12, 2, 2, 3)
        assert info.name_says_full
        for s in range(2):
            np.testing.assert_array_equal(r.read_slice(s), slices[s])


def test_v73_file_has_the_matlab_layout(tmp_path, slices):
    path = tmp_path / "k.mat"
    write_v73(path, {"kspace_sub08": to_matlab(slices)})
    raw = path.read_bytes()[:128]
    assert raw.startswith(b"MATLAB 7.3 MAT-file") and raw[124:128] == b"\x00\x02IM"
    with h5py.File(path, "r") as f:
        assert f["kspace_sub08"].shape == (3, 2, 2, 12, 20)  # reversed: (t, slices, coils, ky, kx)
        assert f["kspace_sub08"].dtype.names == ("real", "imag")
    with KSpaceReader(path) as r:
        assert r.info.name_accel == 8 and not r.info.name_says_full


@pytest.mark.parametrize("writer", [write_v73, write_v5])
def test_single_coil_layout(tmp_path, slices, writer):
    path = tmp_path / "single.mat"
    single = [s[:, :1] for s in slices]
    writer(path, {"kspace_single_full": to_matlab(single, multicoil=False)})
    with KSpaceReader(path) as r:
        assert not r.info.multicoil and r.info.n_coils == 1 and r.info.n_slices == 2
        np.testing.assert_array_equal(r.read_slice(1), single[1])


@pytest.mark.parametrize("writer", [write_v73, write_v5])
def test_ky_and_kx_are_not_swapped(tmp_path, writer):
    """Lines are dropped along ky (MATLAB's 2nd axis); reading must find them on ky, with kx = 20 != ky =
    16."""
    k, _, _ = cine_kspace(nx=20, ny=16, nt=2, nc=2)
    lines = M.challenge_lines(16, 4, 4)
    kus = np.where(lines[None, None, None, :], k, 0)
    path = tmp_path / "sub.mat"
    writer(path, {"kspace_sub04": to_matlab([kus])})
    with KSpaceReader(path) as r:
        got = r.read_slice(0)
    assert got.shape == (2, 2, 20, 16)
    mask = M.mask_from_data(got)
    np.testing.assert_array_equal(mask[0, 0], lines)
    assert M.regular_step(mask) == 4
    assert mask.all(axis=(0, 1)).sum() == lines.sum()  # whole lines along kx


def test_key_option_and_slice_range(tmp_path, slices):
    path = tmp_path / "two.mat"
    write_v73(path, {"kspace_full": to_matlab(slices), "other": to_matlab(slices[:1])})
    with KSpaceReader(path, key="other") as r:
        assert r.info.n_slices == 1
        with pytest.raises(InputError, match="out of range"):
            r.read_slice(1)


def test_masks_read_in_matlab_order(tmp_path):
    m2 = np.zeros((20, 12))
    m2[:, ::4] = 1
    mkt = np.zeros((20, 12, 3))
    mkt[:, 1::3, :] = 1
    write_v73(tmp_path / "m.mat", {"mask04": m2, "mask_kt": mkt})
    got, name = read_mask(str(tmp_path / "m.mat"))
    assert name == "mask04" and got.shape == (20, 12) and got.dtype == bool
    got, _ = read_mask(f"{tmp_path / 'm.mat'}:mask_kt")
    assert got.shape == (20, 12, 3)
    assert M.mask_from_file(got, 20, 12, 3, "kt").shape == (3, 20, 12)
    with pytest.raises(InputError, match="does not match"):
        M.mask_from_file(got, 12, 20, 3, "kt")


def test_errors_are_clear(tmp_path, slices):
    write_v73(tmp_path / "none.mat", {"image": np.ones((4, 5), np.float32)})
    with pytest.raises(InputError, match=r"no k-space variable found; the file holds: image 4x5"):
        KSpaceReader(tmp_path / "none.mat")
    write_v73(tmp_path / "dims.mat", {"kspace_full": slices[0][0]})  # 3D
    with pytest.raises(InputError, match="3 dimensions"):
        KSpaceReader(tmp_path / "dims.mat")
    write_v5(tmp_path / "real.mat", {"kspace_full": np.ones((4, 5, 2, 1, 3))})
    with pytest.raises(InputError, match="real-valued"):
        KSpaceReader(tmp_path / "real.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InputError, match="not a readable"):
        KSpaceReader(tmp_path / "junk.mat")
    with pytest.raises(InputError, match="no such file"):
        KSpaceReader(tmp_path / "missing.mat")


def test_write_mat73_round_trip(tmp_path):
    img = np.random.default_rng(0).random((6, 5, 2, 3)).astype(np.float32)
    write_mat73(tmp_path / "out.mat", {"img4ranking": img})
    assert (tmp_path / "out.mat").read_bytes()[124:128] == b"\x00\x02IM"
    with MatFile(tmp_path / "out.mat") as f:
        assert f.version == "7.3"
        got = f.array("img4ranking")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, img)
    with h5py.File(tmp_path / "out.mat") as f:
        assert f["img4ranking"].attrs["MATLAB_class"] == b"single"
