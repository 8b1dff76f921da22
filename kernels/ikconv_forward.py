"""Inverse-kernel convolution forward: one pass, D never leaves registers.

Per tile and per (group g, channel c), D [BLOCK, M] = im2col(x) [BLOCK, taps] @ atoms_g [taps, M],
taken in chunks of TAPS taps; then y [BLOCK, O] += (D * S_g * Bt) @ weight[:, g, c, :]^T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .ikconv_tiles import IDX, tap_offsets, tile_pixels, window_dot
from .launch import dot_precision, half_dots, kernel, launch, pow2, taps, tiled


@tiled()
@kernel
def _ikconv_forward_kernel(
    xp, atoms, scale, basis, weight, bias, y, H, W, Wp, plane, C, O, G, M,
    HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, M_P: tl.constexpr, O_P: tl.constexpr,
    TC: tl.constexpr, PREC: tl.constexpr, HALF_DOTS: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):
    acc_t = atoms.dtype.element_ty
    b = tl.program_id(1).to(tl.int64)
    _h0, _w0, h, w, valid = tile_pixels(tl.program_id(0), H, W, TH, TW)
    HW = H * W
    K = 2 * G + 1
    KK = K * K
    pix = h * W + w
    xoff = h * Wp + w  # tap (u, v) of pixel (h, w) is padded pixel (h + G + u, w + G + v)
    m = tl.arange(0, M_P).to(IDX)
    o = tl.arange(0, O_P).to(IDX)
    bt = tl.load(basis + (b * M + m[None, :]) * HW + pix[:, None], mask=(m < M)[None, :], other=0.0).to(acc_t)
    out = tl.zeros([TH * TW, O_P], dtype=acc_t)
    for g in range(G):
        r = g + 1
        mix = bt * tl.load(scale + (b * G + g) * HW + pix).to(acc_t)[:, None]
        for c in range(C):
            xplane = xp + (b * C + c) * plane
            d = tl.zeros([TH * TW, M_P], dtype=acc_t)
            for t0 in range(0, (2 * r + 1) * (2 * r + 1), TC):
                tap_off, a_off, a_mask = tap_offsets(t0, r, G, K, Wp, M, M_P, TC)
                a = tl.load(atoms + g * M * KK + a_off, mask=a_mask, other=0.0)
                x_cols = tl.load(xplane + xoff[:, None] + tap_off[None, :])  # im2col block
                d = window_dot(x_cols, a, d, PREC, HALF_DOTS)
            wgc = tl.load(
                weight + o[None, :] * (G * C * M) + (g * C + c) * M + m[:, None],
                mask=(m < M)[:, None] & (o < O)[None, :], other=0.0,
            )
            out = tl.dot(d * mix, wgc, acc=out, input_precision=PREC, out_dtype=acc_t)
    if HAS_BIAS:
        out += tl.load(bias + o, mask=o < O, other=0.0)[None, :]
    if RESIDUAL:  # O == C
        centre = xoff + G * Wp + G
        out += tl.load(xp + (b * C + o[None, :]) * plane + centre[:, None], mask=(o < O)[None, :], other=0.0).to(acc_t)
    y_ptrs = y + (b * O + o[None, :]) * HW + pix[:, None]
    tl.store(y_ptrs, out.to(y.dtype.element_ty), mask=valid[:, None] & (o < O)[None, :])


def pad_image(x: torch.Tensor, R: int) -> tuple[torch.Tensor, int, int]:
    """x with R zeros on each side of H and W (the kernels read every tap without a bounds check),
    its row length Wp and its plane size."""
    xp = F.pad(x, (R, R, R, R))
    return xp, xp.shape[-1], xp.shape[-2] * xp.shape[-1]


def tile_grid(B: int, H: int, W: int):
    """The grid of a forward kernel: (tiles of the image, images), for the tile the launch picks."""
    return lambda meta: (triton.cdiv(H, meta["TH"]) * triton.cdiv(W, meta["TW"]), B)


def forward_setup(x, atoms, weight):
    """The output y [B, O, H, W] to fill, and x zero-padded by K // 2 with its row length and plane
    size (None, 0, 0 when y is empty)."""
    B, _, H, W = x.shape
    y = x.new_empty(B, weight.shape[0], H, W)
    if y.numel() == 0:
        return y, None, 0, 0
    return (y, *pad_image(x, atoms.shape[-1] // 2))


def ikconv_forward(x, atoms, scale, basis, weight, bias, residual):
    B, C, H, W = x.shape
    G, M, K, _ = atoms.shape
    O = weight.shape[0]
    y, xp, Wp, plane = forward_setup(x, atoms, weight)
    if xp is None:
        return y
    launch(
        _ikconv_forward_kernel, tile_grid(B, H, W), xp, atoms, scale, basis, weight, weight if bias is None else bias, y,
        H, W, Wp, plane, C, O, G, M,
        HAS_BIAS=bias is not None, RESIDUAL=residual, M_P=pow2(M), O_P=pow2(O), TC=taps("forward"),
        PREC=dot_precision(atoms.dtype), HALF_DOTS=half_dots(x), tile=True,
    )
    return y
