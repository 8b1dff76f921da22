"""`make demo`: defocus a bundled photo, deblur it with the default checkpoint and the fastest
backend, and write blurry | deblurred | sharp side by side (with PSNR); print time and peak
memory beside the reference backend.

The photo is scikit-image's left motorcycle view (held out from training), blurred with its
real disparity as depth. Each backend runs in its own process so that its peak memory is
its own: on the GPU torch's peak allocation, on the CPU the growth of the process's peak RSS
during inference.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inik_fast import backends, checkpoint  # noqa: E402
from inik_fast.data import SyntheticEval  # noqa: E402
from inik_fast.metrics import psnr  # noqa: E402


def worker(ckpt: str, backend: str, device: str, blurry_path: str, out_path: str) -> dict:
    """Deblur the saved blurry image once (after a small warm-up) and measure it."""
    model = checkpoint.load_model(ckpt, device=device, backend=backend)
    x = torch.load(blurry_path, weights_only=True)[None].to(device)
    with torch.no_grad():
        model(x[..., :64, :64])  # warm-up: kernel selection, allocator pools
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        y = model(x)[-1][0].clamp(0, 1)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # KiB on Linux
    torch.save(y.cpu(), out_path)
    return {"backend": backends.resolve(backend, device, torch.float32), "seconds": seconds, "peak_mib": peak}


def run_worker(args, backend, blurry_path, out_path) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--checkpoint", str(args.checkpoint), "--device", args.device, blurry_path, out_path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo: the {backend} backend failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_by_side(panels: list[tuple[torch.Tensor, str]], path: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    from inik_fast.data import write_image

    band = 28
    h, w = panels[0][0].shape[-2:]
    canvas = Image.new("RGB", (w * len(panels), h + band), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, label) in enumerate(panels):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        canvas.paste(Image.fromarray(arr), (i * w, band))
        draw.text((i * w + 8, 7), label, fill="black")
    write_image(path, np.asarray(canvas).astype(np.float32) / 255)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_WEIGHTS), help="default: the bundled checkpoint")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="demo.png", help="side-by-side PNG (default demo.png)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.checkpoint, args.worker, args.device, *args.paths)))
        return 0
    if not Path(args.checkpoint).is_file():
        print(f"demo: the checkpoint {args.checkpoint} is missing: train the default one with scripts/train_default.sh "
              "(see README), or pass --checkpoint PATH", file=sys.stderr)  # fmt: skip
        return 1
    item = SyntheticEval(1)[0]  # the left motorcycle view, defocused by its real disparity
    fastest = backends.resolve("auto", args.device, torch.float32)
    rows, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        blurry_path = str(Path(tmp) / "blurry.pt")
        torch.save(item["blurry"], blurry_path)
        for backend in dict.fromkeys([fastest, "reference"]):
            out_path = str(Path(tmp) / f"{backend}.pt")
            rows[backend] = run_worker(args, backend, blurry_path, out_path)
            outputs[backend] = torch.load(out_path, weights_only=True)
            rows[backend]["psnr"] = psnr(outputs[backend], item["sharp"])
    deblurred = outputs[fastest]
    p_in = psnr(item["blurry"], item["sharp"])
    side_by_side(
        [(item["blurry"], f"blurry  PSNR {p_in:.2f} dB"), (deblurred, f"deblurred ({fastest})  PSNR {rows[fastest]['psnr']:.2f} dB"), (item["sharp"], "sharp")],
        Path(args.out),
    )
    h, w = item["blurry"].shape[-2:]
    print(f"{item['name']} ({w}x{h}) on {args.device}: blurry input PSNR {p_in:.2f} dB")
    print("| backend | time s | peak memory MiB | PSNR dB |\n|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['backend']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['psnr']:.2f} |")
    if fastest != "reference":
        ref, fast = rows["reference"], rows[fastest]
        print(f"{fastest}: {ref['seconds'] / fast['seconds']:.1f}x faster, {ref['peak_mib'] / max(fast['peak_mib'], 1):.1f}x less peak memory than reference")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
