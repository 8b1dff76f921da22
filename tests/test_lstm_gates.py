"""The cpu backend's one-pass LSTM cell update, `inik_fast::lstm_gates`, and its gradient,
`inik_fast::lstm_gates_backward` (csrc/cpu/lstm_gates_cpu.cpp): against the eager update and its
autograd in float64, per dtype against what eager PyTorch at that dtype is off by, opcheck,
gradcheck, gradgradcheck, their errors, and their use by the model on the cpu backend only."""
import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig, _extension, backends, trunk
from op_cases import rel_err

pytestmark = pytest.mark.skipif(
    bool(backends.not_supported_reasons("cpu", "cpu")), reason=f"cpu backend: {_extension.LOAD_ERROR}"
)
F64 = torch.float64
EPS = {torch.float64: 2.0**-52, torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def eager(a, bias, c):
    """The cell's update as model.LSTMCell computes it, on pixel rows, in a's dtype."""
    hidden = a.shape[1] // 4
    a = a + bias
    i, f, o = torch.sigmoid(a[:, : 3 * hidden]).chunk(3, 1)
    g = torch.tanh(a[:, 3 * hidden :])
    cn = i * g if c is None else f * c + i * g
    return o * torch.tanh(cn), cn


def inputs(n, hidden, dtype, with_c, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = 2 * torch.randn(n, 4 * hidden, generator=gen, dtype=F64)
    bias = torch.randn(4 * hidden, generator=gen, dtype=F64)
    c = 2 * torch.randn(n, hidden, generator=gen, dtype=F64) if with_c else None
    return [None if t is None else t.to(dtype) for t in (a, bias, c)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hidden", [1, 5, 16, 32, 37])
@pytest.mark.parametrize("with_c", [True, False], ids=["state", "zero_state"])
def test_update_matches_eager(dtype, hidden, with_c):
    """Hidden widths below, at and past the vector width (the scalar tail); every row checked."""
    args = inputs(301, hidden, dtype, with_c, seed=hidden)
    h, cn = torch.ops.inik_fast.lstm_gates(*args)
    assert h.dtype == cn.dtype == dtype and h.shape == cn.shape == (301, hidden)
    truth = eager(*[None if t is None else t.double() for t in args])
    plain = eager(*args)
    for got, want, torch_at_dtype in zip((h, cn), truth, plain):
        err = (got.double() - want).abs().max().item()
        torch_err = (torch_at_dtype.double() - want).abs().max().item()
        assert err <= max(2 * torch_err, 8 * EPS[dtype]), (err, torch_err)


def eager_grads(a, bias, c, dh, dcn):
    """(d a, d c) by autograd through `eager`, in a's dtype; dh/dcn None are zero."""
    leaves = [None if t is None else t.detach().requires_grad_() for t in (a, c)]
    outs = eager(leaves[0], bias, leaves[1])
    pairs = [(o, g) for o, g in zip(outs, (dh, dcn)) if g is not None]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    return [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hidden", [1, 5, 16, 37])
@pytest.mark.parametrize("with_c", [True, False], ids=["state", "zero_state"])
@pytest.mark.parametrize("grads", ["both", "h_only", "c_only"])
def test_backward_matches_eager_autograd(dtype, hidden, with_c, grads):
    """d gates and d c against autograd through the eager update, every row; a missing output
    gradient (None, as autograd passes for an unused output) counts as zero."""
    a, bias, c = inputs(211, hidden, dtype, with_c, seed=hidden)
    gen = torch.Generator().manual_seed(hidden + 1)
    dh, dcn = [torch.randn(211, hidden, generator=gen, dtype=F64).to(dtype) for _ in range(2)]
    dh, dcn = (None if grads == "c_only" else dh), (None if grads == "h_only" else dcn)
    da, dc = torch.ops.inik_fast.lstm_gates_backward(a, bias, c, dh, dcn)
    assert da.dtype == dtype and da.shape == a.shape
    assert (dc is None) == (c is None)
    args = [a, bias, c, dh, dcn]
    truth = eager_grads(*[None if t is None else t.double() for t in args])
    plain = eager_grads(*args)
    for got, want, torch_at_dtype in zip((da, dc), truth, plain):
        if want is None:
            continue
        assert got.shape == want.shape and got.dtype == dtype
        err = (got.double() - want).abs().max().item()
        torch_err = (torch_at_dtype.double() - want).abs().max().item()
        assert err <= max(2 * torch_err, 8 * EPS[dtype] * want.abs().max().item()), (err, torch_err)


def test_empty_and_one_pixel():
    for n in (0, 1):
        h, cn = torch.ops.inik_fast.lstm_gates(*inputs(n, 3, torch.float32, True))
        assert h.shape == cn.shape == (n, 3)
        a, bias, c = inputs(n, 3, torch.float32, True)
        da, dc = torch.ops.inik_fast.lstm_gates_backward(a, bias, c, torch.ones(n, 3), None)
        assert da.shape == (n, 12) and dc.shape == (n, 3)


@pytest.mark.parametrize("with_c", [True, False], ids=["state", "zero_state"])
def test_opcheck_and_gradcheck(with_c):
    a, bias, c = [None if t is None else t.requires_grad_() for t in inputs(7, 3, F64, with_c)]
    torch.library.opcheck(torch.ops.inik_fast.lstm_gates.default, (a, bias, c))
    assert torch.autograd.gradcheck(torch.ops.inik_fast.lstm_gates, (a, bias, c))
    # create_graph=True takes the formulas in PyTorch, which autograd differentiates
    assert torch.autograd.gradgradcheck(torch.ops.inik_fast.lstm_gates, (a, bias, c))
    detached = [None if t is None else t.detach() for t in (a, bias, c)]
    dh, dcn = torch.randn(7, 3, dtype=F64), torch.randn(7, 3, dtype=F64)
    for grads in ((dh, dcn), (dh, None), (None, dcn)):
        torch.library.opcheck(torch.ops.inik_fast.lstm_gates_backward.default, (*detached, *grads))


def test_bad_arguments_name_the_argument():
    a, bias, c = inputs(4, 3, torch.float32, True)
    with pytest.raises(RuntimeError, match=r"lstm_gates: bias must be Float, got Double"):
        torch.ops.inik_fast.lstm_gates(a, bias.double(), c)
    with pytest.raises(RuntimeError, match=r"lstm_gates: c must be \[N, hidden\] = \[4, 3\], got \[4, 4\]"):
        torch.ops.inik_fast.lstm_gates(a, bias, torch.zeros(4, 4))
    with pytest.raises(RuntimeError, match=r"lstm_gates: gates must be \[N, 4 \* hidden\], got \[4, 13\]"):
        torch.ops.inik_fast.lstm_gates(torch.zeros(4, 13), bias, c)
    with pytest.raises(RuntimeError, match=r"lstm_gates: gates must be float16, bfloat16, float32 or float64, got Int"):
        torch.ops.inik_fast.lstm_gates(a.int(), bias, c)
    with pytest.raises(RuntimeError, match=r"lstm_gates_backward: grad_h must be \[N, hidden\] = \[4, 3\], got \[4, 2\]"):
        torch.ops.inik_fast.lstm_gates_backward(a, bias, c, torch.zeros(4, 2), None)
    with pytest.raises(RuntimeError, match=r"lstm_gates_backward: grad_c must be Float, got Double"):
        torch.ops.inik_fast.lstm_gates_backward(a, bias, c, None, torch.zeros(4, 3, dtype=F64))
    with pytest.raises(RuntimeError, match=r"lstm_gates_backward: c must be \[N, hidden\] = \[4, 3\], got \[3, 3\]"):
        torch.ops.inik_fast.lstm_gates_backward(a, bias, c[:3], None, None)


@pytest.mark.parametrize("backend, uses_op", [("cpu", True), ("reference", False)])
def test_model_uses_it_on_the_cpu_backend_only(backend, uses_op, monkeypatch):
    """The cpu backend runs every LSTM step through the ops (12 at B=1: 2 BiLSTMs x 2 directions
    x 3 scales; in training 12 more, the checkpoint's recomputation, and 12 backward calls) and
    gives the reference backend's outputs and parameter gradients."""
    calls = []
    fused, backward = trunk._gates_fused, torch.ops.inik_fast.lstm_gates_backward
    monkeypatch.setattr(trunk, "_gates_fused", lambda *a: calls.append("forward") or fused(*a))
    monkeypatch.setattr(torch.ops.inik_fast, "lstm_gates_backward", lambda *a: calls.append("backward") or backward(*a))
    cfg = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)
    torch.manual_seed(0)
    model = INIKNet(cfg, backend=backend).double()
    twin = INIKNet(cfg, backend="reference").double()
    twin.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 96, 112, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got, want = model(x), twin(x)
    assert calls == ["forward"] * (12 if uses_op else 0)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-12
    calls.clear()
    for net in (model, twin):
        sum((o * torch.linspace(0.1, 1, o.shape[-1], dtype=F64)).sum() for o in net(x)).backward()
    assert sorted(calls) == (["backward"] * 12 + ["forward"] * 24 if uses_op else [])
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        want = grads[name].grad
        assert rel_err(p.grad, want) < 1e-10, name
