"""Reading CMRxRecon-style k-space and masks from MATLAB ``.mat`` files, and writing ``.mat`` results.

Two container formats are read: MATLAB v7.3 (HDF5 with a 512-byte MATLAB header; complex arrays are a compound
dtype with ``real`` and ``imag`` fields; h5py sees the dimensions *reversed*) and MATLAB v5 (``scipy.io``;
MATLAB's own order). Axes are always taken from the format and the variable's layout, never guessed from their
lengths.

Layouts, in MATLAB order:

- multi-coil cine ``(kx, ky, coils, slices, t)`` (``kspace_full``, ``kspace_subNN``, ``kus``; any 5D variable)
- single-coil cine ``(kx, ky, slices, t)`` (``kspace_single_full``, ``kspace_single_subNN``; any 4D variable)

``kx`` is the readout, ``ky`` the phase encode. One slice is returned as ``(t, coils, kx, ky)`` complex64
and read on its own, so a 1 GB file never sits in memory whole (v7.3). Masks are ``(kx, ky)`` or k-t ``(kx,
ky, t)``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, first_line
from .nifti import atomic_path

# Names searched, in this order, when no --key is given.
KSPACE_PATTERNS = (
    r"kspace_full",
    r"kspace_sub\d+",
    r"kus",
    r"kspace_single_full",
    r"kspace_single_sub\d+",
)
MASK_PATTERNS = (r"mask", r"mask\d+")


@dataclass(frozen=True)
class KSpaceInfo:
    """What a k-space variable holds. Sizes follow the MATLAB layout; ``multicoil`` is False for 4D
    single-coil."""

    path: str
    key: str
    version: str  # "7.3" or "5"
    nx: int  # readout (kx)
    ny: int  # phase encode (ky)
    n_coils: int
    n_slices: int
    n_frames: int
    multicoil: bool

    @property
    def name_says_full(self) -> bool:
        """The variable's name marks it as fully sampled (``*_full``)."""
        return self.key.endswith("_full")

    @property
    def name_accel(self) -> int | None:
        """The nominal acceleration written in the variable's name (``kspace_sub08`` -> 8), if any."""
        m = re.fullmatch(r"kspace(?:_single)?_sub(\d+)", self.key)
        return int(m.group(1)) if m else None


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a .mat file")
    return p


