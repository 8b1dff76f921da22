"""The cpu backend's Winograd 3x3 convolution, `inik_fast::conv3x3_winograd`
(csrc/cpu/conv3x3_winograd_cpu.cpp): against F.conv2d on the concatenated pieces in float64 and,
in float32, within twice what F.conv2d itself is off by; opcheck, gradcheck, its errors, and its
use by the trunk (float32 maps on the cpu backend, eval and the training forward)."""
import pytest
import torch
import torch.nn.functional as F

from inik_fast import INIKNet, INIKNetConfig, _extension, backends, trunk
from op_cases import rel_err

pytestmark = pytest.mark.skipif(
    bool(backends.not_supported_reasons("cpu", "cpu")), reason=f"cpu backend: {_extension.LOAD_ERROR}"
)
F64 = torch.float64
conv = torch.ops.inik_fast.conv3x3_winograd


def inputs(B, pieces, O, H, W, dtype=F64, seed=0, channels_last=True):
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(B, c, H, W, generator=gen, dtype=F64).to(dtype).contiguous(memory_format=fmt) for c in pieces]
    weight = torch.randn(O, sum(pieces), 3, 3, generator=gen, dtype=F64).to(dtype)
    return xs, weight


def direct(xs, weight):
    return F.conv2d(torch.cat(xs, 1), weight, padding=1)


# 1x1 and odd maps (partial tiles and tile blocks), channels below, at and past the vector
# widths (float64 8 and float32 16 lanes with AVX-512; zero-padded tails), several pieces, O != C
SHAPES = [
    (1, [1], 1, 1, 1),
    (1, [3], 5, 1, 7),
    (2, [5], 3, 7, 1),
    (1, [7, 9], 13, 5, 6),
    (2, [16], 16, 9, 31),
    (1, [32, 32], 64, 17, 30),
    (1, [64], 128, 12, 25),
    (1, [8, 17, 3], 33, 26, 14),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_conv2d_in_float64(shape):
    xs, weight = inputs(*shape)
    y = conv(xs, weight)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, direct(xs, weight)) < 1e-13


def scaled_err(y, want, xs, weight):
    """max |y - want| over the largest sum of |terms| (F.conv2d of |xs| and |weight|): the scale
    rounding errors of a sum grow with, whatever cancels in the result."""
    scale = direct([x.abs() for x in xs], weight.abs()).max().clamp_min(1e-30)
    return ((y.double() - want).abs().max() / scale).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_rounds_as_conv2d_does(shape, seed):
    """Against the float64 convolution: at most twice F.conv2d's own float32 error, or 4 units of
    float32 rounding where that is smaller (a lone product, as on a 1x1 map, is exact in a direct
    convolution, while the transforms round a few times)."""
    xs, weight = inputs(*shape, seed=seed)
    want = direct(xs, weight)
    xs32, w32 = [x.float() for x in xs], weight.float()
    plain = scaled_err(direct(xs32, w32), want, xs, weight)
    assert scaled_err(conv(xs32, w32), want, xs, weight) <= 2 * max(plain, 4 * 2.0**-24)


def test_takes_any_layout_and_empty_maps():
    xs, weight = inputs(1, [4, 5], 6, 5, 7, channels_last=False)
    assert rel_err(conv(xs, weight), direct(xs, weight)) < 1e-13
    for B, H, W in ((0, 4, 4), (1, 0, 3), (1, 3, 0)):
        xs, weight = inputs(B, [2], 3, H, W)
        assert conv(xs, weight).shape == (B, 3, H, W)


def test_opcheck_and_gradcheck():
    xs, weight = inputs(2, [3, 2], 4, 5, 6)
    torch.library.opcheck(conv.default, (xs, weight))
    xs = [x.requires_grad_() for x in xs]
    weight.requires_grad_()
    torch.library.opcheck(conv.default, (xs, weight))
    assert torch.autograd.gradcheck(lambda w, a, b: conv([a, b], w), (weight, *xs))
    xs[0].requires_grad_(False)  # a piece without a gradient
    conv(xs, weight).sum().backward()
    assert xs[0].grad is None and xs[1].grad is not None


