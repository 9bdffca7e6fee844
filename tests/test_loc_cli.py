"""instance-loc / instance-merge command lines: bad inputs get one actionable line and exit 2 (no model needed:
inputs are checked before the model is loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.files import atomic_save_npz, atomic_write_png

W, H = 32, 24


def _dataset(root: Path) -> Path:
    frames = []
    for i, stem in enumerate(["frame_00000", "val_00000"]):
        atomic_write_png(root / "images" / f"{stem}.png", np.full((H, W, 3), 40 * i, np.uint8))
        masks = np.zeros((H, W), np.uint16)
        masks[4:12, 4:20] = 3
        atomic_write_png(root / "masks" / f"{stem}.png", masks)
        c2w = np.eye(4)
        c2w[0, 3] = 0.1 * i
        frames.append({"file_path": f"images/{stem}.png", "transform_matrix": c2w.tolist()})
    meta = {"fl_x": 30.0, "fl_y": 30.0, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": frames,
            "train_filenames": ["images/frame_00000.png"], "val_filenames": ["images/val_00000.png"]}
    (root / "transforms.json").write_text(json.dumps(meta))
    run = root / "run"
    run.mkdir()
    (run / "config.yml").write_text("# never loaded: every error below is raised before the model loads\n")
    return root


def _loc(*args: str):
    cmd = [sys.executable, "-c", "from instance_nerfacto.loc.cli import entrypoint; entrypoint()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _merge(*args: str):
    cmd = [sys.executable, "-c", "from instance_nerfacto.merge.cli import entrypoint; entrypoint()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def data(tmp_path) -> Path:
    return _dataset(tmp_path / "scene")


def _base(data: Path, out: Path, *extra: str):
    return ["--load-config", str(data / "run" / "config.yml"), "--data", str(data), "--output", str(out), *extra]


def test_missing_pose(data, tmp_path):
    atomic_write_png(data / "images" / "val_00001.png", np.zeros((H, W, 3), np.uint8))
    proc = _loc(*_base(data, tmp_path / "out", "--frames", "images/val_*.png", "--masks", str(data / "masks")))
    _assert_one_line_error(proc, "val_00001.png", "no pose in transforms.json")
    assert not (tmp_path / "out").exists()


def test_image_size_mismatch(data, tmp_path):
    atomic_write_png(data / "images" / "val_00000.png", np.zeros((H * 2, W, 3), np.uint8))
    proc = _loc(*_base(data, tmp_path / "out", "--masks", str(data / "masks")))
    _assert_one_line_error(proc, "val_00000.png", f"image is {W}x{H * 2}")


def test_mask_size_mismatch(data, tmp_path):
    atomic_write_png(data / "masks" / "val_00000.png", np.ones((H, W + 1), np.uint16))
    proc = _loc(*_base(data, tmp_path / "out", "--masks", str(data / "masks")))
    _assert_one_line_error(proc, "val_00000.png", "masks are")


def test_missing_weights(data, tmp_path):
    proc = _loc(*_base(data, tmp_path / "out", "--segmenter", "fastsam", "--weights", str(tmp_path / "none.pt")))
    _assert_one_line_error(proc, "weights file does not exist", "none.pt")
    proc = _loc(*_base(data, tmp_path / "out", "--segmenter", "fastsam"))
    _assert_one_line_error(proc, "needs a local weights file")
    proc = _merge("--load-config", str(data / "run" / "config.yml"), "--segmenter", "fastsam",
                  "--weights", str(tmp_path / "none.pt"))
    _assert_one_line_error(proc, "weights file does not exist")


def test_empty_masks(data, tmp_path):
    (data / "masks" / "val_00000.png").unlink()
    atomic_save_npz(data / "masks" / "val_00000.npz", masks=np.zeros((2, H, W), bool))
    proc = _loc(*_base(data, tmp_path / "out", "--masks", str(data / "masks")))
    _assert_one_line_error(proc, "val_00000", "no masks")


def test_missing_mask_file_and_config(data, tmp_path):
    (data / "masks" / "val_00000.png").unlink()
    proc = _loc(*_base(data, tmp_path / "out", "--masks", str(data / "masks")))
    _assert_one_line_error(proc, "frame 'val_00000' has no mask file")
    proc = _loc("--load-config", str(tmp_path / "nope.yml"), "--data", str(data), "--output", str(tmp_path / "o"))
    _assert_one_line_error(proc, "training config not found")
    proc = _merge("--load-config", str(tmp_path / "nope.yml"))
    _assert_one_line_error(proc, "training config not found")


def test_denoise_votes_over_rendered_labels(data, tmp_path):
    renders = tmp_path / "renders"
    rendered = np.zeros((H, W), np.uint16)
    rendered[4:12, 4:20] = 9
    rendered[4:6, 4:20] = 2  # noise on the region's top rows
    atomic_write_png(renders / "val_00000.png", rendered)
    edits = tmp_path / "fixes.txt"
    edits.write_text("9 4\n")  # renders carry the run's merges already; hand edits still apply
    out = tmp_path / "out"
    proc = _loc(*_base(data, out, "--masks", str(data / "masks"), "--denoise", str(renders), "--edits", str(edits)))
    assert proc.returncode == 0, proc.stderr
    from instance_nerfacto.core.files import read_label_png

    ids = read_label_png(out / "val_00000.png")
    assert np.all(ids[4:12, 4:20] == 4) and ids.sum() == 4 * 8 * 16  # denoised and merged (9 -> 4)
    assert (out / "color" / "val_00000.png").is_file()
    report = json.loads((out / "loc.json").read_text())
    assert set(report) == {"val_00000"} and report["val_00000"]["regions"][0]["label"] == 4
    assert {"segment_s", "query_s", "regions"} <= set(report["val_00000"])


def _list_depth(data: Path) -> None:
    meta = json.loads((data / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["depth_file_path"] = frame["file_path"].replace("images/", "depth/")
    (data / "transforms.json").write_text(json.dumps(meta))


def test_query_depth_errors(data, tmp_path):
    masks = str(data / "masks")
    proc = _loc(*_base(data, tmp_path / "out", "--masks", masks, "--query-depth", "on"))
    _assert_one_line_error(proc, "'val_00000' lists no depth map", "transforms.json", "--query-depth auto / off")
    _list_depth(data)  # listed, but no depth/ folder
    proc = _loc(*_base(data, tmp_path / "out", "--masks", masks))
    _assert_one_line_error(proc, "depth map of query frame 'val_00000' is missing", "val_00000.png",
                           "--query-depth off")
    atomic_write_png(data / "depth" / "val_00000.png", np.full((H, W + 2), 1500, np.uint16))
    proc = _loc(*_base(data, tmp_path / "out", "--masks", masks))
    _assert_one_line_error(proc, f"depth map is {W + 2}x{H} but the image is {W}x{H}", "val_00000.png")
    (data / "depth" / "val_00000.png").write_bytes(b"not a png")
    proc = _loc(*_base(data, tmp_path / "out", "--masks", masks))
    _assert_one_line_error(proc, "val_00000.png")
    proc = _loc(*_base(data, tmp_path / "out", "--masks", masks, "--dense-stride", "0"))
    _assert_one_line_error(proc, "--dense-stride must be at least 1")
    assert not (tmp_path / "out").exists()


def test_query_poses_from_a_json_file(data, tmp_path):
    """--data may be a pose file of new images (transforms.json's format, any name): all its frames are queries, and
    its errors name that file."""
    shots = data / "shots"
    shots.mkdir()
    atomic_write_png(shots / "phone_0001.png", np.zeros((H, W, 3), np.uint8))
    c2w = np.eye(4)
    frame = {"file_path": "phone_0001.png", "transform_matrix": c2w.tolist(), "fl_x": 30.0, "fl_y": 30.0,
             "cx": W / 2, "cy": H / 2, "w": W, "h": H}
    poses = shots / "new_shots.json"
    poses.write_text(json.dumps({"frames": [frame]}))
    # the frame is read from the file and chosen as a query: its masks are looked up next
    proc = _loc(*_base(data, tmp_path / "out", "--masks", str(data / "masks"))[:2], "--data", str(poses),
                "--output", str(tmp_path / "out"), "--masks", str(data / "masks"))
    _assert_one_line_error(proc, "frame 'phone_0001' has no mask file")
    frame["transform_matrix"][0][0] = float("nan")
    poses.write_text(json.dumps({"frames": [frame]}))
    proc = _loc(*_base(data, tmp_path / "out")[:2], "--data", str(poses), "--output", str(tmp_path / "out"))
    _assert_one_line_error(proc, "NaN or infinite pose", "new_shots.json")
    assert not (tmp_path / "out").exists()
