"""Camera intrinsics and the train / val trajectories through the synthetic room.

Train: one smooth loop around the room on an ellipse at 1.3-1.6 m eye height, looking at a target that wanders
around the room's centre. Val (held-out novel views): loops at other heights (~0.9 m and ~2.0 m), a different ellipse,
and yaws shifted against the train poses, so no val view is a copy of a train view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """OPENCV pinhole (no distortion), pixel centres at i + 0.5 (nerfstudio's convention)."""

    width: int
    height: int
    fov_x_deg: float = 60.0

    @property
    def fx(self) -> float:
        return self.width / 2 / math.tan(math.radians(self.fov_x_deg) / 2)

    @property
    def fy(self) -> float:
        return self.fx

    # pybullet's tiny renderer samples pixel column i at x = i and row r at y = r + 1 (it rasterizes bottom-up at
    # integer coordinates), measured by back-projecting depth onto the known floor and wall planes. With nerfstudio's
    # pixel-centre convention (rays through i + 0.5) the principal point of the rendered images is therefore
    # half a pixel off the image centre.
    @property
    def cx(self) -> float:
        return self.width / 2 + 0.5

    @property
    def cy(self) -> float:
        return self.height / 2 - 0.5

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2 * math.atan(self.height / 2 / self.fy))


Pose = Tuple[np.ndarray, np.ndarray]  # (eye, target), world metres, z up


def _wander(rng: np.random.Generator, n_terms: int = 3):
    """A smooth random periodic function of the loop angle (sum of a few seeded sines)."""
    freqs = rng.integers(1, 4, n_terms)
    phases = rng.uniform(0, 2 * np.pi, n_terms)
    amps = rng.uniform(0.5, 1.0, n_terms)
    amps /= amps.sum()
    return lambda angle: float(np.sum(amps * np.sin(freqs * angle + phases)))


def _loop(rng: np.random.Generator, n: int, semi_x: float, semi_y: float, height: float, height_swing: float,
          start: float, target_spread: float, target_z: float) -> List[Pose]:
    wx, wy, wz, wh = (_wander(rng) for _ in range(4))
    poses = []
    for i in range(n):
        angle = start + 2 * np.pi * i / n
        eye = np.array([semi_x * np.cos(angle), semi_y * np.sin(angle), height + height_swing * wh(angle)])
        target = np.array([target_spread * wx(angle), target_spread * wy(angle), target_z + 0.15 * wz(angle)])
        poses.append((eye, target))
    return poses


def trajectories(rng: np.random.Generator, room_width: float, room_depth: float, n_train: int, n_val: int
                 ) -> Tuple[List[Pose], List[Pose]]:
    """(train poses, val poses) as (eye, target) pairs inside a room centred at the origin."""
    semi_x = room_width / 2 - 0.9
    semi_y = room_depth / 2 - 0.85
    start = float(rng.uniform(0, 2 * np.pi))
    train = _loop(rng, n_train, semi_x, semi_y, 1.45, 0.12, start, 1.0, 0.6)
    n_low = n_val // 2
    step = 2 * np.pi / max(n_train, 1)
    val_low = _loop(rng, n_low, semi_x * 0.85, semi_y * 0.85, 0.9, 0.05, start + 0.37 * step + 0.5, 0.9, 0.45)
    val_high = _loop(rng, n_val - n_low, semi_x * 1.05, semi_y * 1.05, 2.0, 0.05, start + 0.61 * step + 2.0, 0.7,
                     0.4)
    return train, val_low + val_high
