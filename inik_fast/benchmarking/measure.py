"""The one measurement that `inik-fast bench` and the benchmarks/ suites share.

`Interleaved(case)` times the case's first call on its own, warms it up, measures its peak extra
memory in one untimed call (in the first call itself for a profile without warm-up, the tiny
plumbing one) and picks the number of rounds; each `round()` then times the release's
step and the case's step one after the other on the same inputs, so that a drift in the
machine's load lands on both sides of the ratio alike. `measure(case)` runs the rounds and
returns their medians.
"""
from __future__ import annotations

import ctypes
import dataclasses
import itertools
import re
import statistics
import time

import torch

from . import workloads

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc
except (OSError, AttributeError):
    _malloc_trim = None


def set_tf32(enabled: bool) -> bool:
    """Allow TF32 in cuDNN and matmuls or not (off: float32 entries, the release's convolutions
    included, compute in float32); returns the previous setting."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    return previous


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's VmHWM to the current RSS ("5" to clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_bytes(fn, device: str) -> tuple[int | None, float]:
    """(peak memory that fn() adds above what was in use before it, fn's wall time in seconds).

    GPU: the caching allocator's peak. CPU: the process's peak resident set (VmHWM, after
    resetting it) minus the resident set before: every page the call touches, tensors, oneDNN
    scratch and autocast's weight copies alike. malloc_trim first hands the pages of freed heap
    blocks back to the kernel, so memory that fn reuses from earlier calls counts again. None
    where /proc/self/clear_refs is not writable."""
    cuda, ok = torch.device(device).type == "cuda", False
    sync(device)
    if cuda:
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        if _malloc_trim is not None:
            _malloc_trim(0)
        ok = _reset_peak_rss()
        if ok:
            before = _proc_status_bytes("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    wall_s = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - before
    elif ok:
        peak = max(0, _proc_status_bytes("VmHWM") - before)  # RSS can drop below `before` in the call
    else:
        peak = None
    del out
    return peak, wall_s


def seconds(fn, device: str) -> float:
    """Wall time of fn() on the CPU; CUDA-event time of the work it queues on a GPU."""
    if torch.device(device).type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


@dataclasses.dataclass
class Measurement:
    first_call_s: float  # the first call alone: compilation, autotuning, cold caches
    peak_extra_bytes: int | None
    times_s: list = dataclasses.field(default_factory=list)  # the case's timed rounds
    release_times_s: list = dataclasses.field(default_factory=list)  # the release's, one per round; empty for the release

    @property
    def rounds(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def release_median_s(self) -> float:
        """The release's median over the rounds interleaved with this case's (its own for the release)."""
        return statistics.median(self.release_times_s or self.times_s)

    @property
    def ratio(self) -> float:
        """Speed-up over the release: > 1 is faster."""
        return self.release_median_s / self.median_s


class Interleaved:
    """A case's step and the release's, timed in alternating rounds; constructing it makes the
    inputs, times the first call, warms up and measures the peak extra memory."""

    def __init__(self, case: workloads.Case, rounds: int | None = None):
        """`rounds`: how many to run; by default as many as fill the profile's target time, within
        its bounds."""
        self.case, p, device = case, case.profile, case.device
        s = workloads.steps(case)
        self.n_sets = s.n_sets
        self.call = _cycle(s.step, s.n_sets)
        self.release_call = None if s.release_step is None else _cycle(s.release_step, s.n_sets)
        if p.warmup == 0:  # the plumbing profile (tiny): the first call is also the memory probe
            first = []
            peak, _ = peak_extra_bytes(lambda: first.append(seconds(self.call, device)), device)
            first_s = probe_s = first[0]
        else:
            first_s = seconds(self.call, device)
            for _ in range(p.warmup - 1):
                self.call()
            sync(device)
            peak, probe_s = peak_extra_bytes(self.call, device)
        self.rounds = rounds or max(p.min_rounds, min(p.max_rounds, int(p.target_s / max(probe_s, 1e-9))))
        if self.release_call:
            self.release_call()  # its first call is the release case's business
        self.result = Measurement(first_s, peak)

    def round(self) -> None:
        if self.release_call:
            self.result.release_times_s.append(seconds(self.release_call, self.case.device))
        self.result.times_s.append(seconds(self.call, self.case.device))


def _cycle(step: workloads.Step, n_sets: int):
    """step(0), step(1), ... step(n_sets - 1), step(0), ... on successive calls."""
    counter = itertools.count()
    return lambda: step(next(counter) % n_sets)


def measure(case: workloads.Case, rounds: int | None = None) -> Measurement:
    run = Interleaved(case, rounds)
    for _ in range(run.rounds):
        run.round()
    return run.result
