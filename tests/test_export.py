"""`instance-export`: the inverse of nerfstudio's pose normalisation, the PLY layout, and a trained model's cloud."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.export.points import write_ply
from instance_nerfacto.render.cameras import DatasetToModel

RUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def dataparser_outputs(scene: Path, split: str = "train"):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs(split)


def original_centres(scene: Path, image_filenames) -> np.ndarray:
    """Camera centres from transforms.json, in the order of the dataparser's image list."""
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    by_name = {Path(f["file_path"]).name: np.asarray(f["transform_matrix"], dtype=np.float64) for f in frames}
    return np.stack([by_name[Path(name).name][:3, 3] for name in image_filenames])


def test_to_original_world_inverts_dataparser_normalisation(tiny_scene: Path):
    outputs = dataparser_outputs(tiny_scene)
    transform = outputs.dataparser_transform.numpy().astype(np.float64)
    scale = float(outputs.dataparser_scale)
    # the test only means something if the normalisation really moves, rotates and scales the poses
    assert abs(scale - 1.0) > 0.05 and np.abs(transform[:3, 3]).max() > 0.05
    assert np.abs(transform[:3, :3] - np.eye(3)).max() > 1e-3

    normalized = outputs.cameras.camera_to_worlds[:, :3, 3].numpy().astype(np.float64)
    expected = original_centres(tiny_scene, outputs.image_filenames)
    assert len(expected) == 30
    assert np.abs(normalized - expected).max() > 0.1  # normalisation is not the identity here
    restored = DatasetToModel.from_dataparser(transform, scale, {}).points_to_dataset(normalized)
    assert np.abs(restored - expected).max() < 1e-5

    # plausible wrong inverses are caught: rotation not transposed, rotation forgotten, scale forgotten
    rot, trans = transform[:3, :3], transform[:3, 3]
    for wrong in ((normalized / scale - trans) @ rot.T, normalized / scale - trans, (normalized - trans) @ rot):
        assert np.abs(wrong - expected).max() > 1e-3


def test_write_ply_round_trips_with_int_instance(tmp_path: Path):
    from plyfile import PlyData

    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(500, 3)).astype(np.float32) * 3.0
    rgb = rng.integers(0, 256, size=(500, 3)).astype(np.uint8)
    instance = rng.integers(0, 65536, size=500).astype(np.uint16)
    instance[:3] = [0, 65535, 300]  # the extremes and a value above uint8 survive
    path = tmp_path / "sub" / "cloud.ply"
    write_ply(path, xyz, rgb, instance)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # atomic: no temp file left behind

    data = PlyData.read(str(path))
    assert not data.text and data.byte_order in ("<", "=")
    vertex = data["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "red", "green", "blue", "instance"]
    assert vertex["instance"].dtype == np.int32  # Open3D's tensor reader skips ushort, keeps int
    assert vertex["red"].dtype == np.uint8 and vertex["x"].dtype == np.float32
    np.testing.assert_array_equal(vertex["instance"], instance)
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), rgb)
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), xyz)
    # the header names the type, so generic readers (open3d, CloudCompare) see a 16-bit unsigned attribute
    header = path.read_bytes()[:400].split(b"end_header")[0].decode()
    assert "property int instance" in header or "property int32 instance" in header


def gt_object_points(scene: Path, instance_id: int, stems) -> np.ndarray:
    """World points (transforms.json frame) of one gt object, back-projected from gt/ + depth/ of a few frames."""
    from instance_nerfacto.core.dataset import load_dataset
    from instance_nerfacto.core.files import read_depth, read_label_png

    frames = load_dataset(scene).by_stem()
    points = []
    for stem in stems:
        frame = frames[stem]
        depth = read_depth(frame.depth_path)
        gt = read_label_png(scene / "gt" / f"{stem}.png")
        rows, cols = np.nonzero((gt == instance_id) & (depth > 0))
        z = depth[rows, cols]
        # pixel centres at +0.5, the convention of nerfstudio's ray generation and the synth's intrinsics
        cam = np.stack([(cols + 0.5 - frame.cx) / frame.fx * z, (rows + 0.5 - frame.cy) / frame.fy * z, z], 1)
        c2w = frame.c2w_cv
        points.append(cam @ c2w[:3, :3].T + c2w[:3, 3])
    return np.concatenate(points)


