"""Which backend runs an op: availability with reasons, "auto" selection, INIK_FAST_BACKEND.

There is no silent fallback: asking for a backend that cannot run raises one error that says,
for every backend, whether it can run here and why not.
"""
from __future__ import annotations

import os

import torch

from . import _extension
from .errors import UserError

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_VAR = "INIK_FAST_BACKEND"
# "auto" takes the first available backend of the tensors' device type.
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
# The x dtypes of the ops' contract (`docs/ops.md`).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_DTYPES = {"reference": FLOAT_DTYPES, "cpu": FLOAT_DTYPES, "cuda": FLOAT_DTYPES}
# The atom bank's parameter dtypes per backend: the GPU kernels take float32/float64 only.
BANK_DTYPES = {
    "reference": FLOAT_DTYPES,
    "cpu": FLOAT_DTYPES,
    "cuda": (torch.float32, torch.float64),
    "triton": (torch.float32, torch.float64),
}
# The Triton kernels' float32 dots use TF32 tensor cores (Ampere on).
_TRITON_MIN_CAPABILITY = (8, 0)


class BackendError(UserError):
    """A backend name that does not exist, or a backend that cannot run on the given tensors."""


def _dtype_reasons(supported, dtype: torch.dtype | None) -> list[str]:
    if dtype is None or dtype in supported:
        return []
    return [f"supports {_names(supported)}, got {_name(dtype)}"]


def _triton_reasons(device: torch.device, dtype: torch.dtype | None) -> list[str]:
    try:
        from . import kernels
    except ImportError as e:
        return [f"inik_fast.kernels did not import ({e}); install triton"]
    reasons = []
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        reasons.append("runs on CPU tensors only under TRITON_INTERPRET=1")
    elif device.type not in ("cpu", "cuda"):
        reasons.append(f"needs a CUDA device, got {device.type}")
    elif device.type == "cuda" and torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(device)
        if capability < _TRITON_MIN_CAPABILITY:
            reasons.append("needs compute capability %d.%d or newer (3xTF32 dots), got %d.%d" % (*_TRITON_MIN_CAPABILITY, *capability))
    return reasons + _dtype_reasons(kernels.DTYPES, dtype)


def _compiled_reasons(backend: str, device: torch.device, dtype: torch.dtype | None) -> list[str]:
    if _extension.LOAD_ERROR is not None:
        return [_extension.LOAD_ERROR]
    key = backend.upper()
    reasons = []
    if not _extension.has_kernel("ikconv_forward", key):
        reasons.append(f"inik_fast._C was built without {key} kernels")
    if device.type != backend:
        reasons.append(f"needs {backend} tensors, got {device.type}")
    elif backend == "cuda" and not reasons:
        reasons += _arch_reasons(device)
    return reasons + _dtype_reasons(_DTYPES[backend], dtype)


def _arch_reasons(device: torch.device) -> list[str]:
    """Whether the extension holds code for the device's compute capability (else the first
    launch fails with "no kernel image is available")."""
    if not torch.cuda.is_available():
        return ["no CUDA device is available"]
    capability = torch.cuda.get_device_capability(device)
    compiled = _extension.cuda_archs()
    if _extension.runs_on(compiled, capability):
        return []
    cc = "%d.%d" % capability
    return [f"inik_fast._C has no code for compute capability {cc} (compiled for {compiled or 'none'}); "
            f"rebuild with TORCH_CUDA_ARCH_LIST={cc}"]


def not_supported_reasons(backend: str, device, dtype: torch.dtype | None = None) -> list[str]:
    """Why `backend` cannot run on tensors of `device` and `dtype`; empty when it can."""
    device = torch.device(device)
    if backend == "reference":
        return _dtype_reasons(_DTYPES["reference"], dtype)
    if backend == "triton":
        return _triton_reasons(device, dtype)
    if backend in ("cpu", "cuda"):
        return _compiled_reasons(backend, device, dtype)
    raise BackendError(f"backend={backend!r}: expected 'auto' or one of {BACKENDS}")


def available_backends(device="cpu", dtype: torch.dtype | None = None) -> list[str]:
    """Backends that can run on tensors of `device` (and `dtype`, if given)."""
    return [b for b in BACKENDS if not not_supported_reasons(b, device, dtype)]


@torch.compiler.assume_constant_result  # torch.compile bakes the choice in instead of tracing it
def resolve(backend: str, device, dtype: torch.dtype) -> str:
    """The concrete backend for `backend` ("auto" or a name) on tensors of `device` and `dtype`."""
    device = torch.device(device)
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto") or "auto"
    if backend == "auto":
        for b in _AUTO_ORDER.get(device.type, ("reference",)):
            if not not_supported_reasons(b, device, dtype):
                return b
    elif not not_supported_reasons(backend, device, dtype):  # raises for an unknown name
        return backend
    report = "; ".join(
        f"{b}: " + (", ".join(r) if (r := not_supported_reasons(b, device, dtype)) else "available")
        for b in BACKENDS
    )
    raise BackendError(f"backend {backend!r} cannot run on {device.type} {_name(dtype)} tensors. Backends: {report}")


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _names(dtypes) -> str:
    return "/".join(_name(d) for d in dtypes)
