"""Reading and writing images as float32 RGB arrays in [0, 1].

8-bit images go through Pillow. 16-bit colour PNGs and TIFFs, which Pillow reduces to 8 bits,
are decoded with imagecodecs. Every failure (not an image, unreadable, truncated, too many
pixels) is an `ImageError` with a one-line message, and writes are atomic (temporary file,
then rename), so a failed write leaves no partial file.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

READ_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
WRITE_EXTS = READ_EXTS
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".webp": "WEBP"}
_PIL_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}  # a deblurred photo gains no WebP artefacts
# Pillow's own decompression-bomb threshold (about 89 MP); larger photos need max_pixels.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
_8BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La")


class ImageError(UserError):
    """An image that cannot be read or written; the message is one line."""


def is_image_path(path) -> bool:
    return Path(path).suffix.lower() in READ_EXTS


def _is_16bit(im: Image.Image) -> bool:
    if im.mode.startswith("I;16"):
        return True
    args = im.tile[0].args if im.tile else ""
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Pillow image with only its header read; checks the pixel count before any decoding."""
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own check below replaces Pillow's warning / error
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (expected PNG, JPEG, TIFF, BMP or WebP)") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            f"{path}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} (decompression bomb protection)"
        )
    return im


def probe_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone, with the checks of `read_image` that need no decoding."""
    with _open(Path(path), max_pixels) as im:
        return im.size


def _decode_16bit(path: Path, fmt: str) -> np.ndarray:
    import imagecodecs

    data = path.read_bytes()
    decode = imagecodecs.png_decode if fmt == "PNG" else imagecodecs.tiff_decode
    return decode(data)


# EXIF orientation -> the array operation that shows the image upright (as ImageOps.exif_transpose)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a),
}


def _upright(arr: np.ndarray, im: Image.Image) -> np.ndarray:
    """A 16-bit image's pixels with its EXIF orientation applied (Pillow cannot transpose them)."""
    turn = _ORIENT.get(im.getexif().get(0x0112, 1))
    return np.ascontiguousarray(turn(arr)) if turn else arr


def read_image(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, int]:
    """The image at `path` as float32 [H, W, 3] in [0, 1] (grey is repeated, alpha dropped,
    EXIF orientation applied) and its bit depth (8 or 16)."""
    path = Path(path)
    im = _open(path, max_pixels)
    try:
        if _is_16bit(im):
            if im.mode.startswith("I;16"):
                arr = np.asarray(im).astype(np.uint16)
            elif im.format in ("PNG", "TIFF"):
                arr = _decode_16bit(path, im.format)
            else:
                raise ImageError(f"{path}: 16-bit {im.format} images are not supported (use PNG or TIFF)")
            arr, bits = _upright(arr, im), 16
        elif im.mode in _8BIT_MODES:
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB"))
            bits = 8
        else:
            raise ImageError(f"{path}: pixel format {im.mode} is not supported (expected 8- or 16-bit grey or colour)")
    except ImageError:
        raise
    except Exception as e:  # truncated or corrupt data: Pillow and imagecodecs raise many types
        raise ImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None
    finally:
        im.close()
    return _to_rgb_float(arr, bits, path), bits


def _to_rgb_float(arr: np.ndarray, bits: int, path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: unsupported image shape {list(arr.shape)} (expected grey or colour)")
    if arr.shape[2] in (2, 4):  # drop alpha
        arr = arr[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return (arr.astype(np.float32) / float(2**bits - 1)).clip(0.0, 1.0)


def _quantize(img: np.ndarray, bits: int) -> np.ndarray:
    """Integer pixels, C-contiguous (the PNG encoder refuses other strides)."""
    top = 2**bits - 1
    q = np.round(np.clip(img, 0.0, 1.0) * top).astype(np.uint16 if bits == 16 else np.uint8)
    return np.ascontiguousarray(q)


def encode_image(img: np.ndarray, ext: str, bits: int = 8) -> bytes:
    """`img` (float [H, W, 3] in [0, 1]) encoded as PNG or TIFF (8 or 16 bits), or JPEG, BMP or
    lossless WebP (8 bits)."""
    ext = ext.lower()
    if ext not in WRITE_EXTS:
        raise ImageError(f"output format {ext!r}: expected one of {WRITE_EXTS}")
    if bits not in (8, 16):
        raise ImageError(f"bits={bits}: expected 8 or 16")
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype.kind != "f":
        raise ImageError(f"expected a float [H, W, 3] image, got {img.dtype} [{', '.join(map(str, img.shape))}]")
    if not np.isfinite(img).all():
        raise ImageError("the image has values that are not finite (NaN or infinity)")
    fmt = _PIL_FORMATS[ext]
    if fmt not in ("PNG", "TIFF"):
        bits = 8  # no 16-bit colour in baseline JPEG, BMP or WebP
    q = _quantize(img, bits)
    if bits == 16:
        import imagecodecs

        return bytes(imagecodecs.png_encode(q) if fmt == "PNG" else imagecodecs.tiff_encode(q))
    buf = io.BytesIO()
    Image.fromarray(q).save(buf, format=fmt, **_PIL_OPTIONS.get(fmt, {}))
    return buf.getvalue()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path, img: np.ndarray, bits: int = 8) -> None:
    """Write float [H, W, 3] in [0, 1] to `path` (values outside are clipped), creating its
    folder; the format follows the extension. The image is encoded first, so a failure leaves
    no file and no new folder."""
    path = Path(path)
    try:
        data = encode_image(img, path.suffix, bits)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:  # an output folder that cannot be written: the user's choice of path
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
