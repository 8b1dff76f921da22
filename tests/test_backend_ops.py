"""Every fused backend against the reference backend: forward and every gradient, all dtypes,
awkward shapes, opcheck, gradcheck, torch.compile.

A (backend, device) pair is skipped only where it cannot run here (no GPU, dtype unsupported);
test_dispatch.py asserts that the backends this machine must have are really available.
"""
import os

import pytest
import torch

from inik_fast import backends, ops
from op_cases import (
    ATOM_BANK_ARGS,
    ATOM_BANK_GRAD_NAMES,
    BF16,
    F16,
    F32,
    F64,
    IKCONV_ARGS,
    IKCONV_GRAD_NAMES,
    TOL,
    atom_bank_case,
    atom_bank_run,
    cast,
    error_and_bound,
    ikconv_case,
    ikconv_run,
    rel_err,
    release_op,
)

gpu = pytest.mark.gpu
# (backend, device, dtypes it must run): stated here, not read from the backend table under test
TARGETS = [
    pytest.param("reference", "cpu", (F64, F16, BF16, F32), id="reference"),
    pytest.param("cpu", "cpu", (F64, F32, F16, BF16), id="cpu"),
    pytest.param("triton", "cpu", (F64, F32), id="triton-interp"),
    pytest.param("triton", "cuda", (F32, F16, BF16), id="triton-gpu", marks=gpu),
    pytest.param("cuda", "cuda", (F64, F32, F16, BF16), id="cuda", marks=gpu),
]
# name: (B, C, H, W, G, M, O, bias, residual)
SHAPES = {
    "1x1": (1, 3, 1, 1, 1, 1, 3, True, True),
    "odd": (2, 3, 7, 5, 2, 3, 3, True, True),
    "G9": (1, 2, 6, 5, 9, 2, 2, True, True),
    "M16": (1, 3, 6, 7, 1, 16, 3, True, True),
    "M1-C1": (2, 1, 5, 9, 3, 1, 1, True, True),
    "O!=C-nobias": (2, 2, 6, 5, 2, 3, 4, False, False),
    "noresidual": (1, 3, 5, 6, 4, 5, 3, True, False),
    "B3": (3, 3, 9, 8, 3, 4, 3, True, True),
    "release": (2, 3, 16, 16, 7, 10, 3, True, True),
}


