"""Memory budgets for inference: how much the deblurring of one image may use, the largest tile
that fits, and the peak memory a block of code really used.

The model's forward is estimated as FORWARD_BASE + FORWARD_PER_PIXEL * pixels (see
`forward_bytes`); `python -m inik_fast.memory` re-measures the constants (each size in a fresh
process) and `tests/test_memory.py` checks that the estimate bounds the measurement.
"""
from __future__ import annotations

import gc
import math
import os
import re
import resource
import subprocess
import sys

import torch

from .errors import UserError

# A default budget is what the process holds now plus this share of what is left: of the RAM the
# kernel reports available (other programs share it, and the estimate ignores allocator slack),
# or of the free GPU memory.
CPU_SHARE = 0.25
GPU_SHARE = 0.5

# Peak memory of one forward (torch.no_grad, batch 1, float32, backend "cpu"): the growth of the
# process's peak RSS in a fresh process, measured by `python -m inik_fast.memory` (2 threads,
# AMD EPYC Zen 5, torch 2.14.1): the release config (base_ch 32) took 222, 615, 1449 and 2286
# MiB at 256², 512², 768² and 1024² px (2576 B/px at 768², the most); base_ch 8 took 65, 223
# and 682 MiB at 256², 512² and 1024². The feature maps of the U-Net and the LSTMs scale with
# base_ch, the images, selections and outputs do not. The constants bound all of these by
# 10% or more: at 1024², 2.95 GB for 2.40 measured (base_ch 32), 0.94 GB for 0.72 (base_ch 8).
FORWARD_BASE = 128 * 2**20
FORWARD_PER_PIXEL = 128
FORWARD_PER_PIXEL_PER_CHANNEL = 80
# The reference backend's inverse-kernel conv holds a few [C, M, H, W] maps of one size group in
# float32 (its accumulation dtype, whatever the input's): 721 MiB instead of 615 at 512², about
# 14 B/px per C*M channel (30 in the release config).
REFERENCE_PER_PIXEL_PER_ATOM_CHANNEL = 16
# What the tiling allocates beside the forwards: its float32 output and weight accumulators (the
# image itself is held already when the tile is chosen).
TILING_BYTES_PER_PIXEL = 4 * (3 + 1)

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text, name: str = "--max-memory") -> int:
    """Bytes of a size such as 4GiB, 4G (= 4 GB), 500MB, 1.5gib or 123456789 (bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*", str(text), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"{name} {text}: expected a size > 0 such as 4GiB, 500MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def format_size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# what the process holds and may take
# ---------------------------------------------------------------------------------------------
def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux) in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _available_ram() -> int:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), else the free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def held_bytes(device) -> int:
    """What is held now: the process's RSS on CPU, torch's allocated memory on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    rss = _status_bytes("VmRSS")
    return rss if rss is not None else _max_rss()


