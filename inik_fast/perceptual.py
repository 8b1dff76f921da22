"""The release's perceptual terms, built from locally stored pretrained weights (nothing is
downloaded): VGG19 feature L1 and LPIPS (AlexNet, v0.1).

`--perceptual-weights DIR` names a folder holding
    vgg19*.pth             torchvision's VGG19 state dict (vgg19-dcbb9e9d.pth)
    alexnet*.pth           torchvision's AlexNet state dict (alexnet-owt-7be5be79.pth)
    lpips_alex.pth|alex.pth   the LPIPS v0.1 linear heads (the `lpips` package's weights/v0.1/alex.pth)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import UserError

VGG_TAPS = (2, 7, 14)  # conv1_2, conv2_2, conv3_3 of VGG19 `features`, before their ReLU
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256)  # enough layers for module 14
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_ALEX_TAPS = (1, 4, 7, 9, 11)  # the ReLUs after conv1..conv5 of AlexNet `features`
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
HELP = (
    "pass --perceptual-weights DIR with vgg19*.pth (torchvision VGG19), alexnet*.pth (torchvision AlexNet) "
    "and lpips_alex.pth (LPIPS v0.1 heads); pretrained weights cannot be downloaded here"
)


class PerceptualWeightsError(UserError):
    """Pretrained perceptual weights that are not given, not found or not usable."""


def _find(folder, patterns: tuple[str, ...], what: str) -> Path:
    if folder is None:
        raise PerceptualWeightsError(f"{what} needs pretrained weights: {HELP}")
    folder = Path(folder)
    if not folder.is_dir():
        raise PerceptualWeightsError(f"--perceptual-weights {folder}: not a folder; {HELP}")
    for pat in patterns:
        hits = sorted(folder.glob(pat))
        if hits:
            return hits[0]
    raise PerceptualWeightsError(f"{what}: no {' or '.join(patterns)} in {folder}; {HELP}")


def _load(path: Path, module: nn.Module, what: str, rename) -> None:
    """Load `path` into `module`; `rename` maps the file's keys to the module's (None: skip)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {name: v for k, v in sd.items() if (name := rename(k)) is not None}
        module.load_state_dict(sd, strict=True)
    except Exception as e:
        raise PerceptualWeightsError(f"{path}: not usable {what} weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _features_key(last: int):
    """torchvision's `features.{i}.*` keys with i <= last, without the prefix."""

    def rename(k: str):
        parts = k.split(".")
        return ".".join(parts[1:]) if parts[0] == "features" and int(parts[1]) <= last else None

    return rename


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class VGGFeatureL1(nn.Module):
    """sum over taps of mean |phi(x) - phi(y)|, phi = VGG19 `features` up to module 14, applied
    to the [0, 1] images as the release does (no ImageNet normalisation)."""

    def __init__(self, weights_dir=None):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[: VGG_TAPS[-1] + 1])
        _load(_find(weights_dir, ("vgg19*.pth",), "the VGG loss"), self.features, "VGG19", _features_key(VGG_TAPS[-1]))
        _frozen(self)

    def forward(self, x, y):
        loss, h = 0.0, torch.cat([x, y])
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG_TAPS:
                a, b = h.chunk(2)
                loss = loss + (a - b).abs().mean()
        return loss


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet, for images in [0, 1]: per-image distances [B]."""

    def __init__(self, weights_dir=None):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _ALEX_CHANNELS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        _load(_find(weights_dir, ("alexnet*.pth",), "LPIPS"), self.features, "AlexNet", _features_key(_ALEX_TAPS[-1]))
        heads = _find(weights_dir, ("lpips_alex.pth", "alex.pth"), "LPIPS")
        # the lpips package's keys are lin{k}.model.1.weight (model.0 is a Dropout)
        _load(heads, self.lins, "LPIPS head", lambda k: k[3] + ".weight" if k.startswith("lin") else None)
        _frozen(self)

    def forward(self, x, y):
        h = (torch.cat([x, y]) * 2 - 1 - self.shift) / self.scale  # LPIPS takes [-1, 1] inputs
        dist = 0.0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _ALEX_TAPS:
                a, b = (h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)).chunk(2)
                dist = dist + self.lins[_ALEX_TAPS.index(i)]((a - b) ** 2).mean(dim=(1, 2, 3))
        return dist


def lpips_if_available(weights_dir) -> LPIPS | None:
    """LPIPS from `weights_dir`, or None when no folder is given (the metric is then left out)."""
    return None if weights_dir is None else LPIPS(weights_dir)