def median_nearest_distance(query: np.ndarray, reference: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(reference).query(query)
    return float(np.median(distances))


@pytest.mark.slow
def test_export_of_trained_model_puts_objects_where_gt_depth_says(tiny_scene_copy: Path, tmp_path: Path):
    """Train 200 iterations on gt pseudolabels, export, and check the cloud against the synth's room and gt depth.

    Only points labelled with a *thing* are held to the room box and to the gt surface. After 200-600 iterations of
    instance-nerfacto-small the floor and walls are still half transparent: their points overshoot behind the surface
    (measured: 33% of stuff points inside the room at 200 iterations, 41% at 600, while things are 96% / 99% inside
    with median distance 2-19 cm to their gt surface). That is the model's geometry (nerfstudio's own full render
    overshoots the same way), not the export, so the stuff numbers are printed, not asserted.
    """
    from plyfile import PlyData

    from instance_nerfacto.core.files import read_label_png

    scene = tiny_scene_copy
    shutil.copytree(scene / "gt", scene / "pseudolabels")
    max_id = max(int(read_label_png(p).max()) for p in (scene / "pseudolabels").glob("*.png"))
    (scene / "pseudolabels" / "labels.json").write_text(json.dumps({"num_labels": max_id}))

    out = tmp_path / "outputs"
    train = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()",
             "instance-nerfacto-small", "--data", str(scene), "--machine.device-type", "cpu",
             "--max-num-iterations", "200", "--viewer.quit-on-train-completion", "True", "--vis", "tensorboard",
             "--output-dir", str(out), "--timestamp", "run", "--steps-per-save", "200"]
    result = subprocess.run(train, capture_output=True, text=True, env=RUN_ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (config,) = out.glob("*/instance-nerfacto-small/run/config.yml")

    ply = tmp_path / "export" / "scene.ply"
    export = [sys.executable, "-c", "from instance_nerfacto.export.cli import entrypoint; entrypoint()",
              "--load-config", str(config), "--output", str(ply), "--every", "3", "--grid-resolution", "64",
              "--points", "50000", "--no-merge"]
    result = subprocess.run(export, capture_output=True, text=True, env=RUN_ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    vertex = PlyData.read(str(ply))["vertex"]
    assert "instance" in [p.name for p in vertex.properties] and vertex["instance"].dtype == np.int32
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64)
    ids = np.asarray(vertex["instance"])
    assert len(xyz) > 1000

    instances = json.loads((scene / "instances.json").read_text())
    things = sorted(int(k) for k, v in instances.items() if v["is_thing"])
    is_thing = np.isin(ids, things)
    assert is_thing.mean() > 0.1  # the label field gives things their own ids, not all floor/wall

    # the synth's room: floor at z = 0, walls at x = +-width/2, y = +-depth/2 (scene.py), 2.6 m high; 10 cm slack
    width, depth = json.loads((scene / "synth.json").read_text())["room_size_m"]
    slack = 0.1
    inside = ((np.abs(xyz[:, 0]) <= width / 2 + slack) & (np.abs(xyz[:, 1]) <= depth / 2 + slack)
              & (xyz[:, 2] >= -slack) & (xyz[:, 2] <= 2.6 + slack))
    print(f"inside the room: all {inside.mean():.3f}, things {inside[is_thing].mean():.3f}, "
          f"stuff {inside[~is_thing].mean():.3f} of {len(xyz)} points")
    assert inside[is_thing].mean() >= 0.8

    # points labelled with a thing lie on that object's gt surface (back-projected gt depth of every third frame)
    stems = [f"frame_{i:05d}" for i in range(0, 30, 3)]
    tolerance = 0.05 * max(width, depth)
    normalization = dataparser_outputs(scene)
    transform = normalization.dataparser_transform.numpy().astype(np.float64)
    scale = float(normalization.dataparser_scale)
    checked = 0
    for instance_id in sorted(int(k) for k in instances):
        labelled = xyz[ids == instance_id]
        if len(labelled) < 200:
            continue  # too few points to say anything about a small object after 200 iterations
        reference = gt_object_points(scene, instance_id, stems)
        if len(reference) < 200:
            continue
        distance = median_nearest_distance(labelled, reference)
        print(f"instance {instance_id} ({instances[str(instance_id)]['name']}): {len(labelled)} points, "
              f"median distance to gt surface {distance:.3f} m")
        if instance_id not in things:
            continue
        assert distance < tolerance, (instance_id, distance)
        # the same points left in nerfstudio's normalised frame are far off: the check can tell frames apart
        still_normalized = scale * (labelled @ transform[:3, :3].T + transform[:3, 3])
        assert median_nearest_distance(still_normalized, reference) > tolerance
        checked += 1
    assert checked >= 3
