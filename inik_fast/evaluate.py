"""`inik-fast eval`: PSNR, SSIM (and LPIPS when its weights are available) of a model on a
dataset, for its output and for the blurry input, as a table and as JSON."""
from __future__ import annotations

import time

import numpy as np

from .data import FOLDER_DATASETS, FOLDER_HINT, SyntheticEval
from .data.synthetic import EVAL_PHOTOS, HELD_OUT, TRAIN_PHOTOS
from .deblur import DEFAULT_HALO, deblur
from .errors import ConfigError, UserError
from .metrics import image_metrics
from .perceptual import lpips_if_available


def open_eval_set(dataset: str, root, split: str, count: int):
    if dataset == "synthetic":
        if root is not None:
            raise ConfigError(f"--data {root}: expected {FOLDER_HINT}")
        if split not in ("test", "train"):
            raise UserError(f"--split {split}: the synthetic set has 'test' (held-out photos) and 'train' (the training photos)")
        return SyntheticEval(count, photos=EVAL_PHOTOS if split == "test" else TRAIN_PHOTOS)  # `count` per family
    if dataset not in FOLDER_DATASETS:
        raise UserError(f"--dataset {dataset}: expected 'synthetic' or one of {sorted(FOLDER_DATASETS)}")
    if root is None:
        raise UserError(f"--dataset {dataset}: needs --data, the dataset's root folder")
    ds = FOLDER_DATASETS[dataset](root, split)
    if any(s is None for _, s in ds.pairs):
        raise UserError(f"{dataset} dataset has no sharp images to compare with: use `inik-fast deblur` on it")
    return ds


def evaluate(model, dataset="synthetic", root=None, split="test", count=8, limit=None, tile=None, halo=DEFAULT_HALO, perceptual_weights=None) -> dict:
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: expected an integer >= 1")
    ds = open_eval_set(dataset, root, split, count)
    device = next(model.parameters()).device
    lpips = lpips_if_available(perceptual_weights)
    if lpips is not None:
        lpips = lpips.to(device)
    n = len(ds) if limit is None else min(limit, len(ds))
    rows = []
    for i in range(n):
        item = ds[i]
        t0 = time.perf_counter()
        out = deblur(model, item["blurry"], tile=tile, halo=halo).float().cpu()
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "name": item["name"],
                **({"family": item["family"]} if "family" in item else {}),
                "size": list(item["blurry"].shape[-2:][::-1]),
                "input": image_metrics(item["blurry"], item["sharp"], lpips),
                "output": image_metrics(out, item["sharp"], lpips),
                "seconds": seconds,
            }
        )
    backend = model.ops_backend(device)
    report = {"dataset": dataset, "root": None if root is None else str(root), "split": split, "device": str(device), "backend": backend, "images": rows, "mean": summary(rows)}
    if "family" in rows[0]:
        report["families"] = {f: summary([r for r in rows if r["family"] == f]) for f in dict.fromkeys(r["family"] for r in rows)}
    return report


def summary(rows: list[dict]) -> dict:
    """Mean metrics of some images, in and out, their PSNR gain and how many lost SSIM."""
    mean = {side: {k: float(np.mean([r[side][k] for r in rows])) for k in rows[0][side]} for side in ("input", "output")}
    mean["psnr_gain"] = mean["output"]["psnr"] - mean["input"]["psnr"]
    mean["images"] = len(rows)
    mean["ssim_lower"] = sum(r["output"]["ssim"] < r["input"]["ssim"] for r in rows)
    return mean


def format_table(report: dict) -> str:
    has_lpips = "lpips" in report["mean"]["output"]
    head = ["image", "size", "PSNR in", "PSNR out", "gain", "SSIM in", "SSIM out"] + (["LPIPS in", "LPIPS out"] if has_lpips else []) + ["s"]

    def cells(name, size, i, o, seconds):
        c = [name, size, f"{i['psnr']:.2f}", f"{o['psnr']:.2f}", f"{o['psnr'] - i['psnr']:+.2f}", f"{i['ssim']:.4f}", f"{o['ssim']:.4f}"]
        return c + ([f"{i['lpips']:.4f}", f"{o['lpips']:.4f}"] if has_lpips else []) + [seconds]

    rows = [cells(r["name"], "x".join(map(str, r["size"])), r["input"], r["output"], f"{r['seconds']:.2f}") for r in report["images"]]
    m = report["mean"]
    rows.append(cells(f"mean of {len(report['images'])}", "", m["input"], m["output"], ""))
    table = markdown_table(head, rows)
    return table + ("\n\n" + format_families(report) if "families" in report else "")


def format_families(report: dict) -> str:
    """One row per family of the synthetic set, and the whole set."""
    head = ["family", "images", "PSNR in", "PSNR out", "gain", "SSIM in", "SSIM out", "SSIM lower"]
    held_out = set(HELD_OUT["psf"]) | set(HELD_OUT["space"])
    rows = [
        [f"{name}{' (held out)' if name in held_out else ''}", m["images"], f"{m['input']['psnr']:.2f}", f"{m['output']['psnr']:.2f}",
         f"{m['psnr_gain']:+.2f}", f"{m['input']['ssim']:.4f}", f"{m['output']['ssim']:.4f}", m["ssim_lower"]]
        for name, m in [*report["families"].items(), ("all", report["mean"])]
    ]  # fmt: skip
    return markdown_table(head, rows)


def markdown_table(head: list[str], rows: list[list]) -> str:
    """A Markdown table with padded columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
