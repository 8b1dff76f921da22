"""inik_fast: INIKNet single-image defocus deblurring with fused inverse-kernel ops."""
from . import ops
from .backends import available_backends
from .config import INIKNetConfig
from .model import INIKNet

__version__ = "0.1.0"
__all__ = ["INIKNet", "INIKNetConfig", "available_backends", "ops", "__version__"]
