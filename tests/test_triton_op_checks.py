"""The Triton ops called directly (torch.ops.inik_fast.*_triton), bypassing inik_fast.ops: bad
arguments give one-line errors naming the argument, and strided inputs give the right result."""
import re

import pytest
import torch

from inik_fast import backends
from op_cases import ATOM_BANK_ARGS, IKCONV_ARGS, atom_bank_case, ikconv_case, rel_err

F32, F64 = torch.float32, torch.float64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OPS = torch.ops.inik_fast


@pytest.fixture(scope="module", autouse=True)
def kernels():
    reasons = backends.not_supported_reasons("triton", DEVICE, F32)
    if reasons:
        pytest.skip("; ".join(reasons))
    from inik_fast import kernels

    return kernels


def ikconv_args(**change):
    case = {**ikconv_case(2, 3, 8, 9, 2, 3, dtype=F64, device=DEVICE), **change}
    return [case[k] for k in IKCONV_ARGS] + [case["residual"]]


def bank_args(**change):
    case = {**atom_bank_case(2, 3, Hd=8, device=DEVICE), **change}
    return [case[k] for k in ATOM_BANK_ARGS]


def f64(*shape):
    return torch.rand(*shape, dtype=F64, device=DEVICE)


def raises(match, op, *args):
    with pytest.raises((ValueError, TypeError), match=re.escape(match)) as e:
        op(*args)
    assert "\n" not in str(e.value)


BAD_FORWARD = [
    (dict(x=f64(3, 8, 9)), "ikconv_forward_triton: x must be [B, C, H, W], got [3, 8, 9]"),
    (dict(scale=f64(2, 3, 8, 9)), "ikconv_forward_triton: scale must be [B, G, H, W] = [2, 2, 8, 9], got [2, 3, 8, 9]"),
    (dict(basis=f64(2, 3, 9, 9)), "ikconv_forward_triton: basis must be [B, M, H, W]"),
    (dict(weight=f64(3, 2, 2, 3)), "ikconv_forward_triton: weight must be [O, G=2, C=3, M=3], got [3, 2, 2, 3]"),
    (dict(bias=f64(4)), "ikconv_forward_triton: bias must be [O=3], got [4]"),
    (dict(atoms=f64(2, 3, 4, 4)), "ikconv_forward_triton: atoms must be [G, M, 2G+1, 2G+1]"),
    (dict(basis=f64(2, 3, 8, 9).float()), "ikconv_forward_triton: basis has dtype torch.float32; expected x's torch.float64"),
    (dict(x=f64(2, 3, 8, 9).to(torch.bfloat16), scale=f64(2, 2, 8, 9).to(torch.bfloat16),
          basis=f64(2, 3, 8, 9).to(torch.bfloat16), atoms=f64(2, 3, 5, 5).to(torch.bfloat16),
          weight=f64(3, 2, 3, 3).float(), bias=f64(3).float()),
     "ikconv_forward_triton: atoms must be torch.float32 for x of torch.bfloat16, got torch.bfloat16"),
]


@pytest.mark.parametrize("change,match", BAD_FORWARD, ids=[m for _, m in BAD_FORWARD])
def test_ikconv_forward_checks_its_arguments(change, match):
    raises(match, OPS.ikconv_forward_triton, *ikconv_args(**change))


def test_ikconv_backward_checks_its_arguments():
    x, atoms, scale, basis, weight, _, residual = ikconv_args()
    backward = OPS.ikconv_backward_triton
    flags = (residual, False, True)
    raises("ikconv_backward_triton: grad_y must be [2, 3, 8, 9], got [2, 3, 9, 8]",
           backward, f64(2, 3, 9, 8), x, atoms, scale, basis, weight, *flags)
    raises("ikconv_backward_triton: grad_y has dtype torch.float32; expected x's torch.float64",
           backward, f64(2, 3, 8, 9).float(), x, atoms, scale, basis, weight, *flags)
    raises("ikconv_backward_triton: weight must be [O, G=2, C=3, M=3]",
           backward, f64(2, 3, 8, 9), x, atoms, scale, basis, f64(3, 2, 3, 4), *flags)


