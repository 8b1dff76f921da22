"""Scene depth for the synthetic defocus: random nearness maps in [0, 1] (1 = nearest), the real
disparity of the motorcycle stereo pair, and the thin-lens blur radius from nearness."""
from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ConfigError

LAYOUTS = ("planes", "slanted", "blobs", "piecewise")


@functools.lru_cache(maxsize=1)
def motorcycle_nearness() -> np.ndarray:
    """The left motorcycle view's disparity as nearness in [0, 1]; unknown pixels are far."""
    import skimage.data

    disp = np.asarray(skimage.data.stereo_motorcycle()[2], dtype=np.float64)
    valid = np.isfinite(disp)
    lo, hi = disp[valid].min(), disp[valid].max()
    return np.where(valid, (disp - lo) / (hi - lo), 0.0)


def depth_map(h: int, w: int, layout: str, rng: np.random.Generator) -> np.ndarray:
    """A random nearness map [h, w] in [0, 1] of the given layout."""
    s = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = (2 * yy - h + 1) / s, (2 * xx - w + 1) / s  # about [-1, 1]
    if layout == "planes":  # background plus 1-3 fronto-parallel objects (ellipses or boxes)
        d = np.full((h, w), rng.uniform())
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(-1, 1, 2)
            ry, rx = rng.uniform(0.15, 0.8, 2)
            u, v = (yy - cy) / ry, (xx - cx) / rx
            inside = (u**2 + v**2 <= 1) if rng.integers(2) else (np.maximum(abs(u), abs(v)) <= 1)
            d[inside] = rng.uniform()
        return d
    if layout == "slanted":  # one tilted plane: nearness linear in a random direction
        t = math.cos(a := rng.uniform(0, 2 * math.pi)) * xx + math.sin(a) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        lo, hi = np.sort(rng.uniform(0, 1, 2))
        return lo + (hi - lo) * t
    if layout == "blobs":  # smooth surface: background plus 2-6 Gaussian bumps and dents
        d = np.zeros((h, w))
        for _ in range(int(rng.integers(2, 7))):
            cy, cx = rng.uniform(-1, 1, 2)
            sig = rng.uniform(0.1, 0.6)
            d += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig**2))
        return (d - d.min()) / max(d.max() - d.min(), 1e-9)
    if layout == "piecewise":  # 4-10 Voronoi cells, each its own tilted plane
        n = int(rng.integers(4, 11))
        centres = rng.uniform(-1, 1, (n, 2))
        cell = np.argmin((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, axis=-1)
        base, gy, gx = rng.uniform(0, 1, n), rng.uniform(-0.3, 0.3, n), rng.uniform(-0.3, 0.3, n)
        return np.clip(base[cell] + gy[cell] * yy + gx[cell] * xx, 0, 1)
    raise ConfigError(f"layout={layout!r}: expected one of {LAYOUTS}")


def coc_radius(nearness: np.ndarray, focus: float, r_max: float) -> np.ndarray:
    """Thin-lens blur radius: proportional to |nearness - focus|, largest value r_max."""
    r = np.abs(nearness - focus)
    return r * (r_max / max(r.max(), 1e-9))
