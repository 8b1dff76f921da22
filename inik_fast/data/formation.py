"""How a synthetic defocused photo is formed, drawn per sample:

- where the blur is applied: in linear light (gamma 2.2 decoded) or on the gamma-encoded image,
  as some pipelines and editing tools do;
- the PSF family (psf.py) and its shape;
- depth edges: `pixel` gives every pixel the blur of its own depth (hard switching between blur
  levels at depth edges), `layered` composites the scene's depth layers front to back with blurred
  mattes, so that a near object's blur spreads over what is behind it (occlusion-aware);
- Poisson-Gaussian sensor noise in linear light, before the tone curve, then 8-bit quantisation
  and, sometimes, JPEG compression.

Radii: the thin-lens circle of confusion r = k |nearness - focus|, with the focus plane anywhere
and the largest radius in the image r_max.
"""
from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .depth import coc_radius
from .psf import channel_radii, draw_shape, psf_kernel, support

SPACES = ("linear", "srgb")
EDGES = ("pixel", "layered")
GAMMA = 2.2
RADIUS_STEP = 0.5  # pixel edges: spacing of the precomputed blur levels
LAYERS = 10  # layered edges: nearness bins of a continuous depth map


@dataclasses.dataclass(frozen=True)
class Formation:
    psf: str
    shape: dict
    space: str
    edges: str
    focus: float
    r_max: float
    shot: float  # noise variance per unit of linear intensity
    read: float  # noise sigma at black
    jpeg: int  # JPEG quality, 0 for none


def draw_formation(rng: np.random.Generator, psfs, spaces, max_radius: float, noise: float, jpeg: float) -> Formation:
    """One sample's formation: each choice uniform over the given options and ranges."""
    psf = psfs[int(rng.integers(len(psfs)))]
    space = spaces[int(rng.integers(len(spaces)))]
    edges = EDGES[int(rng.integers(len(EDGES)))]
    focus, r_max = float(rng.uniform()), float(rng.uniform(min(1.0, max_radius), max_radius))
    level = float(rng.uniform(0, noise))
    shot, read = level**2 * float(rng.uniform(0.5, 1)), level * float(rng.uniform(0.1, 0.5))
    quality = int(rng.integers(60, 96)) if rng.uniform() < jpeg else 0
    return Formation(psf, draw_shape(psf, rng), space, edges, focus, r_max, shot, read, quality)


def check_settings(max_radius: float, noise: float, jpeg: float) -> tuple[float, float, float]:
    if not 0 < max_radius <= 32:
        raise ConfigError(f"max_radius={max_radius}: expected a radius in (0, 32] px")
    if noise < 0:
        raise ConfigError(f"noise={noise}: expected a noise sigma >= 0")
    if not 0 <= jpeg <= 1:
        raise ConfigError(f"jpeg={jpeg}: expected a probability in [0, 1]")
    return float(max_radius), float(noise), float(jpeg)


def _kernels(f: Formation, radius: float, size: int) -> torch.Tensor:
    """[3, size, size]: the PSF of each colour channel."""
    return torch.stack([psf_kernel(f.psf, f.shape, r, size) for r in channel_radii(f.psf, f.shape, radius)])


class _FFTBlur:
    """Convolution of [C, H, W] images with [C, k, k] kernels (k = 2 pad + 1) by FFT, with the
    images reflect-padded by `pad`."""

    def __init__(self, H: int, W: int, pad: int):
        self.H, self.W, self.pad, self.size = H, W, pad, 2 * pad + 1
        self.mode = "reflect" if pad < min(H, W) else "replicate"
        self.shape = (H + 2 * pad, W + 2 * pad)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(F.pad(x[None], [self.pad] * 4, mode=self.mode)[0])

    def kernels(self, k: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(k.shape[0], *self.shape, dtype=torch.float64)
        full[:, : self.size, : self.size] = k
        return torch.fft.rfft2(torch.roll(full, (-self.pad, -self.pad), dims=(-2, -1)))  # centred at 0

    def __call__(self, xspec: torch.Tensor, kspec: torch.Tensor) -> torch.Tensor:
        out = torch.fft.irfft2(xspec * kspec, s=self.shape)
        return out[:, self.pad : self.pad + self.H, self.pad : self.pad + self.W]


def _blur_pixel(img: torch.Tensor, radius: torch.Tensor, f: Formation) -> torch.Tensor:
    """Each pixel's own blur: linear interpolation between blur levels RADIUS_STEP apart."""
    n_levels = int(math.ceil(float(radius.max()) / RADIUS_STEP)) + 1
    blur = _FFTBlur(*img.shape[-2:], support((n_levels - 1) * RADIUS_STEP))
    spec, level = blur.image(img), radius / RADIUS_STEP
    out = torch.zeros_like(img)
    for i in range(n_levels):
        w = (1 - (level - i).abs()).clamp(min=0)
        if bool(w.any()):
            out += w * blur(spec, blur.kernels(_kernels(f, i * RADIUS_STEP, blur.size)))
    return out


def _blur_layered(img: torch.Tensor, nearness: np.ndarray, f: Formation) -> torch.Tensor:
    """Far-to-near 'over' compositing of depth layers, each blurred with its own PSF, colour and
    matte alike; normalised by the composited matte so that no layer leaves a dark fringe."""
    lo, hi = float(nearness.min()), float(nearness.max())
    bins = np.minimum(((nearness - lo) / max(hi - lo, 1e-9) * LAYERS).astype(int), LAYERS - 1)
    radius = coc_radius(nearness, f.focus, f.r_max)
    layers = [(bins == b) for b in range(LAYERS) if (bins == b).any()]
    radii = [float(radius[m].mean()) for m in layers]
    blur = _FFTBlur(*img.shape[-2:], support(max(radii)))
    colour, alpha = torch.zeros_like(img), torch.zeros_like(img)
    for m, r in zip(layers, radii):
        mask = torch.from_numpy(m.astype(np.float64)).expand_as(img)
        k = blur.kernels(_kernels(f, r, blur.size))
        out = blur(blur.image(torch.cat([img * mask, mask])), torch.cat([k, k]))
        a = out[3:].clamp(0, 1)
        colour, alpha = colour * (1 - a) + out[:3], alpha * (1 - a) + a
    return colour / alpha.clamp(min=1e-6)


def render(sharp: torch.Tensor, nearness: np.ndarray, f: Formation, rng: np.random.Generator) -> torch.Tensor:
    """The defocused photo of `sharp` [3, H, W] (float, sRGB in [0, 1]) with depth `nearness`
    [H, W]: float32 8-bit values (JPEG-decoded when the formation asks for it)."""
    s = sharp.double().clamp(0, 1)
    img = s**GAMMA if f.space == "linear" else s
    if f.edges == "pixel":
        radius = torch.from_numpy(np.asarray(coc_radius(nearness, f.focus, f.r_max), dtype=np.float64))
        out = _blur_pixel(img, radius, f)
    else:
        out = _blur_layered(img, nearness, f)
    lin = out.clamp(0, 1) ** (GAMMA if f.space == "srgb" else 1)
    if f.shot > 0 or f.read > 0:  # Poisson-Gaussian: variance shot * x + read^2
        sigma = torch.sqrt(f.shot * lin + f.read**2)
        lin = lin + sigma * torch.from_numpy(rng.standard_normal(lin.shape))
    encoded = torch.round(lin.clamp(0, 1) ** (1 / GAMMA) * 255) / 255
    return (_jpeg(encoded, f.jpeg) if f.jpeg else encoded).float()


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255)
