"""Recipe for the encoder-decoder weights shipped in ``inrsr/weights/arssr_default.pt`` (see docs/model_card.md).

Data (offline, inside nilearn): the MNI152 2009c symmetric template at 1 mm, its T1w image and its grey- and
white-matter probability maps. The split is by height in MNI space, because the template is left-right symmetric
(a left/right split would show the model the mirror image of its test data):

* training: the superior part, world z >= +2 mm, of all three volumes (cortex, ventricles, deep grey matter);
* held out: the inferior part, world z <= -6 mm (temporal lobes, cerebellum, brainstem, orbitofrontal cortex),
  never seen in training; the 8 mm gap keeps the widest PSF (x5, FWHM 5 mm) from reading across it. The
  benchmark (``benchmarks/upsample.py``) and the test crop in ``tests/data`` come from the T1w held-out part.

Usage (about 30 minutes on 2 CPU cores):  python benchmarks/train_default_model.py [--epochs N] [--steps N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from inrsr.arssr.config import ArchConfig, TrainConfig
from inrsr.arssr.data import crop
from inrsr.arssr.train import strip_training_state, train_model
from inrsr.io.nifti import save_volume
from inrsr.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
TRAIN_MIN_Z_MM = 2.0
TEST_MAX_Z_MM = -6.0
#: The shipped architecture: a slim ResCNN so that a whole brain runs in seconds on a CPU.
SHIPPED_ARCH = ArchConfig(
    encoder="rescnn", channels=32, feature_dim=32, blocks=2, depth=3, decoder_width=64, decoder_layers=4
)
#: Tissue maps the random contrasts are drawn from (CSF: the brain mask less grey and white matter).
TISSUES = ("gm", "wm", "csf")
EPOCHS, STEPS = 40, 250


def mni_volumes() -> dict[str, Volume]:
    """nilearn's MNI152 2009 T1w, GM and WM at 1 mm (no download), cropped to the brain's box + 4 voxels."""
    import nibabel as nib
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    data = np.asarray(t1.get_fdata(), dtype=np.float32)
    nz = np.argwhere(data > 0)
    lo = np.maximum(nz.min(axis=0) - 4, 0)
    hi = np.minimum(nz.max(axis=0) + 5, data.shape)
    out = {}
    for name, img in (("t1", t1), ("gm", gm), ("wm", wm), ("mask", mask)):
        img = nib.as_closest_canonical(img)
        vol = Volume(np.asarray(img.get_fdata(), dtype=np.float32), img.affine, name=name)
        out[name] = crop(vol, lo, hi - lo)
    # CSF: what the brain mask holds beyond grey and white matter
    csf = np.clip(out["mask"].data - out["gm"].data - out["wm"].data, 0, 1)
    out["csf"] = Volume(csf.astype(np.float32), out["mask"].affine, name="csf")
    return out


def slab(vol: Volume, z_min: float | None = None, z_max: float | None = None) -> Volume:
    """The voxels of ``vol`` (axis-aligned RAS) with world z in ``[z_min, z_max]``."""
    z = vol.affine[2, 2] * np.arange(vol.shape[2]) + vol.affine[2, 3]
    lo = -np.inf if z_min is None else z_min
    hi = np.inf if z_max is None else z_max
    keep = np.flatnonzero((z >= lo) & (z <= hi))
    return crop(vol, np.array([0, 0, keep[0]]), np.array([vol.shape[0], vol.shape[1], len(keep)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "arssr_train"))
    args = parser.parse_args()
    work = Path(args.work)
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "tissues").mkdir(parents=True, exist_ok=True)
    vols = mni_volumes()
    tissues = []
    for name in ("t1", *TISSUES):
        part = slab(vols[name], z_min=TRAIN_MIN_Z_MM)
        path = work / ("train" if name == "t1" else "tissues") / f"{name}_superior.nii.gz"
        save_volume(path, part.data, part.affine)
        if name != "t1":
            tissues.append(path)
        print(f"{name}: training slab {part.shape}")
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, lr=args.lr, arch=SHIPPED_ARCH)
    t0 = time.perf_counter()
    ckpt = work / "arssr_train.pt"
    train_model([work / "train"], ckpt, config, device="cpu", resume=ckpt.exists(), tissues=tissues)
    print(f"trained in {time.perf_counter() - t0:.0f} s")
    target = ROOT / "inrsr" / "weights" / "arssr_default.pt"
    strip_training_state(ckpt, target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()


def write_test_crop(path: Path, centre_mm=(-22.0, -58.0, -32.0), size=(48, 48, 40)) -> Volume:
    """A crop of the held-out T1w part (z <= -6 mm; left cerebellum and occipito-temporal cortex by default),
    intensities rounded to multiples of 1/255 as in the template: the shipped-weights test's data."""
    t1 = slab(mni_volumes()["t1"], z_max=TEST_MAX_Z_MM)
    centre = np.round(np.linalg.solve(t1.affine, [*centre_mm, 1.0])[:3]).astype(int)
    part = crop(t1, centre - np.asarray(size) // 2, np.asarray(size))
    z_top = part.affine[2, 3] + part.affine[2, 2] * (part.shape[2] - 1)
    assert z_top <= TEST_MAX_Z_MM and part.data.max() > 0, "the crop must lie in the held-out part"
    save_volume(path, np.round(part.data * 255) / 255, part.affine)
    return part
