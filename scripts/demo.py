"""`make demo`: defocus a bundled photo, deblur it with the default checkpoint and the fastest
backend, and write blurry | deblurred | sharp side by side (with PSNR), one row for the hardest
family of the held-out evaluation and one for the easiest; print time and peak memory beside the
reference backend.

The photo is scikit-image's left motorcycle view (held out from training), blurred with its
real disparity as depth, as each family forms it. The families' gains come from the
checkpoint's recorded evaluation. Each backend runs in its own process so that its peak memory
is its own: on the GPU torch's peak allocation, on the CPU the growth of the process's peak RSS
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


def side_by_side(rows: list[list[tuple[torch.Tensor, str]]], path: Path) -> None:
    """Rows of labelled panels of one size, in one image."""
    import numpy as np
    from PIL import Image, ImageDraw

    from inik_fast.data import write_image

    band = 28
    h, w = rows[0][0][0].shape[-2:]
    canvas = Image.new("RGB", (w * len(rows[0]), (h + band) * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, panels in enumerate(rows):
        for i, (img, label) in enumerate(panels):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(arr), (i * w, j * (h + band) + band))
            draw.text((i * w + 8, j * (h + band) + 7), label, fill="black")
    write_image(path, np.asarray(canvas).astype(np.float32) / 255)


def hardest_and_easiest(ckpt: str) -> list[str]:
    """The families of the lowest and highest PSNR gain in the checkpoint's recorded evaluation."""
    gains = checkpoint.load_file(ckpt).get("meta", {}).get("eval", {}).get("family_gains")
    if not gains:
        sys.exit(f"demo: {ckpt} records no per-family evaluation (export it with --eval-json of an `inik-fast eval` report)")
    return [min(gains, key=gains.get), max(gains, key=gains.get)]


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
    families = hardest_and_easiest(args.checkpoint)
    fastest = backends.resolve("auto", args.device, torch.float32)
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, family in enumerate(families):
            item = SyntheticEval(1, families=(family,))[0]  # the left motorcycle view
            blurry_path = str(Path(tmp) / f"{family}.pt")
            torch.save(item["blurry"], blurry_path)
            rows = {}  # the timing beside the reference backend on the first (hardest) family only
            for backend in dict.fromkeys([fastest] + (["reference"] if k == 0 else [])):
                out_path = str(Path(tmp) / f"{family}_{backend}.pt")
                rows[backend] = run_worker(args, backend, blurry_path, out_path)
                rows[backend]["psnr"] = psnr(torch.load(out_path, weights_only=True), item["sharp"])
            deblurred = torch.load(str(Path(tmp) / f"{family}_{fastest}.pt"), weights_only=True)
            p_in = psnr(item["blurry"], item["sharp"])
            label = f"{'hardest' if k == 0 else 'easiest'} family: {family}"
            panels.append([(item["blurry"], f"{label}, blurry  PSNR {p_in:.2f} dB"), (deblurred, f"deblurred ({fastest})  PSNR {rows[fastest]['psnr']:.2f} dB"), (item["sharp"], "sharp")])
            h, w = item["blurry"].shape[-2:]
            print(f"{label}: {item['name']} ({w}x{h}) on {args.device}: PSNR {p_in:.2f} -> {rows[fastest]['psnr']:.2f} dB")
            if k == 0:
                print("| backend | time s | peak memory MiB | PSNR dB |\n|---|---|---|---|")
                for r in rows.values():
                    print(f"| {r['backend']} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['psnr']:.2f} |")
                if fastest != "reference":
                    ref, fast = rows["reference"], rows[fastest]
                    print(f"{fastest}: {ref['seconds'] / fast['seconds']:.1f}x faster, {ref['peak_mib'] / max(fast['peak_mib'], 1):.1f}x less peak memory than reference")
    side_by_side(panels, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
