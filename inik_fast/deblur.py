"""Inference on whole images: untiled, or in overlapping tiles for bounded memory.

Tiling. The image is cut into a grid of `tile` x `tile` cores (multiples of 16). Each core is
run with a halo of `halo` pixels of real image context on every side (less at the image
border, where the untiled model sees the border too), and its output is kept on the core plus
a `blend`-pixel band beyond it, weighted 1 on the core and falling linearly to 0 across the
band; overlapping outputs are averaged with these weights. So every output pixel comes from
tiles that saw at least halo - blend pixels of context around it. Core and halo origins are
multiples of 16, which keeps the model's 1/2 and 1/4 image scales and its U-Net's stride-2
grids aligned with the untiled run; the remaining difference comes only from the missing far
context. The model's receptive field spans the whole image (three scales, stride-16 U-Net
at the coarsest, recurrent state across scales), but its influence decays with distance.
Measured max |tiled - untiled| (tile 128, blend 16, float32, 741x500 motorcycle photo) with
the release config trained 900 steps: halo 0: 0.16, 32: 2e-4, 64: 5e-7, 96: 3e-7; and with
the deliberately context-hungry model of tests/test_deblur.py: halo 48: 2e-4. The default
halo of 96 px keeps a margin over both for the 1e-3 budget; with --tile 512 it costs about
1.8x the untiled compute on a 1680 x 1120 photo, in exchange for memory bounded by one 704 x 704 window.
"""
from __future__ import annotations

import glob
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .data.image_io import DEFAULT_MAX_PIXELS, WRITE_EXTS, ImageError, is_image_path, read_image, write_image
from .errors import UserError

DEFAULT_HALO = 96
DEFAULT_BLEND = 16
_ALIGN = 16


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _ramp(n: int, lo_core: int, hi_core: int, blend: int, device) -> torch.Tensor:
    """1 on [lo_core, hi_core), falling linearly to 0 over `blend` px on each side, length n."""
    i = torch.arange(n, device=device, dtype=torch.float32)
    dist = torch.clamp(lo_core - i, min=0) + torch.clamp(i - (hi_core - 1), min=0)
    return torch.clamp(1 - dist / (blend + 1), min=0)


def _windows(n: int, tile: int, halo: int):
    """(core start, core end, window start, window end) of each tile along one axis of n px."""
    for c0 in range(0, n, tile):
        c1 = min(c0 + tile, n)
        yield c0, c1, max(0, c0 - halo), min(n, c1 + halo)


def tiling_cost(H: int, W: int, tile: int, halo: int = DEFAULT_HALO) -> float:
    """The pixels the tiles of an H x W image compute (cores with their halos), as a multiple of
    the image's own: 1.8 for 512-px tiles of a 1680 x 1120 photo, 9 for 64-px tiles of 256 x 256."""
    tile, halo = _round_up(tile, _ALIGN), _round_up(halo, _ALIGN)
    if tile >= H and tile >= W:
        return 1.0
    rows = sum(w1 - w0 for _, _, w0, w1 in _windows(H, tile, halo))
    cols = sum(w1 - w0 for _, _, w0, w1 in _windows(W, tile, halo))
    return rows * cols / (H * W)


COSTLY_TILING = 3.0  # tiling_cost above which the tiles waste more than they bound


