"""pytest-benchmark setup: collects bench_*.py, builds one case per (suite, size, dtype, backend)
for the chosen device and size profile (inik_fast.benchmarking.workloads), records the machine
(the CPU's model and speed flags, AMX or not, even for a GPU run), and enforces a time budget.

Options:
  --bench-device cpu|cuda   device to benchmark (default: cuda when available, else cpu)
  --bench-size full|tiny    the project's sizes for that device, or tiny plumbing checks
  --bench-budget SECONDS    skip the benchmarks that would start after this many seconds, so a
                            time-limited run still ends normally and writes its JSON
"""
from __future__ import annotations

import datetime
import time

import pytest
import torch

import floor
from inik_fast.benchmarking import machine, measure, workloads

_start = time.monotonic()


def pytest_configure(config):
    measure.set_tf32(False)  # recorded in machine_info


def pytest_addoption(parser):
    group = parser.getgroup("inik_fast benchmarks")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default=None, help="device to benchmark")
    group.addoption("--bench-size", choices=("full", "tiny"), default="full", help="size profile")
    group.addoption("--bench-budget", type=float, default=None, help="seconds after which to skip the rest")


def bench_device(config) -> str:
    device = config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda: no CUDA device is visible to torch")
    return device


def profile_name(config) -> str:
    return "tiny" if config.getoption("--bench-size") == "tiny" else bench_device(config)


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself already
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)


def pytest_generate_tests(metafunc):
    """A test function named test_<suite> gets one `case` per entry of workloads.cases(suite)."""
    if "case" in metafunc.fixturenames:
        suite = metafunc.function.__name__.removeprefix("test_")
        found = workloads.cases(suite, bench_device(metafunc.config), profile_name(metafunc.config))
        metafunc.parametrize("case", found, ids=[c.id for c in found])


@pytest.fixture(autouse=True)
def _within_budget(request):
    budget = request.config.getoption("--bench-budget")
    if budget is not None and time.monotonic() - _start > budget:
        pytest.skip(f"--bench-budget {budget:g} s spent")


def pytest_benchmark_update_machine_info(config, machine_info):
    import inik_fast

    device = bench_device(config)
    peak, source = floor.peak_fma(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    machine_info["inik_fast"] = dict(
        device=device,
        device_name=machine.device_name(device),
        cpu=machine.cpu_name(),
        cpu_flags=machine.cpu_flags(),
        cores=machine.cpu_cores(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton_version,
        backends=inik_fast.available_backends(device),
        profile=profile_name(config),
        peak_fma_per_s=peak,
        peak_source=source,
        allow_tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32),
        date=datetime.date.today().isoformat(),
    )
