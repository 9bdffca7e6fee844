"""Per-frame 2D instance masks, the project's input format: ``<stem>.png`` label image (uint8/uint16, 0 = no mask,
ids arbitrary per frame) or ``<stem>.npz`` with ``masks: bool[N,H,W]`` and optional ``scores: float[N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int16, UInt16

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


def owner_map(masks: Bool[np.ndarray, "N H W"]) -> Int16[np.ndarray, "H W"]:
    """Index of the mask owning each pixel, smallest mask on top (overlapping npz stacks), -1 where none."""
    n, h, w = masks.shape
    owner = np.full((h, w), -1, dtype=np.int16)
    if n == 0:
        return owner
    for i in np.argsort(-masks.reshape(n, -1).sum(1), kind="stable"):
        owner[masks[i]] = i
    return owner


def same_picture(size: tuple[int, int], photo: tuple[int, int]) -> bool:
    """Whether an array of (height, width) ``size`` covers the photo of (height, width) ``photo`` at another scale
    (the full-size photo of a downscaled one, as ns-process-data writes images/ and images_N/: sizes floor(W / N))."""
    scale = size[1] / photo[1]
    return abs(photo[0] * scale - size[0]) <= max(1.0, scale) and abs(photo[1] * scale - size[1]) <= max(1.0, scale)


def read_mask_owner(mask_dir: Path, stem: str, height: int, width: int,
                    fix_missing: str) -> tuple[np.ndarray, int, Path]:
    """Index of the mask that owns each pixel (int16, -1 = none; smallest mask on top where masks overlap) and the
    mask count of one frame, at the file's own size, which must be the photo's (``height x width``) at any scale
    (masks of the full-size photos of a downscaled dataset). A label PNG is read without a mask stack (a 12 MP photo
    with 30 masks would need 360 MB of it)."""
    path = find_mask_file(mask_dir, stem)
    if path is None:
        fail(f"frame '{stem}' has no mask file", Path(mask_dir) / f"{stem}.png", fix_missing)
    if path.suffix.lower() == ".npz":
        masks, _ = read_masks(path)
        size = masks.shape[1:]
    else:
        labels = read_label_png(path)
        size = labels.shape
    if not same_picture(size, (height, width)):
        fail(f"masks are {size[1]}x{size[0]} but image '{stem}' is {width}x{height}", path,
             "write masks at the image's resolution (or a scaled copy of it)")
    if path.suffix.lower() == ".npz":
        return owner_map(masks), len(masks), path
    # ids by counting, not sorting (np.unique sorts all 12 M pixels of a phone photo: ~1 s a frame)
    present = np.bincount(labels.ravel(), minlength=1)
    ids = np.flatnonzero(present[1:]) + 1  # mask i is the i-th id in increasing order, as read_masks numbers them
    if len(ids) > np.iinfo(np.int16).max:
        fail(f"frame '{stem}' has {len(ids)} masks", path, "keep at most 32767 masks per frame")
    lut = np.full(len(present), -1, dtype=np.int16)
    lut[ids] = np.arange(len(ids), dtype=np.int16)
    return lut[labels], len(ids), path


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
