"""Depth from posed RGB frames (``data_preprocess/stereo.py``), the no-depth default of instance-map.

Hand-made two-view geometry with exact answers: a textured plane seen by two cameras with known poses. The estimated
depth must be right, and a pose in the wrong convention (OpenGL c2w read as OpenCV) must not give a depth map.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_preprocess import stereo
from data_preprocess.pairs import View
from instance_nerfacto.core.dataset import OPENGL_TO_OPENCV
from instance_nerfacto.eval.metrics import evaluate_dirs

W, H, F = 160, 120, 140.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    """OpenCV camera-to-world at (x, 0, 0) turned by ``yaw_deg`` about the camera's y axis."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    out = np.eye(4)
    out[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    out[0, 3] = x
    return out


def texture(seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((120, 160)).astype(np.float32)
    big = cv2.resize(noise, (1600, 1200), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((480, 640)).astype(np.float32), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    return np.clip(255 * (0.7 * big + 0.3 * fine), 0, 255).astype(np.uint8)


def render_plane(c2w: np.ndarray, depth: float, tex: np.ndarray) -> np.ndarray:
    """Grey image of the fronto-parallel plane z = ``depth`` (world), textured over x, y in [-2, 2] x [-1.5, 1.5]."""
    import cv2

    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(uu - K[0, 2]) / F, (vv - K[1, 2]) / F, np.ones_like(uu)], -1) @ c2w[:3, :3].T
    t = (depth - c2w[2, 3]) / rays[..., 2]
    x = c2w[0, 3] + t * rays[..., 0]
    y = c2w[1, 3] + t * rays[..., 1]
    mx = ((x + 2) / 4 * (tex.shape[1] - 1)).astype(np.float32)
    my = ((y + 1.5) / 3 * (tex.shape[0] - 1)).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR)


def view(c2w: np.ndarray, path: Path) -> View:
    return View(path.stem, K, c2w, np.zeros((H, W), np.int16), path)


@pytest.fixture(scope="module")
def two_views(tmp_path_factory: pytest.TempPathFactory):
    import cv2

    root = tmp_path_factory.mktemp("plane")
    tex = texture()
    poses = [pose(0.0), pose(0.2, -3.0)]
    views = []
    for k, c2w in enumerate(poses):
        cv2.imwrite(str(root / f"f{k}.png"), render_plane(c2w, 3.0, tex))
        views.append(view(c2w, root / f"f{k}.png"))
    return views


def true_depth(c2w: np.ndarray, depth: float) -> np.ndarray:
    """Optical-axis depth of the plane z = depth in every pixel of the camera."""
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(uu - K[0, 2]) / F, (vv - K[1, 2]) / F, np.ones_like(uu)], -1) @ c2w[:3, :3].T
    return (depth - c2w[2, 3]) / rays[..., 2]


def test_two_ray_depth_exact() -> None:
    a, b = view(pose(0.0), Path("a.png")), view(pose(1.0), Path("b.png"))
    # the world point (0.5, 0.25, 2): in a at u = cx + F*0.25, in b at u = cx - F*0.25, v = cy + F*0.125
    ua, ub, v = np.array([W / 2 + F * 0.25]), np.array([W / 2 - F * 0.25]), np.array([H / 2 + F * 0.125])
    assert stereo._two_ray_depth(a, b, ua, v, ub, v, 1.0) == pytest.approx([2.0], abs=1e-9)
    # rays that diverge (the match on the wrong side) meet behind a camera: rejected
    assert stereo._two_ray_depth(a, b, ub, v, ua, v, 1.0)[0] == 0.0


