"""instance-segment: the weight-free felzenszwalb segmenter end to end, FastSAM through its real local-file path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_preprocess.segment import SegmentConfig, main
from instance_nerfacto.core.files import read_label_png
from instance_nerfacto.core.masks import read_masks
from instance_nerfacto.core.segmenters import felzenszwalb_labels
from tests.fake_fastsam import random_fastsam_weights

CLI = [sys.executable, "-c", "from data_preprocess.segment import entrypoint; entrypoint()"]


def _two_frame_dataset(tiny_scene: Path, root: Path) -> Path:
    """A dataset holding the first two frames of the tiny scene (transforms.json only; images by absolute path)."""
    meta = json.loads((tiny_scene / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:2]
    for f in meta["frames"]:
        f["file_path"] = str(tiny_scene / f["file_path"])
        f.pop("depth_file_path", None)
    meta["train_filenames"] = [f["file_path"] for f in meta["frames"]]
    meta["val_filenames"] = []
    root.mkdir()
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_felzenszwalb_segments_every_frame(tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "masks"
    proc = subprocess.run(CLI + ["--data", str(tiny_scene), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tiny_scene / "transforms.json").read_text())
    stems = sorted(Path(f["file_path"]).stem for f in meta["frames"])
    assert sorted(p.stem for p in out.glob("*.png")) == stems
    labels = read_label_png(out / f"{stems[0]}.png")
    assert labels.shape == (120, 160)
    n = int(labels.max())
    assert 3 <= n < 500 and set(np.unique(labels).tolist()) - {0} == set(range(1, n + 1))
    # deterministic: the same image gives the same ids
    import cv2

    img = cv2.imread(str(tiny_scene / "images" / f"{stems[0]}.png"))[..., ::-1]
    assert np.array_equal(felzenszwalb_labels(img), felzenszwalb_labels(img))


def test_felzenszwalb_masks_feed_instance_map(tiny_scene: Path, tmp_path: Path) -> None:
    from data_preprocess.instance_map import MapConfig
    from data_preprocess.instance_map import main as map_main

    out = tmp_path / "masks"
    main(SegmentConfig(data=tiny_scene, out=out, quiet=True))
    result = map_main(MapConfig(data=tiny_scene, masks=out, output=tmp_path / "pl", quiet=True))
    assert result["K"] > 0 and len(list((tmp_path / "pl").glob("frame_*.png"))) == 30


def test_fastsam_missing_weights_is_one_line(tiny_scene: Path, tmp_path: Path) -> None:
    for weights in (tmp_path / "FastSAM-s.pt", tmp_path / "nope.pt"):  # a name ultralytics knows must not download
        proc = subprocess.run(CLI + ["--data", str(tiny_scene), "--out", str(tmp_path / "m"), "--segmenter",
                                     "fastsam", "--weights", str(weights)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "FastSAM weights file does not exist" in lines[0], proc.stderr
        assert not weights.exists() and not (tmp_path / "m").exists()


def test_fastsam_random_weights_write_npz_stacks(tiny_scene: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A YOLO-seg model built from the ultralytics yaml with heads that detect (tests/fake_fastsam.py), saved, loaded
    through the FastSAM path: every frame gets masks, written as npz stacks."""
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # ultralytics may write runs/ or settings next to the working directory
    weights = random_fastsam_weights(tmp_path / "fastsam_random.pt")
    data = _two_frame_dataset(tiny_scene, tmp_path / "two")
    out = tmp_path / "masks"
    summary = main(SegmentConfig(data=data, segmenter="fastsam", weights=weights, out=out, imgsz=160, min_area=0.0,
                                 quiet=True))
    files = sorted(out.glob("*.npz"))
    assert len(files) == 2 and summary["frames"] == 2
    counts = []
    for file in files:
        masks, scores = read_masks(file)
        assert masks.dtype == bool and masks.shape[1:] == (120, 160) and scores.shape == (len(masks),)
        assert len(masks) > 0 and masks.any(axis=(1, 2)).all()  # every frame has masks, and none is empty
        assert ((scores >= 0.4) & (scores <= 1.0)).all()  # above the default confidence threshold
        counts.append(len(masks))
    assert summary["masks"] == sum(counts)
