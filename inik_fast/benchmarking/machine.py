"""What machine a measurement ran on: the device's name, and for a CPU its model, cores and the
instruction-set flags that decide the kernels' speed (recorded with every result)."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def cpu_cores() -> int:
    """Cores this process may run on (the benchmarks use all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_name() -> str:
    info = _cpuinfo()
    return info.get("model name", "unknown CPU")


# The CPU features that decide the kernels' speed (vector width, bf16 conversions, AMX tiles).
SPEED_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """Which of SPEED_FLAGS /proc/cpuinfo lists for this CPU."""
    have = set(_cpuinfo().get("flags", "").split())
    return [f for f in SPEED_FLAGS if f in have]


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {cpu_cores()} cores"


def describe(device: str) -> str:
    """The device's name and, for a CPU, its family and model (one model name covers several
    generations) and SPEED_FLAGS: the line a result is recorded with."""
    if torch.device(device).type != "cpu":
        return device_name(device)
    info = _cpuinfo()
    return f"{device_name(device)} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), flags {' '.join(cpu_flags())}"
