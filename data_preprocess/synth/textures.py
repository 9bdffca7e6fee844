"""Procedural textures (numpy only) for the synthetic room: wood, plaster, tiles, cardboard, fabric, book covers.

Every generator takes a seeded ``numpy.random.Generator`` so the same seed gives byte-identical textures. Textures are
uint8 RGB (H, W, 3) images; the scene writes them to PNG files for ``pybullet.loadTexture``.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, UInt8


def value_noise(rng: np.random.Generator, size: int, cells: int) -> Float[np.ndarray, "S S"]:
    """Smooth noise in [0, 1]: a random ``cells x cells`` grid upsampled bilinearly (tileable)."""
    grid = rng.random((cells, cells))
    coords = np.arange(size) * cells / size
    i0 = np.floor(coords).astype(int)
    frac = coords - i0
    frac = frac * frac * (3 - 2 * frac)  # smoothstep: no visible grid creases
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - frac)[:, None] + grid[i1] * frac[:, None]
    return rows[:, i0] * (1 - frac)[None, :] + rows[:, i1] * frac[None, :]


def fractal_noise(rng: np.random.Generator, size: int, octaves: int = 4, base_cells: int = 4
                  ) -> Float[np.ndarray, "S S"]:
    total = np.zeros((size, size))
    amp, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, size)
        total += amp * value_noise(rng, size, cells)
        norm += amp
        amp *= 0.5
    return total / norm


def _to_rgb(shade: Float[np.ndarray, "S S"], color_a, color_b) -> UInt8[np.ndarray, "S S 3"]:
    a = np.asarray(color_a, dtype=np.float64)
    b = np.asarray(color_b, dtype=np.float64)
    rgb = a[None, None] * (1 - shade[..., None]) + b[None, None] * shade[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def wood(rng: np.random.Generator, size: int = 256, planks: int = 6) -> UInt8[np.ndarray, "S S 3"]:
    """Wooden planks: grain along x, plank seams along y, per-plank tone."""
    y, x = np.mgrid[0:size, 0:size] / size
    warp = fractal_noise(rng, size, 3, 2)
    grain = 0.5 + 0.5 * np.sin((y * 40 + warp * 6) * np.pi * 2)
    plank_idx = np.floor(y * planks).astype(int)
    tone = rng.uniform(-0.15, 0.15, planks + 1)[plank_idx]
    seam = (np.abs((y * planks) % 1.0 - 0.0) < 0.03).astype(float)
    shade = np.clip(0.35 * grain + 0.4 * fractal_noise(rng, size, 4, 8) + tone + 0.15, 0, 1)
    base = rng.uniform(0.8, 1.2) * np.array([150, 100, 60])
    rgb = _to_rgb(shade, base * 0.6, base * 1.25).astype(np.float64)
    rgb *= (1 - 0.6 * seam)[..., None]
    del x
    return np.clip(rgb, 0, 255).astype(np.uint8)


def plaster(rng: np.random.Generator, size: int = 256) -> UInt8[np.ndarray, "S S 3"]:
    """Painted wall: a random pastel with blotchy noise and a faint wallpaper stripe."""
    hue = rng.uniform(150, 235, 3)
    noise = fractal_noise(rng, size, 5, 4)
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = 0.5 + 0.5 * np.sin(x * np.pi * 2 * rng.integers(6, 14))
    shade = np.clip(0.7 * noise + 0.35 * stripes - 0.05, 0, 1)
    del y
    return _to_rgb(shade, hue * 0.55, np.minimum(hue * 1.15, 255))


def tiles(rng: np.random.Generator, size: int = 256, count: int = 8) -> UInt8[np.ndarray, "S S 3"]:
    """Floor tiles with dark grout and per-tile tone."""
    y, x = np.mgrid[0:size, 0:size] / size
    ty, tx = np.floor(y * count).astype(int), np.floor(x * count).astype(int)
    tone = rng.uniform(0.3, 0.8, (count + 1, count + 1))[ty, tx]
    grout = (((y * count) % 1.0) < 0.05) | (((x * count) % 1.0) < 0.05)
    shade = np.clip(tone + 0.25 * (fractal_noise(rng, size, 4, 8) - 0.5), 0, 1)
    base = rng.uniform(90, 200, 3)
    rgb = _to_rgb(shade, base * 0.6, np.minimum(base * 1.3, 255)).astype(np.float64)
    rgb[grout] = rgb[grout] * 0.35
    return rgb.astype(np.uint8)


def cardboard(rng: np.random.Generator, size: int = 128) -> UInt8[np.ndarray, "S S 3"]:
    """Brown cardboard with a tape strip and a printed logo block."""
    shade = fractal_noise(rng, size, 4, 8)
    rgb = _to_rgb(shade, (140, 100, 60), (200, 155, 100)).astype(np.float64)
    c = size // 2
    half = size // 12
    rgb[:, c - half : c + half] = rgb[:, c - half : c + half] * 0.6 + np.array([200, 190, 160]) * 0.4  # tape
    y0, x0 = rng.integers(size // 8, size // 3, 2)
    rgb[y0 : y0 + size // 6, x0 : x0 + size // 5] = rng.uniform(20, 120, 3)  # logo
    return np.clip(rgb, 0, 255).astype(np.uint8)


def fabric(rng: np.random.Generator, size: int = 128) -> UInt8[np.ndarray, "S S 3"]:
    """Checked fabric (cushions, a rug)."""
    y, x = np.mgrid[0:size, 0:size] / size
    n = rng.integers(4, 10)
    check = ((np.floor(x * n) + np.floor(y * n)) % 2).astype(float)
    shade = np.clip(0.6 * check + 0.3 * fractal_noise(rng, size, 3, 16), 0, 1)
    return _to_rgb(shade, rng.uniform(20, 120, 3), rng.uniform(120, 255, 3))


def book_cover(rng: np.random.Generator, size: int = 64) -> UInt8[np.ndarray, "S S 3"]:
    """A coloured cover with a title band."""
    rgb = np.empty((size, size, 3))
    rgb[:] = rng.uniform(30, 220, 3)
    band = slice(size // 3, size // 3 + size // 6)
    rgb[band] = rng.uniform(180, 255, 3)
    rgb *= (0.85 + 0.3 * fractal_noise(rng, size, 3, 8))[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)
