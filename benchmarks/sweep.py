"""The kernel-variant sweep of gpu_check.sh: every variant built into the CUDA extension and the
Triton kernels (selected by INIK_FAST_CUDA_* / INIK_FAST_TRITON_* environment knobs, read at each
call) timed on each workload beside the release's computation, in one process, each checked
against the float64 reference first. Per workload and backend the fastest correct variant wins.

    python benchmarks/sweep.py --out DIR [--budget SECONDS] [--tiny]

Writes DIR/sweep-<gpu>-<date>.{json,md} (and prints the markdown). --tiny: small shapes on the
CPU under the Triton interpreter, for the plumbing test; CUDA variants then do not run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from report import slug
from inik_fast import available_backends
from inik_fast.benchmarking import machine, measure, workloads

F32, BF16, F64 = torch.float32, torch.bfloat16, torch.float64
TRAIN = ("atoms", "scale", "basis", "weight", "bias")


@dataclasses.dataclass(frozen=True)
class Variant:
    backend: str
    name: str
    env: dict
    parts: frozenset  # the op parts whose kernels it changes: "fwd", "bwd", "dx"
    half: bool = False  # for fp16/bf16 inputs only (other variants run on fp32 workloads only)


OLD_CUDA = {"INIK_FAST_CUDA_DX_CHANNELS": "1024", "INIK_FAST_CUDA_ATOMS_SPLIT": "0"}
ALL = frozenset({"fwd", "bwd", "dx"})
VARIANTS = [
    Variant("cuda", "default", {}, ALL),
    Variant("cuda", "first version (block per tile)", OLD_CUDA, frozenset({"bwd", "dx"})),
    Variant("cuda", "forward: chunks of 4 atoms", {"INIK_FAST_CUDA_FWD_MC": "4"}, frozenset({"fwd"})),
    Variant("cuda", "forward: tensor cores (3xTF32)", {"INIK_FAST_CUDA_FWD_MMA": "1"}, frozenset({"fwd"})),
    Variant("cuda", "forward: tensor cores (2xTF32)", {"INIK_FAST_CUDA_FWD_MMA": "1"}, frozenset({"fwd"}), half=True),
    Variant("cuda", "dx: all channels per block", {"INIK_FAST_CUDA_DX_CHANNELS": "1024"}, frozenset({"dx"})),
    Variant("cuda", "dx: 8 blocks/SM (128 registers)", {"INIK_FAST_CUDA_DX_MINBLOCKS": "8"}, frozenset({"dx"})),
    Variant("cuda", "atoms: no (chunk, group) split", {"INIK_FAST_CUDA_ATOMS_SPLIT": "0"}, frozenset({"bwd"})),
    Variant("cuda", "atoms: 4 blocks/SM (128 registers)", {"INIK_FAST_CUDA_ATOMS_MINBLOCKS": "4"}, frozenset({"bwd"})),
    Variant("triton", "default", {}, ALL),
    Variant("triton", "taps 32 (first version)", {"INIK_FAST_TRITON_TAPS": "32"}, ALL),
    Variant("triton", "taps 16", {"INIK_FAST_TRITON_TAPS": "16"}, ALL),
    Variant("triton", "slab forward", {"INIK_FAST_TRITON_FORWARD": "slab"}, frozenset({"fwd"})),
    Variant("triton", "backward tile 16x16, 4 warps", {"INIK_FAST_TRITON_PINNED_TILE": "16,16,4"}, frozenset({"bwd"})),
    Variant("triton", "backward tile 16x16, 8 warps", {"INIK_FAST_TRITON_PINNED_TILE": "16,16,8"}, frozenset({"bwd"})),
    Variant("triton", "dx: 1 program per SM", {"INIK_FAST_TRITON_DX_PROGRAMS": "1"}, frozenset({"dx"})),
    Variant("triton", "dx: 4 programs per SM", {"INIK_FAST_TRITON_DX_PROGRAMS": "4"}, frozenset({"dx"})),
    Variant("triton", "half dots off", {"INIK_FAST_TRITON_HALF_DOTS": "0"}, frozenset({"fwd", "bwd"}), half=True),
]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    shape: tuple  # B, H, W
    dtype: torch.dtype
    grads: tuple  # leaves that need a gradient; () = forward only

    @property
    def parts(self) -> set:
        return {"fwd"} | ({"bwd"} if self.grads else set()) | ({"dx"} if "x" in self.grads else set())


GPU_WORKLOADS = [
    Workload("forward 1x1120x1680 fp32", (1, 1120, 1680), F32, ()),
    Workload("fwd+bwd 4x256^2 fp32 (no dx)", (4, 256, 256), F32, TRAIN),
    Workload("fwd+bwd+dx 4x256^2 fp32", (4, 256, 256), F32, ("x",) + TRAIN),
    Workload("fwd+bwd 4x256^2 bf16 (no dx)", (4, 256, 256), BF16, TRAIN),
]
TINY_WORKLOADS = [
    Workload("forward 1x24x40 fp32", (1, 24, 40), F32, ()),
    Workload("fwd+bwd+dx 2x16x16 fp32", (2, 16, 16), F32, ("x",) + TRAIN),
]


@contextlib.contextmanager
def environment(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_case(w: Workload, device: str, profile: str) -> workloads.Case:
    B, H, W = w.shape
    prof = workloads.PROFILES[profile]
    return workloads.Case("sweep", "release", device, w.dtype, (B, prof.config.in_ch, H, W), prof)


def run_op(backend: str, t: dict, grads: tuple):
    """The op's output and the gradients of `grads` for t's cotangent, as one list."""
    with torch.set_grad_enabled(bool(grads)):
        y = workloads.ikconv(backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])
        if not grads:
            return [y]
        return [y, *torch.autograd.grad(y, [t[k] for k in grads], t["cotangent"])]


def as_double(t: dict, grads: tuple) -> dict:
    out = {k: v.detach().double() if isinstance(v, torch.Tensor) else v for k, v in t.items()}
    for k in grads:
        out[k].requires_grad_(True)
    return out


def rel_err(got: list, ref: list) -> float:
    return max(float((g.double() - r).norm() / r.norm().clamp_min(1e-300)) for g, r in zip(got, ref))


def median_ms(fn, device: str, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    measure.sync(device)
    return 1e3 * statistics.median(measure.seconds(fn, device) for _ in range(reps))


def sweep(device: str, tiny: bool, deadline: float) -> dict:
    profile = "tiny" if tiny else "cuda"
    reps, warmup = (1, 0) if tiny else (15, 3)
    rows = []
    for w in TINY_WORKLOADS if tiny else GPU_WORKLOADS:
        case = make_case(w, device, profile)
        t = workloads.ikconv_inputs(case, 0, grads=w.grads)
        ref = run_op("reference", as_double(t, w.grads), w.grads)
        # the release at this dtype sets the low-precision bound: 2x its error (fp32: at least 1e-4)
        release_out = run_op("release", t, w.grads)
        release_err = rel_err(release_out, ref)
        tol = max(1e-4, 2 * release_err)
        del release_out
        release_ms = median_ms(lambda: run_op("release", t, w.grads), device, reps, warmup)
        rows.append(dict(workload=w.name, backend="release", variant="the release's computation", env={},
                         time_ms=release_ms, rel_err=release_err, tol=None, ok=True, speedup=1.0))
        print(f"{w.name}: release {release_ms:.3f} ms, error {release_err:.2e}, tolerance {tol:.2e}", flush=True)
        for v in VARIANTS:
            if v.backend not in available_backends(device, w.dtype) or not (v.parts & w.parts):
                continue
            if v.name != "default" and v.half != (w.dtype in (torch.float16, BF16)):
                continue
            row = dict(workload=w.name, backend=v.backend, variant=v.name, env=v.env)
            if time.monotonic() > deadline:
                rows.append({**row, "skipped": "sweep budget spent"})
                continue
            try:
                with environment(v.env):
                    if tiny:  # the plumbing: one call, checked and timed (the interpreter is slow)
                        out = []
                        ms = 1e3 * measure.seconds(lambda: out.append(run_op(v.backend, t, w.grads)), device)
                        err = rel_err(out.pop(), ref)
                    else:
                        err = rel_err(run_op(v.backend, t, w.grads), ref)
                        ms = median_ms(lambda: run_op(v.backend, t, w.grads), device, reps, warmup)
            except Exception as e:  # a variant that fails is reported, and the sweep goes on
                rows.append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
                print(f"  {v.backend} / {v.name}: FAILED {rows[-1]['error']}", flush=True)
                continue
            ok = err <= tol
            rows.append({**row, "time_ms": ms, "rel_err": err, "tol": tol, "ok": ok, "speedup": release_ms / ms})
            print(f"  {v.backend} / {v.name}: {ms:.3f} ms ({release_ms / ms:.1f}x), error {err:.2e}"
                  f"{'' if ok else ' WRONG'}", flush=True)
        del t, ref
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    best = {}
    for r in rows:
        if r.get("ok") and r["backend"] != "release":
            key = f"{r['workload']} | {r['backend']}"
            if key not in best or r["time_ms"] < best[key]["time_ms"]:
                best[key] = r
    return dict(
        device=machine.device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
        triton=_triton_version(), date=datetime.date.today().isoformat(), tiny=tiny,
        allow_tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32),
        rows=rows, best={k: v["variant"] for k, v in best.items()},
    )


def _triton_version():
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def markdown(result: dict) -> str:
    out = [
        f"## Kernel-variant sweep: {result['device']} ({result['date']})",
        "",
        f"torch {result['torch']}, CUDA {result['cuda']}, triton {result['triton']}; TF32 off for the release "
        f"({result['allow_tf32']}); medians of {'wall-clock' if result['tiny'] else 'CUDA-event'} timings, one input set; "
        "error = max relative L2 error "
        "of the output and every gradient against the float64 reference; **bold** = the fastest correct variant.",
        "",
        "| workload | backend | variant | median | vs release | error | tolerance |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    best = {(k.split(" | ")[0], k.split(" | ")[1]): v for k, v in result["best"].items()}
    for r in result["rows"]:
        name = r["variant"]
        if best.get((r["workload"], r["backend"])) == name:
            name = f"**{name}**"
        if "time_ms" not in r:
            out.append(f"| {r['workload']} | {r['backend']} | {name} | {r.get('skipped') or r.get('error')} | | | |")
            continue
        tol = f"{r['tol']:.1e}" if r.get("tol") else ""
        flag = "" if r["ok"] else " WRONG"
        out.append(f"| {r['workload']} | {r['backend']} | {name} | {r['time_ms']:.3f} ms | {r['speedup']:.1f}x | "
                   f"{r['rel_err']:.1e}{flag} | {tol} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for sweep-<gpu>-<date>.{json,md}")
    p.add_argument("--budget", type=float, default=150.0, help="seconds after which the remaining variants are skipped")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (the plumbing test)")
    args = p.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sweep.py: no CUDA device is visible to torch; use --tiny on a CPU")
    measure.set_tf32(False)  # exact fp32 release
    result = sweep(device, args.tiny, time.monotonic() + args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sweep-{slug(result['device'])}-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    stem.with_suffix(".md").write_text(text)
    print(text)
    rows = [r for r in result["rows"] if r["backend"] != "release"]
    wrong = [r for r in rows if r.get("ok") is False or "error" in r]
    print(f"sweep: {len(rows) - len(wrong)} variants correct or skipped, {len(wrong)} wrong or failed")
    return 1 if any(r["variant"] == "default" for r in wrong) else 0


if __name__ == "__main__":
    sys.exit(main())
