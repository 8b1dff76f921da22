"""A benchmark of the suites: the package's interleaved measurement (inik_fast.benchmarking.measure),
its rounds driven by pytest-benchmark, and what report.py needs recorded in extra_info."""
from __future__ import annotations

import torch

import floor
from inik_fast.benchmarking import machine, measure, workloads


def run(benchmark, case: workloads.Case) -> None:
    if benchmark.disabled:  # --benchmark-disable: run once as a test
        workloads.steps(case).step(0)
        return
    timed = measure.Interleaved(case)
    benchmark.group = case.group
    benchmark.pedantic(timed.round, rounds=timed.rounds, iterations=1, warmup_rounds=0)
    m, device = timed.result, case.device
    macs = floor.macs(case.suite, case.shape, case.config)
    macs_minimal = floor.macs(case.suite, case.shape, case.config, minimal=True)
    peak_fma, _ = floor.peak_fma(device)
    benchmark.extra_info.update(
        suite=case.suite,
        suite_rank=list(workloads.SUITE_TITLES).index(case.suite),
        backend=case.backend,
        device=machine.device_name(device),
        dtype=workloads.dtype_name(case.dtype),
        shape=case.shape_text,
        time_s=m.median_s,
        timing="CUDA events" if torch.device(device).type == "cuda" else "wall clock",
        first_call_s=m.first_call_s,
        release_paired_s=m.release_median_s if m.release_times_s else None,
        peak_extra_bytes=m.peak_extra_bytes,
        macs=macs,
        macs_minimal=macs_minimal,
        gflops=2 * macs / m.median_s / 1e9,
        peak_fma_per_s=peak_fma,
        floor_fraction=floor.floor_fraction(macs, m.median_s, peak_fma),
        floor_fraction_minimal=floor.floor_fraction(macs_minimal, m.median_s, peak_fma),
        input_sets=timed.n_sets,
        rounds=m.rounds,
    )
