"""Synthetic defocus pairs, so that training works out of the box (no dataset download).

Sharp images are the real photos that scikit-image bundles (offline). The stereo motorcycle
pair is reserved for evaluation, with `camera` and `coffee`; training never sees them. For
each sample: a random depth layout (fronto-parallel planes, a slanted plane, or smooth
blobs) gives a nearness map d in [0, 1]; with a random focus nearness f, the thin-lens
circle of confusion has radius r = k |d - f| (proportional to the inverse-depth difference),
scaled so that the largest radius in the image is r_max (random, up to `max_radius`, about
8 px). The blurry image is the sharp one seen through an anti-aliased disk PSF of radius
r(x) at each pixel, computed in linear light (gamma 2.2) by blurring with disks at radii
0, 0.5, 1, ... and interpolating linearly between the two nearest radii; optional Gaussian
noise, then 8-bit quantisation. The left motorcycle view of the eval set uses its real
disparity map as nearness. Every sample is a pure function of (seed, index).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from .augment import apply_dihedral, center_crop, random_dihedral
from .image_io import is_image_path, write_image

TRAIN_PHOTOS = (
    "astronaut", "brick", "chelsea", "clock", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip
EVAL_PHOTOS = ("motorcycle_left", "motorcycle_right", "camera", "coffee")
LAYOUTS = ("planes", "slanted", "blobs")
EVAL_SEED = 1234  # the held-out set's seed; training streams default to seed 0
VAL_SEED = 4321  # validation during training: the same photos, other layouts
RADIUS_STEP = 0.5  # spacing of the precomputed disk radii
GAMMA = 2.2


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> torch.Tensor:
    """A bundled scikit-image photo as float32 [3, H, W] in [0, 1] (grey repeated)."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    elif name in TRAIN_PHOTOS + EVAL_PHOTOS:
        img = getattr(skimage.data, name)()
    else:
        raise ConfigError(f"photo {name!r}: expected one of {TRAIN_PHOTOS + EVAL_PHOTOS}")
    img = np.asarray(img, dtype=np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1)))


@functools.lru_cache(maxsize=1)
def motorcycle_nearness() -> np.ndarray:
    """The left motorcycle view's disparity as nearness in [0, 1]; unknown pixels are far."""
    import skimage.data

    disp = np.asarray(skimage.data.stereo_motorcycle()[2], dtype=np.float64)
    valid = np.isfinite(disp)
    lo, hi = disp[valid].min(), disp[valid].max()
    return np.where(valid, (disp - lo) / (hi - lo), 0.0)


def depth_map(h: int, w: int, layout: str, rng: np.random.Generator) -> np.ndarray:
    """A random nearness map [h, w] in [0, 1] of the given layout."""
    s = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = (2 * yy - h + 1) / s, (2 * xx - w + 1) / s  # about [-1, 1]
    if layout == "planes":  # background plus 1-3 fronto-parallel objects (ellipses or boxes)
        d = np.full((h, w), rng.uniform())
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(-1, 1, 2)
            ry, rx = rng.uniform(0.15, 0.8, 2)
            u, v = (yy - cy) / ry, (xx - cx) / rx
            inside = (u**2 + v**2 <= 1) if rng.integers(2) else (np.maximum(abs(u), abs(v)) <= 1)
            d[inside] = rng.uniform()
        return d
    if layout == "slanted":  # one tilted plane: nearness linear in a random direction
        t = math.cos(a := rng.uniform(0, 2 * math.pi)) * xx + math.sin(a) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        lo, hi = np.sort(rng.uniform(0, 1, 2))
        return lo + (hi - lo) * t
    if layout == "blobs":  # smooth surface: background plus 2-6 Gaussian bumps and dents
        d = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 7))):
            cy, cx = rng.uniform(-1, 1, 2)
            sig = rng.uniform(0.1, 0.6)
            d += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig**2))
        return (d - d.min()) / max(d.max() - d.min(), 1e-9)
    raise ConfigError(f"layout={layout!r}: expected one of {LAYOUTS}")


def coc_radius(nearness: np.ndarray, focus: float, r_max: float) -> np.ndarray:
    """Thin-lens blur radius: proportional to |nearness - focus|, largest value r_max."""
    r = np.abs(nearness - focus)
    return r * (r_max / max(r.max(), 1e-9))