def test_compiles_fullgraph_and_exports():
    """Under torch.compile (Dynamo + AOTAutograd, fullgraph) forward and gradients equal eager's;
    torch.export keeps the op in the graph."""
    xs, weight = inputs(1, [3, 5], 4, 9, 10)
    xs = [x.requires_grad_() for x in xs]
    weight.requires_grad_()
    leaves = (*xs, weight)

    def run(fn):
        y = fn(*leaves)
        return (y.detach(), *torch.autograd.grad(y, leaves, torch.linspace(-1, 1, y.numel(), dtype=F64).view_as(y)))

    eager = run(lambda a, b, w: conv([a, b], w))
    compiled = run(torch.compile(lambda a, b, w: conv([a, b], w), fullgraph=True, backend="aot_eager"))
    for c, e in zip(compiled, eager):
        assert rel_err(c, e) < 1e-12

    class Conv(torch.nn.Module):
        def forward(self, a, b, w):
            return conv([a, b], w)

    ep = torch.export.export(Conv(), tuple(t.detach() for t in (*xs, weight)))
    assert any("conv3x3_winograd" in str(n.target) for n in ep.graph.nodes)


def test_bad_arguments_name_the_argument():
    xs, weight = inputs(1, [3, 2], 4, 5, 6, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: xs must hold at least one tensor, got an empty list"):
        conv([], weight)
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: xs\[0\] must be float32 or float64, got BFloat16"):
        conv([x.bfloat16() for x in xs], weight.bfloat16())
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: xs\[1\] must be Float, got Double"):
        conv([xs[0], xs[1].double()], weight)
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: weight must be Float, got Double"):
        conv(xs, weight.double())
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: xs\[1\] has shape \[1, 2, 5, 7\] but xs\[0\] has \[1, 3, 5, 6\]; expected the same batch and size"):
        conv([xs[0], torch.zeros(1, 2, 5, 7)], weight)
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: weight has shape \[4, 5, 5, 5\]; expected \[O, 5, 3, 3\]"):
        conv(xs, torch.zeros(4, 5, 5, 5))
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: xs\[0\] must be \[B, C, H, W\]"):
        conv([xs[0][0]], weight[:, :3])


def _models(monkeypatch):
    """A float32 cpu-backend model whose eligible convolutions go through the op (the channel
    threshold lowered to this small config's widths), the calls counted, and its float64
    reference-backend twin."""
    calls = []
    monkeypatch.setattr(trunk, "_WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(torch.ops.inik_fast, "conv3x3_winograd", lambda *a: calls.append(1) or conv(*a))
    cfg = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)
    torch.manual_seed(0)
    model = INIKNet(cfg, backend="cpu")
    twin = INIKNet(cfg, backend="reference").double()
    twin.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 96, 112, dtype=F64, generator=torch.Generator().manual_seed(1))
    return calls, model, twin, x


def _without_op(monkeypatch, run):
    """run() with the trunk's convolutions on oneDNN: the baseline the op's rounding is judged by
    (the cpu backend's other fused ops round differently from the reference backend's)."""
    monkeypatch.setattr(trunk, "_WINOGRAD_MIN_CHANNELS", 1 << 30)
    try:
        return run()
    finally:
        monkeypatch.setattr(trunk, "_WINOGRAD_MIN_CHANNELS", 1)


def test_model_eval_uses_it_in_float32_only(monkeypatch):
    """float32 on the cpu backend: the stride-1 convolutions of maps of at least 96x96 (smaller
    ones are reflect-padded copies) go through the op, and the outputs stay within twice what the
    same model with oneDNN's convolutions is off by; float64 (the fixtures' dtype) never calls it."""
    calls, model, twin, x = _models(monkeypatch)
    with torch.inference_mode():
        want = twin(x)
        got = model(x.float())
        assert len(calls) > 10
        base = _without_op(monkeypatch, lambda: model(x.float()))
        for a, b, w in zip(got, base, want):
            assert rel_err(a, w) <= 2 * rel_err(b, w)
        calls.clear()
        model.double()(x)
        assert calls == []


def test_training_forward_uses_it_and_gradients_hold(monkeypatch):
    """In training the reflect-padded convolutions' forward goes through the op (their backward is
    a convolution gradient either way): parameter gradients within twice what the same model with
    oneDNN's convolutions is off by."""
    calls, model, twin, x = _models(monkeypatch)

    def grads(net, inp):
        net.zero_grad()
        sum((o * torch.linspace(0.1, 1, o.shape[-1], dtype=o.dtype)).sum() for o in net(inp)).backward()
        return {name: p.grad.clone() for name, p in net.named_parameters()}

    want, got = grads(twin, x), grads(model, x.float())
    assert len(calls) > 10
    base = _without_op(monkeypatch, lambda: grads(model, x.float()))
    for name, g in got.items():
        assert rel_err(g, want[name]) <= 2 * max(rel_err(base[name], want[name]), 1e-6), name
