"""Map depth for query images without a depth map: training depth maps back-projected and splatted into the view."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from instance_nerfacto.core.camera import CameraModel
from instance_nerfacto.loc.map_depth import backproject_depth, fill_small_holes, splat_depth, training_depth_points


def _look_at(eye, target) -> np.ndarray:
    """OpenGL camera-to-world (3x4) at ``eye`` looking at ``target`` with world z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.concatenate([np.stack([right, up, back], axis=1), eye[:, None]], axis=1)


def test_splat_keeps_the_nearest_surface_and_lands_points_where_they_were_seen():
    height, width, fx, fy, cx, cy = 48, 64, 50.0, 50.0, 32.0, 24.0
    camera = CameraModel(fx, fy, cx, cy, width, height)
    source = _look_at([0, -3, 1], [0, 0, 1])  # looks along +y at a wall y = 1 (4 m away) with a box in front
    depth = np.full((height, width), 4.0, np.float32)
    depth[10:30, 20:40] = 2.0  # the box's face, 2 m away
    points = backproject_depth(depth, source, camera)
    # the box face lies on the plane y = -1, the wall on y = 1
    assert np.allclose(np.sort(np.unique(np.round(points[:, 1], 4))), [-1.0, 1.0], atol=1e-4)
    # splatted back into the camera that saw them: the same depths (points cover the 2x2 pixels around their
    # projection, so a surface edge may grow by one pixel towards +row / +col; the nearer surface wins there)
    back = splat_depth(points, source, camera)
    assert np.all(back > 0)
    np.testing.assert_allclose(back[10:30, 20:40], 2.0, atol=1e-5)
    np.testing.assert_allclose(back[:9], 4.0, atol=1e-5)
    assert np.all(back[30:31, 20:40] == np.float32(2.0))  # the one-pixel growth goes to the nearer surface
    # from a camera moved 1 m towards the wall: depths 1 m shorter, the box larger and still in front of the wall
    closer = source.copy()
    closer[:, 3] += [0, 1, 0]
    near = splat_depth(points, closer, camera)
    assert abs(float(near[height // 2 - 4, width // 2]) - 1.0) < 1e-4
    box = np.isclose(near, 1.0, atol=1e-4)
    assert box.sum() > 1.5 * 20 * 20 and not np.any(np.isclose(near, 4.0))
    # points behind the camera are never drawn
    assert not np.any(splat_depth(points, _look_at([0, 2, 1], [0, 5, 1]), camera))


def test_fill_small_holes_takes_the_nearest_neighbour_surface_only_for_small_holes():
    depth = np.full((20, 20), 3.0, np.float32)
    depth[5:15, 5:15] = 1.0
    depth[9, 4:7] = 0.0  # a small hole on the edge between a near and a far surface
    depth[16:20, 0:20] = 0.0
    depth[0:20, 17:20] = 0.0
    filled = fill_small_holes(depth)
    assert np.all(filled[9, 4:7] == 1.0)  # the nearest surface around the hole
    assert filled[19, 0] == 0.0  # more than two pixels from any reading: stays empty
    assert np.array_equal(filled[depth > 0], depth[depth > 0])  # readings are never changed


def test_training_depth_points_reproduce_a_held_out_frames_measured_depth(tiny_scene: Path):
    """Points of the 30 training depth maps of the rendered room, through nerfstudio's own dataparser (its
    orientation transform, scale and depth unit), splatted into a held-out view: its measured depth comes back."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from instance_nerfacto.core.dataset import load_dataset
    from instance_nerfacto.core.files import read_depth
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    outputs = NerfstudioDataParserConfig(data=tiny_scene).setup().get_dataparser_outputs("train")
    pipeline = SimpleNamespace(datamanager=SimpleNamespace(train_dataparser_outputs=outputs))
    points, source = training_depth_points(pipeline, stride=2)
    assert source == "depth maps"
    scale = float(outputs.dataparser_scale)
    transform = outputs.dataparser_transform.numpy()
    covered, close = [], []
    for frame in load_dataset(tiny_scene).split("val"):
        camera = frame_camera(frame, DatasetToModel.from_dataparser(transform, scale), "cpu")
        c2w = camera.camera_to_worlds[0].numpy()
        depth = fill_small_holes(splat_depth(points, c2w, frame.camera)) / scale
        truth = read_depth(frame.depth_path)
        seen = truth > 0
        covered.append(float((depth[seen] > 0).mean()))
        both = seen & (depth > 0)
        error = np.abs(depth[both] - truth[both])
        close.append((float(np.median(error)), float((error < 0.1).mean())))
    assert np.mean(covered) > 0.8, covered  # held-out views at other heights: a few surfaces were never seen
    # at 160x120 a point's 2x2 footprint is a few cm on floors seen at grazing angles: median error ~1.5 cm, 95%
    # within 10 cm (a wrong pose convention, scale or depth unit puts most pixels metres off)
    median_error, within_10cm = np.mean(close, axis=0)
    assert median_error < 0.03 and within_10cm > 0.9, close
    # no depth maps in the training data: no points, and instance-loc falls back to the rendered surface
    outputs.metadata["depth_filenames"] = None
    assert training_depth_points(pipeline) == (None, "")