class MatFile:
    """A ``.mat`` file opened for reading (v7.3 via h5py, or v5 via scipy), as a context manager.

    ``variables()`` lists the numeric arrays with their MATLAB shapes; ``array(name)`` reads one whole
    (masks); :class:`KSpaceReader` reads k-space slice by slice.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py

        self.path = _check_file(path)
        self._h5 = None
        self._v5: dict[str, Any] | None = None
        try:
            is_h5 = h5py.is_hdf5(str(self.path))
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read the file ({first_line(exc)})") from None
        if is_h5:
            try:
                self._h5 = h5py.File(str(self.path), "r")
            except OSError as exc:
                raise InputError(f"{self.path}: not a readable MATLAB v7.3 file ({first_line(exc)})") from None
            self.version = "7.3"
        else:
            import scipy.io

            try:
                self._v5 = scipy.io.loadmat(str(self.path), mat_dtype=False, squeeze_me=False)
            except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for non-.mat input
                raise InputError(f"{self.path}: not a readable MATLAB .mat file ({first_line(exc)})") from None
            self.version = "5"

    def __enter__(self) -> MatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    # -- listing -------------------------------------------------------------------------------------------
    def variables(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """``name -> (MATLAB shape, kind)`` for the numeric arrays in the file (kind: complex or real
        dtype)."""
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        if self._h5 is not None:
            import h5py

            for name, obj in self._h5.items():
                if name.startswith("#") or not isinstance(obj, h5py.Dataset):
                    continue
                kind = "complex" if _is_compound_complex(obj.dtype) else str(obj.dtype)
                if obj.dtype.kind not in "fiucV" or (obj.dtype.kind == "V" and kind != "complex"):
                    continue
                out[name] = (tuple(reversed(obj.shape)), kind)
        else:
            assert self._v5 is not None
            for name, value in self._v5.items():
                if name.startswith("__") or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiucb":
                    continue
                out[name] = (tuple(value.shape), "complex" if np.iscomplexobj(value) else str(value.dtype))
        return out

    def describe(self) -> str:
        vs = self.variables()
        if not vs:
            return "no numeric arrays"
        return ", ".join(f"{n} {'x'.join(map(str, s))} {k}" for n, (s, k) in vs.items())

    def find(self, patterns: tuple[str, ...], what: str) -> str:
        """The one variable whose name matches the first pattern that matches any; errors list what is
        there."""
        names = list(self.variables())
        for pattern in patterns:
            hits = [n for n in names if re.fullmatch(pattern, n)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InputError(f"{self.path}: several {what} variables ({', '.join(hits)}); choose one with --key")
        raise InputError(f"{self.path}: no {what} variable found; the file holds: {self.describe()}")

    # -- reading -------------------------------------------------------------------------------------------
    def _dataset(self, name: str) -> Any:
        vs = self.variables()
        if name not in vs:
            raise InputError(f"{self.path}: no variable {name!r}; the file holds: {self.describe()}")
        if self._h5 is not None:
            return self._h5[name]
        assert self._v5 is not None
        return self._v5[name]

    def matlab_shape(self, name: str) -> tuple[int, ...]:
        self._dataset(name)
        return self.variables()[name][0]

    def is_complex(self, name: str) -> bool:
        self._dataset(name)
        return self.variables()[name][1] == "complex"

    def array(self, name: str) -> np.ndarray:
        """A whole variable in MATLAB axis order (complex as complex64/128, real as is)."""
        ds = self._dataset(name)
        if self._h5 is not None:
            return _from_h5(ds[()]).transpose()
        return np.asarray(ds)

    def read_index(self, name: str, axis: int, index: int) -> np.ndarray:
        """``array(name)`` indexed at ``index`` along MATLAB axis ``axis``, reading only that part (v7.3)."""
        ds = self._dataset(name)
        if self._h5 is not None:
            ndim = len(ds.shape)
            sel: list[Any] = [slice(None)] * ndim
            sel[ndim - 1 - axis] = index  # h5py axes are reversed
            try:
                part = ds[tuple(sel)]
            except OSError as exc:
                raise InputError(
                    f"{self.path}: cannot read {name!r}, file truncated or corrupt ({first_line(exc)})"
                ) from None
            return _from_h5(part).transpose()
        return np.take(np.asarray(ds), index, axis=axis)


def _is_compound_complex(dtype: np.dtype) -> bool:
    return dtype.names is not None and set(dtype.names) >= {"real", "imag"}


def _from_h5(part: np.ndarray) -> np.ndarray:
    """Compound ``real``/``imag`` records -> complex; real arrays unchanged."""
    if _is_compound_complex(part.dtype):
        real = part["real"]
        out = np.empty(real.shape, dtype=np.complex64 if real.dtype.itemsize <= 4 else np.complex128)
        out.real = real
        out.imag = part["imag"]
        return out
    return np.asarray(part)


class KSpaceReader:
    """Cine k-space in a ``.mat`` file, read one slice at a time. Use as a context manager.

    ``key`` names the variable; without it the known CMRxRecon names are searched (``KSPACE_PATTERNS``).
    """

    def __init__(self, path: str | os.PathLike, key: str | None = None) -> None:
        self.mat = MatFile(path)
        try:
            self.info = self._inspect(key)
        except BaseException:
            self.mat.close()
            raise

    def _inspect(self, key: str | None) -> KSpaceInfo:
        mat = self.mat
        name = key if key is not None else mat.find(KSPACE_PATTERNS, "k-space")
        shape = mat.matlab_shape(name)
        if not mat.is_complex(name):
            kind = mat.variables()[name][1]
            raise InputError(f"{mat.path}: variable {name!r} is real-valued ({kind}); k-space must be complex")
        single_name = "single" in name
        if len(shape) == 5 and not single_name:
            nx, ny, nc, ns, nt = shape
            multicoil = True
        elif len(shape) == 4:
            nx, ny, ns, nt = shape
            nc, multicoil = 1, False
        else:
            expected = "(kx, ky, slices, t)" if single_name else "(kx, ky, coils, slices, t)"
            raise InputError(
                f"{mat.path}: variable {name!r} has {len(shape)} dimensions {shape}; expected {expected} "
                "(multi-coil 5D or single-coil 4D)"
            )
        if min(shape) < 1 or nx < 4 or ny < 4:
            raise InputError(f"{mat.path}: variable {name!r} is too small: {shape}")
        return KSpaceInfo(str(mat.path), name, mat.version, nx, ny, nc, ns, nt, multicoil)

    def __enter__(self) -> KSpaceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.mat.close()

    def read_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` as complex64 ``(t, coils, kx, ky)`` (coils = 1 for single-coil data)."""
        info = self.info
        if not 0 <= index < info.n_slices:
            raise InputError(f"{info.path}: slice {index} out of range (the file has {info.n_slices})")
        axis = 3 if info.multicoil else 2
        part = self.mat.read_index(info.key, axis, index)  # (kx, ky, coils, t) or (kx, ky, t)
        if not info.multicoil:
            part = part[:, :, None, :]
        out = np.ascontiguousarray(part.transpose(3, 2, 0, 1)).astype(np.complex64, copy=False)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{info.path}: slice {index} of {info.key!r} holds NaN or Inf values")
        return out


