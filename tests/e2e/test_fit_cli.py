"""End-to-end: the real `inrsr` CLI as a subprocess on a synthetic phantom."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli import run_cli
from phantom import phantom, write_orthogonal_stacks, write_stack

from inrsr.io.nifti import load_volume, save_volume
from inrsr.metrics import psnr, resample_to_grid
from inrsr.simulate import simulate_stack


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """A phantom, its mask and three orthogonal 4 mm stacks (simulated in-process as `inrsr simulate` does; that
    command has its own tests)."""
    d = tmp_path_factory.mktemp("fit")
    hr = phantom((40, 40, 40))
    save_volume(d / "hr.nii.gz", hr.data, hr.affine)
    save_volume(d / "mask.nii.gz", (hr.data > 0).astype(np.float32), hr.affine)
    stacks = write_orthogonal_stacks(d, load_volume(d / "hr.nii.gz"), thickness_mm=4.0)
    return {"dir": d, "hr": hr, "stacks": stacks, "mask": hr.data > 0}


def fit(case: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "fit",
        *case["stacks"],
        "-o",
        str(out),
        "--like",
        str(case["dir"] / "hr.nii.gz"),
        "--steps",
        "40",
        "--cycles",
        "2",
        "--seed",
        "3",
        "-q",
        *extra,
    )


def test_fit_beats_interpolation_and_keeps_geometry(case):
    d, hr, mask = case["dir"], case["hr"], case["mask"]
    out = d / "fit.nii.gz"
    fit(case, out, "--save-model", str(d / "model.pt"), "--report", str(d / "report.json"))
    img = nib.load(str(out))
    # geometry: exactly --like's grid, both sform and qform set, float32, mm
    assert img.shape == hr.shape
    np.testing.assert_allclose(img.affine, hr.affine, atol=1e-6)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.header.get_qform(), hr.affine, atol=1e-5)
    assert img.get_data_dtype() == np.float32
    assert img.header.get_xyzt_units()[0] == "mm"

    result = np.asarray(img.dataobj)
    resampled = [resample_to_grid(load_volume(s), hr.grid, order=3) for s in case["stacks"]]
    best_single = max(psnr(r, hr.data, mask) for r in resampled)
    mean_of_stacks = psnr(np.mean(resampled, axis=0), hr.data, mask)
    ours = psnr(result, hr.data, mask)
    assert ours > best_single + 3.0, (ours, best_single)
    assert ours > mean_of_stacks + 2.0, (ours, mean_of_stacks)
    # outside the inputs' support the output is 0
    assert np.all(result[:2, :2, :2] == 0)

    report = __import__("json").loads((d / "report.json").read_text())
    assert len(report["stacks"]) == 3 and all(s["rmse"] < 0.05 for s in report["stacks"])
    assert report["timings"]["total_s"] > 0

    # re-rendering the saved model onto the same grid reproduces the output without refitting
    rerender = d / "rerender.nii.gz"
    run_cli("upsample", str(d / "model.pt"), "-o", str(rerender), "--like", str(d / "hr.nii.gz"), "-q")
    np.testing.assert_allclose(np.asarray(nib.load(str(rerender)).dataobj), result, atol=1e-5)

    # and at a finer spacing: twice the voxels per axis over the same field of view
    fine = d / "fine.nii.gz"
    run_cli("upsample", str(d / "model.pt"), "-o", str(fine), "--spacing", "0.5", "-q")
    fine_img = nib.load(str(fine))
    np.testing.assert_allclose(np.linalg.norm(fine_img.affine[:3, :3], axis=0), 0.5, atol=1e-9)
    assert all(abs(a - 2 * b) <= 2 for a, b in zip(fine_img.shape, hr.shape, strict=True))


def _expect_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def bad_inputs(case, tmp_path) -> dict:
    hr = case["hr"]
    paths = {}
    paths["text"] = tmp_path / "notes.nii.gz"
    paths["text"].write_text("not an image")
    good = Path(case["stacks"][0]).read_bytes()
    paths["truncated"] = tmp_path / "truncated.nii.gz"
    paths["truncated"].write_bytes(good[: len(good) // 2])
    paths["four_d"] = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(paths["four_d"]))
    paths["nan"] = tmp_path / "nan.nii.gz"
    data = hr.data.copy()
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, hr.affine), str(paths["nan"]))
    paths["far"] = tmp_path / "far.nii.gz"
    far = hr.affine.copy()
    far[:3, 3] += 1000.0
    save_volume(paths["far"], hr.data, far)
    paths["singular"] = tmp_path / "singular.nii.gz"
    img = nib.Nifti1Image(hr.data, None)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a zero voxel size: singular
    nib.save(img, str(paths["singular"]))
    assert gzip.decompress  # the truncated file is a real gzip prefix
    return paths


@pytest.mark.parametrize(
    "kind,needles",
    [
        ("missing", ["missing.nii.gz", "no such file"]),
        ("text", ["notes.nii.gz", "NIfTI"]),
        ("truncated", ["truncated.nii.gz"]),
        ("four_d", ["four_d.nii.gz", "4D"]),
        ("nan", ["nan.nii.gz", "NaN"]),
        ("far", ["far.nii.gz", "overlap"]),
        ("singular", ["singular.nii.gz", "singular"]),
    ],
)
def test_bad_input_gives_one_line_and_no_output(case, bad_inputs, tmp_path, kind, needles):
    bad = tmp_path / "missing.nii.gz" if kind == "missing" else bad_inputs[kind]
    out = tmp_path / "out.nii.gz"
    proc = run_cli("fit", case["stacks"][0], str(bad), "-o", str(out), "--steps", "1", "-q", check=False)
    _expect_failure(proc, *needles)
    assert not out.exists()
    assert not any(p.name.startswith(".out.nii.gz") for p in tmp_path.iterdir())


def test_thickness_list_must_match_stacks(case, tmp_path):
    out = tmp_path / "out.nii.gz"
    proc = run_cli("fit", *case["stacks"], "-o", str(out), "--thickness", "4,4", check=False)
    _expect_failure(proc, "--thickness", "3 stacks")
    assert not out.exists()


def test_output_grid_too_large_says_what_it_needs(case, tmp_path):
    out = tmp_path / "out.nii.gz"
    proc = run_cli("fit", *case["stacks"], "-o", str(out), "--spacing", "0.005", check=False)
    _expect_failure(proc, "GiB")
    assert not out.exists()


def test_simulate_writes_correct_geometry(case, tmp_path):
    out = tmp_path / "oblique.nii.gz"
    run_cli(
        "simulate",
        str(case["dir"] / "hr.nii.gz"),
        "-o",
        str(out),
        "--axis",
        "z",
        "--thickness",
        "3",
        "--spacing",
        "4",
        "--rotate",
        "0,0,30",
        "-q",
    )
    img = nib.load(str(out))
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), [1, 1, 4], atol=1e-9)
    hr = case["hr"]
    centre_hr = hr.affine[:3, :3] @ ((np.asarray(hr.shape) - 1) / 2) + hr.affine[:3, 3]
    centre = img.affine[:3, :3] @ ((np.asarray(img.shape) - 1) / 2) + img.affine[:3, 3]
    np.testing.assert_allclose(centre, centre_hr, atol=1e-6)
    cos = abs(img.affine[0, 0]) / 1.0
    assert abs(cos - np.cos(np.radians(30))) < 1e-6


def test_unwritable_output_fails_before_any_work(case, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    for flag, name in (("-o", "out.nii.gz"), ("--uncertainty", "u.nii.gz"), ("--report", "r.json")):
        args = ["-o", str(tmp_path / "ok.nii.gz")] if flag != "-o" else []
        proc = run_cli("fit", *case["stacks"], *args, flag, str(blocker / "sub" / name), check=False)
        _expect_failure(proc, str(blocker))
        assert proc.returncode == 2
        assert "reconstruction" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_fit_corrects_simulated_motion_through_the_cli(case, tmp_path):
    """Stacks simulated with head motion between series: the default fit beats trusting the headers."""
    stacks = []
    source = load_volume(case["dir"] / "hr.nii.gz")
    for axis, motion in zip("xyz", [(0, 0, 0, 0, 0, 0), (5, -3, 4, 2, -2, 2), (-4, 3, -5, -2, 2, -1)], strict=True):
        out = tmp_path / f"moved_{axis}.nii.gz"
        write_stack(out, simulate_stack(source, axis, 3.0, noise=0.01, seed=1, motion_stack=motion))
        stacks.append(str(out))
    like = str(case["dir"] / "hr.nii.gz")
    run_cli("fit", *stacks, "-o", str(tmp_path / "corrected.nii.gz"), "--like", like, "--motion", "stack",
            "--uncertainty", str(tmp_path / "u.nii.gz"), "--output-mask", str(tmp_path / "m.nii.gz"),
            "--report", str(tmp_path / "r.json"), "-q")
    run_cli("fit", *stacks, "-o", str(tmp_path / "headers.nii.gz"), "--like", like, "--no-register",
            "--motion", "none", "-q")
    hr, mask = case["hr"], case["mask"]
    corrected = psnr(np.asarray(nib.load(str(tmp_path / "corrected.nii.gz")).dataobj), hr.data, mask)
    headers = psnr(np.asarray(nib.load(str(tmp_path / "headers.nii.gz")).dataobj), hr.data, mask)
    assert corrected > headers + 3.0, (corrected, headers)
    report = __import__("json").loads((tmp_path / "r.json").read_text())
    assert len(report["stack_registration"]) == 2
    assert report["settings"]["motion"] == "stack"
    assert nib.load(str(tmp_path / "u.nii.gz")).shape == hr.shape
    m = np.asarray(nib.load(str(tmp_path / "m.nii.gz")).dataobj)
    assert set(np.unique(m)) <= {0.0, 1.0} and m[mask].mean() > 0.95


def test_fit_on_a_spacing_covers_the_union_records_its_version_and_is_deterministic(case, tmp_path):
    from inrsr import __version__

    assert run_cli("--version").stdout.strip() == f"inrsr {__version__}"
    out = tmp_path / "v.nii.gz"
    args = ["--spacing", "2", "--motion", "none", "--cycles", "1", "-q"]
    run_cli("fit", *case["stacks"], "-o", str(out), *args, "--report", str(tmp_path / "v_report.json"))
    img = nib.load(str(out))
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 2.0)
    # axis-aligned with the first stack (same direction cosines)
    first = nib.load(case["stacks"][0]).affine
    np.testing.assert_allclose(
        img.affine[:3, :3] / 2.0, first[:3, :3] / np.linalg.norm(first[:3, :3], axis=0), atol=1e-9
    )
    assert all(n >= 20 for n in img.shape)

    assert img.header["descrip"].item().decode() == f"inrsr {__version__}"
    assert __import__("json").loads((tmp_path / "v_report.json").read_text())["inrsr_version"] == __version__
    # the provenance sidecar beside the output (v.json): version, command line, sources, settings
    side = __import__("json").loads((tmp_path / "v.json").read_text())
    (made_by,) = side["GeneratedBy"]
    assert made_by["Name"] == "inrsr" and made_by["Version"] == __version__
    assert made_by["CommandLine"].startswith("inrsr fit ") and f"-o {out}" in made_by["CommandLine"]
    assert side["Sources"] == case["stacks"] and side["Settings"]["motion"] == "none"

    # same seed, same CPU: identical output (stack registration included)
    again = tmp_path / "again.nii.gz"
    run_cli("fit", *case["stacks"], "-o", str(again), *args)
    np.testing.assert_array_equal(np.asarray(nib.load(str(again)).dataobj), np.asarray(img.dataobj))
