"""Loads the compiled extension `inik_fast._C` (CPU and CUDA kernels) if it was built.

Importing `inik_fast` never fails because of the extension: a missing or broken build is
recorded here, and the "cpu" and "cuda" backends report it as their reason for being unavailable.
"""
from __future__ import annotations

import functools
import re

import torch

_HOW_TO_BUILD = "build it with `make install` (or `pip install -e . --no-build-isolation`)"

try:
    from inik_fast import _C  # noqa: F401  (loading it registers the inik_fast::* C++ kernels)

    LOAD_ERROR: str | None = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = f"the C++ extension inik_fast._C did not load ({e}); {_HOW_TO_BUILD}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the C++ op `inik_fast::<op>` has a kernel for `dispatch_key` ("CPU", "CUDA")."""
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"inik_fast::{op}", dispatch_key)


def build_info() -> dict:
    """What the extension was built with: {"built": bool, "cuda_archs": str, "error": str|None}."""
    if _C is None:
        return {"built": False, "cuda_archs": "", "error": LOAD_ERROR}
    return {"built": True, "cuda_archs": cuda_archs(), "error": None}


def parse_cuda_archs(text: str) -> list[tuple[int, int, str, bool]]:
    """setup.py's arch token ("sm_80.sm_90+PTX", "sm_90a", "sm_120") as (major, minor, suffix,
    has PTX) per arch. Tokens it cannot read (torch's arch names such as "Ampere") are left out."""
    archs = []
    for token in text.split("."):
        m = re.fullmatch(r"sm_(\d+)(\d)([af]?)(\+PTX)?", token)
        if m:
            archs.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4) is not None))
    return archs


@functools.lru_cache(maxsize=None)
def cuda_archs() -> str:
    """The CUDA archs the extension was compiled for, as setup.py's token; "" without CUDA kernels."""
    return torch.ops.inik_fast.cuda_archs() if _C is not None else ""


def runs_on(compiled: str, capability: tuple[int, int]) -> bool:
    """Whether code compiled for the archs `compiled` (cuda_archs()) runs on a GPU of compute
    `capability`: sm_XY code runs on X.y for y >= Y (sm_XYa on X.Y only), and PTX of X.Y is
    JIT-compiled on any capability >= X.Y."""
    for major, minor, suffix, ptx in parse_cuda_archs(compiled):
        if ptx and capability >= (major, minor):
            return True
        newer_minor = suffix != "a" and capability[0] == major and capability[1] >= minor
        if capability == (major, minor) or newer_minor:
            return True
    return False
