"""The inik_fast::*_triton ops, with the schemas of csrc/ops.cpp.

On a GPU they are `torch.library.triton_op`s, so torch.compile sees the Triton kernels inside. A
triton_op registers its own Python body as its fake kernel (torch 2.6 through 2.14: the body runs
on fake tensors, where `wrap_triton` launches nothing), so only the shared autograd formulas are
added. Under TRITON_INTERPRET=1 the interpreter cannot trace kernels, so the ops are opaque
custom ops there and take the shared fake kernels too.

The ops can be called directly, so each body checks its arguments first (checks.py), as the C++
ops do, and runs the kernels on contiguous copies.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from inik_fast import ops

from . import atom_bank, checks, ikconv_backward, ikconv_forward
from .launch import INTERPRET, forward_variant

_define = torch.library.custom_op if INTERPRET else torch.library.triton_op


@_define("inik_fast::atom_bank_forward_triton", mutates_args=())
def atom_bank_forward_triton(
    coords: Tensor, mask: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, omega: Tensor
) -> Tensor:
    args = checks.atom_bank("atom_bank_forward_triton", coords, mask, w1, b1, w2, b2, w3, omega)
    return atom_bank.atom_bank_forward(*args)


@_define("inik_fast::atom_bank_backward_triton", mutates_args=())
def atom_bank_backward_triton(
    grad_atoms: Tensor,
    coords: Tensor,
    mask: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    omega: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    op = "atom_bank_backward_triton"
    args = checks.atom_bank(op, coords, mask, w1, b1, w2, b2, w3, omega)
    G, K, M = coords.shape[0], coords.shape[1], w1.shape[0]
    grad_atoms = checks.gradient(op, "grad_atoms", grad_atoms, (G, M, K, K), w1, "w1")
    return atom_bank.atom_bank_backward(grad_atoms, *args)


@_define("inik_fast::ikconv_forward_triton", mutates_args=())
def ikconv_forward_triton(
    x: Tensor, atoms: Tensor, scale: Tensor, basis: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool
) -> Tensor:
    args = checks.ikconv("ikconv_forward_triton", x, atoms, scale, basis, weight, bias, residual)
    if forward_variant() == "slab":
        from .ikconv_forward_slab import ikconv_forward_slab

        return ikconv_forward_slab(*args, residual)
    return ikconv_forward.ikconv_forward(*args, residual)


@_define("inik_fast::ikconv_backward_triton", mutates_args=())
def ikconv_backward_triton(
    grad_y: Tensor,
    x: Tensor,
    atoms: Tensor,
    scale: Tensor,
    basis: Tensor,
    weight: Tensor,
    residual: bool,
    need_x_grad: bool,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    op = "ikconv_backward_triton"
    x, atoms, scale, basis, weight, _ = checks.ikconv(op, x, atoms, scale, basis, weight, None, residual)
    B, _, H, W = x.shape
    grad_y = checks.gradient(op, "grad_y", grad_y, (B, weight.shape[0], H, W), x, "x")
    return ikconv_backward.ikconv_backward(
        grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, deterministic
    )


ops.register_backend("_triton", fake=INTERPRET)
