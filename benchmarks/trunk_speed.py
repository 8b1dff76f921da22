"""The fast trunk (`inik_fast/trunk.py`) against the release's trunk, everything else the same.

Times the eval forward (inference_mode, float32) of `INIKNet(config, backend="cpu")` and of the
same model, same parameters and same fused ops, whose `_trunk` is the release's (the modules' own
forwards, as `release.ReleaseINIKNet` runs them), in interleaved rounds; also the trunk alone
(U-Net + both BiLSTMs on the three scales) both ways. Prints one markdown line per comparison
with the median of the per-round ratios (release trunk time / fast trunk time; > 1: the fast
trunk is faster) and the CPU.

    PYTHONPATH=. python benchmarks/trunk_speed.py [--size 256] [--rounds 15] [--threads 1]

(PYTHONPATH=. from the repository root, so that this checkout's inik_fast is the one imported.)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import inik_fast
from inik_fast import INIKNet, INIKNetConfig
from inik_fast.benchmarking import machine


class ReleaseTrunkINIKNet(INIKNet):
    """INIKNet with the release's trunk and INIKNet's fused ops."""

    def _trunk(self, xs):
        f = [self.unet(t) for t in xs]
        return self.lstms_basis_select(f), self.lstms_scale_select(f)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if not hasattr(INIKNet, "_trunk"):
        raise SystemExit(f"{inik_fast.__file__} has no INIKNet._trunk: run from the repository root with PYTHONPATH=.")
    cfg = INIKNetConfig()  # the release config
    torch.manual_seed(0)
    fast = INIKNet(cfg, backend="cpu").eval()
    slow = ReleaseTrunkINIKNet(cfg, backend="cpu").eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.rand(1, cfg.in_ch, args.size, args.size, generator=torch.Generator().manual_seed(1))
    xs = [
        F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False),
        F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False),
        x,
    ]

    with torch.inference_mode():
        for a, b in zip(fast(x), slow(x)):  # same model: same outputs to float32 rounding
            err = ((a - b).norm() / b.norm()).item()
            assert err < 1e-4, err
        work = {
            "eval forward": (lambda: fast(x), lambda: slow(x)),
            "trunk only": (lambda: fast._trunk(xs), lambda: slow._trunk(xs)),
        }
        for fa, sl in work.values():  # warm-up
            fa(), sl()
        ratios = {k: [] for k in work}
        times = {k: ([], []) for k in work}
        for r in range(args.rounds):
            for k, (fa, sl) in work.items():
                # alternate which goes first, so neither always runs right after the other
                if r % 2:
                    tf, ts = timed(fa), timed(sl)
                else:
                    ts, tf = timed(sl), timed(fa)
                ratios[k].append(ts / tf)
                times[k][0].append(tf)
                times[k][1].append(ts)
                print(f"round {r}: {k}: fast {tf:.3f} s, release trunk {ts:.3f} s, ratio {ts / tf:.2f}", flush=True)

    cpu = machine.describe("cpu")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {cpu}")
    for k in work:
        r = ratios[k]
        share = statistics.median(times[k][0]) / statistics.median(times["eval forward"][0])
        print(
            f"| {k} | float32 1x{cfg.in_ch}x{args.size}x{args.size}, release config | "
            f"release trunk / fast trunk: median {statistics.median(r):.2f}x "
            f"(min {min(r):.2f}x, max {max(r):.2f}x, {len(r)} interleaved rounds) | "
            f"fast: {share:.0%} of the fast eval forward | {args.threads} thread, {cpu} |"
        )


if __name__ == "__main__":
    main()
