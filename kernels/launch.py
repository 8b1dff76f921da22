"""How the Triton kernels are compiled and launched: on a GPU through `wrap_triton`, with tiles
picked by the autotuner (keyed on the channel and atom counts only, so that a new image size
reuses the tuned config); under TRITON_INTERPRET=1 (CPU tensors, numpy) as plain kernels with one
fixed tile. The interpreter pays per operation rather than per element, so it gets larger blocks.
"""
from __future__ import annotations

import functools
import inspect
import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRET:
    from .interpreter_compat import squeeze_scalar_index

    squeeze_scalar_index()

# Integer arguments the kernels are not specialized on (Triton would compile a variant for each
# value that is 1 or a multiple of 16): one binary per dtype, flags and tile serves every shape.
SIZE_ARGS = ["B", "H", "W", "Wp", "plane", "C", "O", "G", "M", "NPT", "KK", "Hd", "D", "halo_max"]
# The autotune key of every tiled kernel: channel, output, group and atom counts, never H or W.
TUNE_KEY = ["C", "O", "G", "M"]
# Tiles of TH x TW pixels. Few configs, since each one compiles the whole kernel.
GPU_TILES = [
    triton.Config({"TH": 8, "TW": 16}, num_warps=4, num_stages=2),
    triton.Config({"TH": 16, "TW": 16}, num_warps=4, num_stages=2),
    triton.Config({"TH": 16, "TW": 16}, num_warps=8, num_stages=2),
]
INTERPRET_TILE = {"TH": 16, "TW": 16}
# Taps per chunk of the im2col dot products, per kernel (a dot needs every dimension >= 16): on an
# H200 the forward and dx kernels ran fastest with 16, the backward with 32 (sweep of 2026-12-04).
# The interpreter takes larger chunks, since it pays per operation.
TAPS = {"forward": 16, "backward": 32, "dx": 16}
INTERPRET_TAPS = 128
# Persistent backward programs per multiprocessor: bounds the per-program partial sums.
PROGRAMS_PER_SM = 2
INTERPRET_PROGRAMS = 4

# ---------------------------------------------------------------------------------------------
# Private switches for tests, read at import (the kernel modules read the settings above when
# they are imported, so set these before the first import, e.g. in a subprocess):
#   INIK_FAST_TRITON_TILE=TH,TW,WARPS  the only tile config: the GPU autotuner gets just this one
#                                      (e.g. 16,16,8 forces 8 warps), the interpreter takes its tile
#   INIK_FAST_INTERPRET_AS_GPU=1       the interpreter takes the GPU's settings: the GPU's TAPS,
#                                      int32 indices, the atom bank in blocks of points and hidden units
# ---------------------------------------------------------------------------------------------
TILE_VAR, AS_GPU_VAR = "INIK_FAST_TRITON_TILE", "INIK_FAST_INTERPRET_AS_GPU"
GPU_SETTINGS = not INTERPRET or os.environ.get(AS_GPU_VAR) == "1"

# ---------------------------------------------------------------------------------------------
# Kernel variant knobs, read at every call so that benchmarks/sweep.py can time the variants side
# by side in one process; unset means the default.
# ---------------------------------------------------------------------------------------------
TAPS_VAR = "INIK_FAST_TRITON_TAPS"  # taps per chunk of every kernel: 16, 32, 64 ...
FORWARD_VAR = "INIK_FAST_TRITON_FORWARD"  # forward kernel: "im2col" (default) or "slab"
HALF_DOTS_VAR = "INIK_FAST_TRITON_HALF_DOTS"  # 0: fp16/bf16 window sums as fp32 dots too
PINNED_TILE_VAR = "INIK_FAST_TRITON_PINNED_TILE"  # TH,TW,WARPS of a pinned launch (default GPU_TILES[0])
DX_PROGRAMS_VAR = "INIK_FAST_TRITON_DX_PROGRAMS"  # dx programs per SM, each with its scratch
DX_PROGRAMS_PER_SM = 2  # 20% faster than 1 at 4 x 256^2 on an H200 and 4 no faster (sweep of 2026-12-04)


def _tile_config(value: str, var: str) -> triton.Config:
    try:
        th, tw, warps = (int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"{var}={value!r}: expected TH,TW,WARPS, e.g. 16,16,8") from None
    return triton.Config({"TH": th, "TW": tw}, num_warps=warps, num_stages=2)


if os.environ.get(TILE_VAR):
    GPU_TILES = [_tile_config(os.environ[TILE_VAR], TILE_VAR)]
    INTERPRET_TILE = dict(GPU_TILES[0].kwargs)


