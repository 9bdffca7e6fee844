"""Simulated SAM-like 2D frontend: per-frame instance masks with view-inconsistent ids and SAM's typical errors.

Starting from the ground-truth id image of a frame, the frontend makes the mistakes a class-agnostic segmenter makes:
- ids: fresh random non-zero uint16 values in every frame (no id means anything across frames);
- splits: a straight cut through a large object (and walls/floor split into parts now and then);
- merges: touching objects segmented as one (an object with its table, two neighbours on a shelf);
- misses: objects without any mask (more often for tiny ones), left unlabelled;
- boundary noise: a smooth random warp of all edges plus per-mask erosion/dilation;
- spurious masks: a few random blobs per frame.
Some objects are "hard" for the whole sequence (missed or merged in many frames): independent per-frame errors
average out over a sequence, persistent ones are what make real association hard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
from jaxtyping import Bool, UInt16


@dataclass(frozen=True)
class FrontendNoise:
    """Error rates of the simulated frontend (per frame, per object unless said otherwise)."""

    miss_prob: float = 0.13
    miss_prob_small: float = 0.30
    """Objects smaller than ``tiny_area_frac`` of the image are missed this often; between ``tiny_area_frac`` and
    ``small_area_frac`` the rate falls linearly to ``miss_prob`` (a point grid misses an object by degrees)."""
    tiny_area_frac: float = 0.0005
    small_area_frac: float = 0.002
    split_prob: float = 0.12
    """Objects larger than ``large_area_frac`` of the image are cut in two this often."""
    large_area_frac: float = 0.02
    stuff_split_prob: float = 0.3
    merge_prob: float = 0.10
    """Each pair of touching objects is merged into one mask this often."""
    hard_fraction: float = 0.2
    """Share of things that are hard for the whole sequence: missed or merged with a neighbour much more often."""
    hard_miss_prob: float = 0.45
    hard_merge_prob: float = 0.45
    warp_px: float = 0.6
    """Amplitude of the smooth boundary warp at 160 px image width (scaled with the image)."""
    erode_dilate_prob: float = 0.3
    spurious_range: tuple = (1, 4)


@dataclass
class ObjectTraits:
    is_thing: bool
    hard: bool


def draw_traits(rng: np.random.Generator, is_thing: Dict[int, bool], noise: FrontendNoise) -> Dict[int, ObjectTraits]:
    """Per-instance persistent traits, drawn once per scene.

    Exactly ``round(hard_fraction * things)`` things are hard (not a coin per object), so every seed is about as
    hard as the next: a coin flip made one room's oracle PQ swing by 0.1 between seeds.
    """
    things = [gid for gid, thing in sorted(is_thing.items()) if thing]
    n_hard = int(round(noise.hard_fraction * len(things)))
    hard = {int(g) for g in rng.permutation(things)[:n_hard]} if things else set()
    return {gid: ObjectTraits(is_thing=thing, hard=gid in hard) for gid, thing in sorted(is_thing.items())}


def _smooth_field(rng: np.random.Generator, height: int, width: int, cell_px: int):
    import cv2

    small = rng.standard_normal((max(2, height // cell_px + 2), max(2, width // cell_px + 2))).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), -2.0, 2.0)


def warp_labels(labels: UInt16[np.ndarray, "H W"], rng: np.random.Generator, amplitude_px: float
                ) -> UInt16[np.ndarray, "H W"]:
    """Move every edge by a smooth random displacement (nearest-neighbour resampling keeps ids intact)."""
    import cv2

    h, w = labels.shape
    cell_px = max(8, w // 12)
    dx = _smooth_field(rng, h, w, cell_px) * amplitude_px
    dy = _smooth_field(rng, h, w, cell_px) * amplitude_px
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(labels, grid_x + dx, grid_y + dy, interpolation=cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REPLICATE)


def _straight_cut(mask: Bool[np.ndarray, "H W"], rng: np.random.Generator) -> List[np.ndarray]:
    ys, xs = np.nonzero(mask)
    pick = rng.integers(len(ys))
    cy, cx = 0.5 * (ys.mean() + ys[pick]), 0.5 * (xs.mean() + xs[pick])
    angle = rng.uniform(0, np.pi)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    side = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle) > 0
    parts = [mask & side, mask & ~side]
    return [p for p in parts if p.sum() >= max(4, 0.1 * mask.sum())] or [mask]


def _touching_pairs(labels: UInt16[np.ndarray, "H W"]) -> List[tuple]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = (a != b) & (a > 0) & (b > 0)
        for u, v in zip(a[diff].tolist(), b[diff].tolist()):
            pairs.add((min(u, v), max(u, v)))
    return sorted(pairs)


def simulate_masks(gt: UInt16[np.ndarray, "H W"], traits: Dict[int, ObjectTraits], rng: np.random.Generator,
                   noise: FrontendNoise = FrontendNoise()) -> UInt16[np.ndarray, "H W"]:
    """One frame's frontend label image (uint16, 0 = no mask, random ids) from its ground-truth ids."""
    import cv2

    h, w = gt.shape
    scale = w / 160.0
    warped = warp_labels(gt, rng, noise.warp_px * scale)
    ids, areas = np.unique(warped, return_counts=True)
    areas = dict(zip(ids.tolist(), areas.tolist()))
    present = [gid for gid in ids.tolist() if gid != 0 and gid in traits]

    # merges first (on whole objects): union-find over touching pairs of present ids
    parent = {gid: gid for gid in present}

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in _touching_pairs(warped):
        if a not in parent or b not in parent:
            continue
        if not (traits[a].is_thing and traits[b].is_thing):
            continue  # SAM keeps objects apart from walls and floor
        if root(a) != a or root(b) != b or any(root(o) in (a, b) for o in present if o not in (a, b)):
            continue  # only pairs: chains would make one mask of a whole table scene
        # the smaller object is the one swallowed, so its trait decides: a hard shelf must not swallow every object
        # standing on it, a hard cup is often swallowed by its table
        hard = traits[a if areas[a] < areas[b] else b].hard
        if rng.random() < (noise.hard_merge_prob if hard else noise.merge_prob):
            parent[a] = b

    # misses (a missed object that was merged is still covered by the merged mask, as with SAM)
    missed = set()
    for gid in present:
        thing = traits[gid].is_thing
        tiny, small = noise.tiny_area_frac * h * w, noise.small_area_frac * h * w
        smallness = float(np.clip((small - areas[gid]) / max(small - tiny, 1e-9), 0.0, 1.0))  # 1 tiny .. 0 small
        large = areas[gid] > noise.large_area_frac * h * w
        prob = noise.miss_prob + smallness * (noise.miss_prob_small - noise.miss_prob)
        if traits[gid].hard and not large:  # a segmenter rarely drops a whole table, often a small object
            prob = noise.hard_miss_prob
        if not thing:
            prob = 0.03
        if rng.random() < prob and root(gid) == gid and all(root(o) != gid for o in present if o != gid):
            missed.add(gid)

    groups: Dict[int, List[int]] = {}
    for gid in present:
        if gid not in missed:
            groups.setdefault(root(gid), []).append(gid)

    kernel = np.ones((3, 3), np.uint8)
    segments: List[np.ndarray] = []
    for members in groups.values():
        mask = np.isin(warped, members)
        roll = rng.random()
        if roll < noise.erode_dilate_prob / 2:
            eroded = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            mask = eroded if eroded.sum() >= 4 else mask
        elif roll < noise.erode_dilate_prob:
            mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        area = mask.sum()
        all_stuff = not any(traits[m].is_thing for m in members)
        split_prob = noise.stuff_split_prob if all_stuff else noise.split_prob
        if area > noise.large_area_frac * h * w and rng.random() < split_prob:
            segments.extend(_straight_cut(mask, rng))
        else:
            segments.append(mask)

    # spurious blobs: small random ellipses anywhere
    for _ in range(int(rng.integers(noise.spurious_range[0], noise.spurious_range[1] + 1))):
        blob = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.integers(2, 6) * scale) + 1, int(rng.integers(2, 6) * scale) + 1)
        cv2.ellipse(blob, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        segments.append(blob.astype(bool))

    return rasterize(segments, rng)


def rasterize(segments: Sequence[Bool[np.ndarray, "H W"]], rng: np.random.Generator) -> UInt16[np.ndarray, "H W"]:
    """Largest masks first so small ones stay on top; each mask gets a fresh random non-zero uint16 id."""
    if not segments:
        raise ValueError("no segments to rasterize")
    h, w = segments[0].shape
    out = np.zeros((h, w), dtype=np.uint16)
    ids = rng.choice(np.arange(1, 65536, dtype=np.int64), size=len(segments), replace=False)
    order = np.argsort([-int(s.sum()) for s in segments], kind="stable")
    for rank, idx in enumerate(order):
        out[segments[idx]] = ids[rank]
    return out
