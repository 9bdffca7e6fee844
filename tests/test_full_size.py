"""Photos larger than the training resolution: nerfstudio's downscale choice, masks and depth at another scale of the
photo, and a working grid smaller than the photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.errors import InputError


def _double(scene: Path, out: Path) -> Path:
    """The tiny room as ns-process-data lays out a capture twice its size: images/ (320x240, upscaled), images_2/
    (the 160x120 renders), masks and depth maps at the full 320x240."""
    import cv2

    meta = json.loads((scene / "transforms.json").read_text())
    for sub in ("images", "images_2", "masks", "depth"):
        (out / sub).mkdir(parents=True)
    for frame in meta["frames"]:
        name = Path(frame["file_path"]).name
        rgb = cv2.imread(str(scene / "images" / name))
        cv2.imwrite(str(out / "images_2" / name), rgb)
        cv2.imwrite(str(out / "images" / name), cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_CUBIC))
        for sub in ("masks", "depth"):
            small = cv2.imread(str(scene / sub / name), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(out / sub / name), cv2.resize(small, (320, 240), interpolation=cv2.INTER_NEAREST))
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        meta[key] = meta[key] * 2
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


def test_nerfstudio_downscale_choice(tiny_scene: Path, tmp_path: Path) -> None:
    """Halve while the longest side exceeds 1,600 px and images_N holds the image (nerfstudio-data's rule)."""
    import cv2

    from instance_nerfacto.core.dataset import downscaled, load_dataset, training_downscale

    data = tmp_path / "big"
    (data / "images").mkdir(parents=True)
    cv2.imwrite(str(data / "images" / "a.png"), np.zeros((10, 3300), np.uint8))
    (data / "transforms.json").write_text(json.dumps({
        "fl_x": 3000.0, "fl_y": 3000.0, "cx": 1650.0, "cy": 5.0, "w": 3300, "h": 10,
        "frames": [{"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}]}))
    dataset = load_dataset(data)
    assert training_downscale(dataset) == 1  # no images_2/: nerfstudio trains at full size
    (data / "images_2").mkdir()
    cv2.imwrite(str(data / "images_2" / "a.png"), np.zeros((5, 1650), np.uint8))
    assert training_downscale(dataset) == 2
    assert training_downscale(dataset, 1) == 1
    frame = downscaled(dataset, 2).frames[0]
    assert frame.image_path == data / "images_2" / "a.png"
    assert (frame.width, frame.height, frame.fx, frame.cx) == (1650, 5, 1500.0, 825.0)
    with pytest.raises(InputError, match="images_4"):
        downscaled(dataset, 4)


def test_full_size_masks_and_depth_map_at_the_training_size(tiny_scene: Path, tmp_path: Path) -> None:
    """The room at twice its size with images_2/: instance-map --downscale 2 writes 160x120 pseudolabels from the
    320x240 masks and depth maps, scoring as the room mapped at its own size; --max-size 100 (a working grid smaller
    than the photos) still finds the objects."""
    from data_preprocess.instance_map import MapConfig, main
    from instance_nerfacto.core.files import read_label_png
    from instance_nerfacto.eval.metrics import evaluate_dirs

    data = _double(tiny_scene, tmp_path / "double")
    things = tiny_scene / "instances.json"
    main(MapConfig(data=tiny_scene, output=tmp_path / "small", quiet=True))
    main(MapConfig(data=data, output=tmp_path / "double_labels", downscale=2, quiet=True))
    main(MapConfig(data=data, output=tmp_path / "coarse", downscale=2, max_size=100, quiet=True))
    assert read_label_png(tmp_path / "double_labels" / "frame_00000.png").shape == (120, 160)
    small = evaluate_dirs(tmp_path / "small", tiny_scene / "gt", things_json=things)["scene_pq"]
    double = evaluate_dirs(tmp_path / "double_labels", tiny_scene / "gt", things_json=things)["scene_pq"]
    coarse = evaluate_dirs(tmp_path / "coarse", tiny_scene / "gt", things_json=things)["scene_pq"]
    assert double >= small - 0.03, (double, small)
    assert coarse > 0.3, coarse
    # images_2/ missing: one line saying what to do
    (data / "images_2" / "frame_00003.png").unlink()
    with pytest.raises(InputError, match="ns-process-data"):
        main(MapConfig(data=data, output=tmp_path / "broken", downscale=2, quiet=True))
