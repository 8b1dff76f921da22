"""The quality cost of each precision: the default checkpoint on the held-out synthetic set
(8 images per family by default: each of `inik-fast eval`'s 4 held-out photos twice, with its
own depth layout and formation), run as `deblur --precision P` runs it (the model and the image
cast to P, the atoms in float32), beside float32, in one process.

    python scripts/eval_precision.py [--count N] [--out inik_fast/weights/default_eval_precision.txt]

bf16 on a CPU or a GPU, fp16 on a GPU only. Prints and writes one table per family: PSNR and SSIM
out per precision, the PSNR change against float32, and the largest change on any one image."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from inik_fast import checkpoint
from inik_fast.benchmarking import machine
from inik_fast.evaluate import evaluate, markdown_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="also write the table here")
    p.add_argument("--count", type=int, default=8, help="held-out images per family (default 8)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16} | ({"fp16": torch.float16} if args.device.startswith("cuda") else {})
    reports, seconds = {}, {}
    for name, dtype in dtypes.items():
        model = checkpoint.load_model(checkpoint.default_checkpoint(), device=args.device).to(dtype)
        t0 = time.perf_counter()
        reports[name] = evaluate(model, count=args.count)
        seconds[name] = time.perf_counter() - t0
    base = reports["fp32"]
    head = ["family", "images"] + [f"PSNR {n}" for n in dtypes] + [f"Δ {n}" for n in dtypes if n != "fp32"]
    head += [f"SSIM {n}" for n in dtypes] + [f"worst image Δ {n}" for n in dtypes if n != "fp32"]
    rows = []
    for fam in [*base["families"], "all"]:
        pick = (lambda r: r["mean"]) if fam == "all" else (lambda r, f=fam: r["families"][f])
        psnr = {n: pick(r)["output"]["psnr"] for n, r in reports.items()}
        ssim = {n: pick(r)["output"]["ssim"] for n, r in reports.items()}
        worst = {}
        for n, r in reports.items():
            pairs = [(a, b) for a, b in zip(base["images"], r["images"]) if fam in ("all", a["family"])]
            worst[n] = max((b["output"]["psnr"] - a["output"]["psnr"] for a, b in pairs), key=abs)
        rows.append(
            [fam, pick(base)["images"]] + [f"{psnr[n]:.3f}" for n in dtypes] + [f"{psnr[n] - psnr['fp32']:+.3f}" for n in dtypes if n != "fp32"]
            + [f"{ssim[n]:.4f}" for n in dtypes] + [f"{worst[n]:+.3f}" for n in dtypes if n != "fp32"]
        )  # fmt: skip
    lines = [
        f"Default checkpoint, held-out synthetic set, `deblur --precision` per column; {machine.describe(args.device)}, "
        f"torch {torch.__version__}, backend {base['backend']}.",
        "Whole-set time: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()) + ".",
        "",
        markdown_table(head, rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
