"""The cpu backend's Winograd convolution (`inik_fast::conv3x3_winograd`) against oneDNN's direct
one: per convolution shape, and in the whole model's eval beside the release.

    PYTHONPATH=. python benchmarks/winograd_speed.py convs
    PYTHONPATH=. python benchmarks/winograd_speed.py count [--size 512]
    PYTHONPATH=. python benchmarks/winograd_speed.py model [--size 512] [--rounds 3]

`count`: the multiply-adds the op takes over (at a direct convolution's count) and those left to
oneDNN, against the release's whole count. `convs`: median of 7 calls each, float32
channels_last, zero padding 1, as the trunk calls it (the pieces of conv(cat(pieces)) read in
place; the direct form convolves each piece with its slice of the weight and adds, as the trunk
does without the op); then what a fresh 64 MB output costs in page faults. `model`: the release
config's eval forward (inference_mode, float32) with the op (its default channel threshold),
without it (the threshold raised past every layer) and the release's computation, in
interleaved rounds; medians. Run it under `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`
to see the ratios with an allocator that keeps freed memory instead of glibc's fresh mappings for
blocks over 32 MB.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from inik_fast import INIKNet, INIKNetConfig, trunk
from inik_fast.benchmarking import machine
from inik_fast.release import ReleaseINIKNet

SHAPES = [([64], 64, 512), ([32, 32], 64, 512), ([32], 32, 512), ([64], 64, 256), ([128], 128, 128)]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def convs():
    conv = torch.ops.inik_fast.conv3x3_winograd
    for pieces, O, S in SHAPES:
        xs = [torch.randn(1, c, S, S).contiguous(memory_format=torch.channels_last) for c in pieces]
        w = torch.randn(O, sum(pieces), 3, 3)

        def direct():
            y, start = None, 0
            for x in xs:
                t = F.conv2d(x, w[:, start : start + x.shape[1]], padding=1)
                y = t if y is None else y.add_(t)
                start += x.shape[1]

        med = {}
        for name, fn in (("direct", direct), ("winograd", lambda: conv(xs, w))):
            fn()
            med[name] = statistics.median(timed(fn) for _ in range(7))
        print(f"| {'+'.join(map(str, pieces))} -> {O}, {S}x{S} | direct {med['direct'] * 1e3:.1f} ms | "
              f"winograd {med['winograd'] * 1e3:.1f} ms | {med['direct'] / med['winograd']:.2f}x |")


def page_faults():
    """What a fresh output costs before any arithmetic: a 64 MB map allocated and written, against
    writing one already held (glibc maps blocks over 32 MB afresh, so every write faults a page in)."""
    held = torch.empty(16 << 20)
    fresh = statistics.median(timed(lambda: torch.empty(16 << 20).fill_(1)) for _ in range(7))
    reuse = statistics.median(timed(lambda: held.fill_(1)) for _ in range(7))
    print(f"| 64 MB output | allocated and written {fresh * 1e3:.1f} ms | written when held {reuse * 1e3:.1f} ms |")


def count(size: int):
    """Multiply-adds of the cpu backend's eval, as a direct convolution would do them: those of the
    convolutions the op takes, those left to oneDNN's conv2d, and the release's whole count."""
    sys.path.insert(0, str(Path(__file__).parent))
    import floor

    cfg = INIKNetConfig()
    net = INIKNet(cfg, backend="cpu").eval()
    macs = {"winograd": 0, "conv2d": 0}
    op, conv2d = torch.ops.inik_fast.conv3x3_winograd, F.conv2d

    def counted(kind, fn):
        def run(x, w, *args, **kwargs):
            y = fn(x, w, *args, **kwargs)
            macs[kind] += y.numel() * w[0].numel()  # outputs x (C * kh * kw)
            return y

        return run

    torch.ops.inik_fast.conv3x3_winograd, F.conv2d = counted("winograd", op), counted("conv2d", conv2d)
    try:
        with torch.inference_mode():
            net(torch.rand(1, cfg.in_ch, size, size))
    finally:
        torch.ops.inik_fast.conv3x3_winograd, F.conv2d = op, conv2d
    total = floor.macs("model_eval", (1, cfg.in_ch, size, size), cfg)
    print(f"| eval {size}x{size} | release {total / 1e9:.1f} GMAC | through the op {macs['winograd'] / 1e9:.1f} GMAC "
          f"({macs['winograd'] / total:.0%}; {macs['winograd'] / 2.25e9:.1f} GMAC of Winograd products) | "
          f"oneDNN conv2d {macs['conv2d'] / 1e9:.1f} GMAC |")


def model(size: int, rounds: int):
    cfg = INIKNetConfig()  # the release config
    torch.manual_seed(0)
    net = INIKNet(cfg, backend="cpu").eval()
    release = ReleaseINIKNet(cfg).eval()
    release.load_state_dict(net.state_dict())
    x = torch.rand(1, cfg.in_ch, size, size, generator=torch.Generator().manual_seed(1))
    threshold = trunk._WINOGRAD_MIN_CHANNELS

    def cpu(on: bool):
        def run():
            trunk._WINOGRAD_MIN_CHANNELS = threshold if on else 1 << 30
            return net(x)

        return run

    work = {"winograd": cpu(True), "direct": cpu(False), "release": lambda: release(x)}
    times = {k: [] for k in work}
    with torch.inference_mode():
        for fn in work.values():  # warm-up
            fn()
        for r in range(rounds):
            for k, fn in work.items():
                times[k].append(timed(fn))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    trunk._WINOGRAD_MIN_CHANNELS = threshold
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| eval {size}x{size} | winograd {med['winograd']:.2f} s | direct {med['direct']:.2f} s "
          f"({med['direct'] / med['winograd']:.2f}x) | release {med['release']:.2f} s | "
          f"release / winograd {med['release'] / med['winograd']:.2f}x, release / direct {med['release'] / med['direct']:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["convs", "count", "model"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine.describe('cpu')}")
    if args.what == "convs":
        convs()
        page_faults()
    elif args.what == "count":
        count(args.size)
    else:
        model(args.size, args.rounds)


if __name__ == "__main__":
    main()
