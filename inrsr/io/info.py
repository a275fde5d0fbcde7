"""What ``inrsr info`` reports about a file: a NIfTI header and its sidecar, or a k-space ``.mat`` file.

NIfTI files are described from the header (the voxel data is not read): shape, voxel size, orientation code,
slice axis and thickness, obliquity, world bounding box, sform/qform codes, data type and scaling. ``.mat`` files
are opened with the readers that ``recon`` uses: their variables, the k-space layout and the sampling mask.
Every function returns plain JSON-ready values; problems raise :class:`~inrsr.errors.InputError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import geometry
from ..errors import InputError


def is_mat(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a MATLAB file (by its suffix).

    >>> is_mat("cine_sax.MAT"), is_mat("t1.nii.gz")
    (True, False)
    """
    return str(path).lower().endswith(".mat")


def _affine_source(img: Any) -> str:
    sform_code = int(img.header["sform_code"])
    qform_code = int(img.header["qform_code"])
    if sform_code > 0:
        return "sform"
    if qform_code > 0:
        return "qform"
    return "voxel sizes only"


def obliquity_deg(affine: np.ndarray) -> float:
    """The largest angle (degrees) between a voxel axis and its nearest world axis: 0 for a plumb grid.

    >>> obliquity_deg(np.diag([1.0, 1.0, 5.0, 1.0]))
    0.0
    >>> c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    >>> round(obliquity_deg(np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 4, 0], [0, 0, 0, 1]])), 6)
    20.0
    """
    cosines = np.abs(geometry.direction_cosines(affine))
    return float(np.degrees(np.arccos(np.clip(cosines.max(axis=0), -1.0, 1.0))).max())


def describe_nifti(path: str | os.PathLike) -> dict:
    """The header of a NIfTI file (and its JSON sidecar) as a dict; the voxel data is not read."""
    import nibabel as nib

    from .nifti import SHEAR_TOLERANCE, header_affine, open_nifti, sidecar_meta

    name = str(path)
    img = open_nifti(path)
    shape = [int(n) for n in img.shape]
    if len(shape) < 3:
        raise InputError(f"{name}: expected a 3D or 4D volume, got {len(shape)}D with shape {tuple(shape)}")
    affine = header_affine(img, name)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{name}: the affine is singular or not finite")
    spacing = geometry.voxel_spacing(affine)
    axcodes = "".join(nib.aff2axcodes(affine))
    axis = geometry.slice_axis(affine)
    meta = sidecar_meta(Path(path))
    if "thickness_mm" in meta:
        thickness, source = meta["thickness_mm"], "sidecar SliceThickness"
    else:
        thickness, source = float(spacing[axis]), "slice spacing (no SliceThickness in a sidecar)"
    corners = geometry.world_corners(shape[:3], affine)
    # nibabel moves the header's scaling to the data proxy on load (1 and 0 when the header has none)
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    notes = []
    unit = geometry.direction_cosines(affine)
    cos = np.abs(unit.T @ unit - np.eye(3)).max()
    if cos > SHEAR_TOLERANCE:
        notes.append(f"sheared affine (|cos| {cos:.3g} between voxel axes): reslice it before fit")
    if _affine_source(img).startswith("voxel"):
        notes.append("sform and qform codes 0: no position in scanner space")
    info: dict[str, Any] = {
        "file": name,
        "format": type(img).__name__.replace("Image", "").replace("Nifti", "NIfTI-"),
        "shape": shape,
        "voxel_size_mm": [round(float(v), 6) for v in spacing],
        "orientation": axcodes,
        "slice_axis": axis,
        "slice_direction": axcodes[axis],
        "thickness_mm": round(float(thickness), 6),
        "thickness_source": source,
        "obliquity_deg": round(obliquity_deg(affine), 3),
        "bounding_box_mm": {
            "min": [round(float(v), 3) for v in corners.min(axis=0)],
            "max": [round(float(v), 3) for v in corners.max(axis=0)],
        },
        "affine": np.asarray(affine).tolist(),
        "affine_from": _affine_source(img),
        "sform_code": int(img.header["sform_code"]),
        "qform_code": int(img.header["qform_code"]),
        "dtype": str(img.get_data_dtype()),
        "scl_slope": slope,
        "scl_inter": inter,
        "notes": notes,
    }
    if len(shape) > 3:
        info["time_step"] = float(img.header.get_zooms()[3])
    return info


