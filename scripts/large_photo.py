"""A large photo through `inik-fast deblur` with default options, as a user runs it: one fresh
process per precision, its wall time and its peak RSS (the kernel's count for the whole
process: model, decoded image, tiles, output), beside the peak the CLI itself prints.

    python scripts/large_photo.py [--size 4000x3000] [--precision fp32 bf16] [--malloc system kept] [--out FILE.md]

The photo is synthetic (smooth random shapes, blurred, 8-bit PNG): deblur's time and memory
depend on the size only. The goal of issue 16 is a 12 MP photo within 6 GiB of peak memory."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from inik_fast.benchmarking import machine

GOAL_BYTES = 6 * 2**30
# glibc's malloc keeping the memory it frees (no mmap of its own for large blocks, no trimming):
# faster, no page faults for each feature map, but a fragmented heap (benchmarks/NOTES.md)
KEPT_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**62)}
KEPT_SETTING = " ".join(f"{k}={v}" for k, v in KEPT_ENV.items())


def synthetic_photo(width: int, height: int, path: Path, seed: int = 0) -> None:
    """Random smooth colour fields at three scales with a Gaussian blur: a defocused-looking 8-bit PNG."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((8, 0.5), (64, 0.3), (512, 0.2)):
        small = rng.random((max(2, height * cells // width), cells, 3), dtype=np.float32)
        img += weight * np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32) / 255
    Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(4)).save(path)


def run_deblur(src: Path, dst: Path, precision: str, malloc: str) -> dict:
    """One `inik-fast deblur` process: its seconds, peak RSS (wait4's ru_maxrss) and printed peak."""
    cmd = [sys.executable, "-m", "inik_fast", "deblur", str(src), "-o", str(dst), "--precision", precision, "--no-progress"]
    env = dict(os.environ, **KEPT_ENV) if malloc == "kept" else None
    log = dst.with_suffix(".log")  # a file, not a pipe: a pipe read only after wait4 could fill and block the child
    with open(log, "w+") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        f.seek(0)
        output = f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{output}")
    with Image.open(dst) as out_img, Image.open(src) as in_img:
        if out_img.size != in_img.size:
            sys.exit(f"{dst}: {out_img.size} px out for {in_img.size} in")
    printed = re.search(r"peak memory (\S+ \S+)", output)
    return {"seconds": seconds, "rss": usage.ru_maxrss * 1024, "printed": printed.group(1) if printed else "?"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photo (default 4000x3000, 12 MP)")
    p.add_argument("--precision", nargs="+", default=["fp32"], help="precisions to run (default fp32, deblur's default)")
    p.add_argument("--malloc", nargs="+", default=["system"], choices=["system", "kept"],
                   help=f"system: glibc's default (default); kept: malloc keeps freed memory ({KEPT_SETTING})")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo.png"
        synthetic_photo(width, height, src)
        for precision in args.precision:
            for malloc in args.malloc:
                r = run_deblur(src, Path(tmp) / f"out-{precision}-{malloc}.png", precision, malloc)
                gib = r["rss"] / 2**30
                verdict = "within" if r["rss"] <= GOAL_BYTES else "OVER"
                rows.append(f"| {width}x{height} | {precision} | {malloc} | {r['seconds']:.1f} s | {gib:.2f} GiB | {r['printed']} | {verdict} 6 GiB |")
                print(rows[-1], flush=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = "\n".join([
        f"`inik-fast deblur` with default options (the memory budget picks the tiles; malloc kept: "
        f"{KEPT_SETTING}) on a {width}x{height} "
        f"synthetic photo; {machine.describe('cpu')}, "
        f"{ram:.0f} GiB RAM, torch {torch.__version__}. Produced by `scripts/large_photo.py`.",
        "",
        "| photo | precision | malloc | wall time (process) | peak RSS (process) | peak printed by deblur | goal |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]) + "\n"  # fmt: skip
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
