"""Cameras with lens distortion: the camera model against nerfstudio's rays, and InstanceMap through radial and
fisheye lenses against the pinhole twin of the same room (``instance-synth --lens``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.camera import OFF_IMAGE, CameraModel, Lens
from instance_nerfacto.core.errors import InputError

RADIAL = CameraModel(138.6, 138.6, 80.5, 59.5, 160, 120, False, (-0.15, 0.03, 0.0, 0.0, 0.001, -0.002))
FISHEYE = CameraModel(138.6, 138.6, 80.5, 59.5, 160, 120, True, (0.05, 0.01, 0.0, 0.0, 0.0, 0.0))


def _nerfstudio_normalized(camera: CameraModel, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where nerfstudio's own ray generation points the ray through pixel coordinates (u, v), as x/z, y/z in
    OpenCV's camera frame."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    cameras = Cameras(camera_to_worlds=torch.eye(4)[None, :3, :4], **camera.nerfstudio())
    rays = cameras.generate_rays(camera_indices=0, coords=torch.from_numpy(np.stack([v, u], 1)).float())
    d = rays.directions.numpy().astype(np.float64)
    return d[:, 0] / -d[:, 2], -d[:, 1] / -d[:, 2]  # OpenGL (y up, looking along -z) -> OpenCV


@pytest.mark.parametrize("camera", [RADIAL, FISHEYE], ids=["radial", "fisheye"])
def test_camera_model_bends_pixels_as_nerfstudio_does(camera: CameraModel) -> None:
    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, camera.width, 300), rng.uniform(0, camera.height, 300)
    x, y = camera.normalized(u, v)
    ns_x, ns_y = _nerfstudio_normalized(camera, u, v)
    # within 1e-3 px / fx: the query cameras move a fisheye principal point off the pixel centre by that much
    np.testing.assert_allclose(x, ns_x, atol=2e-5)
    np.testing.assert_allclose(y, ns_y, atol=2e-5)
    pu, pv, z = camera.project(np.stack([x * 2.0, y * 2.0, np.full_like(x, 2.0)], 1))
    np.testing.assert_allclose(np.stack([pu, pv]), np.stack([u, v]), atol=1e-6)
    np.testing.assert_allclose(z, 2.0)
    # negative control: the same coefficients read as the other camera type miss by pixels
    other = CameraModel(*[getattr(camera, k) for k in ("fx", "fy", "cx", "cy", "width", "height")],
                        not camera.fisheye, camera.distortion[:4] + (0.0, 0.0))
    ox, oy = other.normalized(u, v)
    assert np.abs(ox - ns_x).max() * camera.fx > 0.5


def test_points_behind_the_camera_or_beyond_the_lens_never_land_in_the_image() -> None:
    u, v, _ = RADIAL.project(np.array([[0.1, 0.1, -1.0], [8.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    assert (u[:2] == OFF_IMAGE).all() and (v[:2] == OFF_IMAGE).all()
    assert abs(u[2] - RADIAL.cx) < 1e-9 and abs(v[2] - RADIAL.cy) < 1e-9


@pytest.mark.parametrize("camera", [RADIAL, FISHEYE], ids=["radial", "fisheye"])
def test_lens_pinhole_grid_holds_every_photo_pixel_and_maps_back(camera: CameraModel) -> None:
    lens = Lens.covering(camera)
    assert lens.pinhole.width >= camera.width and lens.pinhole.height >= camera.height
    ids = np.arange(camera.width * camera.height, dtype=np.int64).reshape(camera.height, camera.width)
    pin = lens.to_pinhole(ids, nearest=True, fill=-1)
    seen = np.unique(pin[pin >= 0])
    # the pinhole grid keeps the photo's central resolution: (nearly) every photo pixel appears on it
    assert len(seen) > 0.9 * ids.size
    # a pinhole pixel shows the photo pixel its ray passes through (checked through the model's own projection)
    rows, cols = np.nonzero(pin >= 0)
    pick = np.random.default_rng(1).choice(len(rows), 200, replace=False)
    x = (cols[pick] + 0.5 - lens.pinhole.cx) / lens.pinhole.fx
    y = (rows[pick] + 0.5 - lens.pinhole.cy) / lens.pinhole.fy
    pu, pv, _ = camera.project(np.stack([x, y, np.ones_like(x)], 1))
    shown = pin[rows[pick], cols[pick]]
    assert np.all(np.abs(shown % camera.width + 0.5 - pu) <= 0.51)
    assert np.all(np.abs(shown // camera.width + 0.5 - pv) <= 0.51)
    assert lens.valid()[rows, cols].all()


def _transforms_with(scene: Path, tmp_path: Path, **entries) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    meta = json.loads((scene / "transforms.json").read_text())
    meta.update(entries)
    (data / "transforms.json").write_text(json.dumps(meta))
    (data / "images").symlink_to(scene / "images")
    return data


@pytest.mark.parametrize("entries,message", [
    ({"camera_model": "EQUIRECTANGULAR"}, "camera_model 'EQUIRECTANGULAR' is not supported"),
    ({"k4": 0.01}, "k4 of a perspective camera"),
    ({"camera_model": "OPENCV_FISHEYE", "p1": 0.01}, "OPENCV_FISHEYE has no tangential terms"),
])
def test_camera_models_it_cannot_handle_are_refused_in_one_line(tiny_scene: Path, tmp_path: Path, entries: dict,
                                                                message: str) -> None:
    from instance_nerfacto.core.dataset import load_dataset

    data = _transforms_with(tiny_scene, tmp_path, **entries)
    with pytest.raises(InputError) as err:
        load_dataset(data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_frames_carry_their_camera_into_nerfstudio(tiny_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.cameras.cameras import CameraType

    from instance_nerfacto.core.dataset import load_dataset
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    data = _transforms_with(tiny_scene, tmp_path, camera_model="OPENCV_FISHEYE", k1=0.05, k2=0.01, p1=0.0, p2=0.0)
    frame = load_dataset(data).frames[0]
    assert frame.camera.fisheye and frame.camera.distortion == (0.05, 0.01, 0.0, 0.0, 0.0, 0.0)
    camera = frame_camera(frame, DatasetToModel(np.eye(4), 1.0), "cpu")
    assert int(camera.camera_type[0]) == CameraType.FISHEYE.value
    assert camera.distortion_params[0].tolist() == pytest.approx([0.05, 0.01, 0.0, 0.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------ InstanceMap through lenses


def _lens_room(tmp_path_factory, lens: str) -> Path:
    from data_preprocess.synth.cli import SynthConfig, main

    out = tmp_path_factory.mktemp(f"lens_{lens}") / "room"
    main(SynthConfig(out=out, preset="tiny", seed=0, lens=lens))
    return out


@pytest.fixture(scope="module")
def lens_rooms(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny room through each lens; the pinhole room is the session's tiny scene (same seed)."""
    return {"pinhole": tiny_scene, "radial": _lens_room(tmp_path_factory, "radial"),
            "fisheye": _lens_room(tmp_path_factory, "fisheye")}


