"""Evaluating a fitted model on an output grid, in chunks with bounded memory."""

from __future__ import annotations

import numpy as np
import torch

from .geometry import Grid
from .memory import ensure_memory
from .model import SRModel
from .progress import Progress

BYTES_PER_VOXEL = 4  # the float32 output
CHUNK_VOXELS = 1 << 18


def render(
    model: SRModel,
    grid: Grid,
    device: torch.device | str = "cpu",
    chunk_voxels: int = CHUNK_VOXELS,
    quiet: bool = True,
) -> np.ndarray:
    """The model's image on ``grid`` in the inputs' intensity units: float32 ``grid.shape``, 0 outside support.

    Works through the grid in chunks of ``chunk_voxels`` so that memory stays bounded whatever the grid size.
    """
    ensure_memory(grid.n_voxels * BYTES_PER_VOXEL + chunk_voxels * 4096, f"rendering a {grid.shape} grid")
    device = torch.device(device)
    model = model.to(device).eval()
    out = np.zeros(grid.n_voxels, dtype=np.float32)
    affine = torch.as_tensor(grid.affine, dtype=torch.float64, device=device)
    nx, ny, nz = grid.shape
    n_chunks = (grid.n_voxels + chunk_voxels - 1) // chunk_voxels
    with torch.no_grad(), Progress(n_chunks, "rendering", quiet=quiet) as bar:
        for start in range(0, grid.n_voxels, chunk_voxels):
            flat = torch.arange(start, min(start + chunk_voxels, grid.n_voxels), device=device)
            ijk = torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=-1).to(torch.float64)
            world = (ijk @ affine[:3, :3].T + affine[:3, 3]).to(torch.float32)
            keep = model.in_support(world)
            values = torch.zeros(len(flat), device=device)
            if keep.any():
                values[keep] = model(world[keep]).float()
            out[start : start + len(flat)] = (values * model.intensity_scale).cpu().numpy()
            bar.update(1)
    return out.reshape(grid.shape)
