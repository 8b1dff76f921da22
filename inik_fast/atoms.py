"""The inverse-kernel atoms: coordinate grids, window masks and the atom modules."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import ops
from .config import COORD_DIMS, INIKNetConfig


def group_code(k: int, coords: str) -> torch.Tensor:
    """INR input code of a k x k grid, [k, k, D], float64. X follows the row index (meshgrid 'ij')."""
    t = -1.0 + 2.0 * torch.arange(k, dtype=torch.float64) / (k - 1)  # exact 0 at the centre, unlike linspace
    X, Y = torch.meshgrid(t, t, indexing="ij")
    if coords == "grid":
        return torch.stack([X, Y], dim=-1)
    r = torch.sqrt(X**2 + Y**2) / math.sqrt(2.0)
    th = torch.atan2(Y, X)
    return torch.stack([r, (torch.cos(th) + 1) / 2, (torch.sin(th) + 1) / 2], dim=-1)


def coords_and_mask(num_groups: int, coords: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The atom bank's inputs: coords [G, K, K, D] (each group's own k_g grid, centred) and
    mask [G, K, K] (9 / k_g^2 inside group g's window, 0 outside), float64."""
    G = num_groups
    K = 2 * G + 1
    D = COORD_DIMS[coords]
    P = torch.zeros(G, K, K, D, dtype=torch.float64)
    Q = torch.zeros(G, K, K, dtype=torch.float64)
    for g in range(G):
        k, o = 2 * g + 3, G - 1 - g
        P[g, o : o + k, o : o + k] = group_code(k, coords)
        Q[g, o : o + k, o : o + k] = 9.0 / k**2
    return P, Q


class Sine(nn.Module):
    """sin(w0 * x); w0 is a Parameter shared by both sines of one atom when learnable."""

    def __init__(self, w0):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x)


class KernelINR(nn.Module):
    """One atom: Linear(D, Hd) -> sin -> Linear(Hd, Hd) -> sin -> Linear(Hd, 1, no bias)."""

    def __init__(self, dim: int, hidden: int, omega: float, learnable: bool):
        super().__init__()
        w0 = nn.Parameter(torch.tensor(float(omega))) if learnable else float(omega)
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden), Sine(w0), nn.Linear(hidden, hidden), Sine(w0), nn.Linear(hidden, 1, bias=False)
        )

    def omega(self, like: torch.Tensor) -> torch.Tensor:
        w0 = self.layers[1].w0
        return w0 if isinstance(w0, torch.Tensor) else like.new_tensor(w0)

    def forward(self, code):
        return self.layers(code)


class _WindowBuffers(nn.Module):
    """Holds the constant coords and mask buffers. They are re-derived from their float64 values
    whenever the module changes dtype or device, so a float64 model gets exact constants. In a
    float16/bfloat16 model they stay float32: the atoms are computed in float32 there (the atom
    bank op takes float32 and float64; the inverse-kernel conv takes float32 atoms for half inputs)."""

    def __init__(self, cfg: INIKNetConfig):
        super().__init__()
        self._grid = (cfg.num_groups, cfg.coords)
        P, Q = coords_and_mask(*self._grid)
        dt = torch.get_default_dtype()
        self.register_buffer("coords", P.to(dt), persistent=False)
        self.register_buffer("mask", Q.to(dt), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        P, Q = coords_and_mask(*self._grid)
        dt = self.coords.dtype if self.coords.dtype.itemsize >= 4 else torch.float32
        self.coords, self.mask = P.to(self.coords.device, dt), Q.to(self.mask.device, dt)
        return self


class INRAtoms(_WindowBuffers):
    """The release's `inr_conv`: M KernelINR atoms, evaluated on every size group's grid."""

    def __init__(self, cfg: INIKNetConfig):
        super().__init__(cfg)
        self.kernelINR_list = nn.ModuleList(
            KernelINR(cfg.coord_dim, cfg.inr_hidden, w, cfg.learnable_freq) for w in cfg.omegas()
        )

    def stacked(self):
        """The M atoms' weights stacked for the fused op: w1, b1, w2, b2, w3, omega."""
        mods = [k.layers for k in self.kernelINR_list]
        w1 = torch.stack([m[0].weight for m in mods])
        b1 = torch.stack([m[0].bias for m in mods])
        w2 = torch.stack([m[2].weight for m in mods])
        b2 = torch.stack([m[2].bias for m in mods])
        w3 = torch.stack([m[4].weight[0] for m in mods])
        omega = torch.stack([k.omega(w1) for k in self.kernelINR_list]).to(w1.dtype)
        return w1, b1, w2, b2, w3, omega

    def forward(self, backend: str = "auto"):
        dt = self.coords.dtype  # float32 in a half-precision model
        return ops.atom_bank(self.coords, self.mask, *(t.to(dt) for t in self.stacked()), backend=backend)


class FreeAtoms(_WindowBuffers):
    """Non-INR variant (supplement 2.2): a learnable K x K atom per group and basis index,
    masked to the group's window."""

    def __init__(self, cfg: INIKNetConfig):
        super().__init__(cfg)
        G, M = cfg.num_groups, cfg.basis_num
        K = 2 * G + 1
        self.atoms = nn.Parameter(torch.randn(G, M, K, K) / K)

    def forward(self, backend: str = "auto"):
        return self.mask[:, None] * self.atoms
