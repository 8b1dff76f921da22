"""The work floor of each benchmark (multiply-accumulates, MACs) and each device's peak FMA rate.

"Fraction of the floor" = (MACs / peak FMA rate) / measured time: 1.0 would mean every FMA unit
of the device did useful work of the op for the whole run. The op floors follow
docs/ops.md; the model floors count the model's convolutions with
torch.utils.flop_counter on meta tensors (no data, no time) plus the op floors below.
"""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from inik_fast import INIKNet, INIKNetConfig


# ---------------------------------------------------------------------------------------------
# MACs
# ---------------------------------------------------------------------------------------------
def window_taps(G: int) -> int:
    """sum over size groups of k_g^2, k_g = 2g + 3: 679 for G = 7."""
    return sum((2 * g + 3) ** 2 for g in range(G))


def ikconv_macs(B, C, H, W, G, M, O, *, backward=False, need_x_grad=False, recompute=True) -> int:
    """Forward: the responses D (taps * C * M per pixel) plus the mixing (O * G * C * M per pixel);
    20,370 + 630 per pixel for the release config. The backward forms the parameter gradients (the
    atom-gradient correlation, one forward's worth) and, with `recompute` (the fused backends'
    design: D is never stored), recomputes D (one more); the image gradient adds one more. Without
    `recompute` it is the minimal work, with D stored by the forward."""
    fwd = B * H * W * (window_taps(G) * C * M + O * G * C * M)
    if not backward:
        return fwd
    return fwd * (1 + int(recompute) + int(need_x_grad))


def atom_bank_macs(G, M, Hd, D, *, backward=False) -> int:
    """The G*M atom MLPs at the points inside their windows (D*Hd + Hd*Hd + Hd MACs a point);
    the backward (input and weight gradients of each layer) is about 2x that."""
    fwd = window_taps(G) * M * (D * Hd + Hd * Hd + Hd)
    return fwd * (2 if backward else 1)


@functools.cache  # once per process: the registration is global
def _register_op_formulas() -> None:
    """Let FlopCounterMode count the reference backend's custom ops (FLOPs = 2 MACs)."""
    ops = torch.ops.inik_fast

    @register_flop_formula(ops.ikconv_forward_reference)
    def _ikconv_fwd(x, atoms, scale, basis, weight, bias, residual, out_shape=None, **kw):
        (B, C, H, W), (G, M) = x, atoms[:2]
        return 2 * ikconv_macs(B, C, H, W, G, M, weight[0])

    @register_flop_formula(ops.ikconv_backward_reference)
    def _ikconv_bwd(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, det, out_shape=None, **kw):
        (B, C, H, W), (G, M) = x, atoms[:2]
        return 2 * ikconv_macs(B, C, H, W, G, M, weight[0], backward=True, need_x_grad=need_x_grad)

    @register_flop_formula(ops.atom_bank_forward_reference)
    def _bank_fwd(coords, mask, w1, *rest, out_shape=None, **kw):
        return 2 * atom_bank_macs(coords[0], w1[0], w1[1], w1[2])

    @register_flop_formula(ops.atom_bank_backward_reference)
    def _bank_bwd(grad, coords, mask, w1, *rest, out_shape=None, **kw):
        return 2 * atom_bank_macs(coords[0], w1[0], w1[1], w1[2], backward=True)


def count_macs(fn) -> int:
    """MACs of fn(), run on meta tensors with the "reference" backend; fn builds its own inputs."""
    _register_op_formulas()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


@functools.lru_cache(maxsize=None)
def macs(suite: str, shape: tuple, cfg: INIKNetConfig, minimal: bool = False) -> int:
    """The work of one timed call of `suite` at `shape`, the same for every backend: the design's
    own (the op's backward recomputes D), or with `minimal` the least (D stored by the forward)."""
    G, M = cfg.num_groups, cfg.basis_num
    if suite == "atom_bank":
        return sum(atom_bank_macs(G, M, cfg.inr_hidden, cfg.coord_dim, backward=b) for b in (False, True))
    B, C, H, W = shape
    if suite == "ikconv_forward":
        return ikconv_macs(B, C, H, W, G, M, C)
    if suite in ("ikconv_train", "ikconv_train_dx"):
        bwd = ikconv_macs(B, C, H, W, G, M, C, backward=True, need_x_grad=suite == "ikconv_train_dx", recompute=not minimal)
        return ikconv_macs(B, C, H, W, G, M, C) + bwd
    with torch.device("meta"):
        net = INIKNet(cfg, backend="reference")
        x = torch.empty(shape)
    if suite in ("model_eval", "model_eval_cast"):
        net.eval()
        return count_macs(lambda: net(x))
    return count_macs(lambda: sum(o.sum() for o in net(x)).backward())


# ---------------------------------------------------------------------------------------------
# peak FMA rates
# ---------------------------------------------------------------------------------------------
# fp32 FMA/s of the GPUs, by a substring of torch.cuda.get_device_name(), most specific first.
# Rate = SMs x 128 fp32 lanes x boost clock; "TFLOP/s" as NVIDIA's data sheets state it (2 per FMA).
# The fused kernels accumulate in fp32 on the CUDA cores also for bf16/fp16 inputs, so the fp32
# rate is their peak for every dtype.
GPU_PEAK_FMA = {
    "H100 PCIe": (25.6e12, "H100 PCIe fp32 51.2 TFLOP/s (114 SMs x 128 lanes x 1.755 GHz), NVIDIA data sheet"),
    "H100 NVL": (30.0e12, "H100 NVL fp32 60 TFLOP/s, NVIDIA data sheet"),
    "H100": (33.5e12, "H100 SXM fp32 67 TFLOP/s (132 SMs x 128 lanes x 1.98 GHz), NVIDIA data sheet"),
    "H200": (33.5e12, "H200 fp32 67 TFLOP/s (132 SMs x 128 lanes x 1.98 GHz), NVIDIA data sheet"),
    "A100": (9.75e12, "A100 fp32 19.5 TFLOP/s (108 SMs x 64 lanes x 1.41 GHz), NVIDIA data sheet"),
}


@functools.lru_cache(maxsize=None)
def cpu_peak_fma() -> tuple[float, str]:
    """The CPU's fp32 FMA ceiling, measured by fma_peak.c (FMA chains in registers on every core).
    /proc/cpuinfo gives the base clock, not the boost clock the cores run at, and torch.mm does
    not reach the FMA peak on every CPU, so neither gives a true ceiling."""
    src = Path(__file__).with_name("fma_peak.c")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "fma_peak"
        cc = os.environ.get("CC", "cc")
        try:
            subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)], check=True,
                           capture_output=True, timeout=60)
            env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
            rate, threads, lanes, _ = subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                                                     timeout=120, env=env).stdout.split()
        except (OSError, subprocess.SubprocessError) as e:
            return 0.0, f"unknown: benchmarks/fma_peak.c did not build or run ({e})"
    return float(rate), f"measured by benchmarks/fma_peak.c: {threads} threads x {lanes}-lane fp32 FMA chains"


def peak_fma(device: str) -> tuple[float, str]:
    """(fp32 FMA/s, where the number comes from) of `device`; 0.0 when unknown."""
    if torch.device(device).type != "cuda":
        return cpu_peak_fma()
    name = torch.cuda.get_device_name(device)
    for key, entry in GPU_PEAK_FMA.items():
        if key in name:
            return entry
    return 0.0, f"{name} is not in benchmarks/floor.py's GPU_PEAK_FMA table"


def floor_fraction(macs: int, seconds: float, peak: float) -> float | None:
    return macs / peak / seconds if peak > 0 and seconds > 0 else None