def disk_psf(radius: float, size: int, supersample: int = 8) -> torch.Tensor:
    """Normalised disk of `radius` px on a size x size grid, pixel coverage by supersampling."""
    c = size // 2
    if radius <= 0:
        k = torch.zeros(size, size, dtype=torch.float64)
        k[c, c] = 1
        return k
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    t = (np.arange(size)[:, None] - c + sub[None, :]).reshape(-1)
    inside = (t[:, None] ** 2 + t[None, :] ** 2) <= radius**2
    k = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return torch.from_numpy(k / k.sum())


def defocus(sharp: torch.Tensor, radius: np.ndarray) -> torch.Tensor:
    """Blur [3, H, W] with a disk PSF whose radius [H, W] varies per pixel (see module doc)."""
    r = torch.from_numpy(np.asarray(radius, dtype=np.float64))
    n_levels = int(math.ceil(float(r.max()) / RADIUS_STEP)) + 1
    pad = int(math.ceil((n_levels - 1) * RADIUS_STEP)) + 1
    size = 2 * pad + 1
    lin = sharp.double().clamp(0, 1) ** GAMMA
    H, W = lin.shape[-2:]
    padded = F.pad(lin[None], [pad] * 4, mode="reflect" if pad < min(H, W) else "replicate")[0]
    Hp, Wp = padded.shape[-2:]
    spec = torch.fft.rfft2(padded)
    level = r / RADIUS_STEP
    out = torch.zeros_like(lin)
    for i in range(n_levels):
        w = (1 - (level - i).abs()).clamp(min=0)  # linear interpolation between disk radii
        if not bool(w.any()):
            continue
        k = torch.zeros(Hp, Wp, dtype=torch.float64)
        k[:size, :size] = disk_psf(i * RADIUS_STEP, size)
        k = torch.roll(k, (-pad, -pad), dims=(0, 1))  # centre the kernel at (0, 0)
        blurred = torch.fft.irfft2(spec * torch.fft.rfft2(k), s=(Hp, Wp))[:, pad : pad + H, pad : pad + W]
        out += w * blurred
    return (out.clamp(min=0) ** (1 / GAMMA)).float()


def _finish(blurry: torch.Tensor, noise: float, rng: np.random.Generator) -> torch.Tensor:
    """Optional Gaussian noise (sigma uniform in [0, noise]), then 8-bit quantisation."""
    if noise > 0:
        sigma = rng.uniform(0, noise)
        blurry = blurry + torch.from_numpy(rng.normal(0, sigma, blurry.shape).astype(np.float32))
    return torch.round(blurry.clamp(0, 1) * 255) / 255


def _check_blur(max_radius: float, noise: float) -> tuple[float, float]:
    if not 0 < max_radius <= 32:
        raise ConfigError(f"max_radius={max_radius}: expected a radius in (0, 32] px")
    if noise < 0:
        raise ConfigError(f"noise={noise}: expected a noise sigma >= 0")
    return float(max_radius), float(noise)


def _blur_params(rng: np.random.Generator, max_radius: float) -> tuple[str, float, float]:
    """(layout, focus nearness, r_max); r_max is at least 1 px unless max_radius is smaller."""
    layout = LAYOUTS[int(rng.integers(len(LAYOUTS)))]
    return layout, float(rng.uniform()), float(rng.uniform(min(1.0, max_radius), max_radius))


