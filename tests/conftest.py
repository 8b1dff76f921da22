"""Shared test setup. Without a GPU, Triton kernels run under its CPU interpreter."""
import os
from pathlib import Path

import pytest

# The interpreter's many small numpy matmuls stall on OpenBLAS threads (read when numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the Triton kernels are defined

# The release's own float64 outputs and gradients (see README "Exactness fixtures"): a small
# configuration carried in the repository, so that every clone checks exactness, and the release
# configuration, too large to carry, read from ../shared beside the checkout.
SMALL_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "iniknet_release_small_float64.pt"
OFFICIAL_FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "iniknet_official_float64.pt"
REQUIRE_ENV = "INIK_FAST_REQUIRE_FIXTURE"  # =1 (CI): a missing release-config fixture fails instead of skipping


def _official_fixture_path() -> Path:
    path = Path(os.environ.get("INIK_FAST_FIXTURE", OFFICIAL_FIXTURE))
    if not path.exists():
        reason = f"release-config fixture {path} is absent (it lives in ../shared/fixtures; INIK_FAST_FIXTURE names another path)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def small_fixture():
    return torch.load(SMALL_FIXTURE, weights_only=True)


@pytest.fixture(scope="session")
def official_fixture():
    return torch.load(_official_fixture_path(), weights_only=True)


@pytest.fixture(params=["small", "official"])
def release_fixture(request):
    """Each exactness test runs on both fixtures: the small one always, the release config when present."""
    return request.getfixturevalue(f"{request.param}_fixture")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def no_tf32():
    """Exact float32 convolutions and matrix products in the model's other layers (GPU tests)."""
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
