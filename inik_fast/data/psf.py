"""Defocus PSF families: the shapes a lens gives an out-of-focus point, each normalised to sum 1
and centred on its centroid (an off-centre PSF would also shift the image, which no deblurring
model can know). Pixel coverage comes from supersampling. `radius` is the blur-circle radius in
px; each family reads its own shape parameters from `shape`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError

PSF_FAMILIES = ("disk", "soft_disk", "gaussian", "polygon", "cateye", "chromatic")
SUPPORT = 1.5  # every family fits in a square of half-width SUPPORT * radius (gaussian: 3 sigma)
CHROMA_MAX = 0.2  # chromatic: largest relative radius difference between channels


def support(radius: float) -> int:
    """Half-width in px of a kernel that holds any family's PSF of this radius."""
    return int(math.ceil(SUPPORT * radius * (1 + CHROMA_MAX))) + 1


def draw_shape(family: str, rng: np.random.Generator) -> dict:
    """The per-sample shape parameters of a family."""
    if family == "soft_disk":
        return {"softness": float(rng.uniform(0.2, 0.8))}  # width of the edge ramp, in radii
    if family == "polygon":
        return {"blades": int(rng.integers(5, 10)), "rotation": float(rng.uniform(0, 2 * math.pi))}
    if family == "cateye":  # a disk clipped by a second one (the lens barrel) off-axis
        return {"offset": float(rng.uniform(0.4, 1.2)), "angle": float(rng.uniform(0, 2 * math.pi))}
    if family == "chromatic":  # longitudinal CA: red and blue radii differ from green's, oppositely
        return {"chroma": float(rng.choice([-1, 1]) * rng.uniform(0.05, CHROMA_MAX))}
    if family in PSF_FAMILIES:
        return {}
    raise ConfigError(f"psf {family!r}: expected one of {PSF_FAMILIES}")


def channel_radii(family: str, shape: dict, radius: float) -> tuple[float, float, float]:
    """The R, G, B radii of a PSF of nominal `radius`."""
    c = shape.get("chroma", 0.0) if family == "chromatic" else 0.0
    return radius * (1 + c), radius, radius * (1 - c)


def _coverage(family: str, shape: dict, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    rho2 = x**2 + y**2
    if family in ("disk", "chromatic"):
        return (rho2 <= r**2).astype(np.float64)
    if family == "soft_disk":
        return np.clip((r - np.sqrt(rho2)) / (shape["softness"] * r) + 0.5, 0, 1)
    if family == "gaussian":  # sigma r/2: the second moment of a disk of radius r
        return np.exp(-rho2 / (2 * (r / 2) ** 2)) * (rho2 <= (SUPPORT * r) ** 2)
    if family == "polygon":  # a regular polygon with circumradius r
        n, a0 = shape["blades"], shape["rotation"]
        apothem = r * math.cos(math.pi / n)
        angles = a0 + 2 * math.pi * np.arange(n) / n
        proj = x[..., None] * np.cos(angles) + y[..., None] * np.sin(angles)
        return (proj <= apothem).all(axis=-1).astype(np.float64)
    if family == "cateye":  # the lens of two disks, centred: each centre is offset*r/2 from 0
        d = shape["offset"] * r / 2
        cx, cy = d * math.cos(shape["angle"]), d * math.sin(shape["angle"])
        inside = ((x - cx) ** 2 + (y - cy) ** 2 <= r**2) & ((x + cx) ** 2 + (y + cy) ** 2 <= r**2)
        return inside.astype(np.float64)
    raise ConfigError(f"psf {family!r}: expected one of {PSF_FAMILIES}")


def psf_kernel(family: str, shape: dict, radius: float, size: int, supersample: int = 8) -> torch.Tensor:
    """float64 [size, size] PSF of one channel, a unit impulse when the radius is (nearly) zero."""
    c = size // 2
    k = None
    if radius > 0:
        sub = (np.arange(supersample) + 0.5) / supersample - 0.5
        t = (np.arange(size)[:, None] - c + sub[None, :]).reshape(-1)
        cov = _coverage(family, shape, radius, t[None, :], t[:, None])
        k = cov.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    if k is None or k.sum() <= 0:
        k = np.zeros((size, size))
        k[c, c] = 1
    return torch.from_numpy(k / k.sum())


def disk_psf(radius: float, size: int, supersample: int = 8) -> torch.Tensor:
    """Normalised disk of `radius` px on a size x size grid."""
    return psf_kernel("disk", {}, radius, size, supersample)
