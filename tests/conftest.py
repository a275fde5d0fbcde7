import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny problems: one thread avoids the cost of synchronising threads on every small operation."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def recorded_fits(monkeypatch) -> list:
    """The ``FitResult`` of every slice ``reconstruct_slice`` fits during the test, in order (history included)."""
    from inrsr.recon import solver

    fits, real = [], solver.fit_slice
    monkeypatch.setattr(solver, "fit_slice", lambda *a, **kw: fits.append(real(*a, **kw)) or fits[-1])
    return fits
