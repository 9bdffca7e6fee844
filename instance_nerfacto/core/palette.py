"""One stable colour per instance id, shared by every renderer, the viewer and the report."""

from __future__ import annotations

import numpy as np


def palette(n: int = 65536, seed: int = 7) -> np.ndarray:
    """uint8 (n, 3) colours; id 0 (unlabelled) is black; neighbouring ids get very different hues."""
    idx = np.arange(n, dtype=np.float64)
    hue = (idx * 0.618033988749895) % 1.0
    rng = np.random.default_rng(seed)
    sat = 0.55 + 0.45 * rng.random(n)
    val = 0.65 + 0.35 * rng.random(n)
    h6 = hue * 6.0
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    sectors = ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))
    rgb = np.choose(np.repeat(i[:, None], 3, axis=1), [np.stack(c, axis=1) for c in sectors])
    out = (rgb * 255).round().astype(np.uint8)
    out[0] = 0
    return out


_PALETTE = palette()


def colorize(ids: np.ndarray) -> np.ndarray:
    """Map an integer id image (..., ) to uint8 RGB (..., 3)."""
    return _PALETTE[np.asarray(ids).astype(np.int64) % len(_PALETTE)]
