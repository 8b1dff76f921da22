"""Datasets, augmentation, synthetic defocus and image I/O for training and evaluation."""
from .datasets import FOLDER_DATASETS, FOLDER_HINT, ImageFolderDataset, PairCrops
from .image_io import ImageError, read_image, write_image
from .synthetic import SyntheticDefocus, SyntheticEval, write_pairs

__all__ = [
    "FOLDER_DATASETS",
    "FOLDER_HINT",
    "ImageError",
    "ImageFolderDataset",
    "PairCrops",
    "SyntheticDefocus",
    "SyntheticEval",
    "read_image",
    "write_image",
    "write_pairs",
]
