"""Second-order gradients (create_graph=True): the reference backend computes them exactly; the
fused backends refuse them with a one-line error instead of returning zeros."""
import pytest
import torch

from inik_fast import backends, ops
from op_cases import ATOM_BANK_ARGS, ATOM_BANK_GRAD_NAMES, IKCONV_ARGS, atom_bank_case, ikconv_case

F32, F64 = torch.float32, torch.float64
# (backend, device, dtype)
FUSED = [
    pytest.param("cpu", "cpu", F64, id="cpu"),
    pytest.param("triton", "cpu", F64, id="triton-interp"),
    pytest.param("triton", "cuda", F32, id="triton-gpu", marks=pytest.mark.gpu),
    pytest.param("cuda", "cuda", F64, id="cuda", marks=pytest.mark.gpu),
]


def ikconv_inputs(device="cpu", dtype=F64):
    case = ikconv_case(1, 2, 4, 5, 2, 2, 2, dtype=dtype, device=device)
    return [case[k].requires_grad_() for k in IKCONV_ARGS]


def atom_bank_inputs(device="cpu", dtype=F64):
    case = atom_bank_case(2, 3, 8, dtype=dtype, device=device)
    return [case[k].requires_grad_(k in ATOM_BANK_GRAD_NAMES) for k in ATOM_BANK_ARGS]


def test_reference_double_backward_is_exact():
    inputs = ikconv_inputs()
    assert torch.autograd.gradgradcheck(lambda *a: ops.inverse_kernel_conv(*a, backend="reference"), inputs, fast_mode=True)
    case = atom_bank_case(2, 2, 4)
    coords, mask, *params = [case[k].requires_grad_(k in ATOM_BANK_GRAD_NAMES) for k in ATOM_BANK_ARGS]
    assert torch.autograd.gradgradcheck(lambda *p: ops.atom_bank(coords, mask, *p, backend="reference"), params, fast_mode=True)


def test_reference_gradient_penalty_matches_the_release_computation():
    """A gradient penalty ||dL/dx||^2, differentiated once more, through the whole op chain."""
    from op_cases import release_op

    def penalty_grads(fn):
        inputs = ikconv_inputs()
        y = fn(*inputs)
        (gx,) = torch.autograd.grad((y * y).sum(), inputs[0], create_graph=True)
        return torch.autograd.grad(gx.square().sum(), inputs)

    ours = penalty_grads(lambda *a: ops.inverse_kernel_conv(*a, backend="reference"))
    plain = penalty_grads(lambda *a: release_op(*a, residual=True))
    for name, g, r in zip(IKCONV_ARGS, ours, plain):
        assert r.abs().max() > 0, name
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("backend,device,dtype", FUSED)
def test_fused_double_backward_is_refused(backend, device, dtype):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reasons = backends.not_supported_reasons(backend, device, dtype)
    if reasons:
        pytest.skip(f"{backend} on {device}: {'; '.join(reasons)}")
    calls = {
        "inverse_kernel_conv": (ikconv_inputs(device, dtype), ops.inverse_kernel_conv),
        "atom_bank": (atom_bank_inputs(device, dtype), ops.atom_bank),
    }
    for op, (inputs, fn) in calls.items():
        out = fn(*inputs, backend=backend)
        wanted = [t for t in inputs if t.requires_grad]
        with pytest.raises(RuntimeError) as e:
            torch.autograd.grad(out.square().sum(), wanted, create_graph=True)
        msg = str(e.value)
        assert "\n" not in msg and op in msg and f"backend {backend!r}" in msg, msg
        assert "double backward" in msg and "backend='reference'" in msg, msg
        # without create_graph the same call differentiates as before
        assert all(g.abs().sum() > 0 for g in torch.autograd.grad(fn(*inputs, backend=backend).square().sum(), wanted))
