"""Argument checks of the inik_fast::*_triton ops. Like the C++ ops, they can be called directly
(torch.ops.inik_fast.*), bypassing inik_fast.ops' validation, and the kernels assume the
contract's shapes and contiguous tensors: so each op runs the contract's checks of inik_fast.ops,
then those of the Triton kernels, and takes contiguous copies. Errors are one line naming the
argument, as "<op>: <argument> must be ..., got ...".
"""
from __future__ import annotations

from torch import Tensor

from inik_fast import ops, reference

from .atom_bank import COORD_BLOCK
from .launch import INTERPRET


def _on_device(op: str, name: str, t: Tensor) -> None:
    """The kernels' device: CUDA, or the CPU under the interpreter (the other tensors were checked
    to be on t's device)."""
    ok = t.device.type == "cuda" or (INTERPRET and t.device.type == "cpu")
    where = "a CUDA tensor" + (" (or a CPU tensor under TRITON_INTERPRET=1)" if INTERPRET else "")
    ops._need(ok, op, f"{name} must be {where}, got one on {t.device}")


def gradient(op: str, name: str, grad: Tensor, shape: tuple, like: Tensor, like_name: str) -> Tensor:
    """The incoming gradient `grad` of a backward op: `shape`, and `like`'s dtype and device."""
    ops._check_tensors(op, {like_name: like, name: grad})
    ops._need(tuple(grad.shape) == tuple(shape), op, f"{name} must be {list(shape)}, got {ops._shape(grad)}")
    ops._need(grad.dtype == like.dtype, op, f"{name} has dtype {grad.dtype}; expected {like_name}'s {like.dtype}")
    return grad.contiguous()


def atom_bank(op: str, coords, mask, w1, b1, w2, b2, w3, omega) -> list[Tensor]:
    ops._check_atom_bank(coords, mask, w1, b1, w2, b2, w3, omega, op=op)
    _on_device(op, "coords", coords)
    D = coords.shape[3]
    ops._need(D <= COORD_BLOCK.value, op, f"coords must have at most {COORD_BLOCK.value} coordinate dims D on Triton, got D={D}")
    return [t.contiguous() for t in (coords, mask, w1, b1, w2, b2, w3, omega)]


def ikconv(op: str, x, atoms, scale, basis, weight, bias, residual) -> tuple:
    ops._check_ikconv(x, atoms, scale, basis, weight, bias, residual, op=op)
    _on_device(op, "x", x)
    acc = reference.acc_dtype(x.dtype)  # as the CUDA ops: the autograd formulas give gradients in it
    for name, t in dict(atoms=atoms, weight=weight, bias=bias).items():
        if t is not None:
            ops._need(t.dtype == acc, op, f"{name} must be {acc} for x of {x.dtype}, got {t.dtype}")
    return ops._ikconv_operands(x, atoms, scale, basis, weight, bias)
