"""Reading and writing NIfTI volumes with correct, explicit geometry."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError, first_line
from ..volume import Volume


def header_affine(img: nib.Nifti1Image, name: str) -> np.ndarray:
    """The voxel -> world affine: the sform, or the qform when the sform code is 0."""
    sform, scode = img.header.get_sform(coded=True)
    if scode and sform is not None and int(scode) > 0:
        return np.asarray(sform, dtype=np.float64)
    qform, qcode = img.header.get_qform(coded=True)
    if qcode and qform is not None and int(qcode) > 0:
        return np.asarray(qform, dtype=np.float64)
    # Neither is set: NIfTI's "method 1", voxel sizes only.
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    return np.diag([*zooms, 1.0])


def open_nifti(path: str | os.PathLike) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a NIfTI file (header now, voxel data when asked for); any problem becomes an :class:`InputError`
    naming the file."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if p.is_dir():
        raise InputError(f"{name}: is a directory, expected a NIfTI file")
    try:
        img = nib.load(name)
    except Exception as exc:  # nibabel raises many types for non-NIfTI input
        raise InputError(f"{name}: not a readable NIfTI file ({first_line(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{name}: not a NIfTI image (found {type(img).__name__})")
    return img


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D NIfTI file into a :class:`Volume`; any problem becomes an :class:`InputError` naming the file."""
    name = str(path)
    p = Path(path)
    img = open_nifti(path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{name}: expected a 3D volume, got {len(img.shape)}D with shape {tuple(img.shape)}")
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as exc:  # truncated gzip, short file
        raise InputError(
            f"{name}: could not read the voxel data, file truncated or corrupt ({first_line(exc)})"
        ) from None
    affine = header_affine(img, name)
    check_not_sheared(affine, name)
    return Volume(data=data, affine=affine, name=name, meta=sidecar_meta(p))


SHEAR_TOLERANCE = 1e-3  # largest |cos| between two voxel axes that counts as orthogonal


def check_not_sheared(affine: np.ndarray, name: str) -> None:
    """Refuse an affine whose voxel axes are not orthogonal (|cos| above :data:`SHEAR_TOLERANCE`).

    Smaller shears (rounding in headers) are accepted as they are.
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms == 0) or not np.all(np.isfinite(linear)):
        return  # Volume's own check reports singular or non-finite affines
    unit = linear / norms
    cos = unit.T @ unit
    off = np.abs(cos - np.diag(np.diag(cos)))
    a, b = np.unravel_index(int(np.argmax(off)), off.shape)
    if off[a, b] > SHEAR_TOLERANCE:
        angle = float(np.degrees(np.arccos(np.clip(cos[a, b], -1.0, 1.0))))
        raise InputError(f"{name}: affine is sheared (angle between voxel axes {angle:.2f} deg); reslice it first")


def sidecar_meta(path: Path) -> dict:
    """``meta`` from the JSON sidecar beside ``path``, if any: the whole sidecar under ``"sidecar"`` and its
    ``SliceThickness`` (validated positive and finite) as ``"thickness_mm"``."""
    from .sidecar import read_sidecar, sidecar_path

    sidecar = read_sidecar(path)
    if not sidecar and not sidecar_path(path).exists():
        return {}
    meta: dict = {"sidecar": sidecar}
    if "SliceThickness" in sidecar:
        value = sidecar["SliceThickness"]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise InputError(f"{sidecar_path(path)}: SliceThickness {value!r} must be a positive number of mm")
        meta["thickness_mm"] = float(value)
    return meta


def to_nifti(data: np.ndarray, affine: np.ndarray, code: int = 1) -> nib.Nifti1Image:
    """A float32 NIfTI image with both sform and qform set and units mm / s.

    ``code`` 1 (scanner) says that ``affine`` is the true position in scanner space; 0 (unknown) keeps only the
    voxel sizes meaningful (readers then use the pixel dimensions alone), for data without known geometry.
    """
    if code not in (0, 1):
        raise ValueError(f"sform/qform code must be 0 (unknown) or 1 (scanner), got {code}")
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(np.float32)
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    from .. import __version__

    img.header["descrip"] = f"inrsr {__version__}".encode()[:80]
    return img


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffixes (``.nii.gz``) so writers pick the right format. A failed or
    interrupted write leaves nothing at ``path`` and removes the temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".gz") else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes owner-only files; follow the umask like open() does
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, code: int = 1) -> None:
    """Write a float32 NIfTI with correct sform/qform (``code`` as in :func:`to_nifti`) atomically (temporary
    file, then rename)."""
    img = to_nifti(data, affine, code)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
