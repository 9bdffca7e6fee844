"""instance-loc's inputs: which frames to query, their given masks, their depth maps; one-line errors for each."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from jaxtyping import Float, Int, UInt8

from instance_nerfacto.core.dataset import Dataset, Frame
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import read_depth, read_image_size
from instance_nerfacto.core.masks import load_frame_masks, masks_to_labels


def select_frames(dataset: Dataset, pattern: Optional[str], split: Optional[str]) -> List[Frame]:
    """Query frames: every image matched by ``pattern`` must have a pose in transforms.json. Without a pattern or a
    split: the val frames when the poses list any, else all of them."""
    if pattern is None and split is None:
        split = "val" if any(dataset.meta.get(k) for k in ("val_filenames", "test_filenames")) else "all"
    if pattern is None:
        frames = dataset.split(split)
        if not frames:
            fail(f"transforms.json has no '{split}' frames", dataset.transforms_path,
                 "pass --split all, or choose images with --frames GLOB")
        return frames
    by_stem = dataset.by_stem()
    files = sorted(p for p in dataset.root.glob(pattern) if p.is_file()) if "/" in pattern else []
    if not files and "/" not in pattern:
        folders = {f.image_path.parent for f in dataset.frames}
        files = sorted(p for d in folders for p in d.glob(pattern) if p.is_file())
    if files:
        for p in files:
            if p.stem not in by_stem:
                fail(f"query image '{p.name}' has no pose in transforms.json", p,
                     "add the frame (transform_matrix + intrinsics) to transforms.json or leave it out of --frames")
        return [by_stem[p.stem] for p in files]
    frames = [f for f in dataset.frames if fnmatch.fnmatch(f.stem, pattern) or fnmatch.fnmatch(f.image_path.name,
                                                                                                  pattern)]
    if not frames:
        fail(f"no query image matches --frames '{pattern}'", dataset.root,
             "give a glob relative to --data (e.g. 'images/val_*.png') or of image stems")
    return frames


def load_given_regions(mask_dir: Path, frame: Frame) -> Int[np.ndarray, "H W"]:
    masks, _, path = load_frame_masks(mask_dir, frame.stem, frame.height, frame.width,
                                      "write <stem>.png or <stem>.npz into --masks for every query image, or segment "
                                      "with --segmenter")
    if len(masks) == 0:
        fail(f"query image '{frame.stem}' has no masks (empty mask file)", path,
             "give at least one mask per query image, or leave the image out")
    return masks_to_labels(masks, order="largest_first").astype(np.int32)


def check_image_size(frame: Frame) -> None:
    if frame.image_path.is_file():
        h, w = read_image_size(frame.image_path)
        if (h, w) != (frame.height, frame.width):
            fail(f"image is {w}x{h} but transforms.json says {frame.width}x{frame.height}", frame.image_path,
                 "fix w/h (and intrinsics) in transforms.json or resize the image")


def read_query_rgb(frame: Frame) -> UInt8[np.ndarray, "H W 3"]:
    """The query image as RGB; one-line errors for a missing or corrupt file."""
    import cv2

    if not frame.image_path.is_file():
        fail(f"image of query frame '{frame.stem}' is missing", frame.image_path, "restore it or pass --masks DIR")
    image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
    if image is None:
        fail("cannot decode image", frame.image_path, "replace the corrupt file")
    return np.ascontiguousarray(image[..., ::-1])


def query_depth_paths(query_depth: str, frames: List[Frame], poses: Optional[Path]) -> Dict[str, Path]:
    """Depth map of every query frame that is to be read at its measured depth (see ``--query-depth``)."""
    if query_depth == "off":
        return {}
    paths: Dict[str, Path] = {}
    for frame in frames:
        if frame.depth_path is None:
            if query_depth == "on":
                fail(f"query frame '{frame.stem}' lists no depth map", poses,
                     "add depth_file_path to the frame, or pass --query-depth auto / off")
            continue
        if not frame.depth_path.is_file():
            fail(f"depth map of query frame '{frame.stem}' is missing", frame.depth_path,
                 "restore the file, remove the frame's depth_file_path, or pass --query-depth off")
        paths[frame.stem] = frame.depth_path
    return paths


def load_query_depth(path: Path, frame: Frame, unit_scale: float) -> Float[np.ndarray, "H W"]:
    """Depth in metres (0 = no reading) of a query frame: a 16-bit PNG or a .npy array, as nerfstudio reads them."""
    depth = read_depth(path, unit_scale)
    if depth.shape != (frame.height, frame.width):
        fail(f"depth map is {depth.shape[-1]}x{depth.shape[0]} but the image is {frame.width}x{frame.height}", path,
             "give depth maps at the image's resolution, or pass --query-depth off")
    return depth
