"""Super-resolving a whole volume with an encoder-decoder, in overlapping tiles with bounded memory.

Each output voxel centre is mapped voxel -> world (the output grid's affine) -> the input's voxel coordinates
(the inverse of the input's affine), so the output is aligned with the input in world space for any output grid
(``--scale``, ``--spacing``, ``--like``, oblique included). The output grid is cut into blocks; for each block the
encoder runs on the input region its queries fall in plus a halo of ``receptive_radius + 2`` input voxels (the
tiles overlap by twice the halo), so tiles give the same values as one pass over the whole volume. Points outside
the input's field of view (beyond its outer voxel edges) are 0, as in :func:`inrsr.metrics.resample_to_grid`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..geometry import Grid, apply_affine
from ..memory import ensure_memory
from ..progress import Progress
from ..volume import Volume
from .consistency import ConsistencyResult, enforce_consistency
from .model import ArSSR, IntensityNorm

#: Input voxels per tile edge (before the halo) and queries decoded at once.
LR_TILE = 64
QUERY_CHUNK = 1 << 17


def output_scale(volume: Volume, grid: Grid) -> np.ndarray:
    """Per input axis: the input's voxel size over the output's, in that direction (``(3,)``)."""
    out_to_src = np.linalg.solve(volume.affine, grid.affine)
    return 1.0 / np.maximum(np.linalg.norm(out_to_src[:3, :3], axis=1), 1e-12)


def upsample_volume(
    model: ArSSR,
    volume: Volume,
    grid: Grid,
    device: torch.device | str = "cpu",
    lr_tile: int = LR_TILE,
    query_chunk: int = QUERY_CHUNK,
    quiet: bool = True,
) -> tuple[np.ndarray, IntensityNorm]:
    """``volume`` super-resolved onto ``grid``: float32 ``grid.shape`` in the input's intensity units.

    Returns the image and the intensity normalisation used (:class:`IntensityNorm` of the input).
    """
    device = torch.device(device)
    halo = model.receptive_radius + 2
    tile_voxels = (lr_tile + 2 * halo) ** 3
    width = max(model.arch.channels, model.arch.feature_dim) * (3 if model.arch.encoder == "rdn" else 1)
    ensure_memory(
        grid.n_voxels * 4 + volume.data.size * 8 + tile_voxels * width * 4 * 4 + query_chunk * 2048,
        f"super-resolving onto a {grid.shape} grid",
    )
    norm = IntensityNorm.from_data(volume.data)
    lr = torch.from_numpy(norm.forward(volume.data))
    out_to_src = np.linalg.solve(volume.affine, grid.affine)
    scale = torch.as_tensor(output_scale(volume, grid), dtype=torch.float32, device=device)[None]
    src_shape = np.asarray(volume.shape)
    step = np.maximum(np.linalg.norm(out_to_src[:3, :3], axis=0), 1e-12)  # input voxels per output voxel
    block = np.maximum(np.floor(lr_tile / step), 1).astype(int)
    starts = [range(0, n, b) for n, b in zip(grid.shape, block, strict=True)]
    n_blocks = int(np.prod([len(s) for s in starts]))
    out = np.zeros(grid.shape, dtype=np.float32)
    model = model.to(device).eval()
    with torch.no_grad(), Progress(n_blocks, "super-resolving", quiet=quiet) as bar:
        for i0 in starts[0]:
            for j0 in starts[1]:
                for k0 in starts[2]:
                    lo = np.array([i0, j0, k0])
                    hi = np.minimum(lo + block, grid.shape)
                    _block(model, lr, norm, out, out_to_src, lo, hi, halo, src_shape, scale, device, query_chunk)
                    bar.update(1)
    return out, norm


def _block(model, lr, norm, out, out_to_src, lo, hi, halo, src_shape, scale, device, query_chunk) -> None:
    idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    src = apply_affine(out_to_src, idx.reshape(-1, 3))
    inside = np.all((src >= -0.5) & (src <= src_shape - 0.5), axis=1)
    if not inside.any():
        return
    src = src[inside]
    r_lo = np.maximum(np.floor(src.min(axis=0)).astype(int) - halo, 0)
    r_hi = np.minimum(np.ceil(src.max(axis=0)).astype(int) + halo + 1, src_shape)
    region = lr[r_lo[0] : r_hi[0], r_lo[1] : r_hi[1], r_lo[2] : r_hi[2]].to(device)[None, None]
    features = model.encode(region)
    coords = torch.as_tensor(src - r_lo, dtype=torch.float32, device=device)
    values = torch.cat(
        [
            model.decode(region, features, coords[s : s + query_chunk][None], scale)[0]
            for s in range(0, len(coords), query_chunk)
        ]
    )
    flat = np.zeros(len(inside), dtype=np.float32)
    flat[inside] = norm.inverse(values.float().cpu().numpy())
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = flat.reshape(tuple(hi - lo))


def super_resolve(
    model: ArSSR,
    volume: Volume,
    grid: Grid,
    device: torch.device | str = "cpu",
    consistency: bool = True,
    quiet: bool = True,
) -> tuple[np.ndarray, IntensityNorm, ConsistencyResult | None]:
    """:func:`upsample_volume`, then (``consistency``) the data-consistency step of :mod:`.consistency` through
    the input's slice PSF (its sidecar's slice thickness when known)."""
    image, norm = upsample_volume(model, volume, grid, device=device, quiet=quiet)
    if not consistency:
        return image, norm, None
    result = enforce_consistency(image, grid, volume, norm.high, thickness_mm=volume.meta.get("thickness_mm"))
    return result.image, norm, result


def load_model(path: str | os.PathLike | None = None) -> tuple[ArSSR, str]:
    """An encoder-decoder from a checkpoint (``weights_only=True``); the shipped weights when ``path`` is None."""
    from ..errors import InputError
    from ..io.checkpoints import load_checkpoint
    from . import default_weights_path
    from .model import CHECKPOINT_KIND, model_from_payload

    name = str(path) if path is not None else str(default_weights_path())
    if path is None and not Path(name).is_file():
        raise InputError(f"the shipped weights are missing ({name}); reinstall inrsr or pass --model")
    payload = load_checkpoint(name, kind=CHECKPOINT_KIND)
    return model_from_payload(payload, name), name