@torch.no_grad()
def tiled_forward(model, x: torch.Tensor, tile: int, halo: int = DEFAULT_HALO, blend: int | None = None, progress: bool = False) -> torch.Tensor:
    """The model's full-resolution output for x [B, C, H, W], computed tile by tile, as float32.
    `blend` (default: DEFAULT_BLEND, or the whole halo when that is narrower) is the fade beyond
    a core; `progress` shows a progress bar of the tiles on stderr. Warns when the halos make the
    tiles compute more than COSTLY_TILING times the image."""
    if blend is None:
        blend = min(DEFAULT_BLEND, halo)
    if tile < 1 or halo < 0 or not 0 <= blend <= halo:
        raise UserError(f"tiling: tile={tile}, halo={halo}, blend={blend}: expected tile >= 1 and 0 <= blend <= halo")
    B, C, H, W = x.shape
    cost = tiling_cost(H, W, tile, halo)
    if cost > COSTLY_TILING:
        warnings.warn(
            f"tiles of {tile} px with a {halo} px halo compute {cost:.1f}x the pixels of the {W}x{H} image; "
            "a larger tile (or a smaller halo) is faster",
            stacklevel=3,  # the caller of tiled_forward, past torch.no_grad's wrapper
        )
    tile, halo = _round_up(tile, _ALIGN), _round_up(halo, _ALIGN)
    if tile >= H and tile >= W:
        return model(x)[-1].float()
    from tqdm import tqdm

    num = torch.zeros(B, C, H, W, device=x.device, dtype=torch.float32)
    den = torch.zeros(1, 1, H, W, device=x.device, dtype=torch.float32)
    rows, cols = list(_windows(H, tile, halo)), list(_windows(W, tile, halo))
    with tqdm(total=len(rows) * len(cols), unit="tile", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for y0, y1, wy0, wy1 in rows:
            for x0, x1, wx0, wx1 in cols:
                out = model(x[:, :, wy0:wy1, wx0:wx1])[-1].float()
                wy = _ramp(wy1 - wy0, y0 - wy0, y1 - wy0, blend, x.device)
                wx = _ramp(wx1 - wx0, x0 - wx0, x1 - wx0, blend, x.device)
                w = wy[:, None] * wx[None, :]
                num[:, :, wy0:wy1, wx0:wx1] += out * w
                den[:, :, wy0:wy1, wx0:wx1] += w
                bar.update(1)
    return num.div_(den)


def choose_tile(model, x: torch.Tensor, max_memory, halo: int = DEFAULT_HALO) -> int | None:
    """The tile size for x [B, 3, H, W] within the budget `max_memory` (see
    `memory.budget_bytes`: None for none, "auto", bytes or a size such as "4GiB"); None: untiled."""
    from . import memory  # imported here, so that `python -m inik_fast.memory` runs it fresh
    budget = memory.budget_bytes(max_memory, x.device)
    if budget is None:
        return None
    B, _, H, W = x.shape
    backend = model.ops_backend(x.device, x.dtype)
    return memory.choose_tile(model.config, H, W, budget, memory.held_bytes(x.device), halo, batch=B, backend=backend, dtype=x.dtype)


@torch.no_grad()
def deblur(model, img: torch.Tensor, tile: int | None = None, halo: int = DEFAULT_HALO, *, max_memory=None, progress: bool = False) -> torch.Tensor:
    """Deblur [3, H, W] or [B, 3, H, W] images in [0, 1]; returns float32 of the same shape,
    clamped to [0, 1], on the model's device. The image runs in the model's dtype (a bfloat16
    model takes bfloat16 input). Without `tile`, `max_memory` picks one (`choose_tile`)."""
    p = next(model.parameters())
    x = img.to(device=p.device, dtype=p.dtype)
    x = x if x.dim() == 4 else x[None]
    if tile is None:
        tile = choose_tile(model, x, max_memory, halo)
    y = model(x)[-1].float() if tile is None else tiled_forward(model, x, tile, halo, progress=progress)
    return y.clamp_(0, 1).view(img.shape)
def _image_tensor(image) -> torch.Tensor:
    """`deblur_image`'s input as a float tensor in [0, 1]: [H, W, 3] arrays become [3, H, W]."""
    name = "deblur_image: image"
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name} must be an [H, W, 3] array, got shape {list(image.shape)}")
        if image.dtype in (np.uint8, np.uint16):
            image = image.astype(np.float32) / np.iinfo(image.dtype).max
        elif image.dtype.kind != "f":
            raise ValueError(f"{name} must hold floats in [0, 1] or uint8 / uint16 pixels, got {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    elif isinstance(image, torch.Tensor):
        if image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(f"{name} must be a [3, H, W] or [B, 3, H, W] tensor, got [{', '.join(map(str, image.shape))}]")
        if not image.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor in [0, 1], got {image.dtype}")
        x = image
    else:
        raise TypeError(f"{name} must be a numpy array or a torch.Tensor, got {type(image).__name__}")
    if x.numel() and not (torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1):
        raise ValueError(f"{name} must hold finite values in [0, 1] (8-bit values: divide by 255)")
    return x


def deblur_image(image, model=None, *, tile: int | None = None, halo: int = DEFAULT_HALO, max_memory=None, progress: bool = False):
    """Deblur one image (or a batch) from Python, as `inik-fast deblur` does a file.

    image: a numpy array [H, W, 3] (floats in [0, 1], or uint8 / uint16 pixels), or a tensor
        [3, H, W] or [B, 3, H, W] in [0, 1], of any size.
    model: an INIKNet; default `INIKNet.from_pretrained()`, loaded on each call (pass a model to
        deblur many images). The image goes to the model's device.
    tile, halo: tiled inference as `--tile` / `--halo`: memory bounded by one (tile + 2 halo)²
        window instead of the whole image.
    max_memory: without `tile`, the memory the process may reach (bytes, a size such as "4GiB",
        or "auto" as `--max-memory`'s default): picks the tile, or none when the image fits.
        Default None: the whole image at once.
    progress: a progress bar of the tiles on stderr.
    Returns float32 in [0, 1] (clamped), in the input's form: an [H, W, 3] array, or a tensor of
    the input's shape on the input's device.
    """
    x = _image_tensor(image)
    if model is None:
        from .model import INIKNet

        model = INIKNet.from_pretrained()
    y = deblur(model, x, tile, halo, max_memory=max_memory, progress=progress)
    if isinstance(image, np.ndarray):
        return y.cpu().numpy().transpose(1, 2, 0)
    return y.to(image.device)


def deblur_file(src, dst, model=None, *, tile: int | None = None, halo: int = DEFAULT_HALO, max_pixels: int = DEFAULT_MAX_PIXELS, max_memory=None, progress: bool = False) -> None:
    """Deblur the image file `src` into `dst` (format from its extension; 16-bit PNG or TIFF in
    gives 16-bit out where `dst`'s format has it). Refuses to write over `src`; the write is
    atomic. `model`, `tile`, `halo`, `max_memory` and `progress` as for `deblur_image`;
    `max_pixels` refuses larger images."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ImageError(f"{dst} is the input; write the result elsewhere")
    img, bits = read_image(src, max_pixels)
    write_image(dst, deblur_image(img, model, tile=tile, halo=halo, max_memory=max_memory, progress=progress), bits)


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns, in order, without duplicates."""
    paths: dict[Path, None] = {}  # ordered, with O(1) duplicate checks for large folders
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and is_image_path(q))
            if not found:
                raise ImageError(f"{p}: folder holds no images")
        elif p.exists():
            found = [p]
        else:
            found = [Path(q) for q in sorted(glob.glob(spec)) if Path(q).is_file()]
            if not found:
                raise ImageError(f"{spec}: no such file, folder or matching glob")
        paths.update(dict.fromkeys(found))
    return list(paths)