def test_triton_ops_refuse_other_devices(kernels):
    """Through the checks themselves: an op called with meta tensors runs its fake kernel instead."""
    where = "a CUDA tensor" + (" (or a CPU tensor under TRITON_INTERPRET=1)" if DEVICE == "cpu" else "")
    meta = [t.to("meta") if isinstance(t, torch.Tensor) else t for t in ikconv_args()]
    raises(f"op: x must be {where}, got one on meta", kernels.checks.ikconv, "op", *meta)


BAD_BANK = [
    (dict(coords=f64(2, 4, 4, 3)), "atom_bank_forward_triton: coords must be [G, 2G+1, 2G+1, D]"),
    (dict(w2=f64(3, 8, 7)), "atom_bank_forward_triton: w2 must be [3, 8, 8], got [3, 8, 7]"),
    (dict(omega=f64(3).float()), "atom_bank_forward_triton: omega has dtype torch.float32; expected w1's torch.float64"),
]


@pytest.mark.parametrize("change,match", BAD_BANK, ids=[m for _, m in BAD_BANK])
def test_atom_bank_checks_its_arguments(change, match):
    raises(match, OPS.atom_bank_forward_triton, *bank_args(**change))


def test_atom_bank_backward_checks_its_gradient():
    raises("atom_bank_backward_triton: grad_atoms must be [2, 3, 5, 5], got [2, 3, 4, 4]",
           OPS.atom_bank_backward_triton, f64(2, 3, 4, 4), *bank_args())


def test_atom_bank_bounds_the_coordinate_dims():
    """The kernels hold 16 coordinate columns: a 17th would be dropped without this check."""
    args = bank_args(coords=f64(2, 5, 5, 17), w1=f64(3, 8, 17))
    message = "atom_bank_forward_triton: coords must have at most 16 coordinate dims D on Triton, got D=17"
    raises(message, OPS.atom_bank_forward_triton, *args)
    from inik_fast import ops

    raises(message, lambda *a: ops.atom_bank(*a, backend="triton"), *args)
    OPS.atom_bank_forward_triton(*bank_args(coords=f64(2, 5, 5, 16), w1=f64(3, 8, 16)))


def strided(t):
    """t's values in a non-contiguous tensor: a slice of one twice as wide in the last dim."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., 1::2] = t
    return wide[..., 1::2]


def test_strided_inputs_give_the_contiguous_result():
    args = ikconv_args()
    y = OPS.ikconv_forward_triton(*args)
    y_ref = OPS.ikconv_forward_reference(*args)
    assert rel_err(y, y_ref) <= 1e-10
    strided_args = [strided(t) if isinstance(t, torch.Tensor) else t for t in args]
    assert not strided_args[0].is_contiguous()
    assert torch.equal(OPS.ikconv_forward_triton(*strided_args), y)
    grad_y = f64(*y.shape)
    x, atoms, scale, basis, weight, _, residual = args
    grads = OPS.ikconv_backward_triton(grad_y, x, atoms, scale, basis, weight, residual, True, True)
    sx, satoms, sscale, sbasis, sweight, _, _ = strided_args
    strided_grads = OPS.ikconv_backward_triton(strided(grad_y), sx, satoms, sscale, sbasis, sweight, residual, True, True)
    for a, b in zip(strided_grads, grads):
        assert torch.equal(a, b)
    bank = bank_args()
    atoms = OPS.atom_bank_forward_triton(*bank)
    assert torch.equal(OPS.atom_bank_forward_triton(*[strided(t) for t in bank]), atoms)
    grad_atoms = f64(*atoms.shape)
    bank_grads = OPS.atom_bank_backward_triton(grad_atoms, *bank)
    for a, b in zip(OPS.atom_bank_backward_triton(strided(grad_atoms), *[strided(t) for t in bank]), bank_grads):
        assert torch.equal(a, b)
