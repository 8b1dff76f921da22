"""INIKNet's U-Net and LSTM trunk, computed fast on the parameters of the release's modules.

The modules of `model.py` keep the release's own forwards (reflect-padded convolutions, `cat`
in front of convolutions, one op per LSTM gate, contiguous NCHW); `release.ReleaseINIKNet` runs
those. `INIKNet` runs the same functions here, exact up to rounding order:

- channels_last end to end: oneDNN's native layout, where NCHW costs reorders around every conv;
- reflect padding without a padded copy of each feature map: a zero-padded convolution, then the
  border rows and columns recomputed from thin reflect-padded strips;
- conv(cat[a, b]) as conv_a(a) + conv_b(b) with views of the one weight, and the residual added
  piece by piece, so no concatenated copy is formed;
- the LSTM gates in fewer passes, the gate conv as one matrix product, and the first step skips
  its zero state; on the cpu backend, the gates' update in one pass (C++), and its gradient;
- on the cpu backend, the float32 stride-1 3x3 convolutions of large maps by Winograd's
  F(2x2, 3x3) (C++), 2.25x fewer multiply-adds than oneDNN's direct convolutions.

Under autograd (training), what is cheap in a forward can be dear in its backward, so:
- the reflect-padded convolution has its own backward (`_ReflectConv3`), one convolution
  gradient on a transient padded copy, with the weight gradient on NCHW copies on AVX2;
- the LSTM gates are recomputed in backward instead of keeping their activations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Below this many pixels a map is cheaper to reflect-pad than to patch: the strips' extra
# convolution calls cost more than the padded copy (measured, 2-core AMD EPYC, 32..128 channels).
_STRIP_MIN_PIXELS = 96 * 96


def conv3_reflect(parts, weight, stride: int = 1, cpu_ops: bool = False):
    """`F.conv2d(F.pad(cat(parts, 1), [1] * 4, mode="reflect"), weight, stride=stride)` for a
    3x3 weight, without forming the concatenation or the padded copy. cpu_ops: the inik_fast
    library's Winograd convolution where it applies (`_winograd`)."""
    if torch.is_grad_enabled() and (weight.requires_grad or any(x.requires_grad for x in parts)):
        return _ReflectConv3.apply(weight, stride, cpu_ops, *parts)
    return _conv3_reflect(parts, weight, stride, cpu_ops)


# oneDNN's weight gradient of a channels_last convolution runs 2-3x slower than on NCHW copies of
# the same tensors on AVX2, and 2-3x faster on AVX-512, while its forward and input gradient are
# fast in channels_last on both (benchmarks/conv_wgrad.py, 64 -> 64 channels, 3x3, 256x256, 2-core
# AMD EPYC Zen 4: 128 ms against 56 ms with the copies with oneDNN held to AVX2, 22 ms against
# 51 ms with AVX-512). So only CPUs without AVX-512 take the copies.
_NCHW_WEIGHT_GRAD = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2")


class _ReflectConv3(torch.autograd.Function):
    """conv3_reflect under autograd. Autograd through the border strips would clone the whole
    output gradient for every patched row and column and zero-fill a whole input gradient for
    every strip; instead backward takes the padded convolution's gradient once, on a transient
    padded copy. Saves only the pieces and the weight (as autocast's conv2d would: cast)."""

    @staticmethod
    def forward(ctx, weight, stride, cpu_ops, *parts):
        device = weight.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            dt = torch.get_autocast_dtype(device)
            weight, parts = weight.to(dt), [x.to(dt) for x in parts]
            with torch.autocast(device, enabled=False):
                y = _conv3_reflect(parts, weight, stride, cpu_ops)
        else:
            y = _conv3_reflect(parts, weight, stride, cpu_ops)
        ctx.save_for_backward(weight, *parts)
        ctx.stride = stride
        return y

    @staticmethod
    def backward(ctx, grad):
        weight, *parts = ctx.saved_tensors
        x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        xpad = F.pad(x, [1, 1, 1, 1], mode="reflect")
        grad = grad.to(x.dtype)
        dx_wanted = any(ctx.needs_input_grad[2:])

        def conv_backward(g, inp, mask):
            s = [ctx.stride] * 2
            return torch.ops.aten.convolution_backward(g, inp, weight, None, s, [0, 0], [1, 1], False, [0, 0], 1, mask)

        nchw = _NCHW_WEIGHT_GRAD and x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
        dxpad, dw, _ = conv_backward(grad, xpad, [dx_wanted, ctx.needs_input_grad[0] and not nchw, False])
        if ctx.needs_input_grad[0] and nchw:
            dw = conv_backward(grad.contiguous(), xpad.contiguous(), [False, True, False])[1]
        dparts = [None] * len(parts)
        if dx_wanted:
            dx = torch.ops.aten.reflection_pad2d_backward(dxpad, x, [1, 1, 1, 1])
            dparts = list(dx.split([t.shape[1] for t in parts], 1))
        return dw, None, None, *dparts


