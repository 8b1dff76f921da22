"""INIKNet as published (the release's layers, parameters and state-dict keys), on the fused ops.

Module names and registration order reproduce the release's state-dict keys, so release
checkpoints load with `strict=True`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backends, ops, trunk
from .atoms import FreeAtoms, INRAtoms
from .config import INIKNetConfig


# torch 2.11's Inductor compiles this model's backward wrong: 27 of the 61 parameter gradients of a
# small config 4-17% off eager, in float64 too. AOTAutograd alone (backend="aot_eager") is exact
# there, and so is Inductor on torch 2.14; see the README.
_COMPILED_BACKWARD_BROKEN = torch.__version__.startswith("2.11.")


class BasicConv(nn.Module):
    def __init__(self, cin, cout, k, stride, relu=True, transpose=False):
        super().__init__()
        if transpose:
            conv = nn.ConvTranspose2d(cin, cout, k, stride, padding=k // 2 - 1, bias=False)
        else:
            conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False, padding_mode="reflect")
        self.main = nn.Sequential(conv, nn.ReLU(inplace=True)) if relu else nn.Sequential(conv)

    def forward(self, x):
        return self.main(x)


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.main = nn.Sequential(BasicConv(c, c, 3, 1, relu=True), BasicConv(c, c, 3, 1, relu=False))

    def forward(self, x):
        return x + self.main(x)


class ResStack(nn.Module):
    """The release's EBlock / DBlock: n ResBlocks in sequence."""

    def __init__(self, c, n):
        super().__init__()
        self.layers = nn.Sequential(*[ResBlock(c) for _ in range(n)])

    def forward(self, x):
        return self.layers(x)


class UNet(nn.Module):
    def __init__(self, cin, b, n):
        super().__init__()
        self.Encoder = nn.ModuleList([ResStack(b, n), ResStack(2 * b, n), ResStack(4 * b, n)])
        self.Decoder = nn.ModuleList([ResStack(2 * b, n), ResStack(b, n)])
        self.feat_extract = nn.ModuleList(
            [
                BasicConv(cin, b, 3, 1),
                BasicConv(b, 2 * b, 3, 2),
                BasicConv(2 * b, 4 * b, 3, 2),
                BasicConv(4 * b, 2 * b, 3, 1),
                BasicConv(2 * b, b, 3, 1),
            ]
        )
        self.up1 = BasicConv(4 * b, 2 * b, 4, 2, transpose=True)
        self.up2 = BasicConv(2 * b, b, 4, 2, transpose=True)

    def forward(self, x):
        fe, enc, dec = self.feat_extract, self.Encoder, self.Decoder
        r1 = enc[0](fe[0](x))
        r2 = enc[1](fe[1](r1))
        r3 = enc[2](fe[2](r2))
        z = dec[0](fe[3](torch.cat([self.up1(r3), r2], 1)))
        return dec[1](fe[4](torch.cat([self.up2(z), r1], 1)))


class LSTMCell(nn.Module):
    def __init__(self, hidden, n):
        super().__init__()
        self.layers = ResStack(2 * hidden, n)
        self.conv = nn.Conv2d(2 * hidden, 4 * hidden, 1)

    def forward(self, fea, state):
        h, c = state if state is not None else (torch.zeros_like(fea), torch.zeros_like(fea))
        i, f, o, g = self.conv(self.layers(torch.cat([fea, h], 1))).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class LSTMLayer(nn.Module):
    """Runs the cell over the scales, coarse to fine (`left2right`) or fine to coarse, resizing
    the state between scales. Returns the h's in [1/4, 1/2, full] order. fast=True steps with
    `trunk.lstm_cell` instead of the release's cell forward (cpu_ops: with the cpu backend's C++
    trunk ops)."""

    def __init__(self, hidden, n, coarse_to_fine: bool):
        super().__init__()
        self.cell = LSTMCell(hidden, n)
        self.coarse_to_fine = coarse_to_fine

    def forward(self, feas, fast: bool = False, cpu_ops: bool = False):
        order = feas if self.coarse_to_fine else feas[::-1]
        factor = 2.0 if self.coarse_to_fine else 0.5
        state, hs = None, []
        for i, fea in enumerate(order):
            h, c = trunk.lstm_cell(self.cell, fea, state, cpu_ops) if fast else self.cell(fea, state)
            hs.append(h)
            if i + 1 < len(order):
                state = tuple(F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False) for t in (h, c))
        return hs if self.coarse_to_fine else hs[::-1]