def test_plane_homography_maps_plane_points_exactly() -> None:
    a, b = view(pose(0.0), Path("a.png")), view(pose(0.3, -5.0), Path("b.png"))
    h = stereo.plane_homography(a, b, 2.5)
    pts = np.array([[10.0, 20.0], [80.0, 60.0], [150.0, 100.0]])
    world = np.concatenate([(pts - K[:2, 2]) / F * 2.5, np.full((3, 1), 2.5)], 1)  # camera a = world here
    cam_b = (world - b.c2w_cv[:3, 3]) @ b.c2w_cv[:3, :3]
    expect = cam_b[:, :2] / cam_b[:, 2:] * F + K[:2, 2]
    got = np.c_[pts, np.ones(3)] @ h.T
    np.testing.assert_allclose(got[:, :2] / got[:, 2:], expect, atol=1e-9)


def test_fuse_depths_median_where_neighbours_agree() -> None:
    stack = np.array([[[2.0, 2.0, 5.0, 0.0]], [[2.04, 3.0, 0.0, 0.0]], [[1.98, 0.0, 0.0, 4.0]]])
    fused = stereo.fuse_depths(stack, min_agree=2, rel_tol=0.05)
    # pixel 0: three agree, median 2.0; pixel 1: 2 vs 3 disagree; pixel 2/3: one neighbour only
    np.testing.assert_allclose(fused, [[2.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(stereo.fuse_depths(stack, min_agree=1, rel_tol=0.05)[0, 2:], [5.0, 4.0])


def test_flow_triangulation_recovers_plane_depth(two_views) -> None:
    a, b = two_views
    depths, stats = stereo.stereo_depths([a, b], k=1, min_agree=1,
                                         neighbours=[[1], [0]])
    truth = true_depth(a.c2w_cv, 3.0)
    z = depths[0]
    valid = z > 0
    assert valid.mean() > 0.5
    rel = np.abs(z[valid] - truth[valid]) / truth[valid]
    assert np.median(rel) < 0.01 and (rel < 0.05).mean() > 0.95
    assert stats["stereo_pairs"] == 1


def test_flipped_pose_convention_gives_no_depth(two_views) -> None:
    a, b = two_views
    # poses read as OpenGL (y up, z back) while the images follow OpenCV: the epipolar check must reject the flow
    flipped = [View(v.stem, v.K, v.c2w_cv @ OPENGL_TO_OPENCV, v.owner, v.image_path) for v in (a, b)]
    depths, _ = stereo.stereo_depths(flipped, k=1, min_agree=1, neighbours=[[1], [0]])
    truth = true_depth(a.c2w_cv, 3.0)
    z = depths[0]
    good = (z > 0) & (np.abs(z - truth) < 0.05 * truth)
    assert good.mean() < 0.05


def test_neighbours_skip_zero_baseline_and_far_frames() -> None:
    # a dolly along x looking at a wall 3 m away: 0.1 m steps; frame 1 duplicates frame 0's pose (no baseline)
    xs = [0.0, 0.0, 0.1, 0.2, 0.3, 1.5]
    views = [view(pose(x), Path(f"f{k}.png")) for k, x in enumerate(xs)]
    nb = stereo.stereo_neighbours(views, k=2, min_angle_deg=1.0, min_overlap=0.5)
    assert 1 not in nb[0] and 0 not in nb[1]  # same centre: no triangulation angle
    assert nb[0] == [2, 3] and 5 not in sum(nb[:5], [])  # nearest usable baselines; 1.2 m away is off the wall


def test_neighbours_keep_their_baselines_on_a_denser_capture() -> None:
    """Cameras on a circle of 3 m looking at its centre, 3 degrees apart and 0.3 degrees apart (ten times the
    frames): the chosen neighbours are at least min_angle apart from each other, so the dense arc keeps angles like
    the sparse one's (3 and 6 degrees) instead of four frames just above min_angle (2.1 and 2.4 degrees)."""
    def arc(theta_deg: float, name: str) -> View:
        c2w = pose(0.0, -theta_deg)
        c2w[:3, 3] = -3.0 * c2w[:3, 2]  # 3 m behind the centre, along the optical axis
        return view(c2w, Path(name))

    sparse = [arc(3.0 * k, f"s{k}.png") for k in range(-4, 5)]
    dense = [arc(0.3 * k, f"d{k}.png") for k in range(-40, 41)]
    nb_sparse = stereo.stereo_neighbours(sparse, k=4, min_angle_deg=2.0)[4]
    nb_dense = stereo.stereo_neighbours(dense, k=4, min_angle_deg=2.0)[40]
    assert sorted(nb_sparse) == [2, 3, 5, 6]  # +-3 and +-6 degrees
    angles = sorted(0.3 * (j - 40) for j in nb_dense)
    assert len(angles) == 4 and min(abs(a) for a in angles) >= 2.0
    assert min(b - a for a, b in zip(angles, angles[1:])) >= 2.0 - 1e-9 and max(abs(a) for a in angles) >= 4.0


def arc_view(theta_deg: float, name: str) -> View:
    """A camera on a circle of 3 m around the world origin, looking at it."""
    c2w = pose(0.0, -theta_deg)
    c2w[:3, 3] = -3.0 * c2w[:3, 2]
    return view(c2w, Path(name))


def test_keyframes_thin_a_dense_capture_to_the_spacing_and_keep_a_sparse_one() -> None:
    """On an arc of 0.05-degree steps a keyframe covers the frames within 0.2 degrees (4 steps; the 5th is 0.25):
    keyframes are every 5th frame, and every frame is within the spacing of one. The 0.3-degree arc (a 1,000-frame
    loop's spacing) keeps all its frames."""
    dense = [arc_view(0.05 * k, f"d{k}.png") for k in range(41)]
    assert stereo.keyframes(dense, 0.2).tolist() == list(range(0, 41, 5))
    sparse = [arc_view(0.3 * k, f"s{k}.png") for k in range(20)]
    assert stereo.keyframes(sparse, 0.2).tolist() == list(range(20))
    assert stereo.keyframes(dense, 0.0).tolist() == list(range(41))  # no spacing: every frame is its own keyframe


def test_zbuffer_depth_keeps_the_nearest_point_of_each_2x2_footprint() -> None:
    from instance_nerfacto.core.zbuffer import zbuffer_depth

    # (1.5, 1.5) z=1 covers pixels (1..2, 1..2); (2.2, 1.9) z=2 covers cols 2..3, rows 1..2; (-1.5, 0) is off-image
    depth = zbuffer_depth(np.array([1.5, 2.2, -1.5]), np.array([1.5, 1.9, 0.0]), np.array([1.0, 2.0, 0.5]), 4, 5)
    expect = np.zeros((4, 5), np.float32)
    expect[1:3, 3] = 2.0
    expect[1:3, 1:3] = 1.0  # nearest wins where both land (col 2)
    np.testing.assert_array_equal(depth, expect)
    # footprint 3: the 3x3 pixels centred on the nearest pixel, (2.4, 1.6) -> (2, 2)
    wide = zbuffer_depth(np.array([2.4]), np.array([1.6]), np.array([1.5]), 4, 5, footprint=3)
    expect = np.zeros((4, 5), np.float32)
    expect[1:4, 1:4] = 1.5
    np.testing.assert_array_equal(wide, expect)
    with pytest.raises(ValueError):
        zbuffer_depth(np.array([1.0]), np.array([1.0]), np.array([1.0]), 4, 5, footprint=4)


def test_splatted_depth_is_the_keyframes_surface_seen_from_the_frame() -> None:
    """A frame between keyframes takes their depth: the plane 3 m away seen from keyframe a, splatted into a camera
    0.02 m and 0.3 degrees away, is that camera's true depth; the second keyframe fills only what the first misses,
    and a source read with the wrong pose convention gives the wrong depth (negative control)."""
    a, b = view(pose(0.0), Path("a.png")), view(pose(0.02, -0.3), Path("b.png"))
    truth_b = true_depth(b.c2w_cv, 3.0)
    depth_a = true_depth(a.c2w_cv, 3.0).astype(np.float32)
    got = stereo.splatted_depth(b, [(a, depth_a)])
    covered = got > 0
    assert covered.mean() > 0.95
    np.testing.assert_allclose(got[covered], truth_b[covered], rtol=2e-3)
    half = depth_a.copy()
    half[:, W // 2:] = 0.0  # the nearest keyframe saw only its left half
    far = true_depth(a.c2w_cv, 4.0).astype(np.float32)
    mixed = stereo.splatted_depth(b, [(a, half), (a, far)])
    assert np.allclose(mixed[:, :W // 2 - 8][covered[:, :W // 2 - 8]], truth_b[:, :W // 2 - 8][covered[:, :W // 2 - 8]],
                       rtol=2e-3)
    assert np.median(mixed[:, W // 2 + 8:]) > 3.9  # the second source only where the first had nothing
    flipped = View(a.stem, K, a.c2w_cv @ OPENGL_TO_OPENCV, a.owner, a.image_path)
    assert (stereo.splatted_depth(b, [(flipped, depth_a)]) > 0).mean() < 0.05


def test_frames_between_keyframes_take_their_nearest_keyframes_depth(tmp_path: Path) -> None:
    """The stage's splat step: each non-keyframe's depth file is written from its nearest keyframe (the plane 3 m
    away seen from x = 0 and x = 1 m; the frame at x = 0.01 m must read the plane from the x = 0 keyframe, which sees
    all of it, and the keyframes' own files are left as they were)."""
    from data_preprocess.stereo_stage import splat_between_keyframes

    views = [view(pose(x), Path(f"k{k}.png")) for k, x in enumerate((0.0, 0.01, 1.0))]
    keys = np.array([0, 2])
    paths = [tmp_path / f"{v.stem}.npy" for v in views]
    np.save(paths[0], true_depth(views[0].c2w_cv, 3.0).astype(np.float32))
    np.save(paths[2], np.full((H, W), 7.0, np.float32))  # a wrong depth: taken only where the nearest sees nothing
    splat_between_keyframes(views, keys, paths, workers=1)
    got, truth = np.load(paths[1])[2:-2, 2:-4], true_depth(views[1].c2w_cv, 3.0)[2:-2, 2:-4]  # off the rim
    assert (got > 0).all()
    np.testing.assert_allclose(got, truth, rtol=2e-3)
    np.testing.assert_array_equal(np.load(paths[2]), 7.0)


@pytest.fixture(scope="module")
def no_depth_tiny(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("nodepth") / "tiny"
    dest.mkdir()
    for name in ("images", "masks"):
        shutil.copytree(tiny_scene / name, dest / name)
    meta = json.loads((tiny_scene / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
    (dest / "transforms.json").write_text(json.dumps(meta))
    return dest


def test_no_depth_dataset_defaults_to_stereo(no_depth_tiny: Path, tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "pl"
    proc = subprocess.run([sys.executable, "-c", "from data_preprocess.instance_map import entrypoint; entrypoint()",
                           "--data", str(no_depth_tiny), "--output", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "matcher stereo (no depth maps" in proc.stderr
    meta = json.loads((out / "labels.json").read_text())
    assert meta["matcher"] == "stereo" and "stereo" in meta["timings_s"]
    ours = evaluate_dirs(out, tiny_scene / "gt", things_json=tiny_scene / "instances.json")
    assert ours["scene_pq"] > 0.3, ours


def test_detection_rate_of_a_stereo_run_tests_depth_with_the_stereo_tolerance(
        no_depth_tiny: Path, tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """instance-map judges communities on stereo depth with the stereo matcher's tolerance, on depth maps with the
    sensor's: the rate's depth test must not reject views for the centimetres stereo is off."""
    from data_preprocess import instance_map, support
    from data_preprocess.matching import STEREO_DEPTH_TOL

    seen = []
    real = support.detection_rates

    def spy(*args, **kwargs):
        seen.append(kwargs.get("depth_tol"))
        return real(*args, **kwargs)

    monkeypatch.setattr(support, "detection_rates", spy)
    for data, out in ((no_depth_tiny, tmp_path / "stereo"), (tiny_scene, tmp_path / "depth")):
        instance_map.main(instance_map.MapConfig(data=data, output=out, quiet=True, cache=False))
    assert seen == [STEREO_DEPTH_TOL, 0.05]


def test_estimated_depth_runs_refine_the_split_and_tolerate_stray_conflicts(
        no_depth_tiny: Path, tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without depth maps instance-map splits on the touching pairs the other views support, refines the split, gates
    its unions by fragment merging's evidence, lets fragment merging drop a few conflicting frames and asks absorbing
    for evidence in the absorber's frames; with depth maps all of these are as before."""
    from data_preprocess import communities, instance_map

    seen = []
    split, merge = communities.split_cannot_link, communities.merge_fragments

    def spy_split(membership, frame_of, edges, weights, touching, refine=False, gate=None):
        seen.append(("split", len(touching), refine))
        gates.append(gate is not None)
        return split(membership, frame_of, edges, weights, touching, refine=refine, gate=gate)

    absorb, gates, covers = communities.absorb_fragments, [], []

    def spy_absorb(*args):
        covers.append(args[-1])
        return absorb(*args)

    def spy_merge(*args, **kwargs):
        seen.append(("merge", len(args[6]), kwargs.get("max_conflicts")))
        return merge(*args, **kwargs)

    monkeypatch.setattr(communities, "split_cannot_link", spy_split)
    monkeypatch.setattr(communities, "merge_fragments", spy_merge)
    monkeypatch.setattr(communities, "absorb_fragments", spy_absorb)
    for data, out in ((no_depth_tiny, tmp_path / "stereo"), (tiny_scene, tmp_path / "depth")):
        instance_map.main(instance_map.MapConfig(data=data, output=out, quiet=True, cache=False))
    assert gates == [True, False] and covers == [0.5, 0.0]  # the split's evidence gate, absorbing's cover test
    (_, n_sep, refine), (_, n_touch, tol), (_, n_split_d, refine_d), (_, n_touch_d, tol_d) = seen
    assert (refine, tol, refine_d, tol_d) == (True, 0.05, False, 0.0)
    assert n_sep < n_touch and n_split_d == n_touch_d  # a subset only without depth maps


def test_stereo_planes_are_median_stereo_depths_else_the_common_focus(tmp_path: Path) -> None:
    """Each frame's plane for the pair stage is its median stereo depth; a frame without any stereo depth keeps the
    distance to the point the optical axes aim at (two cameras 2 m apart, both turned 45 degrees inward: 1.414 m)."""
    from data_preprocess.frames import FrameSpec
    from data_preprocess.stereo_stage import stereo_planes

    depth = np.zeros((H, W), np.float32)
    depth[:10, :10], depth[10:15, :10] = 3.0, 5.0  # 100 pixels at 3 m, 50 at 5 m, the rest unknown
    np.save(tmp_path / "a.npy", depth)
    np.save(tmp_path / "b.npy", np.zeros((H, W), np.float32))
    poses = [pose(-1.0, 45.0), pose(1.0, -45.0)]
    specs = [FrameSpec(k, s, tuple(map(tuple, K.tolist())), tuple(map(tuple, c.tolist())), H, W, tmp_path / "m.png",
                       tmp_path / f"{s}.png") for k, (s, c) in enumerate(zip("ab", poses))]
    with_depth = [FrameSpec(**{**sp.__dict__, "depth_path": tmp_path / f"{sp.stem}.npy", "depth_on_photo": False})
                  for sp in specs]
    np.testing.assert_allclose(stereo_planes(with_depth, specs), [3.0, np.sqrt(2.0)], atol=1e-3)
