"""``inrsr recon`` as a subprocess with k-t sampling (simulated, and CMRxRecon 2024 ``kus`` files with a k-t
mask), temporal super-resolution (``--frames``) and the bad input around them."""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from cli import run_cli  # noqa: E402
from kspace_synth import cine_kspace, to_matlab, write_v73  # noqa: E402

from inrsr.recon import masks as M  # noqa: E402
from inrsr.recon.scoring import score_cine  # noqa: E402
from inrsr.recon.solver import zero_filled  # noqa: E402

NX, NY, NT, NC = 48, 40, 8, 4
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny cines: threads would only add synchronisation


def recon(*args, check=True):
    return run_cli("recon", *map(str, args), check=check, env=ONE_THREAD)


@pytest.fixture(scope="module")
def cine():
    return cine_kspace(NX, NY, NT, NC, noise=0.002, seed=0)[0]


@pytest.fixture(scope="module")
def full_file(tmp_path_factory, cine):
    path = tmp_path_factory.mktemp("kt") / "cine_sax.mat"
    write_v73(path, {"kspace_full": to_matlab([cine])})
    return path


def test_help_lists_the_patterns_and_frames():
    out = run_cli("recon", "--help", env={"COLUMNS": "200"}).stdout
    assert "--pattern" in out and "--frames" in out
    for name in ("uniform", "ktuniform", "ktgaussian", "ktradial"):
        assert name in out


def test_simulated_kt_gaussian_sampling(tmp_path, full_file):
    out, rep = tmp_path / "cine.nii.gz", tmp_path / "report.json"
    recon(full_file, "--pattern", "ktGaussian", "--accel", 8, "--acs", 12, "--steps", 120, "-o", out, "--report", rep)
    entry = json.loads(rep.read_text())["slices"][0]
    assert entry["nominal_accel"] == pytest.approx(8, rel=0.1)  # outside the ACS, as the challenge counts it
    assert entry["effective_accel"] == pytest.approx(NX * NY * NT / (NX * (12 * NT + 28)), rel=1e-6)
    assert entry["acs_lines"] == 12
    m = entry["metrics"]
    assert m["inrsr"]["full"]["psnr"] > m["zerofill"]["full"]["psnr"] + 3
    assert nib.load(out).shape == (NX, NY, 1, NT)


def test_llr_race_reports_the_factor_it_chose(tmp_path, full_file):
    """``--llr-race``: both factors' held-out errors in the report, the chosen factor the one with the lower."""
    out, rep = tmp_path / "cine.nii.gz", tmp_path / "report.json"
    recon(full_file, "--pattern", "ktUniform", "--accel", 8, "--acs", 12, "--steps", 160, "--patience", 10,
          "--llr-race", 0.5, "--race-steps", 12, "-o", out, "--report", rep)  # fmt: skip
    entry = json.loads(rep.read_text())["slices"][0]
    first, second = entry["llr_race_holdout"]
    assert entry["llr_factor"] == pytest.approx(0.1 if first <= second else 0.5)
    assert entry["metrics"]["inrsr"]["full"]["psnr"] > entry["metrics"]["zerofill"]["full"]["psnr"] + 3


def test_cmrxrecon_2024_kus_with_a_kt_mask(tmp_path, full_file, cine):
    """A ``kus`` file and a ``mask`` file (MATLAB (kx, ky, t)), as the 2024 challenge ships them: read with the
    mask, and without it (the mask then comes off the zeros of the data), scored against the full k-space."""
    mask = M.pattern_mask("ktUniform", NX, NY, NT, 4, 12)
    write_v73(tmp_path / "cine_sax_kus_ktUniform4.mat", {"kus": to_matlab([np.where(mask[:, None], cine, 0)])})
    write_v73(tmp_path / "cine_sax_mask_ktUniform4.mat", {"mask": mask.transpose(1, 2, 0).astype(np.float64)})
    reports = []
    for extra in (["--mask", tmp_path / "cine_sax_mask_ktUniform4.mat"], []):
        rep = tmp_path / f"r{len(reports)}.json"
        recon(tmp_path / "cine_sax_kus_ktUniform4.mat", "--method", "zerofill", "--ref", full_file,
              "-o", tmp_path / f"zf{len(reports)}.nii.gz", "--report", rep, "-q", *extra)  # fmt: skip
        reports.append(json.loads(rep.read_text()))
    for report in reports:
        entry = report["slices"][0]
        assert report["input"]["key"] == "kus"
        assert entry["nominal_accel"] == pytest.approx(4, rel=0.1) and entry["acs_lines"] == 12
        assert entry["effective_accel"] == pytest.approx(M.effective_accel(mask))
        assert entry["metrics"]["zerofill"]["full"]["psnr"] > 20
    assert reports[0]["slices"][0]["metrics"] == reports[1]["slices"][0]["metrics"]