def pairwise_overlap(infos: list[dict]) -> list[list[float]]:
    """``overlap[i][j]``: the fraction of file i's field of view inside file j's (world space, any orientations),
    from :func:`describe_nifti` results."""
    boxes = [(i["shape"][:3], np.asarray(i["affine"], dtype=np.float64)) for i in infos]
    return [[round(geometry.fov_fraction_inside(a, b), 3) for b in boxes] for a in boxes]


def _mask_summary(mask_tkxky: np.ndarray, source: str) -> dict:
    """Sampling of a ``(t, kx, ky)`` mask: fully sampled or not, ACS lines, nominal and effective acceleration."""
    from ..recon import masks as M

    lines = M.sampled_lines(mask_tkxky)
    start, stop = M.detect_acs(mask_tkxky)
    nominal = M.nominal_accel(mask_tkxky)
    return {
        "source": source,
        "fully_sampled": bool(mask_tkxky.all()),
        "sampled_ky_lines": int(lines[0].sum()) if lines.shape[0] else 0,
        "varies_over_time": bool(not np.all(lines == lines[:1])),
        "acs_lines": int(stop - start),
        "regular_step": M.regular_step(mask_tkxky),
        "nominal_accel": None if nominal is None else round(float(nominal), 3),
        "effective_accel": round(M.effective_accel(mask_tkxky), 3),
    }


def describe_mat(path: str | os.PathLike) -> dict:
    """A k-space ``.mat`` file: its numeric variables (MATLAB dimension order), the k-space layout when one is
    found (coils, slices, frames) and the sampling mask, from a mask variable or else from the data's zeros in
    the first slice."""
    from ..recon import masks as M
    from .kspace import KSPACE_PATTERNS, MASK_PATTERNS, KSpaceReader, MatFile

    name = str(path)
    with MatFile(path) as mat:
        variables = [
            {"name": n, "dims": list(shape), "type": kind} for n, (shape, kind) in mat.variables().items()
        ]
        version = mat.version
        has_kspace = _matches(mat, KSPACE_PATTERNS)
        mask_names = [v["name"] for v in variables if _matches_name(v["name"], MASK_PATTERNS)]
        masks = []
        for mask_name in mask_names:
            arr = np.asarray(mat.array(mask_name))
            arr = np.abs(arr) if np.iscomplexobj(arr) else arr
            if arr.ndim == 2:
                m = arr[None] != 0
            elif arr.ndim == 3:
                m = arr.transpose(2, 0, 1) != 0
            else:
                continue
            masks.append(_mask_summary(m, f"variable {mask_name}"))
    info: dict[str, Any] = {"file": name, "format": f"MATLAB v{version}", "variables": variables, "notes": []}
    if not variables:
        info["notes"].append("no numeric arrays")
    kspace = None
    if has_kspace:
        try:
            with KSpaceReader(path) as reader:
                k = reader.info
                kspace = {
                    "variable": k.key,
                    "layout": "(kx, ky, coils, slices, t)" if k.multicoil else "(kx, ky, slices, t)",
                    "kx": k.nx,
                    "ky": k.ny,
                    "coils": k.n_coils,
                    "slices": k.n_slices,
                    "frames": k.n_frames,
                    "accel_in_name": k.name_accel,
                }
                masks.insert(0, _mask_summary(M.mask_from_data(reader.read_slice(0)), "the data (zeros in slice 0)"))
        except InputError as exc:
            info["notes"].append(str(exc).removeprefix(f"{name}: "))
    info["kspace"] = kspace
    info["masks"] = masks
    return info


def _matches_name(name: str, patterns: tuple[str, ...]) -> bool:
    import re

    return any(re.fullmatch(p, name) for p in patterns)


def _matches(mat: Any, patterns: tuple[str, ...]) -> bool:
    return any(_matches_name(n, patterns) for n in mat.variables())
