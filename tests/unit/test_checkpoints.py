"""Checkpoints: save / load round trips of every model kind, and refusal of anything that is not one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inrsr.config import FitConfig
from inrsr.errors import InputError
from inrsr.fit.inr import field_spec
from inrsr.geometry import Normalization, apply_affine, output_grid
from inrsr.io.checkpoints import FORMAT, FORMAT_VERSION, is_checkpoint, load_checkpoint, save_checkpoint
from inrsr.io.nifti import save_volume
from inrsr.model import CHECKPOINT_KIND, ENCODINGS, SRModel, model_from_checkpoint
from inrsr.simulate import rotation_matrix

SHAPE = (12, 10, 6)


def volume_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix([10, -20, 30]) * np.array([2.0, 2.2, 4.0])
    affine[:3, 3] = [-11.0, 7.0, 20.0]
    return affine


def build_model(encoding: str, seed: int = 0) -> SRModel:
    torch.manual_seed(seed)
    volumes = [(SHAPE, volume_affine())]
    norm = Normalization.from_volumes(volumes)
    lattice = output_grid(volumes, 1.5)
    config = FitConfig(encoding=encoding, levels=4, log2_table_size=12, hidden=8, fourier_features=16)
    spec = field_spec(config, norm, 1.0)
    model = SRModel(spec, norm, lattice, n_stacks=3, intensity_scale=123.5)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        model.base.copy_(torch.rand(model.base.shape, generator=g))
        for p in model.parameters():  # zero_last heads would otherwise make the field exactly 0
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def random_world_points(model: SRModel, n: int = 500) -> torch.Tensor:
    rng = np.random.default_rng(1)
    vox = rng.uniform(-1, np.asarray(model.lattice.shape), size=(n, 3))
    return torch.as_tensor(apply_affine(model.lattice.affine, vox), dtype=torch.float32)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_gives_identical_outputs(tmp_path, encoding):
    model = build_model(encoding)
    if encoding == "hash":
        enc = model.field.encoding
        assert any(enc.dense) and not all(enc.dense)  # both storage kinds go through the checkpoint
    path = tmp_path / "model.pt"
    save_checkpoint(path, CHECKPOINT_KIND, model.state_dict(), {"model": model.metadata()})
    assert is_checkpoint(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    assert payload["format"] == FORMAT and payload["format_version"] == FORMAT_VERSION
    loaded = model_from_checkpoint(payload)
    assert not loaded.training
    pts = random_world_points(model)
    with torch.no_grad():
        expected = model(pts)
        got = loaded(pts)
        assert float(model.residual_at_unit(model.to_unit(pts)).abs().max()) > 1e-3  # the field contributes
    assert torch.equal(got, expected)
    assert torch.equal(loaded.in_support(pts), model.in_support(pts))
    assert loaded.intensity_scale == 123.5
    np.testing.assert_array_equal(loaded.lattice.affine, model.lattice.affine)
    assert loaded.lattice.shape == model.lattice.shape
    np.testing.assert_array_equal(loaded.normalization.rotation, model.normalization.rotation)
    # a fresh model of the same spec (other random init) differs, so the state dict really was restored
    other = build_model(encoding, seed=5)
    with torch.no_grad():
        assert not torch.allclose(other(pts), expected)


def test_state_dict_mismatch_is_an_input_error(tmp_path):
    model = build_model("positional")
    payload = {"metadata": {"model": model.metadata()}, "state_dict": build_model("fourier").state_dict()}
    with pytest.raises(InputError, match="compatible"):
        model_from_checkpoint(payload)
    with pytest.raises(InputError, match="compatible"):
        model_from_checkpoint({"metadata": {}, "state_dict": {}})


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(InputError, match="no such file") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError):
        load_checkpoint(tmp_path)  # a directory


def test_nifti_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "image.nii.gz"
    save_volume(path, np.zeros((3, 3, 3)), np.eye(4))
    assert not is_checkpoint(path)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_other_torch_files_are_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, path)
    assert is_checkpoint(path)
    with pytest.raises(InputError, match="not an inrsr checkpoint"):
        load_checkpoint(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(InputError, match="not an inrsr checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "something-else", "state_dict": {}}, path)
    with pytest.raises(InputError, match="not an inrsr checkpoint"):
        load_checkpoint(path)


def test_newer_format_version_and_wrong_kind(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1, "kind": "fit", "metadata": {},
                "state_dict": {}}, path)
    with pytest.raises(InputError, match="newer"):
        load_checkpoint(path)
    torch.save({"format": FORMAT, "kind": "fit", "metadata": {}, "state_dict": {}}, path)  # no version
    with pytest.raises(InputError, match="version"):
        load_checkpoint(path)
    save_checkpoint(path, "recon", {"w": torch.ones(2)}, {"x": 1})
    with pytest.raises(InputError, match="'recon'") as info:
        load_checkpoint(path, kind="fit")
    assert "'fit'" in str(info.value)
    payload = load_checkpoint(path, kind="recon")
    assert payload["metadata"] == {"x": 1} and torch.equal(payload["state_dict"]["w"], torch.ones(2))
    assert load_checkpoint(path)["kind"] == "recon"  # kind=None accepts any kind


class Opaque:
    """An arbitrary Python object: weights_only loading must not unpickle it."""

    def __init__(self) -> None:
        self.value = 3


class Malicious:
    """Unpickling this would create ``marker``: a stand-in for arbitrary code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"format": FORMAT, "format_version": 1, "kind": "fit", "metadata": Opaque(), "state_dict": {}},
               path)
    with pytest.raises(InputError, match="not a readable inrsr checkpoint"):
        load_checkpoint(path)
    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "format_version": 1, "kind": "fit", "metadata": Malicious(str(marker)),
                "state_dict": {}}, path)
    with pytest.raises(InputError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