def test_frames_render_dropped_frames_from_their_neighbours(tmp_path, cine):
    """Only the even frames are acquired (4 of 8, each at R = 4); --frames 8 renders the cycle at twice the frame
    rate. The odd frames, never measured, are scored against the truth, on two draws of the cine: measured 29.04 and
    29.04 dB, against 29.06 and 29.06 dB for linear interpolation of the rendered neighbours and 28.75 and 28.06 dB
    for repeating the previous frame."""
    over_hold, over_linear = [], []
    for seed, full in ((0, cine), (1, cine_kspace(NX, NY, NT, NC, noise=0.002, seed=1)[0])):
        path, out, rep = tmp_path / f"even{seed}.mat", tmp_path / f"sr{seed}.nii.gz", tmp_path / f"sr{seed}_report.json"
        write_v73(path, {"kspace_full": to_matlab([full[::2]])})
        recon(path, "--accel", 4, "--acs", 12, "--steps", 200, "--frames", NT, "-o", out, "--report", rep, "-q")
        img = nib.load(out).get_fdata()[:, :, 0].transpose(2, 0, 1)  # (t, x, y)
        assert img.shape == (NT, NX, NY)
        assert json.loads(rep.read_text())["slices"][0]["frames_rendered"] == NT
        gt = zero_filled(torch.from_numpy(full)).numpy()
        odd = np.arange(1, NT, 2)
        model = score_cine(gt[odd], img[odd])["psnr"]
        over_linear.append(model - score_cine(gt[odd], 0.5 * (img[odd - 1] + img[(odd + 1) % NT]))["psnr"])
        over_hold.append(model - score_cine(gt[odd], img[odd - 1])["psnr"])
    assert np.mean(over_hold) > 0.3, over_hold
    assert min(over_linear) > -1.0, over_linear


def _undersampled(tmp_path, cine):
    mask = M.pattern_mask("ktUniform", NX, NY, NT, 4, 12)
    write_v73(tmp_path / "kus.mat", {"kus": to_matlab([np.where(mask[:, None], cine, 0)])})
    write_v73(tmp_path / "mask7.mat", {"mask": mask.transpose(1, 2, 0)[..., :7].astype(np.float64)})
    return tmp_path / "kus.mat"


@pytest.mark.parametrize(
    "args,message",
    [
        (["KUS", "--mask", "MASK7"], "mask DIR/mask7.mat:mask: 7 frames, but the k-space has 8"),
        (["FULL", "--accel", 4, "--frames", 0], "--frames must be >= 1, got 0"),
        (
            ["FULL", "--accel", 24, "--acs", 24, "--pattern", "ktRadial"],
            "--pattern ktRadial --accel 24 --acs 24: the 40 phase-encode lines leave 16 outside the ACS, fewer than "
            "one line per frame at 24x (it needs at least 48 lines)",
        ),
        (["KUS", "--accel", 4, "--pattern", "ktGaussian"], "this k-space is undersampled"),
        (["FULL", "--accel", 4, "--frames", 16, "--method", "zerofill"], "--frames renders the fitted model"),
        (["FULL", "--accel", 4, "--pattern", "ktUniform", "--llr", -1], "--llr must be >= 0"),
        (["FULL", "--accel", 4, "--acs-motion", -0.5], "--acs-motion must be >= 0"),
        (["FULL", "--accel", 4, "--llr-every", 0], "--llr-every must be >= 1, got 0"),
        (["FULL", "--accel", 4, "--settle-tol", 1.5], "--settle-tol must be in [0, 1), got 1.5"),
        (["FULL", "--accel", 4, "--weight-ramp", -1], "--weight-ramp must be >= 0 (0: lower the weights at once)"),
        (["FULL", "--accel", 4, "--lr-decay", 1.5], "--lr-decay must be in (0, 1] (1: a constant rate), got 1.5"),
        (["FULL", "--accel", 4, "--llr-race", 1.5], "--llr-race must be in [0, 1) and --race-steps >= 1, got 1.5"),
        (["FULL", "--accel", 4, "--race-steps", 0], "--llr-race must be in [0, 1) and --race-steps >= 1"),
    ],
)
def test_bad_kt_and_frames_input_fails_in_one_line(tmp_path, full_file, cine, args, message):
    kus = _undersampled(tmp_path, cine)
    names = {"KUS": kus, "MASK7": tmp_path / "mask7.mat", "FULL": full_file}
    out = tmp_path / "out.nii.gz"
    res = recon(*[names.get(a, a) for a in args], "-o", out, "--steps", 2, "-q", check=False)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and message.replace("DIR", str(tmp_path)) in err[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and list(tmp_path.glob("*.nii*")) == []
