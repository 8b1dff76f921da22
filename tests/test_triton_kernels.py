"""Triton-specific checks beyond the shared backend matrix of test_backend_ops.py: the autotune key,
the atomics mode, tiles past the image edge and persistent-grid loops, hidden widths that are not
powers of two, and a full-size image on the GPU."""
import inspect

import pytest
import torch

from inik_fast import backends, ops
from op_cases import IKCONV_ARGS, IKCONV_GRAD_NAMES, atom_bank_case, atom_bank_run, cast, ikconv_case, ikconv_run, rel_err

F32, F64 = torch.float32, torch.float64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def kernels():
    reasons = backends.not_supported_reasons("triton", DEVICE, F32)
    if reasons:
        pytest.skip("; ".join(reasons))
    from inik_fast import kernels

    return kernels


def _ikconv_grads(case, deterministic):
    """y and every gradient of inverse_kernel_conv with the given reduction mode."""
    previous = ops.is_deterministic()
    ops.set_deterministic(deterministic)
    try:
        return ikconv_run(case, "triton")
    finally:
        ops.set_deterministic(previous)


def test_autotune_key_excludes_image_size(kernels):
    from inik_fast.kernels import ikconv_backward, ikconv_forward, launch

    assert not {"B", "H", "W", "Wp", "plane"} & set(launch.TUNE_KEY)
    for kernel in (ikconv_forward._ikconv_forward_kernel, ikconv_backward._ikconv_backward_kernel):
        fn = getattr(kernel, "fn", kernel)
        fn = getattr(fn, "fn", fn)  # Autotuner -> JITFunction -> Python function
        assert set(launch.TUNE_KEY) <= set(inspect.signature(fn).parameters)


@gpu
def test_autotuner_does_not_retune_for_a_new_image_size(kernels):
    from inik_fast.kernels import ikconv_forward

    tuner = ikconv_forward._ikconv_forward_kernel
    sizes = []
    for H, W in ((24, 40), (33, 17)):
        case = ikconv_case(1, 3, H, W, 3, 4, dtype=F32, device="cuda", seed=H)
        ops.inverse_kernel_conv(*(case[k] for k in IKCONV_ARGS), backend="triton")
        sizes.append(len(tuner.cache))
    assert sizes[1] == sizes[0], tuner.cache


def test_atomics_mode_matches_deterministic_mode(kernels):
    case = ikconv_case(2, 3, 21, 19, 3, 5, dtype=F32, device=DEVICE)
    y1, g1 = _ikconv_grads(case, True)
    y2, g2 = _ikconv_grads(case, False)
    assert torch.equal(y1, y2)
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(g2[k], g1[k]) <= 1e-5, k


@pytest.mark.parametrize("dtype", [F64, F32])
def test_many_tiles_with_ragged_edges(kernels, dtype):
    """More tiles than persistent programs, and tiles cut by both image edges."""
    if dtype not in kernels.DTYPES:
        pytest.skip(f"the Triton backend does not compute {dtype}")
    shape = dict(B=2, C=3, H=37, W=29, G=3, M=5, O=2)
    exact = ikconv_case(*shape.values(), residual=False)
    y_ref, g_ref = ikconv_run(exact, "reference")
    y, g = ikconv_run(cast(exact, dtype, DEVICE), "triton")
    tol = 1e-10 if dtype == F64 else 1e-4
    assert rel_err(y, y_ref) <= tol
    for k, ref in g_ref.items():
        if ref is not None:
            assert rel_err(g[k], ref) <= tol, k


@pytest.mark.parametrize("taps", ["16", "32"])
def test_tap_chunks_of_the_gpu_sizes(kernels, taps, monkeypatch):
    """INIK_FAST_TRITON_TAPS: the GPU's chunks of 16 or 32 taps (several per window, a partial last
    one) instead of the interpreter's single chunk of 128, forward and every gradient."""
    monkeypatch.setenv("INIK_FAST_TRITON_TAPS", taps)
    exact = ikconv_case(2, 3, 11, 9, 3, 5, O=2, residual=False)
    y_ref, g_ref = ikconv_run(exact, "reference")
    y, g = ikconv_run(cast(exact, F64, DEVICE), "triton")
    assert rel_err(y, y_ref) <= 1e-10
    for k, ref in g_ref.items():
        if ref is not None:
            assert rel_err(g[k], ref) <= 1e-10, k


@gpu
@pytest.mark.parametrize("env", [
    {"INIK_FAST_TRITON_PINNED_TILE": "16,16,8", "INIK_FAST_TRITON_DX_PROGRAMS": "4"},
    {"INIK_FAST_TRITON_TAPS": "32", "INIK_FAST_TRITON_FORWARD": "slab"},
], ids=["tile-16x16x8-dx4", "taps32-slab"])
def test_gpu_variants_match_reference(kernels, env, monkeypatch):
    """The variants benchmarks/sweep.py times, on a GPU: many tiles with ragged edges."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exact = ikconv_case(2, 3, 70, 45, 7, 10)
    y_ref, g_ref = ikconv_run(exact, "reference")
    y, g = ikconv_run(cast(exact, F32, "cuda"), "triton")
    assert rel_err(y, y_ref) <= 1e-4
    for k, ref in g_ref.items():
        if ref is not None:
            assert rel_err(g[k], ref) <= 1e-4, k


def test_variant_knobs_refuse_bad_values(kernels, monkeypatch):
    from inik_fast.kernels import launch

    monkeypatch.setenv("INIK_FAST_TRITON_TAPS", "24")
    with pytest.raises(ValueError, match="INIK_FAST_TRITON_TAPS='24': expected a power of two >= 16"):
        launch.taps("forward")
    monkeypatch.setenv("INIK_FAST_TRITON_FORWARD", "fft")
    with pytest.raises(ValueError, match="INIK_FAST_TRITON_FORWARD='fft'"):
        launch.forward_variant()
    monkeypatch.setenv("INIK_FAST_TRITON_DX_PROGRAMS", "0")
    with pytest.raises(ValueError, match="INIK_FAST_TRITON_DX_PROGRAMS='0': expected a positive integer"):
        launch.dx_programs_per_sm()


@pytest.mark.parametrize("hidden", [1, 5, 100, 128])
def test_atom_bank_hidden_widths(kernels, hidden):
    dtype = F64 if F64 in kernels.DTYPES else F32
    a_ref, g_ref = atom_bank_run(atom_bank_case(2, 3, hidden), "reference")
    a, g = atom_bank_run(atom_bank_case(2, 3, hidden, dtype=dtype, device=DEVICE), "triton")
    tol = 1e-10 if dtype == F64 else 1e-4
    assert rel_err(a, a_ref) <= tol
    for k in g_ref:
        assert rel_err(g[k], g_ref[k]) <= 10 * tol, k


@gpu
def test_full_size_image_forward(kernels):
    """A 1120 x 1680 image (the DPDD test size): about 2^21 pixels per plane."""
    case = ikconv_case(1, 3, 1120, 1680, 7, 10, dtype=F32, device="cuda")
    args = [case[k] for k in IKCONV_ARGS]
    y = ops.inverse_kernel_conv(*args, backend="triton")
    y_ref = ops.inverse_kernel_conv(*args, backend="reference")
    assert rel_err(y, y_ref) <= 1e-4
