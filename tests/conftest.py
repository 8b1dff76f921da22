"""Shared test setup. Without a GPU, Triton kernels run under its CPU interpreter."""
import os
from pathlib import Path

import pytest

# The interpreter's many small numpy matmuls stall on OpenBLAS threads (read when numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the Triton kernels are defined

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "iniknet_official_float64.pt"


@pytest.fixture(scope="session")
def release_fixture():
    """The release's float64 outputs and gradients (../shared/fixtures, never copied into the repo)."""
    path = Path(os.environ.get("INIK_FAST_FIXTURE", FIXTURE))
    if not path.exists():
        pytest.fail(f"fixture {path} is missing: the tests need ../shared/fixtures beside the repo "
                    "(or INIK_FAST_FIXTURE pointing at the file)")
    return torch.load(path, weights_only=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
