"""Files the project reads and writes: label and depth PNGs, image sizes, and atomic outputs (a temporary name in the
same folder, then a rename, so an interrupted command never leaves a half-written file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from jaxtyping import Float, UInt16

from instance_nerfacto.core.errors import InputError, fail

MAX_LABEL_ID = 65535
"""The largest id a label PNG holds (uint16)."""


def read_json(path: Path | str, what: str, fix: str, expect: Optional[type] = dict):
    """The content of a JSON file that exists, with one-line errors naming it as ``what`` ("transforms.json", "the
    instances file"...): unreadable, not JSON, or (with ``expect``) not of that type (a JSON object by default).
    ``fix`` is the error's what-to-do. A missing file is the caller's to report (its fix differs per file)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        fail(f"{what} is not valid JSON ({err})", path, fix)
    except OSError as err:
        fail(f"{what} cannot be read ({err.strerror})", path, fix)
    if expect is not None and not isinstance(obj, expect):
        kind = "a JSON object" if expect is dict else f"a JSON {expect.__name__}"
        fail(f"{what} is not {kind}", path, fix)
    return obj


def try_read_json(path: Path | str):
    """The content of a JSON file, or None when it is missing, unreadable or not JSON: for files that are optional
    or reported by another reader."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


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
            if im.mode in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im)
                if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() > 65535):
                    fail("label PNG holds ids outside 0..65535", path, "write 8 or 16-bit unsigned grey PNGs")
                return arr.astype(np.uint16)
    except InputError:
        raise
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


def write_label_png(path: Path | str, ids: np.ndarray) -> None:
    """Write a label image (one id per pixel, 0 = none) as the uint16 grey PNG :func:`read_label_png` reads: masks,
    pseudolabels, rendered and localized ids. Written to a temporary name and renamed; ids that do not fit uint16
    are an error, never wrapped around."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool):
        raise TypeError(f"a label image is a 2D integer array, got {ids.dtype} {ids.shape} for {path}")
    if ids.dtype != np.uint16 and ids.size and (int(ids.min()) < 0 or int(ids.max()) > MAX_LABEL_ID):
        fail(f"label ids {int(ids.min())}..{int(ids.max())} do not fit a 16-bit label PNG", path,
             f"keep the ids within 0..{MAX_LABEL_ID}")
    atomic_write_png(path, ids.astype(np.uint16, copy=False))


DEFAULT_DEPTH_UNIT_SCALE = 1e-3
"""Metres per stored depth unit unless a run says otherwise: nerfstudio's ``depth_unit_scale_factor`` default
(millimetre PNGs, what ns-process-data and the synthetic rooms write)."""


def depth_unit_scale(metadata: dict) -> float:
    """Metres per stored depth unit of a run's dataset, as its dataparser recorded it (``depth_unit_scale_factor``
    in the dataparser outputs' metadata)."""
    return float(metadata.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE))


def read_depth(path: Path | str, scale: float = DEFAULT_DEPTH_UNIT_SCALE,
               size: Optional[tuple[int, int]] = None) -> Float[np.ndarray, "H W"]:
    """A depth map times ``scale`` (metres per stored unit, or that times the dataparser's scale for the model's
    units), float32, 0 = no reading: the one reader of depth maps. Formats as nerfstudio's depth loader takes them,
    a ``.npy`` array or an 8/16-bit grey PNG (PNGs are decoded as label PNGs are, with one-line errors). With
    ``size`` (height, width), resized with nearest neighbours as nerfstudio resizes depth for a downscaled camera."""
    path = Path(path)
    if not path.is_file():
        fail("depth map is missing", path, "restore the file or remove the frames' depth_file_path entries")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path).astype(np.float32)
        except (OSError, ValueError) as err:
            fail(f"cannot read depth map ({err.__class__.__name__})", path, "replace the corrupt file")
        raw = raw[..., 0] if raw.ndim == 3 else raw
    else:
        raw = read_label_png(path).astype(np.float32)
    depth = raw * scale
    if size is not None and depth.shape != tuple(size):
        import cv2

        depth = cv2.resize(depth, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    # a NaN or negative reading in a .npy map is no reading, as 0 is (every consumer masks depth > 0)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32, copy=False)


MAX_DEPTH_UNITS = 65535
"""The largest reading a 16-bit depth PNG holds (65.535 m in millimetres)."""


def write_depth_png(path: Path | str, depth: np.ndarray, scale: float = DEFAULT_DEPTH_UNIT_SCALE) -> None:
    """Write a depth map in metres as the 16-bit grey PNG :func:`read_depth` reads back with the same ``scale``
    (metres per stored unit; millimetres by default, as ns-process-data writes them): the one writer of depth maps.
    Readings that round to 0 or below, beyond 16 bits or are not finite are stored as 0 (no reading). Written to a
    temporary name and renamed."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise TypeError(f"a depth map is a 2D array, got {depth.shape} for {path}")
    units = np.round(depth * (1.0 / scale))
    units[~np.isfinite(units) | (units <= 0) | (units > MAX_DEPTH_UNITS)] = 0  # out of range is no reading
    atomic_write_png(path, units.astype(np.uint16))


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


def atomic_save_npy(path: Path | str, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())