class SyntheticDefocus(Dataset):
    """Synthetic training pairs: item k is a (blurry, sharp) pair of float32 [3, crop, crop]
    tensors in [0, 1] from the training photos, with random scale (0.5-1x), crop, flips,
    rotation, depth layout, focus and r_max, all a pure function of (seed, k). `length` is only
    what len() reports (for samplers and epochs); `sample(k)` takes any k >= 0."""

    def __init__(self, crop: int = 256, seed: int = 0, max_radius: float = 8.0, noise: float = 0.0, length: int = 1000):
        if crop < 1:
            raise ConfigError(f"crop={crop}: expected a positive size")
        if length < 0:
            raise ConfigError(f"length={length}: expected a number of items >= 0")
        self.crop, self.seed, self.length = crop, seed, length
        self.max_radius, self.noise = _check_blur(max_radius, noise)

    def __len__(self):
        return self.length

    def __getitem__(self, k):
        if not 0 <= k < self.length:
            raise IndexError(f"SyntheticDefocus: index {k} is outside 0..{self.length - 1}")
        return self.sample(k)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, k])
        photo = load_photo(TRAIN_PHOTOS[int(rng.integers(len(TRAIN_PHOTOS)))])
        margin = int(math.ceil(self.max_radius)) + 1
        need = self.crop + 2 * margin
        H, W = photo.shape[-2:]
        scale = max(rng.uniform(0.5, 1.0), need / min(H, W))  # upscale only photos too small
        src = min(int(math.ceil(need / scale)), H, W)
        top, left = int(rng.integers(0, H - src + 1)), int(rng.integers(0, W - src + 1))
        patch = photo[None, :, top : top + src, left : left + src]
        patch = F.interpolate(patch, size=(need, need), mode="bilinear", antialias=True, align_corners=False)[0]
        sharp = apply_dihedral(patch.clamp(0, 1), *random_dihedral(rng))
        layout, focus, r_max = _blur_params(rng, self.max_radius)
        radius = coc_radius(depth_map(need, need, layout, rng), focus, r_max)
        blurry = defocus(sharp, radius)
        c = slice(margin, margin + self.crop)
        return _finish(blurry[:, c, c], self.noise, rng), sharp[:, c, c].contiguous()


class SyntheticEval(Dataset):
    """Held-out evaluation pairs: full-size photos never used in training (EVAL_PHOTOS, cycled),
    each with its own depth layout, focus and r_max from (seed, index). Item 0, the left
    motorcycle view, is blurred with its real disparity as depth."""

    name = "synthetic"

    def __init__(self, count: int = 8, seed: int = EVAL_SEED, max_radius: float = 8.0, noise: float = 0.0, crop: int | None = None):
        if count < 1:
            raise ConfigError(f"count={count}: expected at least 1 image")
        self.count, self.seed, self.crop = count, seed, crop
        self.max_radius, self.noise = _check_blur(max_radius, noise)

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if not 0 <= i < self.count:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i, 2])
        photo_name = EVAL_PHOTOS[i % len(EVAL_PHOTOS)]
        sharp = load_photo(photo_name)
        if self.crop is not None:  # a centred crop, for quick validation during training
            sharp = center_crop(sharp, self.crop)
        layout, focus, r_max = _blur_params(rng, self.max_radius)
        H, W = sharp.shape[-2:]
        if i == 0 and self.crop is None:
            layout, nearness = "disparity", motorcycle_nearness()
        else:
            nearness = depth_map(H, W, layout, rng)
        blurry = _finish(defocus(sharp, coc_radius(nearness, focus, r_max)), self.noise, rng)
        return {"blurry": blurry, "sharp": sharp.contiguous(), "name": f"{i:03d}_{photo_name}_{layout}"}


def write_pairs(out, count: int, *, split: str = "train", crop: int = 256, seed: int | None = None, max_radius: float = 8.0, noise: float = 0.0) -> list[Path]:
    """Write `count` pairs as OUT/blurry/NAME.png and OUT/sharp/NAME.png (the `pairs` layout).
    split "train": crop x crop training samples (seed 0 by default); "eval": the full-size
    held-out images (seed EVAL_SEED by default)."""
    out = Path(out)
    if count < 1:
        raise ConfigError(f"count={count}: expected at least 1 pair")
    if split == "train":
        stream = SyntheticDefocus(crop, 0 if seed is None else seed, max_radius, noise)
        items = ({"name": f"{k:05d}", **dict(zip(("blurry", "sharp"), stream.sample(k)))} for k in range(count))
    elif split == "eval":
        ds = SyntheticEval(count, EVAL_SEED if seed is None else seed, max_radius, noise)
        items = (ds[i] for i in range(count))
    else:
        raise ConfigError(f"split={split!r}: expected 'train' or 'eval'")
    kinds = ("blurry", "sharp")
    for kind in kinds:  # another run's pairs would mix in, of other sizes, some overwritten
        folder = out / kind
        if folder.is_dir() and any(is_image_path(p) for p in folder.iterdir()):
            raise DatasetError(f"{folder} already holds images; write the pairs into an empty folder")
    for kind in kinds:
        (out / kind).mkdir(parents=True, exist_ok=True)
    written = []
    for item in items:
        for kind in kinds:
            write_image(out / kind / f"{item['name']}.png", item[kind].permute(1, 2, 0).numpy())
        written.append(out / "blurry" / f"{item['name']}.png")
    return written