def default_budget(device) -> int:
    """What is held now plus a share of what is left: CPU_SHARE of the available RAM, or
    GPU_SHARE of the free GPU memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return held_bytes(device) + int(GPU_SHARE * free)
    return held_bytes(device) + int(CPU_SHARE * _available_ram())


def budget_bytes(max_memory, device) -> int | None:
    """The budget of `max_memory`: None (no budget), "auto" (`default_budget`), bytes, or a size string."""
    if max_memory is None:
        return None
    if max_memory == "auto":
        return default_budget(device)
    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory <= 0:
        raise UserError(f"max_memory={max_memory!r}: expected bytes > 0, a size such as '4GiB', 'auto' or None")
    return max_memory


# ---------------------------------------------------------------------------------------------
# the estimate, and the tile it allows
# ---------------------------------------------------------------------------------------------
def forward_bytes(config, height: int, width: int, *, batch: int = 1, backend: str = "cpu", dtype: torch.dtype = torch.float32) -> int:
    """An upper bound of the peak memory of one forward of an INIKNet of `config` on a
    [batch, 3, height, width] image (as padded by the model), in eval mode without gradients."""
    pixels = batch * max(32, -(-height // 16) * 16) * max(32, -(-width // 16) * 16)
    # The feature maps are in the model's dtype; no saving is assumed below float32's half.
    per_pixel = (FORWARD_PER_PIXEL + FORWARD_PER_PIXEL_PER_CHANNEL * config.base_ch) * max(torch.finfo(dtype).bits, 16) / 32
    if backend == "reference":
        per_pixel += REFERENCE_PER_PIXEL_PER_ATOM_CHANNEL * config.in_ch * config.basis_num
    return int(FORWARD_BASE + per_pixel * pixels)


def choose_tile(config, height: int, width: int, budget: int, held: int, halo: int, *, batch: int = 1, backend: str = "cpu", dtype: torch.dtype = torch.float32) -> int | None:
    """The largest tile (a multiple of 16, as even a split of the image as that allows) whose
    forward fits in `budget` beside the `held` bytes and the tiling's accumulators; None when the
    whole image fits. Raises a UserError when not even 16-px tiles fit."""
    halo = -(-halo // 16) * 16
    room = budget - held
    if forward_bytes(config, height, width, batch=batch, backend=backend, dtype=dtype) <= room:
        return None
    room -= TILING_BYTES_PER_PIXEL * batch * height * width

    def need(t):  # the largest window of tile t: a core with its halo on both sides, within the image
        side = t + 2 * halo
        return forward_bytes(config, min(side, height), min(side, width), batch=batch, backend=backend, dtype=dtype)

    if need(16) > room:
        least = budget - room + need(16)
        raise UserError(f"--max-memory {format_size(budget)}: too little for a {width}x{height} image with a {halo} px halo; it needs at least {format_size(least)}")
    lo, hi = 16, -(-max(height, width) // 16) * 16  # need(lo) fits; the whole image did not
    while hi - lo > 16:
        mid = (lo + hi) // 32 * 16
        lo, hi = (mid, hi) if need(mid) <= room else (lo, mid)
    # as many tiles along the longer side as `lo` needs, of equal size: no thin last row or column
    n = math.ceil(max(height, width) / lo)
    return -(-math.ceil(max(height, width) / n) // 16) * 16


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def _max_rss() -> int:
    """The process's peak RSS since it started (or since the last reset), in bytes."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class PeakMemory:
    """The peak memory during a `with` block: torch's max_memory_allocated on a GPU; on CPU the
    process's peak RSS (Linux resets its high-water mark at the start; elsewhere the peak since
    the process started). `.peak` is that peak, `.start` what was held at the start."""

    def __init__(self, device):
        self.device = torch.device(device)

    def __enter__(self):
        # garbage from earlier work freed mid-block would lower the RSS and hide what the block took
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak RSS to the current RSS (Linux 4.0+)
            except OSError:
                pass
        self.start = held_bytes(self.device)
        return self

    def __exit__(self, *exc):
        cuda = self.device.type == "cuda"
        self.peak = torch.cuda.max_memory_allocated(self.device) if cuda else _max_rss()
        self.kind = "allocated on the GPU" if cuda else "process RSS"
        return False


def measure_forward_bytes(config: dict, height: int, width: int, backend: str = "cpu", dtype: str = "float32", device: str = "cpu") -> int:
    """The peak memory growth of one forward, measured in a fresh process (so that no memory
    freed earlier is reused): the quantity `forward_bytes` bounds."""
    script = (
        "import sys, torch; from inik_fast import INIKNet, INIKNetConfig; from inik_fast.memory import PeakMemory\n"
        f"torch.manual_seed(0); dt = getattr(torch, {dtype!r}); dev = torch.device({device!r})\n"
        f"m = INIKNet(INIKNetConfig.from_dict({config!r}), backend={backend!r}).eval().to(dev, dt)\n"
        f"x = torch.rand(1, 3, {height}, {width}, device=dev, dtype=dt)\n"
        "with torch.no_grad(), PeakMemory(dev) as p:\n"
        "    m(x)\n"
        "print(p.peak - p.start)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"measuring {height}x{width} failed:\n{run.stderr[-2000:]}")
    return int(run.stdout.split()[-1])


def main(argv=None) -> None:
    """Measure the forward's peak at a few sizes and fit base + per_pixel * pixels."""
    import argparse

    from .config import INIKNetConfig

    p = argparse.ArgumentParser(prog="python -m inik_fast.memory", description=main.__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 768, 1024], help="square image sides in px")
    p.add_argument("--base-ch", type=int, default=32, help="the config's base_ch (default: the release's 32)")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    config = INIKNetConfig(base_ch=args.base_ch).to_dict()
    pixels, peaks = [], []
    for s in args.sizes:
        peak = measure_forward_bytes(config, s, s, args.backend, args.dtype, args.device)
        est = forward_bytes(INIKNetConfig(**config), s, s, backend=args.backend, dtype=getattr(torch, args.dtype))
        pixels.append(s * s)
        peaks.append(peak)
        print(f"{s}x{s}: measured {peak / 2**20:.1f} MiB, {peak / (s * s):.0f} B/px; estimate {est / 2**20:.1f} MiB", flush=True)
    n = len(pixels)
    mx, my = sum(pixels) / n, sum(peaks) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(pixels, peaks)) / sum((x - mx) ** 2 for x in pixels)
    print(f"fit: {my - slope * mx:.0f} B + {slope:.1f} B/px ({slope / args.base_ch:.2f} B/px per base channel)")


if __name__ == "__main__":
    main()