# The Winograd convolution beats oneDNN's direct one from this many input channels
# (benchmarks/winograd_speed.py, 2-core AMD EPYC Zen 4, AVX-512: 1.22-1.27x at 32 -> 32 and
# 1.47x at 64 -> 64 on 512x512 maps); the first conv's 3 channels would pad to a whole vector.
_WINOGRAD_MIN_CHANNELS = 32


def _winograd(parts, weight, stride: int, cpu_ops: bool) -> bool:
    """The zero-padded convolution of _conv3_reflect by `inik_fast::conv3x3_winograd`: float32
    channels_last CPU maps, stride 1, enough channels. float64 (the fixtures' dtype) keeps
    PyTorch's convolutions, bf16 oneDNN's, whose `vdpbf16ps` already halves the work."""
    x0 = parts[0]
    return (
        cpu_ops
        and stride == 1
        and x0.dtype == weight.dtype == torch.float32
        and all(_cpu_channels_last(x) for x in parts)
        and weight.shape[1] >= _WINOGRAD_MIN_CHANNELS
    )


def _conv3_reflect(parts, weight, stride: int, cpu_ops: bool = False):
    x0 = parts[0]
    H, W = x0.shape[-2:]
    if H * W < _STRIP_MIN_PIXELS:
        x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # small map: the copies are cheap
        return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), weight, stride=stride)
    if _winograd(parts, weight, stride, cpu_ops):
        y = torch.ops.inik_fast.conv3x3_winograd(list(parts), weight)
    else:
        y, start = None, 0
        for x in parts:
            t = F.conv2d(x, weight[:, start : start + x.shape[1]], stride=stride, padding=1)
            y = t if y is None else y.add_(t)
            start += x.shape[1]
    Ho, Wo = y.shape[-2:]

    def strip(rows, cols, pad):
        pieces = [F.pad(x[:, :, rows, cols], pad, mode="reflect") for x in parts]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)

    def patch(dim):
        """Recompute y's first (and, when its window reaches the far padding, last) row or column."""
        full = slice(None)
        if dim == 2:
            ins = [strip(slice(0, 2), full, (1, 1, 1, 0))]
            if stride * (Ho - 1) + 1 >= H:
                ins.append(strip(slice(H - 2, H), full, (1, 1, 0, 1)))
            sides = F.conv2d(torch.cat(ins, 0), weight, stride=(1, stride))
        else:
            ins = [strip(full, slice(0, 2), (1, 0, 1, 1))]
            if stride * (Wo - 1) + 1 >= W:
                ins.append(strip(full, slice(W - 2, W), (0, 1, 1, 1)))
            sides = F.conv2d(torch.cat(ins, 0), weight, stride=(stride, 1))
        B = x0.shape[0]
        y.narrow(dim, 0, 1).copy_(sides[:B])
        if len(ins) == 2:
            y.narrow(dim, y.shape[dim] - 1, 1).copy_(sides[B:])

    patch(2)
    patch(3)
    return y


def basic_conv(m, parts, cpu_ops: bool = False):
    """model.BasicConv (not transposed) on the channel pieces `parts`."""
    conv = m.main[0]
    y = conv3_reflect(parts, conv.weight, conv.stride[0], cpu_ops)
    return F.relu_(y) if len(m.main) > 1 else y


def up_conv(m, x):
    """model.BasicConv with transpose=True (ReLU after)."""
    conv = m.main[0]
    return F.relu_(F.conv_transpose2d(x, conv.weight, stride=conv.stride, padding=conv.padding))


def add_parts(y, parts):
    """y + cat(parts, 1), written into y (promoted first to the sum's dtype, as under autocast)."""
    y = y.to(torch.promote_types(y.dtype, parts[0].dtype))
    if sum(x.shape[1] for x in parts) == y.shape[1] and (len(parts) == 1 or torch.is_grad_enabled()):
        # under autograd an in-place add into a channel slice would clone y's whole gradient
        return y.add_(parts[0] if len(parts) == 1 else torch.cat(parts, 1))
    start = 0
    for x in parts:
        y[:, start : start + x.shape[1]] += x
        start += x.shape[1]
    return y


def res_stack(stack, parts, first_weight=None, cpu_ops: bool = False):
    """model.ResStack on cat(parts, 1); `first_weight` replaces the first conv's weight (a slice
    of it when a zero piece is left out of `parts`)."""
    for j, block in enumerate(stack.layers):
        c1, c2 = block.main
        w1 = first_weight if j == 0 and first_weight is not None else c1.main[0].weight
        y = conv3_reflect([F.relu_(conv3_reflect(parts, w1, 1, cpu_ops))], c2.main[0].weight, 1, cpu_ops)
        parts = [add_parts(y, parts)]
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]  # several only with no blocks


