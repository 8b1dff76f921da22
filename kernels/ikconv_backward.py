"""Inverse-kernel convolution backward, recomputing D and F per tile (never stored).

Kernel 1 (persistent: a bounded grid of programs looping over tiles) gives per pixel dS and dBt,
and per program partial sums of dWeight, dbias and datoms (each program owns one slot, so the
sums are plain read-add-writes); torch then sums the slots, a deterministic second reduction. In
the non-deterministic mode all programs add into one slot with atomics instead.

Kernel 2 (only when x needs a gradient) gives dx by the transposed correlation. For each (c, g)
it writes F of the tile plus its halo of r_g pixels to the program's scratch block (small and
L2-resident: one program per SM); then, per chunk of taps, T[p, t] = sum_m F[p, m] atoms[g, m, t]
(a dot) to the scratch too, and gathers dx[q] += sum_t T[q - tap_t, t].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ikconv_forward import pad_image
from .ikconv_tiles import IDX, accumulate, slot_start, tap_offsets, tile_pixels, window_dot
from .launch import dot_precision, dx_programs_per_sm, half_dots, kernel, launch, max_programs, pow2, taps, tiled

# The dx kernel is not autotuned: one tile everywhere, which also sizes its scratch.
DX_TILE = {"TH": 16, "TW": 16}


@tiled(reset_to_zero=("p_atoms", "p_weight", "p_bias"))
@kernel
def _ikconv_backward_kernel(
    grad_y, xp, atoms, scale, basis, weight, d_scale, d_basis, p_atoms, p_weight, p_bias,
    B, H, W, Wp, plane, C, O, G, M,
    ATOMIC: tl.constexpr, M_P: tl.constexpr, O_P: tl.constexpr, TC: tl.constexpr, PREC: tl.constexpr,
    HALF_DOTS: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):
    acc_t = atoms.dtype.element_ty
    pid = tl.program_id(0)
    K = 2 * G + 1
    KK = K * K
    GCM = G * C * M
    if not ATOMIC:  # this program's slot of the partial sums
        p_atoms += slot_start(pid, G * M * KK)
        p_weight += slot_start(pid, O * GCM)
        p_bias += slot_start(pid, O)
    HW = H * W
    m = tl.arange(0, M_P).to(IDX)
    o = tl.arange(0, O_P).to(IDX)
    tiles = tl.cdiv(H, TH) * tl.cdiv(W, TW)
    for tile in range(pid, B * tiles, tl.num_programs(0)):
        b = (tile // tiles).to(tl.int64)
        _h0, _w0, h, w, valid = tile_pixels(tile % tiles, H, W, TH, TW)
        pix = h * W + w
        xoff = h * Wp + w
        # grad_y is 0 on the rows past the image, so they add nothing to the pixel sums
        gam_ptrs = grad_y + (b * O + o[None, :]) * HW + pix[:, None]
        gam = tl.load(gam_ptrs, mask=valid[:, None] & (o < O)[None, :], other=0.0).to(acc_t)
        accumulate(p_bias + o, tl.sum(gam, axis=0), o < O, ATOMIC)
        bt = tl.load(basis + (b * M + m[None, :]) * HW + pix[:, None], mask=(m < M)[None, :], other=0.0).to(acc_t)
        d_bt = tl.zeros([TH * TW, M_P], dtype=acc_t)
        for g in range(G):
            r = g + 1
            s = tl.load(scale + (b * G + g) * HW + pix).to(acc_t)
            mix = bt * s[:, None]
            d_s = tl.zeros([TH * TW], dtype=acc_t)
            for c in range(C):
                xplane = xp + (b * C + c) * plane
                w_off = o[:, None] * GCM + (g * C + c) * M + m[None, :]
                w_mask = (o < O)[:, None] & (m < M)[None, :]
                e = tl.dot(gam, tl.load(weight + w_off, mask=w_mask, other=0.0), input_precision=PREC)
                f = e * mix
                d = tl.zeros([TH * TW, M_P], dtype=acc_t)
                for t0 in range(0, (2 * r + 1) * (2 * r + 1), TC):
                    tap_off, a_off, a_mask = tap_offsets(t0, r, G, K, Wp, M, M_P, TC)
                    a = tl.load(atoms + g * M * KK + a_off, mask=a_mask, other=0.0)
                    x_cols = tl.load(xplane + xoff[:, None] + tap_off[None, :])  # im2col block
                    d = window_dot(x_cols, a, d, PREC, HALF_DOTS)
                    d_a = tl.dot(tl.trans(x_cols.to(acc_t)), f, input_precision=PREC)
                    accumulate(p_atoms + g * M * KK + a_off, d_a, a_mask, ATOMIC)
                ed = e * d
                d_s += tl.sum(ed * bt, axis=1)
                d_bt += ed * s[:, None]
                accumulate(p_weight + w_off, tl.dot(tl.trans(gam), d * mix, input_precision=PREC), w_mask, ATOMIC)
            tl.store(d_scale + (b * G + g) * HW + pix, d_s.to(d_scale.dtype.element_ty), mask=valid)
        d_basis_ptrs = d_basis + (b * M + m[None, :]) * HW + pix[:, None]
        tl.store(d_basis_ptrs, d_bt.to(d_basis.dtype.element_ty), mask=valid[:, None] & (m < M)[None, :])
        tl.debug_barrier()  # this tile's partial-sum writes land before the next tile reads them


@kernel
def _ikconv_dx_kernel(
    grad_y, atoms, scale, basis, weight, dx, scratch, B, H, W, C, O, G, M, halo_max,
    RESIDUAL: tl.constexpr, M_P: tl.constexpr, O_P: tl.constexpr, TC: tl.constexpr, PREC: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr,
):
    acc_t = atoms.dtype.element_ty
    pid = tl.program_id(0)
    # this program's scratch: F [halo, M_P], then T [halo, TC]
    scratch_f = scratch + pid.to(tl.int64) * halo_max * (M_P + TC)
    scratch_t = scratch_f + halo_max * M_P
    K = 2 * G + 1
    KK = K * K
    HW = H * W
    i = tl.arange(0, TH * TW).to(IDX)
    ih = i // TW
    iw = i % TW
    m = tl.arange(0, M_P).to(IDX)
    o = tl.arange(0, O_P).to(IDX)
    tc = tl.arange(0, TC).to(IDX)
    tiles = tl.cdiv(H, TH) * tl.cdiv(W, TW)
    for tile in range(pid, B * tiles, tl.num_programs(0)):
        b = (tile // tiles).to(tl.int64)
        h0, w0, h, w, valid = tile_pixels(tile % tiles, H, W, TH, TW)
        for c in range(C):
            acc = tl.zeros([TH * TW], dtype=acc_t)
            for g in range(G):
                r = g + 1
                k = 2 * r + 1
                halo_w = TW + 2 * r
                halo = (TH + 2 * r) * halo_w
                w_off = o[:, None] * (G * C * M) + (g * C + c) * M + m[None, :]
                wgc = tl.load(weight + w_off, mask=(o < O)[:, None] & (m < M)[None, :], other=0.0)
                # F of group g, channel c on the tile and its halo of r pixels, zero outside the image
                for j0 in range(0, halo, TH * TW):
                    j = j0 + i
                    ph = h0 - r + j // halo_w
                    pw = w0 - r + j % halo_w
                    inside = (j < halo) & (ph >= 0) & (ph < H) & (pw >= 0) & (pw < W)
                    pp = ph * W + pw
                    gam_ptrs = grad_y + (b * O + o[None, :]) * HW + pp[:, None]
                    gam = tl.load(gam_ptrs, mask=inside[:, None] & (o < O)[None, :], other=0.0).to(acc_t)
                    s = tl.load(scale + (b * G + g) * HW + pp, mask=inside, other=0.0).to(acc_t)
                    bt_ptrs = basis + (b * M + m[None, :]) * HW + pp[:, None]
                    bt = tl.load(bt_ptrs, mask=inside[:, None] & (m < M)[None, :], other=0.0).to(acc_t)
                    f = tl.dot(gam, wgc, input_precision=PREC) * bt * s[:, None]
                    tl.store(scratch_f + j[:, None] * M_P + m[None, :], f, mask=(j < halo)[:, None])
                tl.debug_barrier()
                for t0 in range(0, k * k, TC):
                    t = t0 + tc
                    du = t // k
                    dv = t % k
                    tap = t < k * k
                    a_off = m[:, None] * KK + ((G - r + du) * K + G - r + dv)[None, :]
                    a = tl.load(atoms + g * M * KK + a_off, mask=(m < M)[:, None] & tap[None, :], other=0.0)
                    # T[p, t] = sum_m F[p, m] atoms[g, m, tap t]: what source pixel p gives through tap t
                    for j0 in range(0, halo, TH * TW):
                        j = j0 + i
                        f = tl.load(scratch_f + j[:, None] * M_P + m[None, :], mask=(j < halo)[:, None], other=0.0)
                        t_ptrs = scratch_t + j[:, None] * TC + tc[None, :]
                        tl.store(t_ptrs, tl.dot(f, a, input_precision=PREC), mask=(j < halo)[:, None])
                    tl.debug_barrier()
                    # dx[q] += T[q - (u, v), t] for tap t = (u, v) = (du - r, dv - r): halo (ih + 2r - du, iw + 2r - dv)
                    src = (ih[:, None] + 2 * r - du[None, :]) * halo_w + iw[:, None] + 2 * r - dv[None, :]
                    acc += tl.sum(tl.load(scratch_t + src * TC + tc[None, :], mask=tap[None, :], other=0.0), axis=1)
                    tl.debug_barrier()  # all reads done before the scratch is written again
            pix = h * W + w
            if RESIDUAL:  # O == C
                acc += tl.load(grad_y + (b * O + c) * HW + pix).to(acc_t)
            tl.store(dx + (b * C + c) * HW + pix, acc.to(dx.dtype.element_ty), mask=valid)


def ikconv_backward(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, deterministic):
    B, C, H, W = x.shape
    G, M, K, _ = atoms.shape
    O = weight.shape[0]
    d_scale = torch.empty_like(scale)
    d_basis = torch.empty_like(basis)
    dx = torch.empty_like(x) if need_x_grad else x.new_empty(0)
    if x.numel() == 0:
        return dx, torch.zeros_like(atoms), d_scale, d_basis, torch.zeros_like(weight), weight.new_zeros(O)
    R = K // 2
    xp, Wp, plane = pad_image(x, R)
    programs = max_programs(x.device)
    slots = programs if deterministic else 1
    p_atoms = atoms.new_zeros(slots, G * M * K * K)
    p_weight = weight.new_zeros(slots, O * G * C * M)
    p_bias = weight.new_zeros(slots, O)
    M_P, O_P, prec, tc = pow2(M), pow2(O), dot_precision(atoms.dtype), taps("backward")

    def grid(meta):
        return (min(programs, B * triton.cdiv(H, meta["TH"]) * triton.cdiv(W, meta["TW"])),)

    launch(
        _ikconv_backward_kernel, grid, grad_y, xp, atoms, scale, basis, weight,
        d_scale, d_basis, p_atoms, p_weight, p_bias, B, H, W, Wp, plane, C, O, G, M,
        ATOMIC=not deterministic, M_P=M_P, O_P=O_P, TC=tc, PREC=prec, HALF_DOTS=half_dots(x), tile=True,
        pinned=deterministic,
    )
    if need_x_grad:
        th, tw = DX_TILE["TH"], DX_TILE["TW"]
        dx_programs = min(max_programs(x.device, per_sm=dx_programs_per_sm()), B * triton.cdiv(H, th) * triton.cdiv(W, tw))
        halo_max = (th + 2 * R) * (tw + 2 * R)
        tc = taps("dx")
        scratch = atoms.new_empty(dx_programs * halo_max * (M_P + tc))
        launch(
            _ikconv_dx_kernel, (dx_programs,), grad_y, atoms, scale, basis, weight, dx, scratch,
            B, H, W, C, O, G, M, halo_max, RESIDUAL=residual, M_P=M_P, O_P=O_P, TC=tc, PREC=prec, **DX_TILE,
        )
    datoms = p_atoms.sum(0).view(G, M, K, K)
    return dx, datoms, d_scale, d_basis, p_weight.sum(0).view(O, G, C, M), p_bias.sum(0)
