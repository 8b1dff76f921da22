"""Inverse-kernel convolution forward, gather-free: row-slab Toeplitz dots.

For a tile of TH x TW pixels, group g (window k = 2g+3, radius r = g+1), channel c and window row u,
the window sums of the tile's rows are one dot of plain 2-D blocks:

    D [TH, TW*M_P] += X_u [TH, J] @ T_{g,u} [J, TW*M_P],   T_{g,u}[j, w*M_P + m] = atoms[g, m, u, j - w]

where X_u holds padded-image rows h0+u.. and the J = TW + k - 1 columns from w0 (each row a
contiguous, coalesced load) and T_{g,u} is zero unless 0 <= j - w < k. J is taken in chunks of
J_CHUNK = 16 (a dot's least inner size). The column order w*M_P + m makes D a row-major
[TH*TW, M_P] block of pixel rows, so the mixing is the im2col kernel's, after a plain reshape.

T is built once per call by a small kernel into [G(G+2), J_T, TW_T*M_P]: the k rows of group g
start at row g(g+2) = sum of the smaller windows, and each (g, u, chunk) block is a plain 2-D
load. It is built for the widest tile TW_T = 16; a narrower tile reads its first TW*M_P columns.
Release config (G 7, M 10 -> M_P 16): 63 rows x 32 x 256 x 4 B = 2.1 MB, resident in L2.

MACs per pixel, release config (C = O = 3, M_P = O_P = 16), against the minimal 20,370:
- window sums: C * M_P * sum_g k_g * J_g, with J_g = TW + k_g - 1 rounded up to 16.
  TW = 16: J_g = 32 for every k_g in 3..15: 3 * 16 * 63 * 32 = 96,768 (4.75x the minimum: the
  Toeplitz zeros, 2,016 / 679 = 2.97x, times the M padding 16 / 10 = 1.6x).
  TW = 8: J_g = 16 for k_g <= 9, 32 above: 3 * 16 * (24 * 16 + 39 * 32) = 78,336 (3.85x).
- mixing: G * C * M_P * O_P = 5,376.
With tf32x3 (3 tensor-core products per MAC) at ~250 T MAC/s dense TF32 on an H200, 1120 x 1680
(1.88 M pixels) has a dot floor of 2.3 ms (TW 16) or 1.9 ms (TW 8). The other cost is reading T:
JC * M_P * 4 / TH bytes per pixel per (g, c, u, chunk) step, 64 B at TH 16: 378 steps, 24 KB a
pixel, 45 GB from L2 at TH=16/TW=16, which would bound that tile at ~5-6 ms; TH = 64 cuts it to
about a quarter. Prediction (not measured): ~2.5-4 ms for the best tuned tile, against 10.5 ms for
the im2col kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ikconv_forward import forward_setup, tile_grid
from .ikconv_tiles import IDX, tile_pixels, window_dot
from .launch import INTERPRET, TUNE_KEY, dot_precision, half_dots, kernel, launch, pow2

J_CHUNK = 16  # columns per dot: a dot's least inner size, so the least padding of J
TW_T = 16  # the widest tile: T serves every TW <= TW_T
# Not launch.GPU_TILES: the slab dot has TH rows, so TH >= 16; T's traffic per pixel falls as 1/TH.
SLAB_TILES = [
    triton.Config({"TH": 16, "TW": 16}, num_warps=4, num_stages=2),
    triton.Config({"TH": 32, "TW": 8}, num_warps=4, num_stages=2),
    triton.Config({"TH": 32, "TW": 16}, num_warps=8, num_stages=2),
    triton.Config({"TH": 64, "TW": 8}, num_warps=8, num_stages=2),
]


@kernel
def _toeplitz_kernel(atoms, toep, G, M, J_T, N_T: tl.constexpr, M_P: tl.constexpr, J_B: tl.constexpr):
    """Program (g, u): T_{g,u}[j, w*M_P + m] = atoms[g, m, row u, column j - w] of g's window."""
    g = tl.program_id(0)
    u = tl.program_id(1)
    r = g + 1
    K = 2 * G + 1
    if u < 2 * r + 1:
        j = tl.arange(0, J_B).to(IDX)
        n = tl.arange(0, N_T).to(IDX)
        m = n % M_P
        v = j[:, None] - (n // M_P)[None, :]
        inside = (v >= 0) & (v <= 2 * r) & (m < M)[None, :]
        a = tl.load(atoms + ((g * M + m[None, :]) * K + G - r + u) * K + G - r + v, mask=inside, other=0.0)
        row = g * (g + 2) + u  # after the smaller windows' rows, sum_{g' < g} (2g' + 3)
        tl.store(toep + (row * J_T + j[:, None]) * N_T + n[None, :], a.to(toep.dtype.element_ty),
                 mask=(j < J_T)[:, None])


@kernel
def _ikconv_forward_slab_kernel(
    xp, toep, scale, basis, weight, bias, y, H, W, Wp, plane, C, O, G, M, J_T,
    HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr, M_P: tl.constexpr, O_P: tl.constexpr, N_T: tl.constexpr,
    JC: tl.constexpr, PREC: tl.constexpr, HALF_DOTS: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):
    tl.static_assert(TW * M_P <= N_T)
    acc_t = weight.dtype.element_ty
    b = tl.program_id(1).to(tl.int64)
    h0, w0, h, w, valid = tile_pixels(tl.program_id(0), H, W, TH, TW)
    HW = H * W
    pix = h * W + w
    # Rows of the slab: the tile's rows clamped into the image like tile_pixels' (their outputs are
    # not stored), so every row read lies in the padded image.
    rows = tl.minimum(h0 + tl.arange(0, TH).to(IDX), H - 1) * Wp
    jj = tl.arange(0, JC).to(IDX)
    n = tl.arange(0, TW * M_P).to(IDX)
    m = tl.arange(0, M_P).to(IDX)
    o = tl.arange(0, O_P).to(IDX)
    bt = tl.load(basis + (b * M + m[None, :]) * HW + pix[:, None], mask=(m < M)[None, :], other=0.0).to(acc_t)
    out = tl.zeros([TH * TW, O_P], dtype=acc_t)
    for g in range(G):
        r = g + 1
        k = 2 * r + 1
        mix = bt * tl.load(scale + (b * G + g) * HW + pix).to(acc_t)[:, None]
        col0 = w0 + G - r  # padded column of window column 0 of pixel column w0
        for c in range(C):
            xplane = xp + (b * C + c) * plane + (G - r) * Wp + col0
            d = tl.zeros([TH, TW * M_P], dtype=acc_t)
            for u in range(k):
                for j0 in range(0, TW + k - 1, JC):
                    j = j0 + jj
                    # Columns past the padded row meet only outputs past the image edge (not stored);
                    # the mask keeps the last plane's last rows in bounds.
                    xs = tl.load(xplane + u * Wp + rows[:, None] + j[None, :], mask=(col0 + j < Wp)[None, :], other=0.0)
                    t = tl.load(toep + ((g * (g + 2) + u) * J_T + j[:, None]) * N_T + n[None, :])
                    d = window_dot(xs, t, d, PREC, HALF_DOTS)
            wgc = tl.load(
                weight + o[None, :] * (G * C * M) + (g * C + c) * M + m[:, None],
                mask=(m < M)[:, None] & (o < O)[None, :], other=0.0,
            )
            out = tl.dot(tl.reshape(d, [TH * TW, M_P]) * mix, wgc, acc=out, input_precision=PREC, out_dtype=acc_t)
    if HAS_BIAS:
        out += tl.load(bias + o, mask=o < O, other=0.0)[None, :]
    if RESIDUAL:  # O == C
        centre = (h + G) * Wp + w + G
        out += tl.load(xp + (b * C + o[None, :]) * plane + centre[:, None], mask=(o < O)[None, :], other=0.0).to(acc_t)
    y_ptrs = y + (b * O + o[None, :]) * HW + pix[:, None]
    tl.store(y_ptrs, out.to(y.dtype.element_ty), mask=valid[:, None] & (o < O)[None, :])


if not INTERPRET:
    _ikconv_forward_slab_kernel = triton.autotune(SLAB_TILES, key=TUNE_KEY)(_ikconv_forward_slab_kernel)


def toeplitz(atoms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The Toeplitz blocks of every group's window rows, [G(G+2), J_T, TW_T * pow2(M)], in `dtype`."""
    G, M, K, _ = atoms.shape
    M_P = pow2(M)
    J_T = triton.cdiv(TW_T + K - 1, J_CHUNK) * J_CHUNK
    toep = atoms.new_empty(G * (G + 2), J_T, TW_T * M_P, dtype=dtype)
    launch(_toeplitz_kernel, (G, K), atoms, toep, G, M, J_T, N_T=TW_T * M_P, M_P=M_P, J_B=pow2(J_T))
    return toep


def ikconv_forward_slab(x, atoms, scale, basis, weight, bias, residual):
    B, C, H, W = x.shape
    G, M, K, _ = atoms.shape
    O = weight.shape[0]
    y, xp, Wp, plane = forward_setup(x, atoms, weight)
    if xp is None:
        return y
    half = half_dots(x)
    toep = toeplitz(atoms, x.dtype if half else atoms.dtype)
    launch(
        _ikconv_forward_slab_kernel, tile_grid(B, H, W), xp, toep, scale, basis, weight, weight if bias is None else bias, y,
        H, W, Wp, plane, C, O, G, M, toep.shape[1],
        HAS_BIAS=bias is not None, RESIDUAL=residual, M_P=pow2(M), O_P=pow2(O), N_T=toep.shape[2],
        JC=J_CHUNK, PREC=dot_precision(atoms.dtype), HALF_DOTS=half, tile=True,
    )
    return y
