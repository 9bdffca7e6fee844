"""FastSAM checkpoints for tests, without a download: a YOLOv8-seg model built from ultralytics' yaml."""

from __future__ import annotations

from pathlib import Path

import torch


def random_fastsam_weights(path: Path, detect: bool = True) -> Path:
    """A YOLOv8-seg model built from ultralytics' yaml (random weights, no download) saved as a FastSAM checkpoint.
    With ``detect``, the heads' biases are set so that every anchor scores ~1 (class bias +8) and its mask logits
    are positive inside its box (mask coefficients and prototypes biased positive): random weights alone score every
    anchor ~0.01 and give all-zero masks, which ultralytics drops."""
    from ultralytics import YOLO

    model = YOLO("yolov8n-seg.yaml")
    head = model.model.model[-1]
    if detect:
        with torch.no_grad():
            for branch in head.cv3:
                branch[-1].bias.fill_(8.0)
            for branch in head.cv4:
                branch[-1].bias.fill_(1.0)
            head.proto.cv3.bn.bias.fill_(1.0)
    model.save(str(path))
    return path
