"""`inik-fast bench`: the benchmark suites' workloads, measured as `make bench` measures them (each
backend's rounds interleaved with rounds of the release on the same inputs, medians), as one table
of medians and speed-ups over the release."""
from __future__ import annotations

import torch

from ..backends import available_backends
from ..errors import UserError
from ..evaluate import markdown_table
from . import machine, measure, workloads

SIZES = {
    "quick": "quick",  # every suite at small sizes: about a minute on 2 CPU cores
    "full": None,  # the benchmark suites' sizes for the device (profile "cpu" or "cuda")
    "tiny": "tiny",  # a small model and tiny images: the plumbing
}
MIN_ROUNDS = 5  # fewer interleaved rounds give no stable median


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: expected auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is visible to torch")
    return str(device)


def _choose(flag: str, asked: list[str] | None, valid: list[str], default: list[str], where: str = "") -> list[str]:
    unknown = [n for n in asked or () if n not in valid]
    if unknown:
        raise UserError(f"{flag} {' '.join(unknown)}: expected one or more of {', '.join(valid)}{where}")
    return asked or default


def run_bench(device="auto", backends=None, suites=None, sizes="quick", rounds=MIN_ROUNDS) -> str:
    """The table for `backends` (default: every backend available on the device) on the workloads
    of `suites` (default: all) at `sizes`, `rounds` interleaved rounds each."""
    if rounds < MIN_ROUNDS:
        raise UserError(f"--rounds {rounds}: expected an integer >= {MIN_ROUNDS}")
    if sizes not in SIZES:
        raise UserError(f"--sizes {sizes}: expected one of {', '.join(SIZES)}")
    device = _device(device)
    available = available_backends(device)
    backends = _choose("--backends", backends, ["release", *available], available, f" (available on {device})")
    suites = _choose("--workloads", suites, list(workloads.SUITE_TITLES), list(workloads.SUITE_TITLES))
    profile = SIZES[sizes] or torch.device(device).type
    cases = [c for s in suites for c in workloads.cases(s, device, profile) if c.backend in backends]
    if not cases:
        raise UserError(f"--backends {' '.join(backends)}: none runs the dtypes of --workloads {' '.join(suites)} on {device}")
    tf32 = measure.set_tf32(False)
    try:
        rows = []
        for c in cases:
            m = measure.measure(c, rounds)
            rows.append([f"{c.suite} {workloads.dtype_name(c.dtype)} {c.size}", c.backend, f"{1e3 * m.median_s:.3f}",
                         f"{1e3 * m.release_median_s:.3f}", f"{m.ratio:.2f}x", str(m.rounds)])
    finally:
        measure.set_tf32(tf32)
    title = (
        f"inik-fast bench: {machine.describe(device)}; {sizes} sizes; each backend's rounds alternate with "
        f"rounds of the release on the same inputs; ratio = release median / median (> 1: faster than the release)"
    )
    head = ["workload", "backend", "median ms", "release median ms", "ratio", "rounds"]
    return title + "\n" + markdown_table(head, rows)
