"""Triton kernels of the inik_fast ops (installed as inik_fast.kernels).

Importing this package defines the ops inik_fast::{atom_bank,ikconv}_{forward,backward}_triton
and gives them the shared fake kernels and autograd of inik_fast.ops. Kernels run on CUDA
tensors, or on CPU tensors under TRITON_INTERPRET=1 (set before this import).
"""
import torch

from . import registration  # noqa: F401  (defines and registers the ops)

# x dtypes the Triton backend computes (atoms, weight and bias in float32, or float64 for float64)
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
