"""CPU emulation of the tensor-core CUDA forward (csrc/cuda/ikconv_cuda_fwd_mma.cu, mma_tf32.cuh).

The kernel's index formulas are written here once more, one for one (same names); from a random
input they build the operands each lane would load, the emulated mma.sync m16n8k8 assembles them
into matrices by the PTX fragment layout, and the window sums and the mixed output must match the
reference op. This catches indexing mistakes without a GPU. The second part checks the 3xTF32
arithmetic: float32 accuracy, where a single TF32 product is far off."""
from __future__ import annotations

import pytest
import torch

from inik_fast import reference
from op_cases import ikconv_case, rel_err

F32, F64 = torch.float32, torch.float64

# ikconv_cuda.h / ikconv_cuda_fwd_mma.cu
kTile, kWarps, kSegPix, kMmaOC = 32, 4, 16, 4
kSegs = kTile * kTile // kSegPix // kWarps
LANE = torch.arange(32)
GQ, T = LANE // 4, LANE % 4


def halo_stride(r):
    return kTile + 2 * r + 1


def halo_size(r):
    return (kTile + 2 * r) * halo_stride(r)


def tap_steps(kw):
    return (kw * kw + 7) // 8


def tap_offset(tap, kw, stride):
    return torch.where(tap < kw * kw, (tap // kw) * stride + tap % kw, 0)


def lane_atom(t, k):
    return (k // 2) * 8 + 2 * t + k % 2


# mma_tf32.cuh
def tf32_round(v):
    return ((v.view(torch.int32) + 0x1000) & -0x2000).view(F32)


def tf32_split(v):
    hi = tf32_round(v)
    return hi, v - hi


def tf32_read(v):
    """What the tensor core reads of a TF32 operand register: its top 19 bits (low 13 ignored)."""
    return (v.view(torch.int32) & -0x2000).view(F32)


def fragment_maps():
    """The PTX layout of mma_tf32's fragments: for each entry of A (16 x 8) and B (8 x 8), the
    (lane, register) holding it, as lane * registers + register; for each lane's D register, its
    entry of D (16 x 8), as row * 8 + column."""
    a_src = torch.full((16, 8), -1)
    a_src[GQ, T], a_src[GQ + 8, T], a_src[GQ, T + 4], a_src[GQ + 8, T + 4] = LANE * 4, LANE * 4 + 1, LANE * 4 + 2, LANE * 4 + 3
    b_src = torch.full((8, 8), -1)
    b_src[T, GQ], b_src[T + 4, GQ] = LANE * 2, LANE * 2 + 1
    d_entry = torch.stack([GQ * 8 + 2 * T, GQ * 8 + 2 * T + 1, (GQ + 8) * 8 + 2 * T, (GQ + 8) * 8 + 2 * T + 1], -1)
    return a_src, b_src, d_entry


A_SRC, B_SRC, D_ENTRY = fragment_maps()


def test_fragment_layout_covers_each_entry_once():
    for m, n in ((A_SRC, 128), (B_SRC, 64), (D_ENTRY, 128)):
        assert torch.equal(m.flatten().sort().values, torch.arange(n))


def mma_tf32(d, a, b0, b1):
    """d [..., 32, 4] += a [..., 32, 4] * (b0, b1) [32] by the fragment layout of mma_tf32."""
    A = tf32_read(a).double().flatten(-2)[..., A_SRC]
    B = tf32_read(torch.stack([b0, b1], -1)).double().flatten()[B_SRC]
    D = (A[..., None] * B).sum(-2).flatten(-2)[..., D_ENTRY]  # products of TF32 values are exact; the sum is rounded
    return (d.double() + D).float()  # to float32, as the MMA's


def shfl_xor(v, mask):
    """__shfl_xor_sync over the lane dimension, the third from last of v [..., 32, a, b]."""
    return v[..., LANE ^ mask, :, :]


def quad_reduce_scatter(v):
    """v [..., 32, kMmaOC, 2] -> [..., 32, 2]: as the kernel's quad_reduce_scatter."""
    up2 = (T & 2).bool()[:, None, None]
    up1 = (T & 1).bool()[:, None]
    keep = torch.where(up2, v[..., 2:, :], v[..., :2, :])
    send = torch.where(up2, v[..., :2, :], v[..., 2:, :])
    r = keep + shfl_xor(send, 2)  # [..., 32, 2 (j), 2 (h)]
    keep = torch.where(up1, r[..., 1, :], r[..., 0, :])
    send = torch.where(up1, r[..., 0, :], r[..., 1, :])
    return keep + shfl_xor(send[..., None], 1)[..., 0]


def stage_mma_atoms(atoms, g, stride):
    """frag [steps, 2 (hi, lo), 32, 4] and toff [steps * 4, 2], as stage_mma_atoms."""
    G, M, K, _ = atoms.shape
    r = g + 1
    kw, off, steps = 2 * r + 1, K // 2 - r, tap_steps(2 * r + 1)
    i = torch.arange(steps * 32)
    step, lane = i // 32, i % 32
    k = torch.arange(4)
    tap = (step * 8 + lane % 4)[:, None] + 4 * (k % 2)
    m = (k // 2) * 8 + (lane // 4)[:, None]
    ok = (tap < kw * kw) & (m < M)
    v = torch.where(ok, atoms[g, m.clamp(max=M - 1), off + (tap // kw).clamp(max=kw - 1), off + tap % kw], 0.0)
    hi, lo = tf32_split(v)
    frag = torch.stack([hi, tf32_round(lo)], 1).view(steps, 32, 2, 4).transpose(1, 2)
    i = torch.arange(steps * 4)
    toff = torch.stack([tap_offset((i // 4) * 8 + i % 4, kw, stride), tap_offset((i // 4) * 8 + i % 4 + 4, kw, stride)], 1)
    return frag, toff


def stage_window(x, c, tiles, r, G):
    """xs [tiles, halo_size(G)] as stage_window: NaN where the kernel writes nothing."""
    _, _, H, W = x.shape
    stride, n = halo_stride(r), kTile + 2 * r
    xs = torch.full((len(tiles), halo_size(G)), float("nan"), dtype=F32)
    hy, hx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    for ti, (b, y0, x0) in enumerate(tiles):
        y, xx = y0 - r + hy, x0 - r + hx
        ok = (y >= 0) & (y < H) & (xx >= 0) & (xx < W)
        xs[ti, (hy * stride + hx).flatten()] = torch.where(ok, x[b, c, y.clamp(0, H - 1), xx.clamp(0, W - 1)], 0.0).flatten()
    return xs


def emulate_forward(x, atoms, scale, basis, weight, bias, residual, split_x):
    """The kernel's y, and its window sums D [B, G, C, 16, H, W], computed from per-lane operands."""
    B, C, H, W = x.shape
    G, M = atoms.shape[:2]
    O = weight.shape[0]
    tiles = [(b, ty * kTile, tx * kTile) for b in range(B) for ty in range(-(-H // kTile)) for tx in range(-(-W // kTile))]
    tb, ty0, tx0 = (torch.tensor(v)[:, None, None, None] for v in zip(*tiles))  # [tiles, 1, 1, 1]
    warp, seg = torch.arange(kWarps)[:, None, None], torch.arange(kSegs)[:, None]  # [4, 1, 1], [16, 1]
    py = ty0 + warp * (kSegs // 2) + seg // 2  # [tiles, 4, 16, 1]: the segment's row
    px = tx0 + (seg % 2) * kSegPix + GQ  # [tiles, 1, 16, 32]: pixel gq of the segment
    px = torch.stack([px, px + 8], -1)  # [tiles, 1, 16, 32, 2 (h)]
    pin = (py[..., None] < H) & (px < W)  # [tiles, 4, 16, 32, 2]
    pyc, pxc = py[..., None].clamp(max=H - 1), px.clamp(max=W - 1)
    bidx = tb[..., None]
    noc = -(-O // kMmaOC)
    acc = torch.zeros(noc, len(tiles), kWarps, kSegs, 32, 2, dtype=F32)
    dsum = torch.zeros(B, G, C, 16, H, W, dtype=F64)
    for g in range(G):
        r = g + 1
        stride = halo_stride(r)
        frag, toff = stage_mma_atoms(atoms, g, stride)
        sv = torch.where(pin, scale[bidx, g, pyc, pxc], 0.0)  # [tiles, 4, 16, 32, 2]
        for c in range(C):
            xs = stage_window(x, c, tiles, r, G)
            xp = (warp * (kSegs // 2) + seg // 2) * stride + (seg % 2) * kSegPix + GQ  # [4, 16, 32]
            d = torch.zeros(len(tiles), kWarps, kSegs, 2, 32, 4, dtype=F32)
            for step in range(tap_steps(2 * r + 1)):
                bh, bl = frag[step]  # [32, 4] each
                o = toff[step * 4 + T]  # [32, 2]
                addr = xp[..., None] + torch.stack([o[:, 0], o[:, 0] + 8, o[:, 1], o[:, 1] + 8], -1)
                xh = xs[:, addr]  # [tiles, 4, 16, 32, 4]
                assert not xh.isnan().any(), "reads a shared-memory word the staging did not write"
                if split_x:
                    xh, xl = tf32_split(xh)
                    d[..., 0, :, :] = mma_tf32(d[..., 0, :, :], xl, bh[:, 0], bh[:, 1])
                    d[..., 1, :, :] = mma_tf32(d[..., 1, :, :], xl, bh[:, 2], bh[:, 3])
                d[..., 0, :, :] = mma_tf32(d[..., 0, :, :], xh, bl[:, 0], bl[:, 1])
                d[..., 1, :, :] = mma_tf32(d[..., 1, :, :], xh, bl[:, 2], bl[:, 3])
                d[..., 0, :, :] = mma_tf32(d[..., 0, :, :], xh, bh[:, 0], bh[:, 1])
                d[..., 1, :, :] = mma_tf32(d[..., 1, :, :], xh, bh[:, 2], bh[:, 3])
            # D of lane atom k at pixel h: register 2h + k % 2 of n-tile k / 2
            k = torch.arange(4)
            m = lane_atom(T[:, None], k)  # [32, 4]
            dk = torch.stack([d.select(-3, kk // 2)[..., [kk % 2, 2 + kk % 2]] for kk in range(4)], -2)  # [..., 32, 4, 2]
            for kk in range(4):
                for h in range(2):
                    sel = pin[..., h] & (m[:, kk] < 16)
                    dsum[tb.expand_as(sel)[sel], g, c, m[:, kk].expand_as(sel)[sel], pyc[..., 0].expand_as(sel)[sel],
                         pxc[..., h].expand_as(sel)[sel]] = dk[..., kk, h][sel].double()
            mm = m.clamp(max=M - 1)
            bv = torch.where(pin[..., None, :] & (m < M)[..., None], basis[bidx[..., None], mm[..., None], pyc[..., None], pxc[..., None, :]], 0.0)
            e = sv[..., None, :] * bv * dk  # [tiles, 4, 16, 32, 4, 2]
            for oc in range(noc):
                oo = oc * kMmaOC + torch.arange(kMmaOC)
                w = torch.where((oo[:, None] < O) & (m[:, None, :] < M), weight[oo.clamp(max=O - 1)[:, None], g, c, mm[:, None, :]], 0.0)  # [32, o, k]
                part = torch.zeros(len(tiles), kWarps, kSegs, 32, kMmaOC, 2, dtype=F32)
                for kk in range(4):  # the kernel's order of the sum over k
                    part += w[:, :, kk, None] * e[..., None, kk, :]
                acc[oc] += quad_reduce_scatter(part)
    y = torch.zeros(B, O, H, W, dtype=F32)
    for oc in range(noc):
        oo = oc * kMmaOC + T  # [32]
        for h in range(2):
            sel = pin[..., h] & (oo < O)
            v = acc[oc][..., h] + (bias[oo.clamp(max=O - 1)] if bias is not None else 0.0)
            if residual:
                v = v + x[bidx[..., 0], oo.clamp(max=C - 1), pyc[..., 0], pxc[..., h]]
            y[tb.expand_as(sel)[sel], oo.expand_as(sel)[sel], pyc[..., 0].expand_as(sel)[sel], pxc[..., h].expand_as(sel)[sel]] = v[sel]
    return y, dsum


# (B, C, H, W, G, M, O, bias, residual): ragged edge tiles, M below and at 16, O not a multiple of 4;
# one tile where the windows are large (the emulation's cost), 2 images of 2 x 2 tiles where small.
CASES = {
    "release-like": (1, 3, 30, 27, 7, 10, 3, True, True),
    "G9-M16-O6": (1, 2, 20, 18, 9, 16, 6, True, False),
    "G2-M5-O1-B2": (2, 1, 40, 50, 2, 5, 1, False, False),
}


@pytest.mark.parametrize("split_x", [True, False], ids=["float32-3xTF32", "half-x-2xTF32"])
@pytest.mark.parametrize("shape", list(CASES))
def test_emulated_kernel_matches_reference(shape, split_x):
    B, C, H, W, G, M, O, bias, residual = CASES[shape]
    case = ikconv_case(B, C, H, W, G, M, O, bias=bias, residual=residual, dtype=F32)
    if not split_x:  # x from bfloat16: exact in TF32, so the kernel skips its split
        case["x"] = case["x"].to(torch.bfloat16).float()
    args = [case[k] for k in ("x", "atoms", "scale", "basis", "weight", "bias")]
    y, dsum = emulate_forward(*args, residual, split_x)
    exact = [a.double() if a is not None else None for a in args]
    for g in range(G):
        d_ref = reference._group_responses(exact[0], exact[1], g)  # [B, C, M, H, W]
        assert rel_err(dsum[:, g, :, :M], d_ref) <= 2e-6, f"window sums of group {g}"
        if M < 16:
            assert dsum[:, g, :, M:].abs().max() == 0, "padding atoms must give zero"
    y_ref = reference.ikconv_forward(*exact, residual)
    assert rel_err(y, y_ref) <= 2e-6


def test_3xtf32_is_float32_accurate_where_1xtf32_is_not():
    """On random operands (a Toeplitz-like 16 x 680 by 680 x 16 product): three TF32 products keep
    float32's accuracy; one loses about three decimal digits."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 680, generator=gen, dtype=F32)
    b = torch.randn(680, 16, generator=gen, dtype=F32) * 0.3
    exact = a.double() @ b.double()
    (ah, al), (bh, bl) = tf32_split(a), tf32_split(b)
    bl = tf32_round(bl)
    prod = lambda u, v: tf32_read(u).double() @ tf32_read(v).double()  # noqa: E731
    one = prod(a, b)
    three = prod(al, bh) + prod(ah, bl) + prod(ah, bh)
    fp32 = (a @ b).double()
    err = lambda v: rel_err(v, exact)  # noqa: E731
    assert err(one) > 1e-4
    assert err(three) <= 4 * max(err(fp32), 2**-24)
    # x exact in TF32 (from bfloat16): two products suffice
    ab = a.to(torch.bfloat16).float()
    exact_b = ab.double() @ b.double()
    two = prod(ab, bl) + prod(ab, bh)
    assert rel_err(two, exact_b) <= 4 * max(err(fp32), 2**-24)


def test_tf32_round_matches_cvt_rna():
    """tf32_round: nearest TF32 value, ties away from zero; hi + lo recovers v exactly."""
    v = torch.tensor([1.0, 1 + 2**-11, 1 + 2**-10, -(1 + 2**-11), 1 + 3 * 2**-11, 1 + 2**-12, -0.0], dtype=F32)
    assert tf32_round(v).tolist() == [1.0, 1 + 2**-10, 1 + 2**-10, -(1 + 2**-10), 1 + 2 * 2**-10, 1.0, -0.0]
    x = torch.randn(10000, generator=torch.Generator().manual_seed(1), dtype=F32)
    hi, lo = tf32_split(x)
    assert torch.equal(hi + lo, x)
    assert ((hi.view(torch.int32) & 0x1FFF) == 0).all()
    assert (lo.abs() <= hi.abs() * 2**-11).all()