def usable(backend, device, dtype):
    """Skip where the pair cannot run on this machine, with the backend's own reasons."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reasons = backends.not_supported_reasons(backend, device, dtype)
    if reasons:
        pytest.skip(f"{backend} on {device} {dtype}: {'; '.join(reasons)}")


def supported(backend, device, dtypes):
    """`dtypes`, after checking that the pair runs every one of them. Skips only where the pair
    cannot run here at all; a dtype dropped from a backend fails instead of skipping its tests."""
    usable(backend, device, None)
    for d in dtypes:
        reasons = backends.not_supported_reasons(backend, device, d)
        assert not reasons, f"{backend} on {device} must run {d}: {'; '.join(reasons)}"
    return list(dtypes)


def case_for(shape, dtype, device, seed=0):
    B, C, H, W, G, M, O, bias, residual = SHAPES[shape]
    return ikconv_case(B, C, H, W, G, M, O, bias=bias, residual=residual, dtype=dtype, device=device, seed=seed)


def check_against_reference(backend, device, dtype, shape, grads=IKCONV_GRAD_NAMES, half_params=False):
    """With `half_params`, atoms, weight and bias come in x's half dtype too, as under
    model.to(float16/bfloat16), instead of float32; their gradients come back in that dtype."""
    usable(backend, device, dtype)
    case = case_for(shape, dtype, device)
    in_x_dtype = ("y", "x", "scale", "basis")
    if half_params:
        case = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        in_x_dtype += ("atoms", "weight", "bias")
    # The truth is the exact result on the inputs and cotangent as rounded to `dtype`, so that the
    # errors below measure the computation, not the rounding of the inputs.
    exact = cast(case, F64, "cpu")
    B, O, H, W = case["x"].shape[0], case["weight"].shape[0], *case["x"].shape[2:]
    cot = torch.randn(B, O, H, W, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype).to(F64)
    y_ref, g_ref = ikconv_run(exact, "reference", cot, grads=grads)
    y, g = ikconv_run(case, backend, cot, grads=grads)
    assert y.shape == y_ref.shape and y.dtype == dtype and y.device.type == device
    plain = None
    if backend == "triton" and dtype in (F16, BF16) and os.environ.get("INIK_FAST_TRITON_HALF_DOTS") != "0":
        # its window sums are fp16/bf16 dots (the atoms rounded to that type): bounded by twice the
        # error of plain PyTorch at that precision (the release's computation in that dtype)
        y_plain, g_plain = ikconv_run(case, None, cot, fn=release_op, grads=grads)
        plain = {"y": y_plain, **g_plain}

    def error(k, got, ref):
        """(error, bound) of result k."""
        return error_and_bound(got, ref, dtype, rounded=k in in_x_dtype, plain=None if plain is None else plain[k])

    err, bound = error("y", y, y_ref)
    assert err <= bound, f"output: {err:.3g} > {bound:.3g}"
    for k, ref in g_ref.items():
        if ref is None:
            assert g[k] is None, k
            continue
        assert g[k].dtype == (dtype if k in in_x_dtype else F64 if dtype == F64 else F32), k
        assert g[k].shape == ref.shape, k
        err, bound = error(k, g[k], ref)
        assert err <= bound, f"d{k}: {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_matches_reference(backend, device, dtypes, shape):
    for dtype in supported(backend, device, dtypes):
        check_against_reference(backend, device, dtype, shape)


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_without_image_grad(backend, device, dtypes):
    """As in training: every gradient but the image's (the backward skips dx)."""
    dtype = supported(backend, device, dtypes)[-1]
    check_against_reference(backend, device, dtype, "odd", grads=("atoms", "scale", "basis", "weight", "bias"))


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_empty_batch(backend, device, dtypes):
    dtype = supported(backend, device, dtypes)[-1]
    case = ikconv_case(0, 3, 5, 4, 2, 3, dtype=dtype, device=device)
    y = ikconv_run(case, backend)[0]
    assert y.shape == (0, 3, 5, 4)
    leaves = {k: case[k].detach().requires_grad_() for k in IKCONV_ARGS}
    y = ops.inverse_kernel_conv(*leaves.values(), backend=backend)
    y.sum().backward()
    assert leaves["atoms"].grad.abs().sum() == 0 and leaves["weight"].grad.abs().sum() == 0
    assert leaves["bias"].grad.abs().sum() == 0 and leaves["x"].grad.shape == (0, 3, 5, 4)


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_backward_is_deterministic(backend, device, dtypes):
    case = case_for("release", supported(backend, device, dtypes)[-1], device)
    _, g1 = ikconv_run(case, backend)
    _, g2 = ikconv_run(case, backend)
    for k in g1:
        if g1[k] is not None:
            assert torch.equal(g1[k], g2[k]), k


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_noncontiguous_inputs(backend, device, dtypes):
    dtype = supported(backend, device, dtypes)[0]
    case = case_for("odd", dtype, device)
    y_ref = ikconv_run(case, "reference")[0]
    strided = dict(case)
    strided["x"] = case["x"].transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    strided["basis"] = case["basis"].to(memory_format=torch.channels_last)
    assert not strided["x"].is_contiguous()
    y = ikconv_run(strided, backend)[0]
    assert rel_err(y, y_ref) <= TOL.get(dtype, 1e-2)