def _map_pq(scene: Path, out: Path, data: Path | None = None, **kwargs) -> float:
    from data_preprocess.instance_map import MapConfig, main
    from instance_nerfacto.eval.metrics import evaluate_dirs

    main(MapConfig(data=data or scene, masks=scene / "masks", output=out, quiet=True, **kwargs))
    return evaluate_dirs(out, scene / "gt", things_json=scene / "instances.json")["scene_pq"]


def test_synth_lens_keeps_the_pinhole_twins_intrinsics(lens_rooms: dict) -> None:
    pin = json.loads((lens_rooms["pinhole"] / "transforms.json").read_text())
    for lens, model in (("radial", "OPENCV"), ("fisheye", "OPENCV_FISHEYE")):
        meta = json.loads((lens_rooms[lens] / "transforms.json").read_text())
        assert meta["camera_model"] == model
        assert all(meta[k] == pin[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"))
        assert [f["transform_matrix"] for f in meta["frames"]] == [f["transform_matrix"] for f in pin["frames"]]
        assert meta["k1"] != 0.0


def _variant(room: Path, out: Path, depth: bool, distortion: bool) -> Path:
    """A copy of a lens room's transforms.json (images, masks linked) without depth maps and/or distortion."""
    out.mkdir()
    meta = json.loads((room / "transforms.json").read_text())
    if not depth:
        for frame in meta["frames"]:
            frame.pop("depth_file_path", None)
    if not distortion:  # read as a pinhole: what the project did before it had a camera model
        meta.update(camera_model="OPENCV", k1=0.0, k2=0.0, k3=0.0, k4=0.0)
    (out / "transforms.json").write_text(json.dumps(meta))
    for sub in ("images", "depth"):
        (out / sub).symlink_to(room / sub)
    return out


@pytest.fixture(scope="module")
def twin_pq(lens_rooms: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """PQ of the pinhole room's pseudolabels with and without depth maps."""
    pinhole, root = lens_rooms["pinhole"], tmp_path_factory.mktemp("twin")
    return {"depth": _map_pq(pinhole, root / "depth"),
            "no_depth": _map_pq(pinhole, root / "no_depth", _variant(pinhole, root / "data_nd", False, True))}


@pytest.mark.parametrize("lens", ["radial", "fisheye"])
def test_instance_map_through_a_lens_scores_as_its_pinhole_twin(lens_rooms: dict, twin_pq: dict, lens: str,
                                                                 tmp_path: Path) -> None:
    """The lens room's pseudolabels score as the pinhole twin's (with depth maps; radial also without); without depth
    maps the same room read as if it were a pinhole (distortion dropped from transforms.json: what the project did
    before) scores clearly lower (negative control)."""
    from instance_nerfacto.core.files import read_label_png
    from instance_nerfacto.core.masks import read_masks

    room = lens_rooms[lens]
    ours = _map_pq(room, tmp_path / lens)
    assert ours >= twin_pq["depth"] - 0.04, (ours, twin_pq)
    # pseudolabels lie on the photo's own grid: labelled pixels are exactly mask pixels of that frame
    for stem in ("frame_00003", "frame_00017"):
        labels = read_label_png(tmp_path / lens / f"{stem}.png")
        masks, _ = read_masks(room / "masks" / f"{stem}.png")
        assert labels.shape == masks.shape[1:] and not np.any((labels > 0) & ~masks.any(0))
    if lens == "fisheye":
        return  # without depth maps, 30 frames of 160x120 are too few for the fisheye's stereo (docs/benchmarks.md)
    ours_nd = _map_pq(room, tmp_path / "lens_nd", _variant(room, tmp_path / "l_nd", False, True))
    blind_nd = _map_pq(room, tmp_path / "blind_nd", _variant(room, tmp_path / "b_nd", False, False))
    assert ours_nd >= twin_pq["no_depth"] - 0.04, (ours_nd, twin_pq)
    # 0.461 against 0.434 on this 30-frame room since the split without depth maps stopped exempting touching objects
    # the other views show apart (before: 0.413 against 0.343); on the demo rooms 0.02-0.16 (docs/benchmarks.md)
    assert blind_nd < ours_nd - 0.02, (blind_nd, ours_nd)


# ----------------------------------------------------------------------------------- InstanceLoc through a lens


def _warped_to(photo: CameraModel, pinhole: CameraModel, labels: np.ndarray) -> np.ndarray:
    """A label image of the pinhole camera shown on the distorted photo's pixel grid (0 where it does not reach)."""
    vv, uu = np.mgrid[0:photo.height, 0:photo.width].astype(np.float64)
    x, y = photo.normalized(uu + 0.5, vv + 0.5)
    col = np.floor(x * pinhole.fx + pinhole.cx).astype(np.int64)
    row = np.floor(y * pinhole.fy + pinhole.cy).astype(np.int64)
    inside = (col >= 0) & (col < pinhole.width) & (row >= 0) & (row < pinhole.height)
    out = np.zeros(photo.height * photo.width, labels.dtype)
    out[inside.ravel()] = labels[row[inside], col[inside]]
    return out.reshape(photo.height, photo.width)


def test_instance_loc_on_fisheye_photos_agrees_with_instance_render(small_run, lens_rooms: dict,
                                                                    tmp_path: Path) -> None:
    """New photos of the trained room through a fisheye lens (pose file with OPENCV_FISHEYE intrinsics, no depth:
    the map-depth path), localized: their ids agree with instance-render of the same poses through the pinhole,
    warped onto the fisheye pixels. Read as pinholes (distortion dropped), they agree clearly less where the lens
    bends most."""
    from instance_nerfacto.core.dataset import load_dataset
    from instance_nerfacto.core.files import read_label_png
    from tests.test_small_run import localize, pose_file, render_split

    run, room = small_run, lens_rooms["fisheye"]
    stems = run.val_stems[:3]
    reference = render_split(run.config, tmp_path / "render")
    lens_meta = json.loads((room / "transforms.json").read_text())
    scores = {}
    for name, distortion in (("fisheye", True), ("ignored", False)):
        shots = pose_file(run, tmp_path / f"{name}.json", stems, depth=False)
        meta = json.loads(shots.read_text())
        meta.update({k: lens_meta[k] for k in ("camera_model", "k1", "k2", "k3", "k4")})
        if not distortion:
            meta.update(camera_model="OPENCV", k1=0.0, k2=0.0, k3=0.0, k4=0.0)
        for frame in meta["frames"]:
            frame["file_path"] = str(room / "images" / Path(frame["file_path"]).name)
        shots.write_text(json.dumps(meta))
        report = localize(run, shots, tmp_path / name, masks=room / "masks")
        assert {r["depth"] for r in report.values()} == {"map"}
        counts = np.zeros((2, 2))  # (all pixels, outer ring) x (same, total)
        for frame in load_dataset(room).split("val"):
            if frame.stem not in stems:
                continue
            pinhole = CameraModel(frame.fx, frame.fy, frame.cx, frame.cy, frame.width, frame.height)
            expected = _warped_to(frame.camera, pinhole, read_label_png(reference / f"{frame.stem}.png"))
            located = read_label_png(tmp_path / name / f"{frame.stem}.png")
            vv, uu = np.mgrid[0:frame.height, 0:frame.width]
            # the outer ring, where the lens bends most (0 at the principal point, 1 at the corners)
            ring = np.hypot((uu - frame.cx) / frame.cx, (vv - frame.cy) / frame.cy) / np.sqrt(2) >= 0.7
            both = (expected > 0) & (located > 0)
            for k, where in enumerate((both, both & ring)):
                counts[k] += [(expected[where] == located[where]).sum(), where.sum()]
        scores[name] = counts[:, 0] / np.maximum(counts[:, 1], 1)
    print(scores)
    assert scores["fisheye"][0] > 0.75, scores
    # measured: ring 0.88 through the lens, 0.82 read as a pinhole (all pixels 0.84 / 0.815)
    assert scores["ignored"][1] < scores["fisheye"][1] - 0.04, scores


def test_fisheye_principal_point_on_a_pixel_centre_gives_no_nan_ray() -> None:
    """nerfstudio's fisheye rays are (x, y) sin(theta) / theta: NaN for the pixel at the principal point. The
    datamanager moves such a principal point by 1e-3 px before any ray is made (a NaN ray in one training batch
    turns the whole field NaN)."""
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from instance_nerfacto.core.camera import make_fisheye_rays_finite

    def cameras():
        return Cameras(camera_to_worlds=torch.eye(4)[None, :3, :4], fx=100.0, fy=100.0, cx=40.5, cy=30.5, width=80,
                       height=60, camera_type=CameraType.FISHEYE,
                       distortion_params=torch.tensor([[0.05, 0.01, 0.0, 0.0, 0.0, 0.0]]))

    raw = cameras()
    assert torch.isnan(raw.generate_rays(camera_indices=0).directions).any()  # the bug this guards against
    fixed = cameras()
    assert make_fisheye_rays_finite(fixed) == 1
    assert not torch.isnan(fixed.generate_rays(camera_indices=0).directions).any()
    assert abs(float(fixed.cx[0]) - 40.5) < 1e-2 and make_fisheye_rays_finite(fixed) == 0
    # the query cameras of InstanceLoc (FISHEYE's principal point is on a pixel centre too)
    query = Cameras(camera_to_worlds=torch.eye(4)[None, :3, :4], **FISHEYE.nerfstudio())
    assert not torch.isnan(query.generate_rays(camera_indices=0).directions).any()
