"""instance-viewer --photos: registered photos drawn as camera frusta where nerfstudio draws the training cameras."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.render.cameras import DatasetToModel
from instance_nerfacto.render.photo_frusta import draw_photo_frusta, photo_frusta

SCALE = 10.0  # as nerfstudio's VISER_NERFSTUDIO_SCALE_RATIO


def _nerfstudio_train_cameras(scene: Path):
    """The training cameras as nerfstudio's own dataparser puts them in the model's frame, and its transform."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    to_model = DatasetToModel.from_dataparser(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale),
                                              json.loads((scene / "transforms.json").read_text()))
    stems = [Path(p).stem for p in outputs.image_filenames]
    return to_model, dict(zip(stems, outputs.cameras.camera_to_worlds.numpy()))


def test_photo_frusta_sit_where_nerfstudio_puts_the_same_cameras(tiny_scene: Path) -> None:
    """A pose file holding the training poses draws each frustum at nerfstudio's pose of that training camera
    (position x the viewer's scale, orientation turned to look down -z as nerfstudio draws its cameras), with the
    photo as its picture. Negative control: the poses left in the dataset's frame land elsewhere."""
    import viser.transforms as vtf

    to_model, train = _nerfstudio_train_cameras(tiny_scene)
    frusta = {Path(f.name).name: f for f in photo_frusta(tiny_scene / "transforms.json", to_model, SCALE)}
    assert set(train) <= set(frusta)
    for stem, c2w in train.items():
        f = frusta[stem]
        assert np.allclose(f.position, c2w[:3, 3] * SCALE, atol=1e-4)
        rotation = vtf.SO3(np.asarray(f.wxyz)) @ vtf.SO3.from_x_radians(np.pi)
        assert np.allclose(rotation.as_matrix(), c2w[:3, :3], atol=1e-4)
        assert f.image is not None and f.image.shape[0] == 100 and f.image.dtype == np.uint8
    unmoved = DatasetToModel(np.eye(4), 1.0)
    far = [np.linalg.norm(f.position - train[Path(f.name).name][:3, 3] * SCALE)
           for f in photo_frusta(tiny_scene / "transforms.json", unmoved, SCALE) if Path(f.name).name in train]
    assert min(far) > 0.1


def test_photo_frusta_are_drawn_on_a_viser_server(tiny_scene: Path, tmp_path: Path) -> None:
    """draw_photo_frusta adds one frustum per photo to a real viser server, at its pose; a pose whose photo file is
    missing is still drawn (without a picture)."""
    import viser

    poses = json.loads((tiny_scene / "transforms.json").read_text())
    poses["frames"] = poses["frames"][:3]
    poses["frames"][2]["file_path"] = "images/not_there.png"
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        poses.pop(key, None)
    (tmp_path / "images").symlink_to(tiny_scene / "images")
    (tmp_path / "poses.json").write_text(json.dumps(poses))
    to_model, _ = _nerfstudio_train_cameras(tiny_scene)
    frusta = photo_frusta(tmp_path / "poses.json", to_model, SCALE)
    assert [f.image is None for f in frusta] == [False, False, True]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        handles = draw_photo_frusta(server, frusta, 0.1)
        assert [name for name, _ in handles] == [f.name for f in frusta]
        for (_, handle), f in zip(handles, frusta):
            assert np.allclose(handle.position, f.position) and np.allclose(handle.wxyz, f.wxyz)
    finally:
        server.stop()


def test_viewer_with_a_bad_pose_file_is_one_line_before_loading(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("not loaded: the pose file is checked first\n")
    proc = subprocess.run([sys.executable, "-c", "from instance_nerfacto.render.viewer_cli import entrypoint; "
                           "entrypoint()", "--load-config", str(config), "--photos", str(tmp_path / "poses.json")],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "poses.json" in lines[0], proc.stderr


@pytest.mark.parametrize("flag", ["--photos"])
def test_viewer_help_offers_photos(flag: str) -> None:
    proc = subprocess.run([sys.executable, "-c", "from instance_nerfacto.render.viewer_cli import entrypoint; "
                           "entrypoint()", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and flag in proc.stdout
