"""Reference math of the two ops, in plain PyTorch (`docs/ops.md`).

Short and obviously right rather than fast: the inverse-kernel convolution loops over size
groups and holds one group's C*M channels at a time. The backward functions spell out the
contract's gradient formulas; the tests check them against autograd of the forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# atom bank
# ---------------------------------------------------------------------------------------------
def _atom_mlp(coords, w1, b1, w2, b2, omega):
    """Hidden activations of every atom's MLP at every grid point: z1, h1, z2, h2 [G,M,K,K,Hd]."""
    om = omega.view(1, -1, 1, 1, 1)
    z1 = torch.einsum("gijd,mhd->gmijh", coords, w1) + b1[None, :, None, None]
    h1 = torch.sin(om * z1)
    z2 = torch.einsum("gmijh,mkh->gmijk", h1, w2) + b2[None, :, None, None]
    h2 = torch.sin(om * z2)
    return z1, h1, z2, h2


def atom_bank_forward(coords, mask, w1, b1, w2, b2, w3, omega):
    _, _, _, h2 = _atom_mlp(coords, w1, b1, w2, b2, omega)
    return mask[:, None] * torch.einsum("gmijk,mk->gmij", h2, w3)


def atom_bank_backward(grad_atoms, coords, mask, w1, b1, w2, b2, w3, omega):
    z1, h1, z2, h2 = _atom_mlp(coords, w1, b1, w2, b2, omega)
    om = omega.view(1, -1, 1, 1, 1)
    da = (grad_atoms * mask[:, None])[..., None]  # dL/d(w3 . h2), [G,M,K,K,1]
    dw3 = (da * h2).sum((0, 2, 3))
    dh2 = da * w3[None, :, None, None]
    c2 = torch.cos(om * z2)
    dz2 = dh2 * c2 * om
    domega = (dh2 * c2 * z2).sum((0, 2, 3, 4))
    db2 = dz2.sum((0, 2, 3))
    dw2 = torch.einsum("gmijk,gmijh->mkh", dz2, h1)
    dh1 = torch.einsum("gmijk,mkh->gmijh", dz2, w2)
    c1 = torch.cos(om * z1)
    dz1 = dh1 * c1 * om
    domega = domega + (dh1 * c1 * z1).sum((0, 2, 3, 4))
    db1 = dz1.sum((0, 2, 3))
    dw1 = torch.einsum("gmijh,gijd->mhd", dz1, coords)
    return dw1, db1, dw2, db2, dw3, domega


# ---------------------------------------------------------------------------------------------
# inverse-kernel convolution
# ---------------------------------------------------------------------------------------------
def _window(atoms, g):
    """Group g's centred (2g+3) x (2g+3) window of every atom: [M, k, k]."""
    R, r = atoms.shape[-1] // 2, g + 1
    return atoms[g, :, R - r : R + r + 1, R - r : R + r + 1]


def _group_responses(x, atoms, g):
    """D for group g: every atom of the group correlated with every channel, [B, C, M, H, W]."""
    B, C, H, W = x.shape
    k = _window(atoms, g)
    d = F.conv2d(x.reshape(B * C, 1, H, W), k[:, None], padding=g + 1)
    return d.view(B, C, k.shape[0], H, W)


def ikconv_forward(x, atoms, scale, basis, weight, bias, residual):
    acc = acc_dtype(x.dtype)
    xa, sa, ba = x.to(acc), scale.to(acc), basis.to(acc)
    y = torch.zeros(x.shape[0], weight.shape[0], *x.shape[2:], dtype=acc, device=x.device)
    for g in range(atoms.shape[0]):
        d = _group_responses(xa, atoms, g)
        mix = sa[:, g, None, None] * ba[:, None]  # S[b,g,p] * Bt[b,m,p], [B, 1, M, H, W]
        y = y + torch.einsum("ocm,bcmhw->bohw", weight[:, g], d * mix)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if residual:
        y = y + xa
    return y.to(x.dtype)


def ikconv_backward(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad):
    acc = acc_dtype(x.dtype)
    B, C, H, W = x.shape
    gam, xa, sa, ba = grad_y.to(acc), x.to(acc), scale.to(acc), basis.to(acc)
    datoms = torch.zeros_like(atoms)
    dscale = torch.empty(scale.shape, dtype=acc, device=x.device)
    dbasis = torch.zeros(basis.shape, dtype=acc, device=x.device)
    dweight = torch.empty_like(weight)
    dx = gam.clone() if residual else torch.zeros_like(xa)
    x2 = xa.reshape(B * C, 1, H, W)
    for g in range(atoms.shape[0]):
        r = g + 1
        d = _group_responses(xa, atoms, g)
        e = torch.einsum("bohw,ocm->bcmhw", gam, weight[:, g])  # E
        s = sa[:, g, None, None]
        f = e * s * ba[:, None]  # F
        dscale[:, g] = (e * ba[:, None] * d).sum((1, 2))
        dbasis += (e * s * d).sum(1)
        dweight[:, g] = torch.einsum("bohw,bcmhw->ocm", gam, s * ba[:, None] * d)
        f2 = f.flatten(0, 1)  # [B*C, M, H, W]
        k = _window(atoms, g)[:, None]  # [M, 1, 2r+1, 2r+1]
        _window(datoms, g)[:] = torch.nn.grad.conv2d_weight(x2, k.shape, f2, padding=r)[:, 0]
        if need_x_grad:
            dx += torch.nn.grad.conv2d_input(x2.shape, k, f2, padding=r).view(B, C, H, W)
    dbias = gam.sum((0, 2, 3)).to(weight.dtype)
    dx = dx.to(x.dtype) if need_x_grad else x.new_empty(0)
    return dx, datoms, dscale.to(scale.dtype), dbasis.to(basis.dtype), dweight, dbias
