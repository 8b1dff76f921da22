"""Loads the compiled extension `inik_fast._C` (CPU and CUDA kernels) if it was built.

Importing `inik_fast` never fails because of the extension: a missing or broken build is
recorded here, and the "cpu" and "cuda" backends report it as their reason for being unavailable.
"""
from __future__ import annotations

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
    return {"built": True, "cuda_archs": torch.ops.inik_fast.cuda_archs(), "error": None}
