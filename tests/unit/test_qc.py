"""QC pictures: planes turned to world orientation whatever the voxel order, true aspect, scale bar, PNG files."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from inrsr import qc
from inrsr.geometry import Grid, apply_affine, voxel_grid_world


def world_pattern(shape, affine) -> np.ndarray:
    """x + 10 y + 100 z at every voxel centre: each world axis recognisable in a picture."""
    xyz = voxel_grid_world(shape, affine)
    return (xyz[..., 0] + 10 * xyz[..., 1] + 100 * xyz[..., 2]).astype(np.float32)


RAS = np.diag([1.0, 2.0, 3.0, 1.0])
# The same voxel centres stored another way: axes permuted (voxel i along world z, j along x, k along y) and
# the first two flipped; odd sizes so that the central planes are the same planes.
SHAPE_RAS = (5, 7, 9)
OTHER = np.array([[0.0, -1.0, 0.0, 4.0], [0.0, 0.0, 2.0, 0.0], [-3.0, 0.0, 0.0, 24.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE_OTHER = (9, 5, 7)


def test_other_grid_holds_the_same_voxel_centres():
    a = voxel_grid_world(SHAPE_RAS, RAS).reshape(-1, 3)
    b = voxel_grid_world(SHAPE_OTHER, OTHER).reshape(-1, 3)
    assert sorted(map(tuple, a.round(6))) == sorted(map(tuple, b.round(6)))


def test_planes_run_along_world_axes_whatever_the_voxel_order():
    ras = qc.oriented_planes(qc.slabs(world_pattern(SHAPE_RAS, RAS)), RAS)
    other = qc.oriented_planes(qc.slabs(world_pattern(SHAPE_OTHER, OTHER)), OTHER)
    assert [p.name for p in ras] == ["axial", "coronal", "sagittal"] == [p.name for p in other]
    for a, b in zip(ras, other, strict=True):
        np.testing.assert_allclose(a.image, b.image)
        assert a.extent_mm == pytest.approx(b.extent_mm) and a.letters == b.letters and a.position == b.position
    axial, coronal, sagittal = ras
    # columns run along the lower world axis (increasing to the right), rows along the higher (increasing up)
    np.testing.assert_allclose(np.diff(axial.image, axis=1), 1.0)  # x, 1 mm
    np.testing.assert_allclose(np.diff(axial.image, axis=0), 20.0)  # y, 2 mm
    np.testing.assert_allclose(np.diff(coronal.image, axis=0), 300.0)  # z, 3 mm
    np.testing.assert_allclose(np.diff(sagittal.image, axis=1), 20.0)  # y
    assert axial.letters == ("L", "R", "P", "A") and sagittal.letters == ("P", "A", "I", "S")
    # extents in mm: true aspect (axial is 5 x 1 mm by 7 x 2 mm)
    assert axial.extent_mm == (5.0, 14.0) and coronal.extent_mm == (5.0, 27.0) and sagittal.extent_mm == (14.0, 27.0)
    # each plane passes through the grid's centre voxel: x = 2, y = 6, z = 12 mm
    assert axial.position == "z = 12.0 mm" and coronal.position == "y = 6.0 mm" and sagittal.position == "x = 2.0 mm"


def test_centre_slabs_resample_to_the_same_planes():
    """Resampling onto :func:`qc.centre_slabs` gives what :func:`qc.slabs` cuts from the whole grid."""
    from inrsr.metrics import resample_to_grid
    from inrsr.volume import Volume

    data = world_pattern(SHAPE_OTHER, OTHER)
    volume = Volume(data, OTHER, "v")
    grid = Grid(SHAPE_OTHER, OTHER)
    for slab, sub in zip(qc.slabs(data), qc.centre_slabs(grid), strict=True):
        np.testing.assert_allclose(resample_to_grid(volume, sub, order=1), slab, atol=1e-3)
        centre = apply_affine(sub.affine, np.zeros(3))
        assert np.all(np.isfinite(centre))


def _bar_lengths(fig) -> list[float]:
    return [float(np.ptp(line.get_xdata())) for ax in fig.axes for line in ax.lines]


def test_montage_draws_every_panel_with_a_scale_bar_and_caption(tmp_path):
    data = world_pattern(SHAPE_RAS, RAS)
    rows = [qc.Row("input", qc.slabs(data)), qc.Row("output", qc.slabs(data)), qc.Row("map", qc.slabs(data), "map")]
    fig = qc.volume_montage(rows, RAS, "title", "caption line one\nPSNR 30.00 dB")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 9 and len(fig.axes) == 10  # 3 rows x 3 planes, and the map's colour bar
    # one bar per plane of the first row: the largest 1-2-5 length within a quarter of the plane's width
    assert _bar_lengths(fig) == [qc.nice_length(5.0 / 4), qc.nice_length(5.0 / 4), qc.nice_length(14.0 / 4)]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert "1 mm" in texts and "2 mm" in texts and "caption line one\nPSNR 30.00 dB" in texts
    # grey rows share one window; the map row has its own
    grey = {im.get_clim() for ax in images[:6] for im in ax.images}
    assert len(grey) == 1
    path = tmp_path / "sub" / "qc.png"
    qc.save_png(fig, path)
    pixels = imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[1] == 1100 and pixels.std() > 0.05
    assert [p.name for p in path.parent.iterdir()] == ["qc.png"]  # written atomically, nothing else left


def test_cine_montage(tmp_path):
    rng = np.random.default_rng(0)
    rec = rng.random((24, 20, 7)).astype(np.float32)
    fig = qc.cine_montage(rec * 0.5, rec, (1.5, 2.0), "recon", "R 4")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["frame 0", "frame 2", "frame 4", "x-t profile at y = 10"]
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), 0.5 * rec[:, 10, :])  # zero-filled: x down, t across
    np.testing.assert_allclose(fig.axes[7].images[0].get_array(), rec[:, 10, :])  # the reconstruction's row
    np.testing.assert_allclose(fig.axes[5].images[0].get_array(), rec[:, :, 2].T)  # frame 2: x across, y down
    assert fig.axes[0].images[0].get_extent() == [0.0, 36.0, 40.0, 0.0]  # mm: 24 x 1.5 by 20 x 2
    # the profiles share the frame axis: whole frames, labelled once, under the lower one
    ticks = fig.axes[7].get_xticks()
    assert np.allclose(ticks, np.round(ticks)) and fig.axes[7].get_xlabel() == "frame"
    assert not fig.axes[3].xaxis.get_tick_params()["labelbottom"] and fig.axes[7].xaxis.get_tick_params()["labelbottom"]
    qc.save_png(fig, tmp_path / "cine.png")
    assert imread(str(tmp_path / "cine.png")).shape[1] == 1100
    with pytest.raises(ValueError, match="one shape"):
        qc.cine_montage(rec, rec[:, :, :3], (1, 1), "recon")


def test_failed_save_leaves_nothing(tmp_path):
    fig = qc.cine_montage(np.ones((8, 8, 3)), np.ones((8, 8, 3)), (1, 1), "t")
    fig.savefig = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OSError):
        qc.save_png(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