def _is_image_ext(suffix: str) -> bool:
    """An extension of any image format Pillow knows (.gif, .ico, ...): a file name, not a folder."""
    from PIL import Image

    return suffix.lower() in Image.registered_extensions()


def output_paths(inputs: list[Path], out, fmt: str | None) -> list[Path]:
    """Where each input's result goes: OUT itself for one input and an OUT with an image
    extension, else OUT/<stem>.<ext> (ext: `fmt`, or the input's own when it is writable)."""
    out = Path(out)
    fmt_ext = None if fmt is None else "." + fmt.lower().lstrip(".")
    if fmt_ext is not None and fmt_ext not in WRITE_EXTS:
        raise ImageError(f"--format {fmt}: expected one of {[e[1:] for e in WRITE_EXTS]}")
    if _is_image_ext(out.suffix) and out.suffix.lower() not in WRITE_EXTS and not out.is_dir():
        raise ImageError(f"-o {out}: cannot write {out.suffix.lower()} images; expected a folder or a file ending in {', '.join(WRITE_EXTS)}")
    if out.suffix.lower() in WRITE_EXTS and not out.is_dir():
        if len(inputs) != 1:
            raise ImageError(f"-o {out}: {len(inputs)} inputs need an output folder, not a file name")
        paths = {out: None}
    else:
        paths: dict[Path, None] = {}
        for p in inputs:
            ext = fmt_ext or (p.suffix.lower() if p.suffix.lower() in WRITE_EXTS else ".png")
            q = out / (p.stem + ext)
            if q in paths:
                raise ImageError(f"two inputs would both be written to {q}; deblur them into separate folders")
            paths[q] = None
    # Deblurring a photo must never replace it.
    sources = {p.resolve() for p in inputs}
    for q in paths:
        if q.resolve() in sources:
            raise ImageError(f"-o {out}: {q} is one of the inputs; write the results elsewhere")
    return list(paths)
