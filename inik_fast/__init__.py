"""inik_fast: INIKNet single-image defocus deblurring with fused inverse-kernel ops."""
from . import ops
from .backends import available_backends
from .config import INIKNetConfig
from .data.image_io import read_image, write_image
from .deblur import deblur_file, deblur_image
from .model import INIKNet

__version__ = "0.1.0"
__all__ = [
    "INIKNet",
    "INIKNetConfig",
    "available_backends",
    "deblur_file",
    "deblur_image",
    "ops",
    "read_image",
    "write_image",
    "__version__",
]
