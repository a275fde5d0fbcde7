"""A small synthetic phantom with edges and spheres, written as real NIfTI files by the tests."""

from __future__ import annotations

import numpy as np

from inrsr.volume import Volume


def phantom(shape: tuple[int, int, int] = (40, 40, 40), spacing_mm: float = 1.0, seed: int = 0) -> Volume:
    """Nested boxes and spheres of different intensities inside a smooth ellipsoidal 'head', 0 outside.

    The affine is oblique-free but has a non-trivial origin and a flipped first axis (LAS-like), so geometry
    mistakes show up.
    """
    rng = np.random.default_rng(seed)
    n = np.asarray(shape)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), -1).astype(np.float64)
    centre = (n - 1) / 2
    r = (grid - centre) / (n / 2)
    head = (r**2).sum(-1) < 0.85
    img = np.where(head, 0.3, 0.0)
    img = img + 0.15 * head * (grid[..., 0] / n[0])  # a gentle gradient
    # a box with sharp edges
    box = np.all(np.abs(grid - centre) < n / 6, axis=-1)
    img[box] = 0.8
    for _ in range(6):
        c = centre + rng.uniform(-0.3, 0.3, 3) * n
        rad = rng.uniform(0.06, 0.12) * n.min()
        ball = ((grid - c) ** 2).sum(-1) < rad**2
        img[ball & head] = rng.uniform(0.45, 1.0)
    affine = np.diag([-spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = [30.0, -20.0, -15.0]
    return Volume(img.astype(np.float32), affine, "phantom")


def write_orthogonal_stacks(folder, hr: Volume, thickness_mm: float = 3.0, noise: float = 0.01) -> list[str]:
    """Simulate an x, a y and a z stack of ``hr`` (seeds 0, 1, 2) into ``folder`` as ``stack_{axis}.nii.gz`` with
    their sidecars (:func:`write_stack`); their paths."""
    from inrsr.simulate import simulate_stack

    paths = []
    for i, axis in enumerate("xyz"):
        path = folder / f"stack_{axis}.nii.gz"
        write_stack(path, simulate_stack(hr, axis, thickness_mm, noise=noise, seed=i))
        paths.append(str(path))
    return paths


def write_stack(path, stack: Volume) -> None:
    """Save a simulated stack as ``inrsr simulate`` does: the NIfTI and its acquisition sidecar beside it."""
    from inrsr.io.nifti import save_volume
    from inrsr.io.sidecar import write_sidecar
    from inrsr.simulate import stack_sidecar

    save_volume(path, stack.data, stack.affine)
    write_sidecar(path, stack_sidecar(stack))