def read_mask(spec: str) -> tuple[np.ndarray, str]:
    """A mask from ``FILE[:VAR]`` as bool in MATLAB order, ``(kx, ky)`` or ``(kx, ky, t)``, and its variable
    name."""
    path, var = spec, None
    if ":" in spec and not Path(spec).exists():
        path, var = spec.rsplit(":", 1)
    with MatFile(path) as mat:
        name = var if var is not None else _find_mask_name(mat)
        arr = mat.array(name)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: mask {name!r} has shape {arr.shape}; expected (kx, ky) or (kx, ky, t)")
    return arr != 0, name


def _find_mask_name(mat: MatFile) -> str:
    vs = mat.variables()
    try:
        return mat.find(MASK_PATTERNS, "mask")
    except InputError:
        if len(vs) == 1:
            return next(iter(vs))
        raise


_MATLAB_CLASS = {
    np.dtype(np.float32): "single",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "single",
    np.dtype(np.complex128): "double",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int32): "int32",
    np.dtype(np.bool_): "logical",
}


def matlab_header(text: str = "MATLAB 7.3 MAT-file") -> bytes:
    """The 128-byte MATLAB header of a v7.3 file: text padded to 116 bytes, subsystem offset, version,
    'IM'."""
    created = time.strftime("%a %b %d %H:%M:%S %Y")
    line = f"{text}, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    head = line.encode("ascii")[:116].ljust(116, b" ")
    return head + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat73(path: str | os.PathLike, variables: dict[str, np.ndarray]) -> None:
    """Write arrays (MATLAB axis order) to a MATLAB v7.3 file atomically; complex as compound real/imag."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(str(tmp), "w", userblock_size=512, libver="earliest") as f:
            for name, value in variables.items():
                arr = np.asarray(value)
                cls = _MATLAB_CLASS.get(arr.dtype)
                if cls is None:
                    raise ValueError(f"cannot write {arr.dtype} to a .mat file")
                data = arr.transpose()  # MATLAB is column-major: HDF5 sees reversed dimensions
                if np.iscomplexobj(arr):
                    part = np.float32 if arr.dtype == np.complex64 else np.float64
                    rec = np.empty(data.shape, dtype=[("real", part), ("imag", part)])
                    rec["real"], rec["imag"] = data.real, data.imag
                    data = rec
                elif arr.dtype == np.bool_:
                    data = data.astype(np.uint8)
                ds = f.create_dataset(name, data=np.ascontiguousarray(data))
                ds.attrs.create("MATLAB_class", np.bytes_(cls))
                if arr.dtype == np.bool_:
                    ds.attrs.create("MATLAB_int_decode", np.int32(1))
        with open(tmp, "r+b") as raw:
            raw.write(matlab_header().ljust(512, b"\x00"))
