"""Where the time of one op call goes, kernel by kernel (gpu_check.sh's profile stage): the forward
at 1x1120x1680 and forward+backward with the image gradient at 4x256^2, float32, for each fused
GPU backend, under torch.profiler; or, with --ncu-target, one such call to run under Nsight Compute.

    python benchmarks/profile_gpu.py [--backends cuda triton] [--ncu-target cuda]
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from inik_fast.benchmarking import workloads
from sweep import GPU_WORKLOADS, make_case, run_op

PROFILED = (GPU_WORKLOADS[0], GPU_WORKLOADS[2])  # the forward and fwd+bwd+dx workloads


def calls(backend: str):
    """One closure per profiled workload, inputs made."""
    out = []
    for w in PROFILED:
        t = workloads.ikconv_inputs(make_case(w, "cuda", "cuda"), 0, grads=w.grads)
        out.append((w.name, lambda t=t, w=w: run_op(backend, t, w.grads)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["cuda", "triton"])
    p.add_argument("--ncu-target", choices=("cuda", "triton"), help="run each workload once, for ncu")
    args = p.parse_args(argv)
    if args.ncu_target:
        for _, fn in calls(args.ncu_target):
            fn()
        torch.cuda.synchronize()
        return 0
    for backend in args.backends:
        for name, fn in calls(backend):
            for _ in range(3):  # compile, autotune, warm the allocator
                fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
            print(f"\n### {backend}: {name} (3 calls)\n", flush=True)
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
