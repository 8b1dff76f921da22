"""The weight gradient of a 3x3 convolution on a channels_last map, two ways: oneDNN's own
channels_last kernel, and on NCHW copies of the gradient and the input (what
`inik_fast/trunk.py` does where `_NCHW_WEIGHT_GRAD` is set). Interleaved rounds, median times
and the ratio, the forward and the input gradient beside them, and the CPU.

    python benchmarks/conv_wgrad.py [--batch 1] [--channels 64] [--size 256] [--rounds 9] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.ops import aten

from inik_fast.benchmarking import machine


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    C, S = args.channels, args.size
    cl = torch.channels_last
    x = torch.randn(args.batch, C, S + 2, S + 2, generator=g).contiguous(memory_format=cl)  # padded input
    w = torch.randn(C, C, 3, 3, generator=g).contiguous(memory_format=cl) * 0.05
    grad = torch.randn(args.batch, C, S, S, generator=g).contiguous(memory_format=cl)

    def backward(gr, xx, ww, mask):
        return aten.convolution_backward(gr, xx, ww, [0], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    ways = {
        "forward, channels_last": lambda: aten.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
        "input grad, channels_last": lambda: backward(grad, x, w, [True, False, False]),
        "weight grad, channels_last": lambda: backward(grad, x, w, [False, True, False]),
        "weight grad, on NCHW copies": lambda: backward(grad.contiguous(), x.contiguous(), w.contiguous(), [False, True, False]),
    }
    a = backward(grad, x, w, [False, True, False])[1]
    b = ways["weight grad, on NCHW copies"]()[1]
    assert (a - b).abs().max() <= 1e-4 * a.abs().max(), "the two ways disagree"  # sums of B*S*S products each
    times = {k: [] for k in ways}
    for _ in range(args.rounds + 1):  # the first round warms up
        for k, fn in ways.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    print(f"{machine.describe('cpu')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"3x3 conv {C} -> {C}, B={args.batch}, {S}x{S}, float32, median of {args.rounds} interleaved rounds:")
    for k, m in med.items():
        print(f"  {k:30s} {m * 1e3:8.1f} ms")
    ratio = med["weight grad, channels_last"] / med["weight grad, on NCHW copies"]
    print(f"  channels_last weight grad / NCHW-copies weight grad: {ratio:.2f}")


if __name__ == "__main__":
    main()