def pinned_tile() -> triton.Config:
    """The tile config of a pinned launch (see `launch`)."""
    value = os.environ.get(PINNED_TILE_VAR)
    return _tile_config(value, PINNED_TILE_VAR) if value else GPU_TILES[0]


def half_dots(x: torch.Tensor) -> bool:
    """Whether this call's window sums D = x (*) atoms run as x.dtype dots (atoms rounded to it, fp32
    accumulation): for fp16/bf16 x unless INIK_FAST_TRITON_HALF_DOTS=0; else fp32 (3xTF32) dots."""
    return x.dtype in (torch.float16, torch.bfloat16) and os.environ.get(HALF_DOTS_VAR) != "0"


def taps(kernel: str) -> int:
    """Taps per chunk for this call of `kernel` ("forward", "backward" or "dx"): TAPS (on a GPU or
    with the GPU's settings; else INTERPRET_TAPS), or the power of two >= 16 in INIK_FAST_TRITON_TAPS."""
    value = os.environ.get(TAPS_VAR)
    if not value:
        return TAPS[kernel] if GPU_SETTINGS else INTERPRET_TAPS
    n = int(value)
    if n < 16 or n & (n - 1):
        raise ValueError(f"{TAPS_VAR}={value!r}: expected a power of two >= 16")
    return n


def dx_programs_per_sm() -> int:
    value = os.environ.get(DX_PROGRAMS_VAR) or str(DX_PROGRAMS_PER_SM)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{DX_PROGRAMS_VAR}={value!r}: expected a positive integer")
    return int(value)


def forward_variant() -> str:
    value = os.environ.get(FORWARD_VAR) or "im2col"
    if value not in ("im2col", "slab"):
        raise ValueError(f"{FORWARD_VAR}={value!r}: expected 'im2col' or 'slab'")
    return value


def pow2(n: int, least: int = 16) -> int:
    """The block size holding n: the next power of two, at least `least` (tl.dot's minimum)."""
    return max(least, triton.next_power_of_2(n))


def dot_precision(acc: torch.dtype) -> str:
    """fp32 dots use 3xTF32 on tensor cores (about fp32 accuracy); fp64 dots are exact."""
    return "ieee" if acc == torch.float64 else "tf32x3"


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def max_programs(device: torch.device, per_sm: int = PROGRAMS_PER_SM) -> int:
    """Programs of a persistent grid on `device`."""
    if device.type != "cuda":
        return INTERPRET_PROGRAMS
    index = device.index if device.index is not None else torch.cuda.current_device()
    return per_sm * _sm_count(index)


def kernel(fn):
    """triton.jit, not specialized on the size arguments (SIZE_ARGS) that `fn` takes."""
    names = inspect.signature(fn).parameters
    return triton.jit(fn, do_not_specialize=[a for a in SIZE_ARGS if a in names])


def tiled(reset_to_zero: tuple[str, ...] = ()):
    """Decorator for a jitted kernel with TH/TW tile meta-parameters: autotuned on a GPU."""

    def wrap(fn):
        if INTERPRET:
            return fn
        return triton.autotune(GPU_TILES, key=TUNE_KEY, reset_to_zero=list(reset_to_zero) or None)(fn)

    return wrap


def launch(fn, grid, *args, tile: bool = False, pinned: bool = False, **kwargs) -> None:
    """Run the kernel `fn` on `grid` (a tuple, or a function of the meta-parameters). `tile`: `fn`
    takes TH/TW, which the autotuner picks on a GPU and INTERPRET_TILE fixes under the interpreter.
    `pinned`: on a GPU, run the autotuned `fn` with `pinned_tile()` instead of the fastest one. Timings differ between processes, so a timed choice can change how a reduction is split
    across programs, and with it the rounding: pinned results are bitwise the same in every process.

    On a GPU the launch is guarded with the device of the first tensor argument (all are on one
    device): Triton launches on the current device's current stream, which need not be the
    tensors' device (e.g. tensors on cuda:1 while cuda:0 is current)."""
    if INTERPRET:
        fn[grid](*args, **(INTERPRET_TILE if tile else {}), **kwargs)
        return
    if pinned:
        config = pinned_tile()
        fn = fn.fn  # the Autotuner's JITFunction
        kwargs = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages, **kwargs}
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    with torch.cuda.device(device):
        torch.library.wrap_triton(fn)[grid](*args, **kwargs)
