"""The dataset: transforms.json read into frames (poses, intrinsics, depth paths, split), with one-line errors.

Conventions used across the project:
- ``transforms.json`` as nerfstudio writes it: shared or per-frame intrinsics (``fl_x fl_y cx cy w h``), per-frame
  ``transform_matrix`` = camera-to-world in nerfstudio's OpenGL convention (x right, y up, z backwards), optional
  ``depth_file_path`` (uint16 millimetres), optional ``train_filenames`` / ``val_filenames`` split lists.
- Frames are keyed by the image's stem (``images/frame_00012.png`` -> ``frame_00012``).
- Masks: ``<stem>.png`` label image (uint8/uint16, 0 = no mask, ids arbitrary per frame) or ``<stem>.npz`` with
  ``masks: bool[N,H,W]`` and optional ``scores: float[N]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from jaxtyping import Float

from instance_nerfacto.core.camera import CameraModel
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import read_json, try_read_json

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Frame:
    """One posed image of a dataset."""

    stem: str
    image_path: Path
    c2w: Float[np.ndarray, "4 4"]
    """Camera-to-world, OpenGL convention (nerfstudio's)."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    depth_path: Optional[Path] = None
    split: str = "train"
    fisheye: bool = False
    """nerfstudio's CameraType.FISHEYE (transforms.json camera_model OPENCV_FISHEYE); else PERSPECTIVE."""
    distortion: Tuple[float, ...] = (0.0,) * 6
    """k1 k2 k3 k4 p1 p2, nerfstudio's order (all 0: an ideal pinhole)."""

    @property
    def camera(self) -> CameraModel:
        """The frame's camera model: every projection of its pixels goes through it."""
        return CameraModel(self.fx, self.fy, self.cx, self.cy, self.width, self.height, self.fisheye,
                           tuple(self.distortion))

    @property
    def K(self) -> Float[np.ndarray, "3 3"]:
        return self.camera.K

    @property
    def c2w_cv(self) -> Float[np.ndarray, "4 4"]:
        """Camera-to-world in OpenCV convention (x right, y down, z forward)."""
        return self.c2w @ OPENGL_TO_OPENCV

    @property
    def w2c_cv(self) -> Float[np.ndarray, "4 4"]:
        return np.linalg.inv(self.c2w_cv)


@dataclass
class Dataset:
    root: Path
    frames: List[Frame]
    meta: Dict = field(default_factory=dict)
    transforms_path: Optional[Path] = None
    """The JSON the poses came from: root/transforms.json, or a pose file passed directly."""

    @property
    def has_depth(self) -> bool:
        return bool(self.frames) and all(f.depth_path is not None and f.depth_path.exists() for f in self.frames)

    def by_stem(self) -> Dict[str, Frame]:
        return {f.stem: f for f in self.frames}

    def split(self, name: str) -> List[Frame]:
        if name == "all":
            return list(self.frames)
        return [f for f in self.frames if f.split == name]


MAX_AUTO_RESOLUTION = 1600
"""nerfstudio's dataparser (nerfstudio-data) trains on images_N when the photos' longest side exceeds this."""


def training_downscale(dataset: Dataset, requested: Optional[int] = None) -> int:
    """The downscale factor nerfstudio's dataparser trains this dataset at: ``requested`` (its --downscale-factor),
    else its automatic choice: halve while the first image's longest side exceeds 1,600 px and the next images_N
    folder (written by ns-process-data) holds that image."""
    if requested is not None:
        if requested < 1:
            fail(f"downscale factor {requested} is below 1", None, "pass --downscale 1 (full size) or 2, 4, 8")
        return requested
    from PIL import Image

    first = dataset.frames[0].image_path
    with Image.open(first) as image:
        longest = max(image.size)
    factor = 1
    while longest / factor > MAX_AUTO_RESOLUTION and (dataset.root / f"images_{factor * 2}" / first.name).exists():
        factor *= 2
    return factor


def downscaled(dataset: Dataset, factor: int) -> Dataset:
    """The dataset as nerfstudio trains it at ``factor``: images (and depth maps) from images_N/ (depths_N/),
    intrinsics scaled by 1/N and sizes floor(W/N) x floor(H/N) (``Cameras.rescale_output_resolution``)."""
    if factor == 1:
        return dataset
    frames = []
    for frame in dataset.frames:
        image = dataset.root / f"images_{factor}" / frame.image_path.name
        if not image.is_file():
            fail(f"downscale {factor} needs images_{factor}/, which has no copy of '{frame.image_path.name}'", image,
                 "run ns-process-data (it writes images_2/4/8), or pass --downscale 1")
        depth = frame.depth_path
        if depth is not None and (dataset.root / f"depths_{factor}" / depth.name).is_file():
            depth = dataset.root / f"depths_{factor}" / depth.name
        frames.append(replace(frame, image_path=image, depth_path=depth, fx=frame.fx / factor, fy=frame.fy / factor,
                              cx=frame.cx / factor, cy=frame.cy / factor, width=frame.width // factor,
                              height=frame.height // factor))
    return replace(dataset, frames=frames)


def _intrinsic(frame: Dict, meta: Dict, key: str, path: Path):
    if key in frame:
        return frame[key]
    if key in meta:
        return meta[key]
    fail(f"transforms.json has no '{key}' for frame {frame.get('file_path')}", path,
         "give shared or per-frame intrinsics as nerfstudio writes them")


def load_dataset(root: Path | str, check_files: bool = True) -> Dataset:
    """Load a nerfstudio dataset folder, or a pose file in transforms.json's format (intrinsics and camera-to-world
    per frame, paths relative to the file's folder); raises InputError with one actionable line on any problem."""
    root = Path(root)
    if root.suffix.lower() == ".json" and root.is_file():
        tpath, root = root, root.parent
    elif not root.is_dir():
        fail("dataset folder does not exist", root, "pass --data the folder that holds transforms.json")
    else:
        tpath = root / "transforms.json"
    if not tpath.is_file():
        fail("missing transforms.json", tpath, "run ns-process-data first, or point --data at a nerfstudio dataset")
    meta = read_json(tpath, "transforms.json", "fix or regenerate it with ns-process-data")
    raw_frames = meta.get("frames")
    if not isinstance(raw_frames, list) or not raw_frames:
        fail("transforms.json lists no frames", tpath, "regenerate it with ns-process-data")
    train_names = {Path(n).stem for n in meta.get("train_filenames", [])}
    val_names = {Path(n).stem for n in meta.get("val_filenames", []) + meta.get("test_filenames", [])}
    frames: List[Frame] = []
    seen = set()
    for i, fr in enumerate(raw_frames):
        if "file_path" not in fr or "transform_matrix" not in fr:
            fail(f"frame {i} of transforms.json lacks file_path or transform_matrix", tpath,
                 "every frame needs both")
        image_path = root / fr["file_path"]
        stem = image_path.stem
        if stem in seen:
            fail(f"two frames share the image stem '{stem}'", tpath, "give every image a unique file name")
        seen.add(stem)
        c2w = np.asarray(fr["transform_matrix"], dtype=np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        if c2w.shape != (4, 4):
            fail(f"frame '{stem}' has a transform_matrix of shape {c2w.shape}", tpath, "it must be 4x4 or 3x4")
        if not np.all(np.isfinite(c2w)):
            fail(f"frame '{stem}' has a NaN or infinite pose", tpath, "fix or drop that frame's transform_matrix")
        rot = c2w[:3, :3]
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-3) or np.linalg.det(rot) < 0:
            fail(f"frame '{stem}' has a non-rigid pose (rotation not orthonormal)", tpath,
                 "poses must be rigid camera-to-world matrices")
        depth_path = root / fr["depth_file_path"] if fr.get("depth_file_path") else None
        camera = CameraModel.from_transforms(fr, meta, tpath, lambda key: _intrinsic(fr, meta, key, tpath))
        split = "val" if stem in val_names else "train"
        if train_names and stem not in train_names and stem not in val_names:
            split = "other"
        frames.append(
            Frame(
                stem=stem,
                image_path=image_path,
                c2w=c2w,
                fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy, width=camera.width, height=camera.height,
                depth_path=depth_path,
                split=split,
                fisheye=camera.fisheye,
                distortion=camera.distortion,
            )
        )
    if check_files:
        for f in frames:
            if not f.image_path.is_file():
                fail(f"image of frame '{f.stem}' listed in transforms.json is missing", f.image_path,
                     "restore the file or remove the frame from transforms.json")
    return Dataset(root=root, frames=frames, meta=meta, transforms_path=tpath)


def check_depth_listing(transforms_path: Path | str) -> None:
    """nerfstudio's dataparser needs ``depth_file_path`` on every frame or on none (it stops with an assertion
    otherwise): say so in one line, with what to do, before it is reached."""
    path = Path(transforms_path)
    meta = try_read_json(path)
    if not isinstance(meta, dict):
        return  # missing or unreadable: the loaders that need it report that
    frames = meta.get("frames", [])
    listed = sum(1 for frame in frames if isinstance(frame, dict) and "depth_file_path" in frame)
    if 0 < listed < len(frames):
        fail(f"transforms.json lists depth maps for {listed} of {len(frames)} frames; nerfstudio needs all or none",
             path, "give every frame its depth_file_path (or none); to query new photos without depth, list them in "
                   "a pose file of their own (transforms.json format, any name) and pass it as instance-loc --data")
