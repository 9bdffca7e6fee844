"""Reading a nerfstudio dataset (transforms.json, images, depth, masks) and writing outputs atomically.

Conventions used across the project:
- ``transforms.json`` as nerfstudio writes it: shared or per-frame intrinsics (``fl_x fl_y cx cy w h``), per-frame
  ``transform_matrix`` = camera-to-world in nerfstudio's OpenGL convention (x right, y up, z backwards), optional
  ``depth_file_path`` (uint16 millimetres), optional ``train_filenames`` / ``val_filenames`` split lists.
- Frames are keyed by the image's stem (``images/frame_00012.png`` -> ``frame_00012``).
- Masks: ``<stem>.png`` label image (uint8/uint16, 0 = no mask, ids arbitrary per frame) or ``<stem>.npz`` with
  ``masks: bool[N,H,W]`` and optional ``scores: float[N]``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from jaxtyping import Bool, Float, UInt16

from instance_nerfacto.errors import fail

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
MASK_SUFFIXES = (".png", ".npz")


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

    @property
    def K(self) -> Float[np.ndarray, "3 3"]:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

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
    try:
        meta = json.loads(tpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        fail(f"transforms.json is not valid JSON ({err})", tpath, "fix or regenerate it with ns-process-data")
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
        split = "val" if stem in val_names else "train"
        if train_names and stem not in train_names and stem not in val_names:
            split = "other"
        frames.append(
            Frame(
                stem=stem,
                image_path=image_path,
                c2w=c2w,
                fx=float(_intrinsic(fr, meta, "fl_x", tpath)),
                fy=float(_intrinsic(fr, meta, "fl_y", tpath)),
                cx=float(_intrinsic(fr, meta, "cx", tpath)),
                cy=float(_intrinsic(fr, meta, "cy", tpath)),
                width=int(_intrinsic(fr, meta, "w", tpath)),
                height=int(_intrinsic(fr, meta, "h", tpath)),
                depth_path=depth_path,
                split=split,
            )
        )
    if check_files:
        for f in frames:
            if not f.image_path.is_file():
                fail(f"image of frame '{f.stem}' listed in transforms.json is missing", f.image_path,
                     "restore the file or remove the frame from transforms.json")
    return Dataset(root=root, frames=frames, meta=meta, transforms_path=tpath)


def read_image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file without decoding all of it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as err:  # PIL raises many types for corrupt files
        fail(f"cannot read image ({type(err).__name__})", path, "replace the corrupt file")


def read_label_png(path: Path) -> UInt16[np.ndarray, "H W"]:
    """Read a label PNG (8 or 16 bit, grey; RGB(A) packed as R + 256*G is not accepted)."""
    import cv2
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        fail("label file is missing", path, "create it or remove the frame")
    # Pillow first: libpng inside OpenCV prints its own warnings to stderr on a corrupt file (breaking the one-line
    # error), and Pillow decodes 8/16-bit grey PNGs directly.
    try:
        with Image.open(path) as im:
            im.load()
            # "P": palette PNGs (DAVIS / YouTube-VOS annotations) carry the id in the palette index
            if im.mode in ("L", "P", "I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.uint16)
    except Exception as err:  # Pillow raises many types for corrupt files
        fail(f"cannot decode PNG (corrupt or not a PNG: {type(err).__name__})", path,
             "re-export the file as an 8/16-bit grey PNG")
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        fail("cannot decode PNG (corrupt or not a PNG)", path, "re-export the file as an 8/16-bit grey PNG")
    if arr.ndim == 3:
        if arr.shape[2] == 4 and np.all(arr[..., 3] == arr[..., 3].flat[0]):
            arr = arr[..., :3]
        if arr.ndim == 3 and np.all(arr == arr[..., :1]):
            arr = arr[..., 0]
        else:
            fail("label PNG is colour, not a single-channel id image", path,
                 "write masks as 8/16-bit grey PNGs with one id per pixel (0 = no mask)")
    if arr.dtype not in (np.uint8, np.uint16):
        fail(f"label PNG has dtype {arr.dtype}", path, "use 8 or 16-bit unsigned PNG")
    return arr.astype(np.uint16)


def read_depth(path: Path, scale: float = 1e-3) -> Float[np.ndarray, "H W"]:
    """Depth in metres from a uint16 millimetre PNG (0 = invalid -> 0)."""
    arr = read_label_png(path)
    return arr.astype(np.float32) * scale


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
    masks: Bool[np.ndarray, "N H W"], order: Optional[Sequence[int]] = None
) -> UInt16[np.ndarray, "H W"]:
    """Rasterize a mask stack to a label image (ids 1..N); masks later in ``order`` are drawn on top."""
    n, h, w = masks.shape
    out = np.zeros((h, w), dtype=np.uint16)
    for i in order if order is not None else range(n):
        out[masks[i]] = i + 1
    return out


# ---------------------------------------------------------------------------------------------------------------
# atomic outputs: write to a temporary name in the same folder, then rename into place


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path | str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_png(path: Path | str, image: np.ndarray) -> None:
    """Write uint8/uint16 grey or uint8 RGB (given as RGB) PNG atomically."""
    import cv2

    if image.ndim == 3:
        image = image[..., ::-1]  # cv2 writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())


def atomic_save_npz(path: Path | str, **arrays) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
