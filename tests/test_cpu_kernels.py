"""CPU-kernel specifics not covered by test_backend_ops.py: argument errors of the C++ ops called
directly, results independent of the thread count, shapes that exercise every tile, chunk and
register-block remainder, the need_x_grad=False path, and a float16/bfloat16 model on them."""
import copy
import re

import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig, _extension, backends
from op_cases import (
    BF16,
    F16,
    F32,
    F64,
    IKCONV_GRAD_NAMES,
    atom_bank_case,
    atom_bank_run,
    cast,
    error_and_bound,
    ikconv_case,
    ikconv_run,
    rel_err,
)

IK_ARGS = ("x", "atoms", "scale", "basis", "weight", "bias")
BANK_ARGS = ("coords", "mask", "w1", "b1", "w2", "b2", "w3", "omega")

pytestmark = pytest.mark.skipif(
    bool(backends.not_supported_reasons("cpu", "cpu")), reason=f"cpu backend: {_extension.LOAD_ERROR}"
)
ikconv_forward = torch.ops.inik_fast.ikconv_forward.default
ikconv_backward = torch.ops.inik_fast.ikconv_backward.default
CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


def forward_args(case):
    return [case[k] for k in IK_ARGS] + [case["residual"]]


def backward_args(case, need_dx=True):
    gy = torch.randn(case["x"].shape[0], case["weight"].shape[0], *case["x"].shape[2:], dtype=case["x"].dtype)
    return [gy] + [case[k] for k in IK_ARGS[:5]] + [case["residual"], need_dx, True]


# ---------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------
def _bad_forward(change):
    args = forward_args(ikconv_case(2, 3, 16, 16, 7, 10))
    change(args)
    return args


FORWARD_ERRORS = {
    "scale shape": (
        lambda a: a.__setitem__(2, torch.zeros(2, 8, 16, 16, dtype=F64)),
        "ikconv_forward: scale must be [B, G, H, W] = [2, 7, 16, 16], got [2, 8, 16, 16]",
    ),
    "basis shape": (
        lambda a: a.__setitem__(3, torch.zeros(2, 9, 16, 16, dtype=F64)),
        "ikconv_forward: basis must be [B, M, H, W] = [2, 10, 16, 16], got [2, 9, 16, 16]",
    ),
    "weight shape": (
        lambda a: a.__setitem__(4, torch.zeros(3, 7, 2, 10, dtype=F64)),
        "ikconv_forward: weight must be [O, G, C, M] = [3, 7, 3, 10], got [3, 7, 2, 10]",
    ),
    "bias shape": (
        lambda a: a.__setitem__(5, torch.zeros(4, dtype=F64)),
        "ikconv_forward: bias must be [O] = [3], got [4]",
    ),
    "atoms size": (
        lambda a: a.__setitem__(1, torch.zeros(7, 10, 13, 13, dtype=F64)),
        "ikconv_forward: atoms must be [G, M, 2G+1, 2G+1] with G in 1..9, M in 1..16, got [7, 10, 13, 13]",
    ),
    "atoms beyond 16 per group": (
        lambda a: a.__setitem__(1, torch.zeros(7, 17, 15, 15, dtype=F64)),
        "ikconv_forward: atoms must be [G, M, 2G+1, 2G+1] with G in 1..9, M in 1..16, got [7, 17, 15, 15]",
    ),
    "x dims": (
        lambda a: a.__setitem__(0, torch.zeros(3, 16, 16, dtype=F64)),
        "ikconv_forward: x must be [B, C, H, W], got [3, 16, 16]",
    ),
    "x dtype": (
        lambda a: a.__setitem__(0, a[0].to(torch.int32)),
        "ikconv_forward: x must be float16, bfloat16, float32 or float64, got Int",
    ),
    "mixed dtypes": (
        lambda a: a.__setitem__(4, a[4].float()),
        "ikconv_forward: weight must be Double, got Float",
    ),
    # half-precision images take their atoms, weight and bias in float32 (ops.py casts them)
    "half atoms": (
        lambda a: [a.__setitem__(i, a[i].to(BF16)) for i in (0, 1, 2, 3)],
        "ikconv_forward: atoms must be Float, got BFloat16",
    ),
    "half scale, float32 x": (
        lambda a: [a.__setitem__(i, a[i].to(F32 if i != 2 else F16)) for i in (0, 1, 2, 3, 4, 5)],
        "ikconv_forward: scale must be Float, got Half",
    ),
    "residual O != C": (
        lambda a: (a.__setitem__(4, torch.zeros(2, 7, 3, 10, dtype=F64)), a.__setitem__(5, None)),
        "ikconv_forward: residual=True needs O == C, got O=2, C=3",
    ),
}