def unet(net, x, cpu_ops: bool = False):
    """model.UNet.forward. cpu_ops: the inik_fast library's C++ ops where they apply."""
    fe, enc, dec = net.feat_extract, net.Encoder, net.Decoder

    def stage(stack, conv, parts):
        return res_stack(stack, [basic_conv(conv, parts, cpu_ops)], None, cpu_ops)

    r1 = stage(enc[0], fe[0], [x])
    r2 = stage(enc[1], fe[1], [r1])
    r3 = stage(enc[2], fe[2], [r2])
    z = stage(dec[0], fe[3], [up_conv(net.up1, r3), r2])
    return stage(dec[1], fe[4], [up_conv(net.up2, z), r1])


def lstm_cell(cell, fea, state, cpu_ops: bool = False):
    """model.LSTMCell.forward. Without a state (zeros in the release) the h half of the input and
    of the first conv's weight is left out, and c' = i*g. cpu_ops: the inik_fast library's C++
    ops: on a CPU map, the gates' update in one pass, and its gradient in one more
    (`inik_fast::lstm_gates*`), and the Winograd convolutions where they apply."""
    hidden = fea.shape[1]
    gate_weight = cell.conv.weight
    if state is None and len(cell.layers.layers) == 0:  # no blocks: the gate conv sees cat(fea, 0)
        y, gate_weight = fea, gate_weight[:, :hidden]
    elif state is None:
        w1 = cell.layers.layers[0].main[0].main[0].weight[:, :hidden]
        y = res_stack(cell.layers, [fea], w1, cpu_ops)
    else:
        y = res_stack(cell.layers, [fea, state[0]], None, cpu_ops)
    c = None if state is None else state[1]
    gates = _gates_fused if cpu_ops and _cpu_channels_last(y) else _gates
    if not torch.is_grad_enabled():
        return gates(y, gate_weight, cell.conv.bias, c, fea.dtype)
    # Training keeps y and c for backward and recomputes the gates from them: their saved tensors
    # would otherwise hold 6 hidden-wide maps per pixel (eager), a fifth of the training step's
    # peak memory, or the 4-wide gate map (the one-pass op).
    return checkpoint(gates, y, gate_weight, cell.conv.bias, c, fea.dtype, use_reentrant=False, preserve_rng_state=False)


def conv1x1(x, weight, bias):
    """F.conv2d with a 1x1 weight; on a channels_last map, one matrix product on views. PyTorch's
    1x1 convolution takes its slow path there, and its backward copies the map to NCHW."""
    if not _cpu_channels_last(x):
        return F.conv2d(x, weight, bias)
    return _map(torch.addmm(bias, _pixels(x), weight.view(weight.shape[0], -1).t()), x)


def _cpu_channels_last(x) -> bool:
    """x is a channels_last CPU map: _pixels gives its pixel matrix as a view, for the CPU's GEMM."""
    return x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)


def _pixels(x):
    """A channels_last [B, C, H, W] map as its [B*H*W, C] matrix of pixels (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _map(rows, like):
    """[B*H*W, C'] pixel rows as a channels_last [B, C', H, W] map of `like`'s batch and size."""
    B, _, H, W = like.shape
    return rows.view(B, H, W, -1).permute(0, 3, 1, 2)


def _gates(y, weight, bias, c, dtype):
    """The 1x1 gate conv and the cell's update: (h', c'), c' = f*c + i*g; c=None is the zero state."""
    gates = conv1x1(y, weight, bias)
    hidden = gates.shape[1] // 4
    ifo = torch.sigmoid(gates[:, : 3 * hidden])
    i, f, o = ifo.chunk(3, 1)
    g = torch.tanh(gates[:, 3 * hidden :])
    if c is None:
        c = (i * g).to(torch.promote_types(g.dtype, dtype))  # the release's f*0 + i*g, same dtype
    else:
        c = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c), c


def _gates_fused(y, weight, bias, c, dtype):
    """_gates in one pass: the 1x1 conv as a matrix product without its bias, then the bias,
    activations and update per pixel in `inik_fast::lstm_gates`, in _gates' result dtype."""
    a = torch.mm(_pixels(y), weight.view(weight.shape[0], -1).t())
    out = torch.promote_types(a.dtype, dtype if c is None else c.dtype)
    h, c = torch.ops.inik_fast.lstm_gates(a.to(out), bias.to(out), None if c is None else _pixels(c).to(out))
    return _map(h, y), _map(c, y)
