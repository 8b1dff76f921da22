"""Jitted helpers shared by the inverse-kernel convolution kernels: tiles, tap chunks, partial sums.

Images are processed in tiles of TH x TW pixels, flattened row-major into BLOCK = TH*TW rows.
The image x comes zero-padded by R = K // 2 = G on each side, so that every tap of every pixel is
a plain load (no bounds mask in the inner loop). Tiles past the image edge are clamped onto it and
their extra rows are masked out at the stores (and carry zero gradient into the reductions).
"""
import triton
import triton.language as tl

from .launch import GPU_SETTINGS

# Index vectors are int32 on a GPU. The interpreter checks every int32 operation for overflow,
# which makes it three times dearer than an int64 one, so there they are int64.
IDX = tl.constexpr(tl.int32 if GPU_SETTINGS else tl.int64)


@triton.jit
def tile_pixels(tile, H, W, TH: tl.constexpr, TW: tl.constexpr):
    """Tile `tile` (row-major over the image): its top-left pixel h0, w0, and the row and column of
    each of its pixels, clamped into the image, and whether the pixel is inside."""
    n_tw = tl.cdiv(W, TW)
    h0 = (tile // n_tw) * TH
    w0 = (tile % n_tw) * TW
    i = tl.arange(0, TH * TW).to(IDX)
    h = h0 + i // TW
    w = w0 + i % TW
    return h0, w0, tl.minimum(h, H - 1), tl.minimum(w, W - 1), (h < H) & (w < W)


@triton.jit
def tap_offsets(t0, r, G, K, Wp, M, M_P: tl.constexpr, TC: tl.constexpr):
    """Taps t0..t0+TC-1 of group g = r - 1 (row-major over its (2r+1)^2 window): each tap's offset
    in the padded image (0 for taps past the window, whose atom weights are 0), and the offsets and
    mask of the atom block [TC, M_P] within atoms[g].

    Only integers go in: torch.compile's mutation analysis counts every pointer passed to a call
    whose results address a store as written.
    """
    t = t0 + tl.arange(0, TC).to(IDX)
    k = 2 * r + 1
    inside = t < k * k
    du = t // k
    row = G - r + du
    col = G - r + t - du * k
    m = tl.arange(0, M_P).to(IDX)
    a_off = m[None, :] * (K * K) + (row * K + col)[:, None]
    return tl.where(inside, row * Wp + col, 0), a_off, inside[:, None] & (m < M)[None, :]


@triton.jit
def accumulate(ptrs, val, mask, ATOMIC: tl.constexpr):
    """Add into a partial sum: read-add-write into this program's own slot (deterministic), or an
    atomic add into the one shared buffer (the non-deterministic mode)."""
    if ATOMIC:
        tl.atomic_add(ptrs, val, mask=mask, sem="relaxed")
    else:
        tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + val, mask=mask)


@triton.jit
def window_dot(x_cols, a, d, PREC: tl.constexpr, HALF_DOTS: tl.constexpr):
    """d + x_cols @ a (taps of an im2col block times the atoms' taps), accumulated in d's dtype: a
    dot in x's fp16/bf16 with HALF_DOTS, else in the atoms' dtype at precision PREC."""
    if HALF_DOTS:
        return tl.dot(x_cols, a.to(x_cols.dtype), acc=d, out_dtype=d.dtype)
    return tl.dot(x_cols.to(a.dtype), a, acc=d, input_precision=PREC, out_dtype=d.dtype)


@triton.jit
def slot_start(pid, size):
    """Where program pid's slot of `size` elements starts, in int64: the programs' slots together
    can pass 2^31 elements (2 x SMs programs x O*G*C*M weights) even when one slot does not."""
    return pid.to(tl.int64) * size