def opcheck_dtypes(dtypes):
    """The first dtype of a target, and bfloat16 where the target runs it."""
    return list(dict.fromkeys([dtypes[0], *(d for d in dtypes if d == BF16)]))


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_opcheck(backend, device, dtypes):
    for dtype in opcheck_dtypes(supported(backend, device, dtypes)):
        case = ikconv_case(2, 3, 5, 6, 2, 3, dtype=dtype, device=device)
        args = [case[k] for k in IKCONV_ARGS] + [True]
        args = [a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(ops._op("ikconv", backend), args)
        grad_y = torch.randn_like(case["x"])
        bwd = getattr(torch.ops.inik_fast, "ikconv_backward" + ops._SUFFIX[backend])
        for need_dx in (True, False):
            plain = [a.detach() for a in args[:5]]
            torch.library.opcheck(bwd, [grad_y, *plain, True, need_dx, True])


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_gradcheck(backend, device, dtypes):
    usable(backend, device, F64)
    case = ikconv_case(1, 2, 4, 5, 2, 2, 2, dtype=F64, device=device)
    inputs = [case[k].requires_grad_() for k in IKCONV_ARGS]
    assert torch.autograd.gradcheck(lambda *a: ops.inverse_kernel_conv(*a, backend=backend), inputs)


@pytest.mark.parametrize("shape", ["odd", "O!=C-nobias"])
@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ikconv_half_parameters(backend, device, dtypes, shape):
    for dtype in supported(backend, device, [d for d in dtypes if d in (F16, BF16)]):
        check_against_reference(backend, device, dtype, shape, half_params=True)


# name: (G, M, Hd, D)
BANKS = {"release": (7, 10, 64, 3), "G1-M1-grid": (1, 1, 8, 2), "G9-M16": (9, 16, 16, 3), "grid": (2, 3, 64, 2)}
# The backends whose atom bank takes float16/bfloat16 parameters (and computes in float32).
HALF_BANKS = ("cpu",)


@pytest.mark.parametrize("bank", list(BANKS))
@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_atom_bank_matches_reference(backend, device, dtypes, bank):
    for dtype in supported(backend, device, [d for d in dtypes if d in (F32, F64) or backend in HALF_BANKS]):
        case = atom_bank_case(*BANKS[bank], dtype=dtype, device=device)
        # the exact result on the parameters as rounded to `dtype`, and the cotangent as
        # atom_bank_run rounds it to `dtype`
        a_ref, g_ref = atom_bank_run(cast(case, F64, "cpu"), "reference", cotangent_dtype=dtype)
        a, g = atom_bank_run(case, backend)
        assert a.dtype == dtype
        err, bound = error_and_bound(a, a_ref, dtype, rounded=True)
        assert err <= bound, f"atoms: {err:.3g} > {bound:.3g}"
        for k in g_ref:
            assert g[k].shape == g_ref[k].shape and g[k].dtype == dtype, k
            err, bound = error_and_bound(g[k], g_ref[k], dtype, rounded=True)
            bound *= 10 if dtype in TOL else 1  # float32/float64 sums over the window points
            assert err <= bound, f"d{k}: {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_atom_bank_opcheck_and_gradcheck(backend, device, dtypes):
    for dtype in opcheck_dtypes(supported(backend, device, [d for d in dtypes if d in (F32, F64) or backend in HALF_BANKS])):
        case = atom_bank_case(2, 3, 8, dtype=dtype, device=device)
        args = [case[k].requires_grad_(k in ATOM_BANK_GRAD_NAMES) for k in ATOM_BANK_ARGS]
        torch.library.opcheck(ops._op("atom_bank", backend), args)
        if dtype == F64:
            assert torch.autograd.gradcheck(lambda *p: ops.atom_bank(*args[:2], *p, backend=backend), args[2:])


@pytest.mark.parametrize("backend,device,dtypes", TARGETS)
def test_ops_under_torch_compile(backend, device, dtypes):
    usable(backend, device, F32)
    if backend == "triton" and device == "cpu":
        pytest.skip("torch.compile does not generate code for Triton kernels on CPU tensors")
    case = ikconv_case(1, 3, 8, 8, 3, 4, dtype=F32, device=device)
    bank = atom_bank_case(3, 4, 16, dtype=F32, device=device)

    def f(x, scale, basis, weight, bias, *p):
        atoms = ops.atom_bank(bank["coords"], bank["mask"], *p, backend=backend)
        return ops.inverse_kernel_conv(x, atoms, scale, basis, weight, bias, backend=backend)

    params = [bank[k].requires_grad_() for k in ("w1", "b1", "w2", "b2", "w3", "omega")]
    args = [case[k].requires_grad_() for k in ("x", "scale", "basis", "weight", "bias")]
    cot = torch.randn(case["x"].shape, generator=torch.Generator().manual_seed(1)).to(device)
    expected = f(*args, *params)
    eager_grads = torch.autograd.grad(expected, args + params, cot)
    got = torch.compile(f, fullgraph=True)(*args, *params)
    assert rel_err(got, expected) <= 1e-5
    for i, (g, e) in enumerate(zip(torch.autograd.grad(got, args + params, cot), eager_grads)):
        assert rel_err(g, e) <= 1e-5, i