@pytest.mark.parametrize("name", list(FORWARD_ERRORS))
def test_forward_rejects_bad_arguments(name):
    change, message = FORWARD_ERRORS[name]
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ikconv_forward(*_bad_forward(change))


def test_forward_rejects_other_devices():
    args = forward_args(ikconv_case(1, 3, 5, 5, 2, 3))
    args[1] = args[1].to("meta")  # only a direct CPU redispatch reaches the kernel with it
    with pytest.raises(RuntimeError, match="ikconv_forward: atoms must be a CPU tensor, got one on meta"):
        ikconv_forward.redispatch(CPU_KEYS, *args)


def test_backward_rejects_bad_grad():
    args = backward_args(ikconv_case(2, 3, 16, 16, 7, 10))
    args[0] = torch.zeros(2, 3, 16, 15, dtype=F64)
    message = "ikconv_backward: grad_y must be [B, O, H, W] = [2, 3, 16, 16], got [2, 3, 16, 15]"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ikconv_backward(*args)
    args[0] = torch.zeros(2, 3, 16, 16, dtype=F32)
    with pytest.raises(RuntimeError, match="ikconv_backward: grad_y must be Double, got Float"):
        ikconv_backward(*args)


def test_atom_bank_rejects_bad_arguments():
    case = atom_bank_case(3, 4, 8)
    args = [case[k] for k in BANK_ARGS]
    bad = list(args)
    bad[4] = torch.zeros(4, 8, 7, dtype=F64)
    message = "atom_bank_forward: w2 must be [M, Hd, Hd] = [4, 8, 8], got [4, 8, 7]"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.inik_fast.atom_bank_forward(*bad)
    bad = list(args)
    bad[1] = bad[1].float()
    with pytest.raises(RuntimeError, match="atom_bank_forward: mask must be Double, got Float"):
        torch.ops.inik_fast.atom_bank_forward(*bad)
    bad = list(args)
    bad[0] = torch.zeros(10, 21, 21, 3, dtype=F64)
    message = "atom_bank_forward: coords must be [G, 2G+1, 2G+1, D] with G in 1..9, got [10, 21, 21, 3]"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.inik_fast.atom_bank_forward(*bad)
    grad = torch.zeros(3, 4, 7, 6, dtype=F64)
    message = "atom_bank_backward: grad_atoms must be [G, M, K, K] = [3, 4, 7, 7], got [3, 4, 7, 6]"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.inik_fast.atom_bank_backward(grad, *args)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [F32, F64, BF16])
def test_results_do_not_depend_on_thread_count(dtype):
    # 3 x 80 x 130 makes more tiles (45 or 75) than partial-sum chunks (32): chunks hold several.
    case = ikconv_case(3, 3, 80, 130, 4, 5, dtype=dtype)
    runs = [_with_threads(n, lambda: ikconv_run(case, "cpu")) for n in (1, 2)]
    assert torch.equal(runs[0][0], runs[1][0])
    for k in IKCONV_GRAD_NAMES:
        assert torch.equal(runs[0][1][k], runs[1][1][k]), k
    bank = atom_bank_case(4, 5, 16, dtype=dtype)
    banks = [_with_threads(n, lambda: atom_bank_run(bank, "cpu")) for n in (1, 2)]
    assert torch.equal(banks[0][0], banks[1][0])
    for k in banks[0][1]:
        assert torch.equal(banks[0][1][k], banks[1][1][k]), k


# (B, C, H, W, G, M, O, bias, residual): the release groups on a larger image, edge tiles in
# both directions, row counts that leave every dx row-block remainder, M that splits unevenly.
LARGE = {
    "64x48-G7-M10": (1, 3, 64, 48, 7, 10, 3, True, True),
    "edges-33x70": (2, 2, 33, 70, 3, 7, 2, True, True),
    "rows-18-M13-O5": (1, 3, 18, 40, 5, 13, 5, True, False),
    "G9-M16-wide": (1, 1, 20, 130, 9, 16, 1, False, True),
}


