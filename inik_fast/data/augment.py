"""The release's training augmentation: one random crop, h-flip, v-flip and 90-degree rotation,
applied identically to every image of a sample. Images are float [C, H, W] tensors in [0, 1]."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DatasetError


def random_crop_box(h: int, w: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a uniformly random crop x crop window of an h x w image."""
    if crop > h or crop > w:
        raise DatasetError(f"crop={crop}: larger than the {h}x{w} image")
    return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))


def random_dihedral(rng: np.random.Generator) -> tuple[bool, bool, int]:
    """(h-flip, v-flip, number of 90-degree rotations), each uniform."""
    return bool(rng.integers(2)), bool(rng.integers(2)), int(rng.integers(4))


def apply_dihedral(img: torch.Tensor, hflip: bool, vflip: bool, rot: int) -> torch.Tensor:
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    return torch.rot90(img, rot, dims=(-2, -1)).contiguous()


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The centred size x size window (or the whole side where the image is smaller)."""
    h, w = img.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    return img[..., (h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]


def augment_pair(images: list[torch.Tensor], crop: int | None, rng: np.random.Generator) -> list[torch.Tensor]:
    """The same random crop (skipped when crop is None), flips and rotation for every image."""
    h, w = images[0].shape[-2:]
    for im in images[1:]:
        if im.shape[-2:] != (h, w):
            raise ValueError(f"augment_pair: image sizes differ: {tuple(im.shape[-2:])} vs {(h, w)}")
    if crop is not None:
        top, left = random_crop_box(h, w, crop, rng)
        images = [im[..., top : top + crop, left : left + crop] for im in images]
    flips = random_dihedral(rng)
    return [apply_dihedral(im, *flips) for im in images]
