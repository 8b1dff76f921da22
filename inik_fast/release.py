"""The release's way of computing the trunk, the atoms and the inverse-kernel convolution.

Kept as the baseline that the benchmarks measure the fused ops against, and as
`ReleaseINIKNet`, the model behind `--backend release`. It recomputes all G*M atoms (one small
MLP call each) at every scale and materialises the [B, (G+1)*C*M, H, W] response maps (240
channels in the release config).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .atoms import group_code
from .config import INIKNetConfig
from .errors import ConfigError
from .model import INIKNet


def release_atoms(inr_atoms, num_groups: int, coords: str) -> torch.Tensor:
    """All G*M atoms from G*M separate MLP calls, zero-padded to [G, M, K, K]."""
    ref = inr_atoms.kernelINR_list[0].layers[0].weight
    K = 2 * num_groups + 1
    out = []
    for g in range(num_groups):
        k = 2 * g + 3
        code = group_code(k, coords).to(ref).reshape(k * k, -1)
        ks = [(9.0 / k**2) * mlp(code).view(k, k) for mlp in inr_atoms.kernelINR_list]
        out.append(F.pad(torch.stack(ks), [(K - k) // 2] * 4))
    return torch.stack(out)


def release_inverse_kernel_conv(x, atoms, scale, basis, weight, bias=None, residual=True):
    """The op of `inik_fast.ops.inverse_kernel_conv`, computed as the release does: zero null
    slot, all (G+1)*C*M response maps stacked, multiplied by the tiled selections, then a 1x1
    convolution over all of them."""
    B, C, H, W = x.shape
    G, M, K, _ = atoms.shape
    O = weight.shape[0]
    maps = [x.new_zeros(B, C * M, H, W)]
    for g in range(G):
        r, R = g + 1, K // 2
        k = atoms[g, :, R - r : R + r + 1, R - r : R + r + 1]
        maps.append(F.conv2d(x, k[:, None].repeat(C, 1, 1, 1), padding=r, groups=C))  # channel c*M + m
    maps = torch.stack(maps, 1)  # [B, G+1, C*M, H, W]
    scale_full = torch.cat([scale.new_zeros(B, 1, H, W), scale], 1)
    maps = maps * scale_full[:, :, None] * basis.repeat(1, C, 1, 1)[:, None]
    weight_full = torch.cat([weight.new_zeros(O, 1, C, M), weight], 1).view(O, (G + 1) * C * M, 1, 1)
    y = F.conv2d(maps.flatten(1, 2), weight_full, bias)
    return y + x if residual else y


class ReleaseINIKNet(INIKNet):
    """INIKNet with the release's computation of the trunk (the modules' own forwards: reflect
    padding, cat, unfused gates, NCHW) and of the inverse-kernel convolutions; the same
    parameters, state dict and results as `INIKNet`."""

    def __init__(self, config: INIKNetConfig | None = None):
        super().__init__(config)
        if self.config.atoms != "inr":
            raise ConfigError("ReleaseINIKNet: needs atoms='inr' (the release has INR atoms only)")

    def ops_backend(self, device, dtype: torch.dtype = torch.float32) -> str:
        return "release"

    def _trunk(self, xs):
        f = [self.unet(t) for t in xs]
        return self.lstms_basis_select(f), self.lstms_scale_select(f)

    def _inverse_kernel_convs(self, xs, scales, bases, weight):
        outs = []
        for x, scale, basis in zip(xs, scales, bases):
            atoms = release_atoms(self.inr_conv, self.config.num_groups, self.config.coords)  # at every scale, as the release
            outs.append(release_inverse_kernel_conv(x, atoms, scale, basis, weight, self.sum.bias))
        return outs


def build_model(config: INIKNetConfig | None = None, backend: str = "auto") -> INIKNet:
    """The model for a `--backend` name: INIKNet on a real backend, or "release" for the baseline."""
    return ReleaseINIKNet(config) if backend == "release" else INIKNet(config, backend=backend)
