"""Loaders for the public defocus-deblurring datasets, by their published folder layouts.

    dpdd     ROOT/{train_c,val_c,test_c}/{source,target}/*.png   (16-bit PNGs; split train|val|test)
    lfdof    ROOT/{train_data,test_data}/input/SCENE/*.png with ROOT/.../ground_truth/SCENE.png,
             or flat input/NAME.png with ground_truth/NAME.png        (split train|test)
    realdof  ROOT/{source,target}/*.png
    rtf      ROOT/image/[SUBDIR/]image_NN.png with ROOT/GT/sharp_NN.png
    cuhk     ROOT/image/*.jpg or ROOT/*.jpg, blurry only (of the blur-detection set, the
             out_of_focus* images when present; its motion* images are not defocus)
    pairs    ROOT/{blurry,sharp}/ (also blur|source|input with sharp|target|gt|ground_truth),
             matched by file name; `inik-fast synth` writes this layout

Items are dicts: blurry [3, H, W] float32 in [0, 1], sharp (same, or None), name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from .augment import augment_pair
from .image_io import is_image_path, read_image

BLURRY_DIRS = ("blurry", "blur", "source", "input")
SHARP_DIRS = ("sharp", "target", "gt", "ground_truth", "GT")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))


def _need_dir(path: Path, dataset: str, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset} dataset: folder {path} not found ({what})")
    return path


def _match_by_stem(blurry: list[Path], sharp_dir: Path, dataset: str, rename=lambda s: s) -> list[tuple]:
    sharp = {p.stem: p for p in _images(sharp_dir)}
    pairs = []
    for b in blurry:
        s = sharp.get(rename(b.stem))
        if s is None:
            raise DatasetError(f"{dataset} dataset: no sharp image for {b} in {sharp_dir}")
        pairs.append((b, s))
    return pairs


def _source_target(base: Path, dataset: str) -> list[tuple]:
    """The pairs of BASE/source/NAME and BASE/target/NAME (DPDD's and RealDOF's layout)."""
    src = _need_dir(base / "source", dataset, "blurry images")
    return _match_by_stem(_images(src), _need_dir(base / "target", dataset, "sharp images"), dataset)


class ImageFolderDataset(Dataset):
    """(blurry, sharp-or-None) image files, loaded on access."""

    name = "pairs"

    def __init__(self, pairs: list[tuple[Path, Path | None]], root):
        if not pairs:
            raise DatasetError(f"{self.name} dataset: no images found under {root}")
        self.pairs, self.root = pairs, Path(root)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        b, s = self.pairs[i]
        item = {"blurry": _tensor(read_image(b)[0]), "sharp": None, "name": str(b.relative_to(self.root))}
        if s is not None:
            item["sharp"] = _tensor(read_image(s)[0])
            if item["sharp"].shape != item["blurry"].shape:
                raise DatasetError(f"{self.name} dataset: {b} and {s} differ in size")
        return item


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class PairsFolder(ImageFolderDataset):
    name = "pairs"

    def __init__(self, root, split=None):
        root = Path(root)
        bdir = next((root / d for d in BLURRY_DIRS if (root / d).is_dir()), None)
        sdir = next((root / d for d in SHARP_DIRS if (root / d).is_dir()), None)
        if bdir is None or sdir is None:
            raise DatasetError(f"pairs dataset: {root} needs a blurry folder {BLURRY_DIRS} and a sharp folder {SHARP_DIRS}")
        super().__init__(_match_by_stem(_images(bdir), sdir, self.name), root)


class DPDD(ImageFolderDataset):
    name = "dpdd"
    splits = ("train", "val", "test")

    def __init__(self, root, split="test"):
        root = Path(root)
        _check_split(self, split)
        base = _need_dir(root / f"{split}_c", self.name, "expected the dd_dp_dataset_png layout")
        super().__init__(_source_target(base, self.name), root)


class RealDOF(ImageFolderDataset):
    name = "realdof"

    def __init__(self, root, split=None):
        super().__init__(_source_target(Path(root), self.name), root)


class LFDOF(ImageFolderDataset):
    name = "lfdof"
    splits = ("train", "test")

    def __init__(self, root, split="test"):
        root = Path(root)
        _check_split(self, split)
        base = root if (root / "input").is_dir() else root / f"{split}_data"
        inp = _need_dir(base / "input", self.name, "expected input/ and ground_truth/")
        gt = _need_dir(base / "ground_truth", self.name, "sharp images")
        pairs = []
        for entry in sorted(inp.iterdir()):
            if entry.is_dir():  # a scene: several focus settings share one ground truth
                pairs += _match_by_stem(_images(entry), gt, self.name, rename=lambda s, scene=entry.name: scene)
            elif is_image_path(entry):
                pairs += _match_by_stem([entry], gt, self.name)
        super().__init__(pairs, root)


class RTF(ImageFolderDataset):
    name = "rtf"

    def __init__(self, root, split=None):
        root = Path(root)
        img = _need_dir(root / "image", self.name, "blurry images image_NN.png")
        gt = _need_dir(root / "GT", self.name, "sharp images sharp_NN.png")
        blurry = [p for d in [img, *sorted(x for x in img.iterdir() if x.is_dir())] for p in _images(d)]
        rename = lambda s: "sharp" + s[len("image"):] if s.startswith("image") else s  # noqa: E731
        super().__init__(_match_by_stem(blurry, gt, self.name, rename), root)


class CUHK(ImageFolderDataset):
    name = "cuhk"

    def __init__(self, root, split=None):
        root = Path(root)
        folder = root / "image" if (root / "image").is_dir() else _need_dir(root, self.name, "blurry images")
        files = _images(folder)
        defocus = [p for p in files if p.stem.startswith("out_of_focus")]
        super().__init__([(p, None) for p in (defocus or files)], root)


def _check_split(ds, split):
    if split not in ds.splits:
        raise DatasetError(f"{ds.name} dataset: split={split!r}: expected one of {ds.splits}")


FOLDER_DATASETS = {c.name: c for c in (DPDD, LFDOF, RealDOF, RTF, CUHK, PairsFolder)}
# A folder given with the synthetic dataset (the default) would be ignored.
FOLDER_HINT = f"no folder for the synthetic dataset (the default); name the folder's layout with --dataset ({', '.join(sorted(FOLDER_DATASETS))})"


class PairCrops:
    """Training samples from a folder dataset: sample k of the stream is a random crop (plus
    flips and rotation) of image perm_e[k % n], with a fresh permutation per epoch e = k // n.
    Everything is a function of (seed, k), so a resumed run sees the same samples."""

    def __init__(self, dataset: ImageFolderDataset, crop: int, seed: int):
        if any(s is None for _, s in dataset.pairs):
            raise DatasetError(f"{dataset.name} dataset has no sharp images: it can be deblurred, not trained on")
        self.dataset, self.crop, self.seed = dataset, crop, seed

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.dataset)
        perm = np.random.default_rng([self.seed, k // n]).permutation(n)
        item = self.dataset[int(perm[k % n])]
        rng = np.random.default_rng([self.seed, k, 1])
        blurry, sharp = augment_pair([item["blurry"], item["sharp"]], self.crop, rng)
        return blurry, sharp
