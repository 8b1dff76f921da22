"""trunk.py against the release modules' forwards on maps large enough for the border strips
(the release fixtures' maps, at most 64x64, are all padded the plain way: under
trunk._STRIP_MIN_PIXELS)."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from inik_fast import INIKNet, INIKNetConfig, trunk
from inik_fast.release import ReleaseINIKNet
from op_cases import rel_err

F64 = torch.float64
SMALL = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)


@pytest.mark.parametrize("hw", [(96, 96), (97, 101), (100, 131)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pieces", [(5,), (3, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv3_reflect_is_the_padded_conv(hw, stride, pieces, channels_last):
    H, W = hw
    assert H * W >= trunk._STRIP_MIN_PIXELS
    gen = torch.Generator().manual_seed(H * W + stride)
    parts = [torch.randn(2, c, H, W, generator=gen, dtype=F64) for c in pieces]
    if channels_last:
        parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
    weight = torch.randn(6, sum(pieces), 3, 3, generator=gen, dtype=F64)
    expected = F.conv2d(F.pad(torch.cat(parts, 1), [1, 1, 1, 1], mode="reflect"), weight, stride=stride)
    got = trunk.conv3_reflect(parts, weight, stride)
    assert got.shape == expected.shape
    assert rel_err(got, expected) < 1e-12
    # the border rows and columns on their own, where a wrong strip would hide in the norm
    for sl in [(..., 0, slice(None)), (..., -1, slice(None)), (..., slice(None), 0), (..., slice(None), -1)]:
        assert rel_err(got[sl], expected[sl]) < 1e-12


@pytest.mark.parametrize("nchw_weight_grad", [True, False], ids=["nchw_dw", "channels_last_dw"])
@pytest.mark.parametrize("num_res", [1, 0], ids=["blocks", "no_blocks"])
def test_trunk_is_the_release_trunk_on_large_maps(num_res, nchw_weight_grad, monkeypatch):
    """The whole trunk (U-Net and both BiLSTMs, three scales) at 128x128 in float64: features and
    parameter gradients against the release's module forwards, with and without residual blocks,
    with the weight gradients of either layout (the one this CPU does not use is forced)."""
    monkeypatch.setattr(trunk, "_NCHW_WEIGHT_GRAD", nchw_weight_grad)
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, num_res_unet=num_res, num_res_lstm=num_res)
    model = INIKNet(cfg, backend="reference").double()
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1), dtype=F64)
    xs = [F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) for s in (0.25, 0.5)] + [x]

    def run(trunk_fn):
        model.zero_grad(set_to_none=True)
        hb, hs = trunk_fn(model, xs)
        feats = [t.contiguous() for t in hb + hs]
        gen = torch.Generator().manual_seed(2)
        sum((t * torch.randn(t.shape, generator=gen, dtype=F64)).sum() for t in feats).backward()
        return [t.detach() for t in feats], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_grads = run(INIKNet._trunk)
    slow, slow_grads = run(ReleaseINIKNet._trunk)
    for a, b in zip(fast, slow):
        assert rel_err(a, b) < 1e-12
    assert fast_grads.keys() == slow_grads.keys() and fast_grads
    for n in slow_grads:
        assert rel_err(fast_grads[n], slow_grads[n]) < 1e-12, n


def _trunk_grads(model, trunk_fn, xs, autocast):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hb, hs = trunk_fn(model, xs)
    gen = torch.Generator().manual_seed(2)
    sum((t.float() * torch.randn(t.shape, generator=gen)).sum() for t in hb + hs).backward()
    return {n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("nchw_weight_grad", [True, False], ids=["nchw_dw", "channels_last_dw"])
def test_trunk_gradients_under_bf16_autocast(nchw_weight_grad, monkeypatch):
    """Under CPU bf16 autocast the fast trunk's parameter gradients (its own backward of the
    reflect-padded convolutions, the recomputed LSTM gates) are off the float32 truth by at most
    about twice what the release's trunk under the same autocast is off by."""
    monkeypatch.setattr(trunk, "_NCHW_WEIGHT_GRAD", nchw_weight_grad)
    torch.manual_seed(0)
    model = INIKNet(SMALL, backend="reference")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    xs = [F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) for s in (0.25, 0.5)] + [x]
    truth = _trunk_grads(model, ReleaseINIKNet._trunk, xs, autocast=False)
    fast = _trunk_grads(model, INIKNet._trunk, xs, autocast=True)
    slow = _trunk_grads(model, ReleaseINIKNet._trunk, xs, autocast=True)
    assert fast.keys() == truth.keys() == slow.keys()
    flat = [torch.cat([g[n].flatten() for n in truth]) for g in (fast, slow, truth)]
    fast_err, slow_err = [((g - flat[2]).norm() / flat[2].norm()).item() for g in flat[:2]]
    assert 0 < slow_err < 0.1  # bf16 rounding, not a broken gradient
    assert fast_err <= 2 * slow_err, (fast_err, slow_err)
