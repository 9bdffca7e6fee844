"""Rasterization: final label ids ordered by mean mask area, and the per-frame uint16 label images.

Labels are numbered 1..K by decreasing mean area over the frames they appear in, and drawn in that order, so a small
object stays on top of a large one where masks overlap (the paper's rasterization order).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
from jaxtyping import Float, Int, Int16, UInt16


def order_labels(community: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"],
                 area: Float[np.ndarray, "N"]) -> tuple[Int[np.ndarray, "N"], List[Dict]]:
    """Label 1..K per node (0 = dropped) by decreasing mean area per frame, and per-label stats in that order."""
    label = np.zeros(len(community), dtype=np.int64)
    kept = community >= 0
    if not kept.any():
        return label, []
    ids, inverse = np.unique(community[kept], return_inverse=True)
    f = frame_of[kept]
    frames_per = [np.unique(f[inverse == k]) for k in range(len(ids))]
    total = np.bincount(inverse, weights=area[kept], minlength=len(ids))
    n_frames = np.array([len(x) for x in frames_per])
    mean_area = total / n_frames
    # ties broken by community id so the output does not depend on sort stability
    rank = np.lexsort((ids, -mean_area))
    new_id = np.empty(len(ids), dtype=np.int64)
    new_id[rank] = np.arange(1, len(ids) + 1)
    label[kept] = new_id[inverse]
    stats = [{"id": int(new_id[k]), "frames": int(n_frames[k]), "mean_area": round(float(mean_area[k]), 1)}
             for k in rank]
    return label, stats


def frame_labels(owner: Int16[np.ndarray, "H W"], node_labels: Int[np.ndarray, "M"]) -> UInt16[np.ndarray, "H W"]:
    """Label image of one frame from its owner map and the labels of its masks."""
    lut = np.concatenate([[0], node_labels]).astype(np.uint16)
    return lut[owner.astype(np.int64) + 1]
