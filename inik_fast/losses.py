"""The release's multi-scale training loss.

Each of the model's 3 outputs [1/4, 1/2, full] is compared with the target resized bilinearly
to its size (weight 1 each):
    loss = mse * MSE + fft * FFT + lpips * LPIPS + vgg * VGG-feature-L1
FFT = mean |Re(fft2(out) - fft2(target))| + mean |Im(...)|. Release weights: 1, 0.1, 0.1, 0.1;
our default leaves the perceptual terms out (0) because their pretrained weights cannot be
downloaded here (see `inik_fast.perceptual`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .perceptual import LPIPS, VGGFeatureL1


def fft_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean |Re| + mean |Im| of fft2(x) - fft2(y) (= fft2(x - y)), in float32."""
    d = torch.fft.fft2(x.float() - y.float())
    return d.real.abs().mean() + d.imag.abs().mean()


def resize_like(target: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if target.shape[-2:] == out.shape[-2:]:
        return target
    return F.interpolate(target, size=out.shape[-2:], mode="bilinear", align_corners=False)


class MultiScaleLoss(nn.Module):
    def __init__(self, mse: float = 1.0, fft: float = 0.1, lpips: float = 0.0, vgg: float = 0.0, perceptual_weights=None):
        super().__init__()
        weights = {"mse": mse, "fft": fft, "lpips": lpips, "vgg": vgg}
        for name, w in weights.items():
            if not isinstance(w, (int, float)) or w < 0:
                raise ConfigError(f"loss weight {name}={w!r}: expected a number >= 0")
        self.weights = {name: float(w) for name, w in weights.items()}
        self.lpips = LPIPS(perceptual_weights) if lpips > 0 else None
        self.vgg = VGGFeatureL1(perceptual_weights) if vgg > 0 else None

    def forward(self, outs: list[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(total loss, {term: summed-over-scales value, detached})."""
        parts: dict[str, torch.Tensor] = {}

        def add(name, value):
            parts[name] = parts[name] + value if name in parts else value

        for out in outs:
            out, t = out.float(), resize_like(target, out).float()
            add("mse", F.mse_loss(out, t))
            if self.weights["fft"] > 0:
                add("fft", fft_loss(out, t))
            if self.lpips is not None:
                add("lpips", self.lpips(out, t).mean())
            if self.vgg is not None:
                add("vgg", self.vgg(out, t))
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}
