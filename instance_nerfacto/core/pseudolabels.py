"""The pseudolabel format, InstanceMap's output and InstanceLift's input, in one place.

``<data>/pseudolabels/<image stem>.png``: uint16, 0 = unlabelled, 1..K = 3D-consistent instance ids.
``<data>/pseudolabels/labels.json``: written last by instance-map (its presence marks a complete output)::

    {"version": 1, "num_labels": K, "labels": [{"id": 1, "frames": 12, "mean_area": 830.5}, ...],
     "frames": [stems...], "matcher": ..., "parameters": {...}, "timings_s": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import MAX_LABEL_ID, atomic_write_json, read_json, try_read_json

FOLDER_NAME = "pseudolabels"
LABELS_JSON = "labels.json"
MAX_LABELS = MAX_LABEL_ID
"""Ids are stored in uint16 PNGs."""
KEY_NUM_LABELS = "num_labels"
KEY_LABELS = "labels"
KEY_FRAMES = "frames"


def default_pseudolabels_dir(data: Path | str) -> Path:
    """``<data>/pseudolabels`` where ``data`` is the dataset folder (or its transforms.json)."""
    data = Path(data)
    root = data.parent if data.suffix == ".json" else data
    return root / FOLDER_NAME


def write_labels_json(folder: Path | str, num_labels: int, labels: List[Dict], frames: List[str], **extra) -> Dict:
    """Write ``labels.json`` atomically; call it after every PNG is in place. Returns what was written."""
    # "K" is the paper's (and DESIGN.md's) name for the number of labels; num_labels is what readers use
    meta = {"version": 1, KEY_NUM_LABELS: int(num_labels), "K": int(num_labels), KEY_LABELS: labels,
            KEY_FRAMES: list(frames), **extra}
    atomic_write_json(Path(folder) / LABELS_JSON, meta)
    return meta


def read_labels_json(folder: Path | str) -> Dict:
    """The parsed ``labels.json`` of a pseudolabel folder; InputError when it is missing or not JSON."""
    path = Path(folder) / LABELS_JSON
    if not path.is_file():
        fail("pseudolabel folder has no labels.json", path,
             "run instance-map first, or pass --pipeline.datamanager.pseudolabels-dir pointing at its output")
    return read_json(path, "labels.json", "re-run instance-map")


def previous_frames(folder: Path | str) -> List[str]:
    """Stems listed by an existing ``labels.json`` (empty when there is none or it is unreadable): the PNGs a new
    run must remove when it no longer writes them."""
    meta = try_read_json(Path(folder) / LABELS_JSON)
    return list(meta.get(KEY_FRAMES, [])) if isinstance(meta, dict) else []


def read_num_labels(folder: Path | str) -> int:
    """K from ``labels.json``; InputError when missing or malformed."""
    path = Path(folder) / LABELS_JSON
    meta = read_labels_json(folder)
    try:
        num_labels = int(meta[KEY_NUM_LABELS])
    except (ValueError, KeyError, TypeError) as err:
        fail(f"labels.json has no valid integer '{KEY_NUM_LABELS}' ({err})", path, "re-run instance-map")
    if num_labels < 1:
        fail(f"labels.json says {KEY_NUM_LABELS} = {num_labels}: nothing to train on", path,
             "check instance-map's output (no instance survived its filters?)")
    if num_labels > MAX_LABELS:
        fail(f"labels.json says {KEY_NUM_LABELS} = {num_labels}, more than uint16 holds", path, "re-run instance-map")
    return num_labels


def read_label_stats(folder: Path | str) -> Dict[int, Dict]:
    """Per-label frame count and mean area (empty when labels.json has none): shown by the viewer's
    label-under-the-cursor report."""
    meta = try_read_json(Path(folder) / LABELS_JSON)
    try:
        labels = meta.get(KEY_LABELS, [])
        return {int(item["id"]): {"frames": int(item.get("frames", 0)), "mean_area": float(item.get("mean_area", 0))}
                for item in labels if isinstance(item, dict) and "id" in item}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def check_pseudolabels(folder: Path | str, image_paths: List[Path]) -> List[Path]:
    """The pseudolabel PNG of every image, checked to exist and to have the image's size (header reads only)."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        fail("pseudolabel folder does not exist", folder,
             "run instance-map on the dataset first, or pass --pipeline.datamanager.pseudolabels-dir")
    label_paths = []
    for image_path in image_paths:
        label_path = folder / f"{Path(image_path).stem}.png"
        if not label_path.is_file():
            fail(f"image '{Path(image_path).name}' has no pseudolabel PNG", label_path,
                 "re-run instance-map on this dataset (the pseudolabels belong to another image set?)")
        with Image.open(image_path) as image, Image.open(label_path) as label:
            if image.size != label.size:
                fail(f"pseudolabel is {label.size[0]}x{label.size[1]} but its image is "
                     f"{image.size[0]}x{image.size[1]}", label_path,
                     "pseudolabels must have the images' full resolution; re-run instance-map")
        label_paths.append(label_path)
    return label_paths


def label_pngs(folder: Path | str) -> List[Path]:
    """The pseudolabel PNGs of a folder, sorted by stem."""
    return sorted(Path(folder).glob("*.png"))
