"""Backend selection and argument checking: clear one-line errors, no silent fallback."""
import importlib.util
import os

import pytest
import torch

import inik_fast
from inik_fast import backends, ops
from op_cases import ATOM_BANK_ARGS, IKCONV_ARGS, atom_bank_case, ikconv_case


def call(case, **kw):
    return ops.inverse_kernel_conv(*(case[k] for k in IKCONV_ARGS), residual=case["residual"], **kw)


def test_cpu_backend_is_built_in_this_checkout():
    """`make install` builds the CPU kernels; a broken build must fail CI, not skip the tests."""
    assert backends.not_supported_reasons("cpu", "cpu", torch.float32) == []
    assert inik_fast.available_backends("cpu")[:2] == ["reference", "cpu"]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_interpreter_backend_is_available_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("runs on a CPU-only machine (tests/conftest.py sets TRITON_INTERPRET=1 there)")
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert "triton" in inik_fast.available_backends("cpu", torch.float32)


def test_auto_picks_the_fastest_available_backend(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.resolve("auto", "cpu", torch.float32) == "cpu"
    assert backends.resolve("auto", "cpu", torch.bfloat16) == "cpu"  # half images, computed in float32


def test_environment_overrides_auto(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert backends.resolve("auto", "cpu", torch.float32) == "reference"
    assert backends.resolve("cpu", "cpu", torch.float32) == "cpu"  # an explicit choice wins
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(backends.BackendError, match="backend 'cuda' cannot run"):
        backends.resolve("auto", "cpu", torch.float32)


def test_unavailable_backend_lists_every_backend_and_why():
    case = ikconv_case(1, 3, 4, 4, 1, 2, dtype=torch.float32)
    with pytest.raises(backends.BackendError) as e:
        call(case, backend="cuda")
    msg = str(e.value)
    assert "\n" not in msg
    for b in backends.BACKENDS:
        assert f"{b}: " in msg
    assert "needs cuda tensors, got cpu" in msg
    with pytest.raises(backends.BackendError, match=r"cuda: .*needs cuda tensors, got cpu"):
        call(ikconv_case(1, 3, 4, 4, 1, 2, dtype=torch.float16), backend="cuda")


def test_unknown_backend():
    case = ikconv_case(1, 3, 4, 4, 1, 2)
    with pytest.raises(ValueError, match=r"backend='fast': expected 'auto' or one of"):
        call(case, backend="fast")


BAD_IKCONV = [
    (dict(x=torch.rand(3, 8, 8, dtype=torch.float64)), r"x must be \[B, C, H, W\], got \[3, 8, 8\]"),
    (dict(atoms=torch.rand(2, 3, 4, 4, dtype=torch.float64)), r"atoms must be \[G, M, 2G\+1, 2G\+1\]"),
    (dict(atoms=torch.rand(10, 3, 21, 21, dtype=torch.float64)), r"G in 1\.\.9"),
    (dict(atoms=torch.rand(2, 17, 5, 5, dtype=torch.float64)), r"M in 1\.\.16"),
    (dict(scale=torch.rand(2, 3, 8, 9, dtype=torch.float64)), r"scale must be \[B, G, H, W\] = \[2, 2, 8, 9\], got \[2, 3, 8, 9\]"),
    (dict(basis=torch.rand(2, 3, 9, 9, dtype=torch.float64)), r"basis must be \[B, M, H, W\]"),
    (dict(weight=torch.rand(3, 2, 2, 3, dtype=torch.float64)), r"weight must be \[O, G=2, C=3, M=3\]"),
    (dict(bias=torch.rand(4, dtype=torch.float64)), r"bias must be \[O=3\]"),
    (dict(scale=torch.rand(2, 2, 8, 9)), r"scale has dtype torch.float32; expected x's torch.float64"),
    (dict(weight=torch.rand(3, 2, 3, 3, dtype=torch.float16)), r"weight has dtype torch.float16"),
    (dict(x=torch.zeros(2, 3, 8, 9, dtype=torch.int64)), r"x must be float16, bfloat16, float32 or float64"),
    (dict(basis=[[1.0]]), r"basis must be a torch.Tensor, got list"),
    (dict(x=torch.rand(2, 3, 8, 9, dtype=torch.float64, device="meta")), r"is on cpu but x is on meta"),
]


@pytest.mark.parametrize("change,match", BAD_IKCONV, ids=[m for _, m in BAD_IKCONV])
def test_bad_ikconv_arguments(change, match):
    case = {**ikconv_case(2, 3, 8, 9, 2, 3), **change}
    with pytest.raises((ValueError, TypeError), match=match) as e:
        call(case, backend="reference")
    assert "\n" not in str(e.value)


def test_residual_needs_matching_channels():
    case = ikconv_case(1, 3, 4, 4, 1, 2, O=2, residual=False)
    with pytest.raises(ValueError, match="residual=True needs O == C, got O=2, C=3"):
        ops.inverse_kernel_conv(*(case[k] for k in IKCONV_ARGS), residual=True, backend="reference")


BAD_BANK = [
    (dict(coords=torch.rand(2, 4, 4, 3, dtype=torch.float64)), r"coords must be \[G, 2G\+1, 2G\+1, D\]"),
    (dict(w1=torch.rand(3, 8, 2, dtype=torch.float64)), r"w1 must be \[M, Hd, D=3\]"),
    (dict(w2=torch.rand(3, 8, 7, dtype=torch.float64)), r"w2 must be \[3, 8, 8\], got \[3, 8, 7\]"),
    (dict(omega=torch.rand(3)), r"omega has dtype torch.float32; expected w1's torch.float64"),
    (dict(mask=torch.rand(2, 4, 4, dtype=torch.float64)), r"mask must be \[2, 5, 5\]"),
]


@pytest.mark.parametrize("change,match", BAD_BANK, ids=[m for _, m in BAD_BANK])
def test_bad_atom_bank_arguments(change, match):
    case = {**atom_bank_case(2, 3, Hd=8), **change}
    with pytest.raises((ValueError, TypeError), match=match) as e:
        ops.atom_bank(*(case[k] for k in ATOM_BANK_ARGS), backend="reference")
    assert "\n" not in str(e.value)


def test_missing_extension_is_reported_not_raised(monkeypatch):
    from inik_fast import _extension

    monkeypatch.setattr(_extension, "LOAD_ERROR", "the C++ extension inik_fast._C did not load (test); build it")
    reasons = backends.not_supported_reasons("cpu", "cpu", torch.float32)
    assert reasons == ["the C++ extension inik_fast._C did not load (test); build it"]
    assert "cpu" not in inik_fast.available_backends("cpu")


def test_compiled_arch_token_is_parsed():
    from inik_fast import _extension

    assert _extension.parse_cuda_archs("sm_80.sm_90+PTX") == [(8, 0, "", False), (9, 0, "", True)]
    assert _extension.parse_cuda_archs("sm_90a.sm_120.Ampere") == [(9, 0, "a", False), (12, 0, "", False)]
    assert _extension.parse_cuda_archs("") == []


@pytest.mark.parametrize(
    "compiled,capability,runs",
    [
        ("sm_80.sm_90", (8, 0), True),
        ("sm_80.sm_90", (8, 6), True),  # sm_80 code runs on 8.x
        ("sm_80.sm_90", (7, 5), False),  # T4: no code
        ("sm_80.sm_90", (10, 0), False),  # Blackwell without PTX
        ("sm_80.sm_90+PTX", (12, 0), True),  # PTX is JIT-compiled on newer GPUs
        ("sm_80.sm_90+PTX", (7, 5), False),  # but not on older ones
        ("sm_90a", (9, 0), True),
        ("sm_90a", (9, 1), False),  # arch-specific code runs on that arch only
    ],
)
def test_cuda_availability_follows_the_compiled_archs(monkeypatch, compiled, capability, runs):
    """The "cuda" backend with the compiled arch list and the device's capability patched (no GPU
    needed): unsupported archs give a reason, and "auto" then takes triton, or the reference on
    GPUs older than Triton's kernels support."""
    from inik_fast import _extension

    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(_extension, "LOAD_ERROR", None)
    monkeypatch.setattr(_extension, "has_kernel", lambda op, key: True)
    monkeypatch.setattr(_extension, "cuda_archs", lambda: compiled)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    reasons = backends.not_supported_reasons("cuda", "cuda:0", torch.float32)
    if runs:
        assert reasons == []
        assert backends.resolve("auto", "cuda:0", torch.float32) == "cuda"
    else:
        major, minor = capability
        assert reasons == [
            f"inik_fast._C has no code for compute capability {major}.{minor} (compiled for {compiled}); "
            f"rebuild with TORCH_CUDA_ARCH_LIST={major}.{minor}"
        ]
        triton_runs = capability >= (8, 0) and importlib.util.find_spec("triton") is not None
        assert backends.resolve("auto", "cuda:0", torch.float32) == ("triton" if triton_runs else "reference")
        if capability < (8, 0):
            assert "triton: needs compute capability 8.0 or newer (3xTF32 dots), got 7.5" in str(
                pytest.raises(backends.BackendError, backends.resolve, "triton", "cuda:0", torch.float32).value)
