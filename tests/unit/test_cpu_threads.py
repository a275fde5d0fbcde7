"""CPU threads: waiting OpenMP workers spin only briefly (a run on shared cores must not crawl), and subnormal
floats are flushed to zero in every thread of the recon fit (its speed must not depend on the image content).

Checked without timing anything: the OpenMP runtime reports its spin count, and half of a subnormal is zero only
where the flag is set, over a tensor large enough to be split between two intra-op threads.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from kspace_synth import cine_kspace

from inrsr.devices import run_flushing_subnormals
from inrsr.recon import api, solver
from inrsr.recon import masks as M

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _surviving_subnormals() -> int:
    """How many halved subnormals stay non-zero, over a tensor the intra-op threads share."""
    x = torch.full((1 << 18,), SUBNORMAL)
    return int((x * 0.5).count_nonzero())


def test_every_worker_thread_flushes_and_the_caller_is_left_alone(two_threads):
    n = 1 << 18
    assert _surviving_subnormals() == n  # the default: subnormals kept
    assert run_flushing_subnormals(_surviving_subnormals) == 0  # all of them flushed, in both threads
    assert _surviving_subnormals() == n  # the caller's state is unchanged
    with torch.no_grad():  # the caller's grad mode carries over
        assert run_flushing_subnormals(torch.is_grad_enabled) is False
    with pytest.raises(ValueError, match="boom"):
        run_flushing_subnormals(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_the_recon_fit_runs_with_subnormals_flushed(two_threads, monkeypatch):
    nx, ny, nt = 24, 20, 4
    k, _, _ = cine_kspace(nx, ny, nt, 2, seed=0)
    mask = M.lines_to_mask(M.challenge_lines(ny, 4, 8), nx, nt)
    seen = []
    real = solver.fit_slice

    def spy(*args, **kwargs):
        seen.append(_surviving_subnormals())
        return real(*args, **kwargs)

    monkeypatch.setattr(solver, "fit_slice", spy)  # read by reconstruct_slice when it runs
    res = api.reconstruct_slice(np.where(mask[:, None], k, 0), mask, api.ReconConfig(steps=2, quiet=True, device="cpu"))
    assert seen == [0] and res.image.shape == (nt, nx, ny)


def _omp_env(**env: str) -> dict[str, str]:
    """The OpenMP settings a fresh interpreter that imports inrsr, then torch, runs with: the environment's, and
    the runtime's own where it displays them."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, inrsr, torch; torch.ones(8).sum(); print(os.environ.get('GOMP_SPINCOUNT'))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env}
    )
    assert proc.returncode == 0, proc.stderr
    shown = dict(
        (line.split("=")[0].strip(), line.split("=")[1].strip(" '")) for line in proc.stderr.splitlines() if "=" in line
    )
    return {"env": proc.stdout.strip(), "runtime": shown.get("GOMP_SPINCOUNT", "")}


def test_openmp_workers_spin_briefly_unless_told_otherwise():
    settings = _omp_env()
    assert settings["env"] == "10000"
    assert settings["runtime"] in ("10000", "")  # "" where the OpenMP runtime does not display its settings
    assert _omp_env(OMP_WAIT_POLICY="PASSIVE")["env"] == "None"  # a policy the user chose is left alone
    assert _omp_env(GOMP_SPINCOUNT="5")["env"] == "5"


def test_flushing_from_the_start_runs_the_fit_in_place():
    code = (
        "import threading, torch\n"
        "from inrsr.devices import flush_subnormals_from_the_start, run_flushing_subnormals, threads_flush_subnormals\n"
        "flush_subnormals_from_the_start()\n"
        "torch.set_num_threads(2)\n"
        "main = threading.get_ident()\n"
        "print(threads_flush_subnormals(), run_flushing_subnormals(threading.get_ident) == main)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]  # every thread flushes, and the fit runs on the caller's thread
