"""The cpu backend's one-pass LSTM cell update, `inik_fast::lstm_gates` (csrc/cpu/lstm_gates_cpu.cpp):
against the eager update in float64, per dtype against what eager PyTorch at that dtype is off by,
opcheck, gradcheck, its errors, and its use by the model on the cpu backend only."""
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


def test_empty_and_one_pixel():
    for n in (0, 1):
        h, cn = torch.ops.inik_fast.lstm_gates(*inputs(n, 3, torch.float32, True))
        assert h.shape == cn.shape == (n, 3)


@pytest.mark.parametrize("with_c", [True, False], ids=["state", "zero_state"])
def test_opcheck_and_gradcheck(with_c):
    a, bias, c = [None if t is None else t.requires_grad_() for t in inputs(7, 3, F64, with_c)]
    torch.library.opcheck(torch.ops.inik_fast.lstm_gates.default, (a, bias, c))
    assert torch.autograd.gradcheck(torch.ops.inik_fast.lstm_gates, (a, bias, c))


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


@pytest.mark.parametrize("backend, uses_op", [("cpu", True), ("reference", False)])
def test_model_uses_it_on_the_cpu_backend_only_without_gradients(backend, uses_op, monkeypatch):
    """Eval on the cpu backend runs every LSTM step through the op (12 at B=1: 2 BiLSTMs x 2
    directions x 3 scales) and gives the reference backend's outputs; with gradients it is not used."""
    calls = []
    fused = trunk._gates_fused
    monkeypatch.setattr(trunk, "_gates_fused", lambda *a: calls.append(1) or fused(*a))
    cfg = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)
    torch.manual_seed(0)
    model = INIKNet(cfg, backend=backend).double().eval()
    twin = INIKNet(cfg, backend="reference").double().eval()
    twin.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 96, 112, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got, want = model(x), twin(x)
    assert len(calls) == (12 if uses_op else 0)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-12
    calls.clear()
    model(x)[-1].sum().backward()
    assert not calls