@pytest.mark.parametrize("dtype", [F64, F32, BF16, F16])
@pytest.mark.parametrize("shape", list(LARGE))
def test_larger_shapes_match_reference(shape, dtype):
    B, C, H, W, G, M, O, bias, residual = LARGE[shape]
    case = ikconv_case(B, C, H, W, G, M, O, bias=bias, residual=residual, dtype=dtype)
    # the exact result on the inputs and cotangent as rounded to `dtype`
    cot = torch.randn(B, O, H, W, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype).to(F64)
    y_ref, g_ref = ikconv_run(cast(case, F64), "reference", cot)
    y, g = ikconv_run(case, "cpu", cot)
    results = [("y", y, y_ref)] + [(k, g[k], ref) for k, ref in g_ref.items() if ref is not None]
    for k, got, ref in results:
        err, bound = error_and_bound(got, ref, dtype, rounded=k in ("y", "x", "scale", "basis"))
        assert err <= bound, f"{k}: {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("dtype", [F32, F64, BF16])
def test_backward_without_x_grad_matches_with_it(dtype):
    case = ikconv_case(2, 3, 37, 45, 7, 10, dtype=dtype)
    args = backward_args(case)
    with_dx = ikconv_backward(*args)
    args[-2] = False
    without = ikconv_backward(*args)
    assert without[0].shape == (0,) and without[0].dtype == dtype
    for a, b in zip(with_dx[1:], without[1:]):
        assert torch.equal(a, b)


def test_direct_call_makes_inputs_contiguous():
    case = ikconv_case(2, 3, 17, 19, 3, 4)
    args = forward_args(case)
    strided = list(args)
    strided[0] = args[0].transpose(2, 3).contiguous().transpose(2, 3)
    strided[4] = args[4].permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    assert not strided[0].is_contiguous() and not strided[4].is_contiguous()
    assert torch.equal(ikconv_forward(*strided), ikconv_forward(*args))
    bwd = backward_args(case)
    strided = list(bwd)
    strided[0] = bwd[0].transpose(2, 3).contiguous().transpose(2, 3)
    for a, b in zip(ikconv_backward(*strided), ikconv_backward(*bwd)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# a half-precision model on the cpu backend
# ---------------------------------------------------------------------------------------------
SMALL = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)


def _models():
    """A small model in float64 (the truth), and copies of it for the cpu and reference backends."""
    torch.manual_seed(0)
    exact = INIKNet(SMALL, backend="reference").double().eval()
    copies = {b: copy.deepcopy(exact).float() for b in ("cpu", "reference")}
    for b, m in copies.items():
        m.backend = b
    return exact, copies


@pytest.mark.parametrize("dtype", [BF16, F16])
def test_half_model_runs_on_the_cpu_backend(dtype):
    """model.to(dtype) on dtype images: no cast around the ops, results in dtype, within twice
    the error of plain PyTorch (the reference backend on the same model) against float64."""
    exact, models = _models()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=F64).to(dtype)
    truth = exact(x.double())
    outs = {}
    for b, m in models.items():
        m.to(dtype)
        assert m.ops_backend("cpu", dtype) == b
        outs[b] = m(x)
    for fused, plain, ref in zip(outs["cpu"], outs["reference"], truth):
        assert fused.dtype == dtype
        assert rel_err(fused, ref) <= 2 * rel_err(plain, ref) + 1e-5
    outs["cpu"][-1].float().sum().backward()
    for name, p in models["cpu"].named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype and p.grad.isfinite().all(), name


def test_autocast_model_runs_on_the_cpu_backend():
    """A float32 model under torch.autocast("cpu", bfloat16): the ops get bfloat16 images and
    float32 atoms, weight and bias, and run on the cpu backend (its trunk with the one-pass LSTM
    gates and their gradient). Outputs and parameter gradients within twice plain PyTorch's
    error (the reference backend under the same autocast) against the float64 model."""
    exact, models = _models()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=F32)
    truth = exact(x.double())
    weigh = lambda outs: sum((o.double() * torch.linspace(0.1, 1, o.shape[-1], dtype=F64)).sum() for o in outs)  # noqa: E731
    weigh(truth).backward()
    outs = {}
    for b, m in models.items():
        with torch.autocast("cpu", dtype=BF16):
            outs[b] = m(x)
        weigh(outs[b]).backward()
    for fused, plain, ref in zip(outs["cpu"], outs["reference"], truth):
        assert fused.dtype == BF16
        assert rel_err(fused, ref) <= 2 * rel_err(plain, ref) + 1e-5
    fused_params, plain_params = (dict(models[b].named_parameters()) for b in ("cpu", "reference"))
    for name, p in exact.named_parameters():
        got, plain = fused_params[name].grad, plain_params[name].grad
        assert got is not None and got.dtype == F32 and got.isfinite().all(), name
        assert rel_err(got, p.grad) <= 2 * rel_err(plain, p.grad) + 1e-3, name