class ChannelNorm(nn.Module):
    """LayerNorm over the channel vector of each pixel."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BiLSTM(nn.Module):
    def __init__(self, hidden, n):
        super().__init__()
        self.left2right = LSTMLayer(hidden, n, coarse_to_fine=True)
        self.right2left = LSTMLayer(hidden, n, coarse_to_fine=False)
        self.norm = ChannelNorm(hidden)

    def forward(self, xs, fast: bool = False, cpu_ops: bool = False):
        h = self.left2right(self.right2left([self.norm(x) for x in xs], fast, cpu_ops), fast, cpu_ops)
        return [x + t for x, t in zip(xs, h)]


class INIKNet(nn.Module):
    """INIKNet. `forward(x)` takes [B, in_ch, H, W] images of any size and returns
    [out_1/4, out_1/2, out_full].

    backend: "auto", "reference", "cpu", "triton" or "cuda" (the fused ops). The release's own
    computation, the benchmarks' baseline, is `inik_fast.release.ReleaseINIKNet`.
    """

    def __init__(self, config: INIKNetConfig | None = None, backend: str = "auto"):
        super().__init__()
        cfg = config if config is not None else INIKNetConfig()
        if not isinstance(cfg, INIKNetConfig):
            raise TypeError(f"INIKNet: config must be an INIKNetConfig, got {type(cfg).__name__}")
        if backend not in ("auto", *backends.BACKENDS):
            raise backends.BackendError(f"INIKNet: backend={backend!r}: expected 'auto' or one of {backends.BACKENDS}")
        self.config, self.backend = cfg, backend
        b, n, G, M, C = cfg.base_ch, cfg.num_res_unet, cfg.num_groups, cfg.basis_num, cfg.in_ch
        self.unet = UNet(C, b, n)
        self.lstms_basis_select = BiLSTM(b, cfg.num_res_lstm)
        self.lstms_scale_select = BiLSTM(b, cfg.num_res_lstm)
        self.scale_select = nn.Conv2d(b, G + 1, 1)
        self.basis_select = nn.Conv2d(b, M, 1)
        self.inr_conv = INRAtoms(cfg) if cfg.atoms == "inr" else FreeAtoms(cfg)
        self.sum = nn.Conv2d((G + 1) * C * M, C, 1)

    @classmethod
    def from_pretrained(cls, path=None, *, device="cpu", backend: str = "auto") -> "INIKNet":
        """A model in eval mode with trained weights: the bundled default checkpoint (trained on
        synthetic defocus, see the README), or the file at `path`: our weights files and training
        checkpoints, or the release's state dict (its config is read off the tensor shapes).
        Parameters are float32. A file that cannot be used raises a one-line CheckpointError."""
        from . import checkpoint

        path = checkpoint.default_checkpoint() if path is None else path
        return checkpoint.load_model(path, device=device, backend=backend, model_class=cls)

    def ops_backend(self, device, dtype: torch.dtype = torch.float32) -> str:
        """The backend this model's forward runs on tensors of `device` and `dtype`."""
        return backends.resolve(self.backend, device, dtype)

    # -- atoms -------------------------------------------------------------------------------
    def atoms(self) -> torch.Tensor:
        """The atom bank [G, M, K, K]. Evaluated once per forward and shared by the three scales;
        never cached across calls (a few ms), so in-place weight updates are always seen."""
        return self.inr_conv(self.backend)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x):
        # torch.export traces with gradients enabled but compiles no backward: it is not refused.
        # Its flag is read directly: torch 2.11's Dynamo folds is_exporting() to True in torch.compile.
        if _COMPILED_BACKWARD_BROKEN and torch.is_grad_enabled() and torch.compiler.is_compiling() and not torch.compiler._is_exporting_flag:
            raise RuntimeError(
                "INIKNet: torch 2.11's torch.compile gives wrong parameter gradients for this model; "
                "compile it under torch.no_grad() or torch.inference_mode(), train it eagerly, or use torch 2.14"
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"INIKNet: x must be a torch.Tensor, got {type(x).__name__}")
        C = self.config.in_ch
        if x.dim() != 4 or x.shape[1] != C:
            raise ValueError(f"INIKNet: x must be [B, {C}, H, W], got [{', '.join(map(str, x.shape))}]")
        if not x.is_floating_point():
            raise ValueError(f"INIKNet: x must be a floating-point image, got {x.dtype}")
        H, W = x.shape[-2:]
        Hp, Wp = _padded_size(H), _padded_size(W)
        if (Hp, Wp) == (H, W):
            return self._forward(x)
        outs = self._forward(_pad(x, Hp, Wp))
        return [o[..., : -(-H // s), : -(-W // s)] for o, s in zip(outs, (4, 2, 1))]

    def _forward(self, x):
        xs = [
            F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False),
            F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False),
            x,
        ]
        hb, hs = self._trunk(xs)
        G, M, C = self.config.num_groups, self.config.basis_num, self.config.in_ch
        weight = self.sum.weight.view(C, G + 1, C, M)[:, 1:]
        scales = [torch.softmax(self.scale_select(h), dim=1)[:, 1:] for h in hs]
        bases = [self.basis_select(h) for h in hb]
        return self._inverse_kernel_convs(xs, scales, bases, weight)

    def _trunk(self, xs):
        """The U-Net features of each scale through both BiLSTMs: (hb, hs). `trunk.py`'s schedule,
        channels_last; `release.ReleaseINIKNet` overrides it with the release's module forwards."""
        cpu = self.ops_backend(xs[0].device, xs[0].dtype) == "cpu"  # its C++ library has the trunk ops
        f = [trunk.unet(self.unet, t.contiguous(memory_format=torch.channels_last), cpu) for t in xs]
        return self.lstms_basis_select(f, fast=True, cpu_ops=cpu), self.lstms_scale_select(f, fast=True, cpu_ops=cpu)

    def _inverse_kernel_convs(self, xs, scales, bases, weight):
        """The three scales' inverse-kernel convolutions, on one atom bank (the hook that
        `release.ReleaseINIKNet` overrides)."""
        atoms = self.atoms()
        outs = []
        for x, scale, basis in zip(xs, scales, bases):
            dt = basis.dtype  # the autocast dtype under autocast, else x's
            outs.append(
                ops.inverse_kernel_conv(
                    x.to(dt), atoms, scale.to(dt), basis, weight, self.sum.bias, residual=True, backend=self.backend
                )
            )
        return outs


def _padded_size(n: int) -> int:
    """The smallest size >= n the U-Net takes: a multiple of 16, at least 32 (its 1/16-scale
    features must be 2 pixels wide for their reflect padding)."""
    return max(32, -(-n // 16) * 16)


def _pad(x, Hp, Wp):
    """Reflect-pad to Hp x Wp at the bottom and right; replicate where the image is too small to reflect."""
    H, W = x.shape[-2:]
    ph, pw = Hp - H, Wp - W
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, [0, pw, 0, ph], mode=mode)
