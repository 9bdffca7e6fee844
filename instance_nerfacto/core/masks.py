"""Per-frame 2D instance masks, the project's input format: ``<stem>.png`` label image (uint8/uint16, 0 = no mask,
ids arbitrary per frame) or ``<stem>.npz`` with ``masks: bool[N,H,W]`` and optional ``scores: float[N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
from jaxtyping import Bool, Float, UInt16

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import read_label_png

MASK_SUFFIXES = (".png", ".npz")


def find_mask_file(mask_dir: Path, stem: str) -> Optional[Path]:
    for suffix in (".png", ".PNG", ".npz"):
        p = mask_dir / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def read_masks(path: Path) -> tuple[Bool[np.ndarray, "N H W"], Float[np.ndarray, "N"]]:
    """Masks of one frame as a boolean stack (N,H,W) and scores (N,), from a label PNG or an npz stack."""
    if path.suffix.lower() == ".npz":
        try:
            data = np.load(path)
            masks = np.asarray(data["masks"]).astype(bool)
            scores = np.asarray(data["scores"], dtype=np.float32) if "scores" in data else np.ones(len(masks))
        except Exception as err:
            fail(f"cannot read mask stack ({type(err).__name__}: {err})", path,
                 "write an npz with masks: bool[N,H,W] and optional scores: float[N]")
        if masks.ndim != 3:
            fail(f"mask stack has shape {masks.shape}", path, "masks must be bool[N,H,W]")
        keep = masks.reshape(len(masks), -1).any(1)
        return masks[keep], scores[keep].astype(np.float32)
    labels = read_label_png(path)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    masks = labels[None] == ids[:, None, None]
    return masks, np.ones(len(ids), dtype=np.float32)


def masks_to_labels(
    masks: Bool[np.ndarray, "N H W"], order: Optional[Sequence[int] | Literal["largest_first"]] = None
) -> UInt16[np.ndarray, "H W"]:
    """Rasterize a (possibly overlapping) mask stack to a label image: mask i gets id i + 1, masks later in ``order``
    are drawn on top. ``"largest_first"`` draws the largest first, so small masks stay visible where they overlap."""
    n, h, w = masks.shape
    if isinstance(order, str):
        order = np.argsort(-masks.reshape(n, h * w).sum(1), kind="stable")  # h * w, not -1: n may be 0
    out = np.zeros((h, w), dtype=np.uint16)
    for i in order if order is not None else range(n):
        out[masks[i]] = i + 1
    return out


def load_frame_masks(mask_dir: Path, stem: str, height: int, width: int,
                     fix_missing: str) -> tuple[Bool[np.ndarray, "N H W"], Float[np.ndarray, "N"], Path]:
    """The masks of one frame, found by its image stem and checked against the image size; one-line errors name the
    file (``fix_missing`` says what to do when there is none)."""
    path = find_mask_file(mask_dir, stem)
    if path is None:
        fail(f"frame '{stem}' has no mask file", Path(mask_dir) / f"{stem}.png", fix_missing)
    masks, scores = read_masks(path)
    if masks.shape[1:] != (height, width):
        fail(f"masks are {masks.shape[2]}x{masks.shape[1]} but image '{stem}' is {width}x{height}", path,
             "write masks at the image's resolution")
    return masks, scores, path
