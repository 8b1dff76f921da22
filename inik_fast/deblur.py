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
1.9x the untiled compute, in exchange for memory bounded by one 704 x 704 window.
"""
from __future__ import annotations

import glob
from pathlib import Path

import torch

from .data.image_io import WRITE_EXTS, ImageError, is_image_path
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


@torch.no_grad()
def tiled_forward(model, x: torch.Tensor, tile: int, halo: int = DEFAULT_HALO, blend: int | None = None) -> torch.Tensor:
    """The model's full-resolution output for x [B, C, H, W], computed tile by tile. `blend`
    (default: DEFAULT_BLEND, or the whole halo when that is narrower) is the fade beyond a core."""
    if blend is None:
        blend = min(DEFAULT_BLEND, halo)
    if tile < 1 or halo < 0 or not 0 <= blend <= halo:
        raise UserError(f"tiling: tile={tile}, halo={halo}, blend={blend}: expected tile >= 1 and 0 <= blend <= halo")
    tile, halo = _round_up(tile, _ALIGN), _round_up(halo, _ALIGN)
    B, C, H, W = x.shape
    if tile >= H and tile >= W:
        return model(x)[-1]
    num = torch.zeros(B, C, H, W, device=x.device, dtype=torch.float32)
    den = torch.zeros(1, 1, H, W, device=x.device, dtype=torch.float32)
    for y0 in range(0, H, tile):
        y1 = min(y0 + tile, H)
        wy0, wy1 = max(0, y0 - halo), min(H, y1 + halo)
        for x0 in range(0, W, tile):
            x1 = min(x0 + tile, W)
            wx0, wx1 = max(0, x0 - halo), min(W, x1 + halo)
            out = model(x[:, :, wy0:wy1, wx0:wx1])[-1].float()
            wy = _ramp(wy1 - wy0, y0 - wy0, y1 - wy0, blend, x.device)
            wx = _ramp(wx1 - wx0, x0 - wx0, x1 - wx0, blend, x.device)
            w = wy[:, None] * wx[None, :]
            num[:, :, wy0:wy1, wx0:wx1] += out * w
            den[:, :, wy0:wy1, wx0:wx1] += w
    return (num / den).to(x.dtype)


@torch.no_grad()
def deblur(model, img: torch.Tensor, tile: int | None = None, halo: int = DEFAULT_HALO) -> torch.Tensor:
    """Deblur one [3, H, W] image in [0, 1] (on the model's device); returns [3, H, W] in [0, 1]."""
    device = next(model.parameters()).device
    x = img[None].to(device=device, dtype=torch.float32)
    y = model(x)[-1] if tile is None else tiled_forward(model, x, tile, halo)
    return y[0].clamp(0, 1)


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


def output_paths(inputs: list[Path], out, fmt: str | None) -> list[Path]:
    """Where each input's result goes: OUT itself for one input and an OUT with an image
    extension, else OUT/<stem>.<ext> (ext: `fmt`, or the input's own when it is writable)."""
    out = Path(out)
    fmt_ext = None if fmt is None else "." + fmt.lower().lstrip(".")
    if fmt_ext is not None and fmt_ext not in WRITE_EXTS:
        raise ImageError(f"--format {fmt}: expected one of {[e[1:] for e in WRITE_EXTS]}")
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
