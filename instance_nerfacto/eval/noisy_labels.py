"""Stand-in pseudolabels for developing and benchmarking InstanceLift without InstanceMap: the rendered scene's
consistent gt ids with per-frame noise (objects dropped, blocks of pixels relabelled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from instance_nerfacto.core.files import atomic_write_json, read_label_png, write_label_png


def make_noisy_pseudolabels(gt_dir: Path, out_dir: Path, drop: float = 0.1, blocks: int = 3, block_size: int = 8,
                            seed: int = 0) -> int:
    """Write ``out_dir/<stem>.png`` for every ``gt_dir/<stem>.png`` and ``labels.json``; returns num_labels.

    Each frame loses each of its objects with probability ``drop`` (set to 0 = unlabelled) and gets ``blocks``
    square blocks relabelled to another id of the same frame (conflicting labels across views).
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    num_labels = 0
    for path in sorted(Path(gt_dir).glob("*.png")):
        gt = read_label_png(path).astype(np.int64)
        ids = [int(i) for i in np.unique(gt) if i > 0]
        labels = gt.copy()
        for label in ids:
            if rng.random() < drop:
                labels[gt == label] = 0
        height, width = gt.shape
        for _ in range(blocks if ids else 0):
            y, x = rng.integers(0, max(1, height - block_size)), rng.integers(0, max(1, width - block_size))
            labels[y : y + block_size, x : x + block_size] = rng.choice(ids)
        num_labels = max(num_labels, int(gt.max()))
        write_label_png(out_dir / path.name, labels)
    atomic_write_json(out_dir / "labels.json", {"num_labels": num_labels, "source": "gt with noise", "seed": seed})
    return num_labels
