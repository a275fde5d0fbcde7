"""The CLI boundary: CUDA out-of-memory as one line with the memory asked for and a hint; output checks done
before any work (several outputs on one file, a sidecar that cannot be written)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer

from inrsr.cli.common import JSON, NIFTI, PNG, check_outputs, gpu_memory_message, handle_errors
from inrsr.errors import InputError
from inrsr.io.nifti import save_volume

MESSAGE = (
    "CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0 has a total capacity of 15.77 GiB of which 1.25 GiB "
    "is free. Including non-PyTorch memory, this process has 14.51 GiB memory in use."
)


def test_the_out_of_memory_error_exists_on_cpu_builds():
    exc = torch.cuda.OutOfMemoryError(MESSAGE)
    assert isinstance(exc, RuntimeError) and str(exc) == MESSAGE


def test_eval_reports_gpu_out_of_memory_as_one_line(tmp_path, monkeypatch, capsys):
    """A CUDA OOM raised deep inside a command: exit code 1, one line with the sizes and what to do."""
    import inrsr.metrics
    from inrsr.cli.eval import eval_command

    save_volume(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.float32), np.eye(4))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(MESSAGE)

    monkeypatch.setattr(inrsr.metrics, "compare_volumes", out_of_memory)
    with pytest.raises(typer.Exit) as exit_info:
        eval_command(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz")
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("inrsr: error: out of GPU memory: tried to allocate 3.50 GiB (GPU 0: 1.25 GiB free of ")
    assert "--device cpu" in err[0] and "Traceback" not in err[0]


def test_old_style_runtime_error_and_unknown_sizes():
    line = gpu_memory_message(RuntimeError("CUDA out of memory (something else)"))
    assert line is not None and line.startswith("out of GPU memory; run with --device cpu")


def test_other_runtime_errors_are_not_swallowed():
    @handle_errors
    def broken() -> None:
        raise RuntimeError("a programming error")

    with pytest.raises(RuntimeError, match="a programming error"):
        broken()


def test_outputs_on_one_file_are_refused(tmp_path):
    out = tmp_path / "hr.nii.gz"
    with pytest.raises(InputError, match="sidecar of -o .*--report"):
        check_outputs(("-o", out, NIFTI), ("--report", tmp_path / "hr.json", JSON))
    with pytest.raises(InputError, match="both -o"):
        check_outputs(("-o", out, NIFTI), ("--uncertainty", tmp_path / "." / "hr.nii.gz", NIFTI))
    with pytest.raises(InputError, match="sidecar"):
        check_outputs(("-o", out, NIFTI), ("--output-mask", tmp_path / "hr.nii", NIFTI))  # both sidecars: hr.json
    check_outputs(("-o", out, NIFTI), ("--report", tmp_path / "report.json", JSON), ("--qc", None, PNG))
    assert list(tmp_path.iterdir()) == []  # checking writes nothing


def test_unwritable_sidecar_is_named(tmp_path):
    (tmp_path / "hr.json").mkdir()
    with pytest.raises(InputError, match=r"hr.json: is a directory.*\(the JSON sidecar of .*hr.nii.gz\)"):
        check_outputs(("-o", tmp_path / "hr.nii.gz", NIFTI))
    with pytest.raises(InputError, match="must end with .png"):
        check_outputs(("--qc", tmp_path / "qc.jpg", PNG))
