"""Atom bank kernels: all G*M INR atoms in one launch, and their parameter gradients in one more.

The grid points of all groups are flattened (q = g*K*K + i*K + j over coords [G, K, K, D]); one
program evaluates atom m's MLP on a block of points, with the hidden width padded to a power of two
(padded hidden units have zero weights, so they stay exactly 0 and add nothing).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .launch import GPU_SETTINGS, INTERPRET, dot_precision, kernel, launch, pow2

POINTS = 32  # grid points per program (the whole bank under the interpreter: fewer, larger steps)
HIDDEN_CHUNK = 32  # second-layer units per step, so that no [Hd, Hd] block sits in registers
# Columns of a block of coordinates: the first layer is a dot over them, so it holds D <= 16 dims.
COORD_BLOCK = tl.constexpr(16)
# tl.sin/tl.cos are sin.approx/cos.approx on NVIDIA, too coarse for omega * z up to ~50; the
# interpreter has no libdevice, but its tl.sin is numpy's.
_LIBDEVICE = tl.constexpr(not INTERPRET)


@triton.jit
def _sin_cos(a):
    if _LIBDEVICE:
        return libdevice.sin(a), libdevice.cos(a)
    else:
        return tl.sin(a), tl.cos(a)


@triton.jit
def _first_layer(coords, w1, b1, om, m, q, qm, Hd, D, HP: tl.constexpr, PREC: tl.constexpr):
    """Atom m's first layer at the points q: the coordinates p [BP, 16] (padded to 16 columns, so
    that the layer is a dot), z1 = w1[m] p + b1[m], sin(omega z1) and cos(omega z1), [BP, HP]."""
    k = tl.arange(0, HP)
    km = k < Hd
    d = tl.arange(0, COORD_BLOCK)
    dm = d < D
    p = tl.load(coords + q[:, None] * D + d[None, :], mask=qm[:, None] & dm[None, :], other=0.0)
    w1t = tl.load(w1 + (m * Hd + k[None, :]) * D + d[:, None], mask=dm[:, None] & km[None, :], other=0.0)
    z1 = tl.dot(p, w1t, input_precision=PREC) + tl.load(b1 + m * Hd + k, mask=km, other=0.0)[None, :]
    s1, c1 = _sin_cos(om * z1)
    return p, z1, s1, c1


@triton.jit
def _second_layer(s1, w2, b2, om, m, j, jm, Hd, HP: tl.constexpr, PREC: tl.constexpr):
    """Units j (mask jm) of atom m's second layer: the rows w2[m, j, :] [HC, HP], and
    z2 = w2[m, j, :] . sin(omega z1) + b2[m, j], sin(omega z2), cos(omega z2), [BP, HC].
    (j comes in rather than out: torch.compile's mutation analysis counts every pointer passed to a
    call whose results address a store as written.)"""
    k = tl.arange(0, HP)
    w2c = tl.load(w2 + (m * Hd + j[:, None]) * Hd + k[None, :], mask=jm[:, None] & (k < Hd)[None, :], other=0.0)
    z2 = tl.dot(s1, tl.trans(w2c), input_precision=PREC) + tl.load(b2 + m * Hd + j, mask=jm, other=0.0)[None, :]
    s2, c2 = _sin_cos(om * z2)
    return w2c, z2, s2, c2


@kernel
def _atom_bank_forward_kernel(
    coords, mask, w1, b1, w2, b2, w3, omega, atoms, NPT, KK, M, Hd, D,
    BP: tl.constexpr, HP: tl.constexpr, HC: tl.constexpr, PREC: tl.constexpr,
):
    m = tl.program_id(0)
    q = tl.program_id(1) * BP + tl.arange(0, BP)
    qm = q < NPT
    om = tl.load(omega + m)
    _p, _z1, s1, _c1 = _first_layer(coords, w1, b1, om, m, q, qm, Hd, D, HP, PREC)
    out = tl.zeros([BP], dtype=s1.dtype)
    for j0 in range(0, HP, HC):
        j = j0 + tl.arange(0, HC)
        jm = j < Hd
        _w2c, _z2, s2, _c2 = _second_layer(s1, w2, b2, om, m, j, jm, Hd, HP, PREC)
        out += tl.sum(s2 * tl.load(w3 + m * Hd + j, mask=jm, other=0.0)[None, :], axis=1)
    g = q // KK
    tl.store(atoms + (g * M + m) * KK + (q - g * KK), out * tl.load(mask + q, mask=qm, other=0.0), mask=qm)


@kernel
def _atom_bank_backward_kernel(
    grad, coords, mask, w1, b1, w2, b2, w3, omega, dw1, db1, dw2, db2, dw3, domega, NPT, KK, M, Hd, D,
    BP: tl.constexpr, HP: tl.constexpr, HC: tl.constexpr, PREC: tl.constexpr,
):
    """One program per atom m, looping over all grid points: its sums need no second reduction.
    dw2, db2 and dw3 (zeroed by the caller) are summed in place, one block of units at a time."""
    m = tl.program_id(0)
    k = tl.arange(0, HP)
    km = k < Hd
    d = tl.arange(0, COORD_BLOCK)
    om = tl.load(omega + m)
    acc_t = w1.dtype.element_ty
    g_b1 = tl.zeros([HP], dtype=acc_t)
    g_w1 = tl.zeros([HP, COORD_BLOCK], dtype=acc_t)
    g_om = tl.zeros([BP], dtype=acc_t)
    for q0 in range(0, NPT, BP):
        q = q0 + tl.arange(0, BP)
        qm = q < NPT
        p, z1, s1, c1 = _first_layer(coords, w1, b1, om, m, q, qm, Hd, D, HP, PREC)
        g = q // KK
        da = tl.load(grad + (g * M + m) * KK + (q - g * KK), mask=qm, other=0.0) * tl.load(mask + q, mask=qm, other=0.0)
        dh1 = tl.zeros([BP, HP], dtype=acc_t)  # dL/d sin(omega z1)
        for j0 in range(0, HP, HC):
            j = j0 + tl.arange(0, HC)
            jm = j < Hd
            w2c, z2, s2, c2 = _second_layer(s1, w2, b2, om, m, j, jm, Hd, HP, PREC)
            w3c = tl.load(w3 + m * Hd + j, mask=jm, other=0.0)
            dz2 = da[:, None] * w3c[None, :] * c2  # dL/dz2 / omega
            g_om += tl.sum(dz2 * z2, axis=1)
            dz2 *= om
            tl.store(dw3 + m * Hd + j, tl.load(dw3 + m * Hd + j, mask=jm) + tl.sum(da[:, None] * s2, axis=0), mask=jm)
            tl.store(db2 + m * Hd + j, tl.load(db2 + m * Hd + j, mask=jm) + tl.sum(dz2, axis=0), mask=jm)
            w2_ptrs = dw2 + (m * Hd + j[:, None]) * Hd + k[None, :]
            w2_mask = jm[:, None] & km[None, :]
            g_w2 = tl.dot(tl.trans(dz2), s1, input_precision=PREC)
            tl.store(w2_ptrs, tl.load(w2_ptrs, mask=w2_mask) + g_w2, mask=w2_mask)
            dh1 = tl.dot(dz2, w2c, acc=dh1, input_precision=PREC, out_dtype=acc_t)
        dz1 = dh1 * c1  # dL/dz1 / omega
        g_om += tl.sum(dz1 * z1, axis=1)
        dz1 *= om
        g_b1 += tl.sum(dz1, axis=0)
        g_w1 = tl.dot(tl.trans(dz1), p, acc=g_w1, input_precision=PREC, out_dtype=acc_t)
        tl.debug_barrier()  # this block's in-place sums land before the next block reads them
    tl.store(db1 + m * Hd + k, g_b1, mask=km)
    tl.store(dw1 + (m * Hd + k[:, None]) * D + d[None, :], g_w1, mask=km[:, None] & (d < D)[None, :])
    tl.store(domega + m, tl.sum(g_om, axis=0))


def _sizes(coords: torch.Tensor, w1: torch.Tensor) -> dict:
    G, K, _, D = coords.shape
    M, Hd = w1.shape[0], w1.shape[1]
    npt = G * K * K
    hp = pow2(Hd)
    if GPU_SETTINGS:
        points, chunk = POINTS, min(hp, HIDDEN_CHUNK)
    else:
        points, chunk = pow2(npt), hp
    return dict(G=G, K=K, D=D, M=M, Hd=Hd, NPT=npt, BP=points, HP=hp, HC=chunk, PREC=dot_precision(w1.dtype))


def atom_bank_forward(coords, mask, w1, b1, w2, b2, w3, omega):
    s = _sizes(coords, w1)
    atoms = w1.new_empty(s["G"], s["M"], s["K"], s["K"])
    grid = (s["M"], triton.cdiv(s["NPT"], s["BP"]))
    launch(
        _atom_bank_forward_kernel, grid, coords, mask, w1, b1, w2, b2, w3, omega, atoms,
        s["NPT"], s["K"] * s["K"], s["M"], s["Hd"], s["D"], BP=s["BP"], HP=s["HP"], HC=s["HC"], PREC=s["PREC"],
    )
    return atoms


def atom_bank_backward(grad_atoms, coords, mask, w1, b1, w2, b2, w3, omega):
    s = _sizes(coords, w1)
    dw1, db1, domega = torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(omega)
    dw2, db2, dw3 = torch.zeros_like(w2), torch.zeros_like(b2), torch.zeros_like(w3)
    launch(
        _atom_bank_backward_kernel, (s["M"],), grad_atoms, coords, mask, w1, b1, w2, b2, w3, omega,
        dw1, db1, dw2, db2, dw3, domega, s["NPT"], s["K"] * s["K"], s["M"], s["Hd"], s["D"],
        BP=s["BP"], HP=s["HP"], HC=s["HC"], PREC=s["PREC"],
    )
    return dw1, db1, dw2, db2, dw3, domega
