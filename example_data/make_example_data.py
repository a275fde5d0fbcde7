"""Regenerate the example data in this folder from the MNI152 2009 template that ships inside nilearn.

Writes, next to this script (or into ``--out``):

- ``mni_hr_1mm.nii.gz``: the reference, 1 mm isotropic, float32 in [0, 1], cropped to the brain's bounding box
  plus a margin;
- ``mni_brain_mask.nii.gz``: uint8 brain mask on the same grid;
- ``stack_axial.nii.gz``, ``stack_coronal.nii.gz``, ``stack_sagittal.nii.gz``: low-res stacks with 1 x 1 mm
  in-plane voxels and 5 mm slices (5 mm apart, 5 mm thick) along z, y and x, simulated with
  :func:`inrsr.simulate.simulate_stack` (the package's own slice model).

Needs nilearn (``pip install -e ".[data]"``); nothing is downloaded. Run from the repository root::

    python example_data/make_example_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from inrsr.io.nifti import atomic_path, save_volume
from inrsr.simulate import simulate_stack
from inrsr.volume import Volume

HERE = Path(__file__).resolve().parent
#: Stack name -> voxel axis with 5 mm slices (the template's voxel axes are RAS: 0 = x, 1 = y, 2 = z).
STACKS = {"stack_axial": 2, "stack_coronal": 1, "stack_sagittal": 0}
THICKNESS_MM = 5.0
#: Stack intensities are rounded to multiples of 1/QUANT (far below any noise or PSF effect) to help gzip.
QUANT = 1024


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009 T1w template (float32 in [0, 1]), its brain mask (bool) and their shared affine."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    t1 = load_mni152_template(resolution=1)
    mask = load_mni152_brain_mask(resolution=1)
    if not np.allclose(t1.affine, mask.affine) or t1.shape != mask.shape:
        raise RuntimeError("nilearn's template and brain mask are not on the same grid")
    data = np.asarray(t1.get_fdata(dtype=np.float32))
    data = (data - data.min()) / (data.max() - data.min())
    return data.astype(np.float32), np.asarray(mask.dataobj) > 0, np.asarray(t1.affine, dtype=np.float64)


def crop_box(data: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``data > 0`` grown by ``margin`` voxels (clipped to the array)."""
    nz = np.argwhere(data > 0)
    lo = np.maximum(nz.min(axis=0) - margin, 0)
    hi = np.minimum(nz.max(axis=0) + 1 + margin, data.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def cropped_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The affine of ``array[box]``: the same voxel axes, origin moved to the box's first voxel."""
    start = np.array([s.start for s in box], dtype=np.float64)
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return out


def save_mask(path: Path, mask: np.ndarray, affine: np.ndarray) -> None:
    """Write a uint8 mask with sform and qform set (code 1, scanner), atomically."""
    img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    img.header.set_data_dtype(np.uint8)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    parser.add_argument("--margin", type=int, default=4, help="voxels kept around the brain (default 4)")
    parser.add_argument("--noise", type=float, default=0.0, help="stacks' Rician noise (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    args = parser.parse_args(argv)

    data, mask, affine = load_template()
    box = crop_box(data, args.margin)
    affine = cropped_affine(affine, box)
    hr = Volume(data=data[box], affine=affine, name="mni_hr_1mm")
    out = args.out
    save_volume(out / "mni_hr_1mm.nii.gz", hr.data, hr.affine)
    save_mask(out / "mni_brain_mask.nii.gz", mask[box], affine)
    print(f"mni_hr_1mm.nii.gz: shape {hr.shape}, 1 mm isotropic")

    for name, axis in STACKS.items():
        seed = args.seed + axis
        stack = simulate_stack(hr, axis=axis, thickness_mm=THICKNESS_MM, noise=args.noise, seed=seed)
        values = np.round(stack.data * QUANT) / QUANT
        save_volume(out / f"{name}.nii.gz", values.astype(np.float32), stack.affine)
        print(f"{name}.nii.gz: shape {stack.shape}, spacing {np.round(stack.spacing, 3).tolist()} mm")

    total = sum((out / f).stat().st_size for f in ["mni_hr_1mm.nii.gz", "mni_brain_mask.nii.gz"])
    total += sum((out / f"{name}.nii.gz").stat().st_size for name in STACKS)
    print(f"total {total / 1e6:.1f} MB in {out}")


if __name__ == "__main__":
    main()
