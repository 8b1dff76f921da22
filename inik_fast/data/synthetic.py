"""Synthetic defocus pairs, so that training works out of the box (no dataset download).

Sharp images are the real photos that scikit-image bundles (offline). The stereo motorcycle
pair is reserved for evaluation, with `camera` and `coffee`; training never sees them. For each
sample a random depth layout (depth.py) and a random image formation (formation.py: PSF family,
linear or gamma-encoded blur, pixel or layered depth edges, sensor noise, JPEG) give the blurry
photo. Every sample is a pure function of (seed, index).

Held out of training entirely: the cat-eye PSF family and blur on the gamma-encoded image. The
evaluation set has one family per PSF family (in linear light) plus `srgb` (disk PSF, blurred on
the encoded image), each on all the held-out photos; the left motorcycle view of each family is
blurred with its real disparity as depth.
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
from .depth import LAYOUTS, depth_map, motorcycle_nearness
from .formation import check_settings, draw_formation, render
from .image_io import is_image_path, write_image
from .psf import PSF_FAMILIES, support

TRAIN_PHOTOS = (
    "astronaut", "brick", "chelsea", "clock", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip
EVAL_PHOTOS = ("motorcycle_left", "motorcycle_right", "camera", "coffee")
EVAL_SEED = 1234  # the held-out set's seed; training streams default to seed 0
VAL_SEED = 4321  # validation during training: the held-out photos, other draws
MAX_RADIUS, NOISE, JPEG = 12.0, 0.02, 0.5  # defaults: largest blur radius, noise level, JPEG share
HELD_OUT = {"psf": ("cateye",), "space": ("srgb",)}  # never in training
TRAIN_PSFS = tuple(p for p in PSF_FAMILIES if p not in HELD_OUT["psf"])
# family name -> (PSF families, blur spaces) drawn from; "train" is the training mixture
FAMILIES = {"train": (TRAIN_PSFS, ("linear",))} | {p: ((p,), ("linear",)) for p in PSF_FAMILIES} | {"srgb": (("disk",), ("srgb",))}
EVAL_FAMILIES = tuple(f for f in FAMILIES if f != "train")


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


class SyntheticDefocus(Dataset):
    """Synthetic training pairs: item k is a (blurry, sharp) pair of float32 [3, crop, crop]
    tensors in [0, 1] from the training photos, with random scale (0.5-1x), crop, flips,
    rotation, depth layout and formation (the training mixture: FAMILIES["train"]), all a pure
    function of (seed, k). `length` is only what len() reports (for samplers and epochs);
    `sample(k)` takes any k >= 0."""

    def __init__(self, crop: int = 256, seed: int = 0, max_radius: float = MAX_RADIUS, noise: float = NOISE, length: int = 1000, jpeg: float = JPEG):
        if crop < 1:
            raise ConfigError(f"crop={crop}: expected a positive size")
        if length < 0:
            raise ConfigError(f"length={length}: expected a number of items >= 0")
        self.crop, self.seed, self.length = crop, seed, length
        self.max_radius, self.noise, self.jpeg = check_settings(max_radius, noise, jpeg)

    def __len__(self):
        return self.length

    def __getitem__(self, k):
        if not 0 <= k < self.length:
            raise IndexError(f"SyntheticDefocus: index {k} is outside 0..{self.length - 1}")
        return self.sample(k)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, k])
        photo = load_photo(TRAIN_PHOTOS[int(rng.integers(len(TRAIN_PHOTOS)))])
        margin = support(self.max_radius)
        need = self.crop + 2 * margin
        H, W = photo.shape[-2:]
        scale = max(rng.uniform(0.5, 1.0), need / min(H, W))  # upscale only photos too small
        src = min(int(math.ceil(need / scale)), H, W)
        top, left = int(rng.integers(0, H - src + 1)), int(rng.integers(0, W - src + 1))
        patch = photo[None, :, top : top + src, left : left + src]
        patch = F.interpolate(patch, size=(need, need), mode="bilinear", antialias=True, align_corners=False)[0]
        sharp = apply_dihedral(patch.clamp(0, 1), *random_dihedral(rng))
        nearness = depth_map(need, need, LAYOUTS[int(rng.integers(len(LAYOUTS)))], rng)
        blurry = render(sharp, nearness, draw_formation(rng, *FAMILIES["train"], self.max_radius, self.noise, self.jpeg), rng)
        c = slice(margin, margin + self.crop)
        return blurry[:, c, c].contiguous(), sharp[:, c, c].contiguous()


class SyntheticEval(Dataset):
    """Held-out evaluation pairs: full-size photos never used in training. `count` images per
    family (EVAL_PHOTOS cycled), family-major; each with its own depth layout and formation from
    (seed, family, index). The first image of each family, the left motorcycle view, is blurred
    with its real disparity as depth. Items: {"blurry", "sharp", "name", "family"}.
    photos=TRAIN_PHOTOS gives the same families on the training photos instead (whole, where
    training saw crops): a model that does much better there fits its photos, not defocus."""

    name = "synthetic"

    def __init__(self, count: int = len(EVAL_PHOTOS), seed: int = EVAL_SEED, max_radius: float = MAX_RADIUS, noise: float = NOISE, crop: int | None = None, families=EVAL_FAMILIES, jpeg: float = JPEG, photos=EVAL_PHOTOS):
        if count < 1:
            raise ConfigError(f"count={count}: expected at least 1 image per family")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ConfigError(f"families={list(families)}: expected some of {list(FAMILIES)}")
        if not photos or any(p not in TRAIN_PHOTOS + EVAL_PHOTOS for p in photos):
            raise ConfigError(f"photos={list(photos)}: expected some of {list(TRAIN_PHOTOS + EVAL_PHOTOS)}")
        self.count, self.seed, self.crop, self.families, self.photos = count, seed, crop, tuple(families), tuple(photos)
        self.max_radius, self.noise, self.jpeg = check_settings(max_radius, noise, jpeg)

    def __len__(self):
        return self.count * len(self.families)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        family, j = self.families[i // self.count], i % self.count
        rng = np.random.default_rng([self.seed, list(FAMILIES).index(family), j, 2])
        photo_name = self.photos[j % len(self.photos)]
        sharp = load_photo(photo_name)
        if self.crop is not None:  # a centred crop, for quick validation during training
            sharp = center_crop(sharp, self.crop)
        layout = LAYOUTS[int(rng.integers(len(LAYOUTS)))]
        H, W = sharp.shape[-2:]
        if photo_name == "motorcycle_left" and j == 0 and self.crop is None:
            layout, nearness = "disparity", motorcycle_nearness()
        else:
            nearness = depth_map(H, W, layout, rng)
        f = draw_formation(rng, *FAMILIES[family], self.max_radius, self.noise, self.jpeg)
        name = f"{j:03d}_{photo_name}_{layout}_{f.psf}_{f.space}_{f.edges}"
        return {"blurry": render(sharp, nearness, f, rng), "sharp": sharp.contiguous(), "name": name, "family": family}


def write_pairs(out, count: int, *, split: str = "train", crop: int = 256, seed: int | None = None, max_radius: float = MAX_RADIUS, noise: float = NOISE, jpeg: float = JPEG) -> list[Path]:
    """Write pairs as blurry/NAME.png and sharp/NAME.png folders (the `pairs` layout).
    split "train": `count` crop x crop training samples in OUT (seed 0 by default); "eval": the
    full-size held-out images, `count` per family, in OUT/FAMILY (seed EVAL_SEED by default)."""
    out = Path(out)
    if count < 1:
        raise ConfigError(f"count={count}: expected at least 1 pair")
    if split == "train":
        stream = SyntheticDefocus(crop, 0 if seed is None else seed, max_radius, noise, jpeg=jpeg)
        items = ({"name": f"{k:05d}", **dict(zip(("blurry", "sharp"), stream.sample(k)))} for k in range(count))
        folders = [out]
    elif split == "eval":
        ds = SyntheticEval(count, EVAL_SEED if seed is None else seed, max_radius, noise, jpeg=jpeg)
        items = (ds[i] for i in range(len(ds)))
        folders = [out / f for f in ds.families]
    else:
        raise ConfigError(f"split={split!r}: expected 'train' or 'eval'")
    kinds = ("blurry", "sharp")
    for folder in (f / kind for f in folders for kind in kinds):  # another run's pairs would mix in
        if folder.is_dir() and any(is_image_path(p) for p in folder.iterdir()):
            raise DatasetError(f"{folder} already holds images; write the pairs into an empty folder")
    written = []
    for item in items:
        root = out / item["family"] if "family" in item else out
        for kind in kinds:
            (root / kind).mkdir(parents=True, exist_ok=True)
            write_image(root / kind / f"{item['name']}.png", item[kind].permute(1, 2, 0).numpy())
        written.append(root / "blurry" / f"{item['name']}.png")
    return written
