"""Timing and peak-memory helpers shared by every benchmark.

`run` warms a case up, measures its peak extra memory in one untimed call, picks the number of
rounds from that call's time, times the rounds with pytest-benchmark (on a GPU each round also
records CUDA events around the work and ends with a synchronize), and fills extra_info.
"""
from __future__ import annotations

import ctypes
import itertools
import re
import statistics
import time

import torch

import floor
import workloads

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc
except (OSError, AttributeError):
    _malloc_trim = None


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
    resetting it) minus the resident set before. malloc_trim first hands the pages of freed heap
    blocks back to the kernel, so memory that fn reuses from earlier calls counts again."""
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


def run(benchmark, case: "workloads.Case", step, *, n_sets: int = 1, release_step=None) -> None:
    """Benchmark step(i) (i cycles over the n_sets input sets) for `case` and record extra_info.

    The first call (compilation, autotuning, cold caches) is timed on its own. With `release_step`
    (the same work by the release), every round times the release and then the case, so that a
    drift in the machine's load lands on both sides of the speed-up alike."""
    p, device = case.profile, case.device
    counter = itertools.count()

    def call():
        return step(next(counter) % n_sets)

    if benchmark.disabled:  # --benchmark-disable: run once as a test
        call()
        return
    first_s = seconds(call, device)
    for _ in range(p.warmup - 1):
        call()
    sync(device)
    peak, probe_s = peak_extra_bytes(call, device)
    rounds = max(p.min_rounds, min(p.max_rounds, int(p.target_s / max(probe_s, 1e-9))))
    if release_step is not None:
        release_counter = itertools.count()

        def release_call():
            return release_step(next(release_counter) % n_sets)

        release_call()  # its first call is the release case's business
    own_s, release_s = [], []

    def timed():
        if release_step is not None:
            release_s.append(seconds(release_call, device))
        own_s.append(seconds(call, device))

    benchmark.group = case.group
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    median_s = statistics.median(own_s)
    macs = workloads.macs(case.suite, case.shape, case.config)
    macs_minimal = workloads.macs(case.suite, case.shape, case.config, minimal=True)
    peak_fma, _ = floor.peak_fma(device)
    benchmark.extra_info.update(
        suite=case.suite,
        suite_rank=list(workloads.SUITE_TITLES).index(case.suite),
        backend=case.backend,
        device=floor.device_name(device),
        dtype=workloads.dtype_name(case.dtype),
        shape=case.shape_text,
        time_s=median_s,
        timing="CUDA events" if torch.device(device).type == "cuda" else "wall clock",
        first_call_s=first_s,
        release_paired_s=statistics.median(release_s) if release_s else None,
        peak_extra_bytes=peak,
        macs=macs,
        macs_minimal=macs_minimal,
        gflops=2 * macs / median_s / 1e9,
        peak_fma_per_s=peak_fma,
        floor_fraction=floor.floor_fraction(macs, median_s, peak_fma),
        floor_fraction_minimal=floor.floor_fraction(macs_minimal, median_s, peak_fma),
        input_sets=n_sets,
        rounds=rounds,
    )
