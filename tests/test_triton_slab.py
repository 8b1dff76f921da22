"""The row-slab Toeplitz forward (kernels/ikconv_forward_slab.py) against the reference: partial
tiles on both edges, every window size up to G = 9 (K = 19: three column chunks), atom counts that
are not powers of two, O != C, no bias, no residual, a narrower tile than the Toeplitz blocks'."""
import pytest
import torch

from inik_fast import backends, ops
from op_cases import IKCONV_ARGS, cast, ikconv_case, ikconv_run, rel_err, release_op

F32, F64 = torch.float32, torch.float64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {F64: 1e-10, F32: 1e-4}

# B, C, H, W, G, M, O, bias, residual
CASES = {
    "1x1": (1, 1, 1, 1, 1, 1, 1, True, True),
    "ragged": (2, 3, 19, 37, 3, 10, 3, True, True),  # 2 x 3 tiles, the last row and column partial
    "g4_m16_o2": (1, 3, 17, 18, 4, 16, 2, True, False),
    "g2_m7_nobias": (1, 2, 9, 23, 2, 7, 2, False, True),
    "g1_o5_bare": (2, 1, 4, 17, 1, 3, 5, False, False),
    "g9": (1, 1, 5, 7, 9, 3, 1, True, True),
}


@pytest.fixture(scope="module")
def slab():
    reasons = backends.not_supported_reasons("triton", DEVICE, F32)
    if reasons:
        pytest.skip("; ".join(reasons))
    from inik_fast.kernels import ikconv_forward_slab

    return ikconv_forward_slab


def exact_case(name, seed=0):
    B, C, H, W, G, M, O, bias, residual = CASES[name]
    return ikconv_case(B, C, H, W, G, M, O, bias=bias, residual=residual, seed=seed)


def run_slab(slab, case):
    return slab.ikconv_forward_slab(*(case[k] for k in IKCONV_ARGS), case["residual"])


def reference(case):
    return ops.inverse_kernel_conv(*(case[k] for k in IKCONV_ARGS), residual=case["residual"], backend="reference")


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name", list(CASES))
def test_slab_matches_reference(slab, name, dtype):
    exact = exact_case(name)
    y = run_slab(slab, cast(exact, dtype, DEVICE))
    y_ref = reference(exact)
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert rel_err(y, y_ref) <= TOL[dtype], rel_err(y, y_ref)


def test_narrow_tall_tile(slab, monkeypatch):
    """TH 32 x TW 8 (a GPU config): the tile reads only the first TW*M_P columns of T's blocks."""
    if DEVICE == "cuda":
        pytest.skip("the tile is the autotuner's choice on a GPU")
    from inik_fast.kernels import launch

    monkeypatch.setattr(launch, "INTERPRET_TILE", {"TH": 32, "TW": 8})
    exact = ikconv_case(1, 2, 35, 13, 3, 6, 3, residual=False, seed=3)
    assert rel_err(run_slab(slab, exact), reference(exact)) <= TOL[F64]


def half_precision_run(slab, monkeypatch, dtype, half_dots):
    """y with fp32 (half_dots "0") or x.dtype window-sum dots, checked to be within twice plain
    PyTorch's error at that precision."""
    monkeypatch.setenv("INIK_FAST_TRITON_HALF_DOTS", half_dots)
    case = cast(exact_case("g4_m16_o2", seed=1), dtype, DEVICE)
    y_ref = reference(cast(case, F64, "cpu"))
    y = run_slab(slab, case)
    assert y.dtype == dtype
    assert rel_err(y, y_ref) <= 2 * rel_err(release_op(**case), y_ref) + 1e-5
    return y


def test_bfloat16(slab, monkeypatch):
    # Not with bf16 dots: the interpreter computes those wrongly (the im2col kernel's too).
    half_precision_run(slab, monkeypatch, torch.bfloat16, "0")


def test_float16_with_and_without_half_dots(slab, monkeypatch):
    y32 = half_precision_run(slab, monkeypatch, torch.float16, "0")
    y16 = half_precision_run(slab, monkeypatch, torch.float16, "1")
    assert not torch.equal(y16, y32)  # the atoms were rounded to fp16: the flag took effect


def test_empty_image(slab):
    case = cast(ikconv_case(2, 3, 0, 5, 2, 4, 2), F32, DEVICE)
    assert run_slab(slab, case).shape == (2, 2, 0, 5)


def test_triton_backend_runs_slab_when_asked(slab, monkeypatch):
    """INIK_FAST_TRITON_FORWARD=slab routes the triton op's forward here; its gradients still match."""
    calls = []
    real = slab.ikconv_forward_slab
    monkeypatch.setattr(slab, "ikconv_forward_slab", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("INIK_FAST_TRITON_FORWARD", "slab")
    exact = exact_case("g2_m7_nobias", seed=2)
    y, g = ikconv_run(cast(exact, F64, DEVICE), "triton")
    y_ref, g_ref = ikconv_run(exact, "reference")
    assert calls
    assert rel_err(y, y_ref) <= TOL[F64]
    for k, ref in g_ref.items():
        assert (g[k] is None) == (ref is None), k
        if ref is not None:
            assert rel_err(g[k], ref) <= TOL[F64], k
