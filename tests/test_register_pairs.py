"""Registration from a learned pair matcher (``instance-loc --images --register.matcher loftr``): pair matches lifted
by the map's depth give the pose; LoFTR's real loading code with random weights saved to a temporary file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.dataset import OPENGL_TO_OPENCV, load_dataset
from instance_nerfacto.core.files import read_depth
from instance_nerfacto.loc.register import (
    RegisterParams,
    lift_keypoints,
    map_features,
    register_photo,
    rotation_error_deg,
)
from instance_nerfacto.loc.register_pairs import lifted_pair_matches
from tests.small_run import SmallRun


def _tiny_map(scene: Path):
    """The tiny room's training images as registration's map, keypoints lifted by their depth maps."""
    from PIL import Image

    frames = load_dataset(scene).split("train")
    rgbs = [np.array(Image.open(f.image_path).convert("RGB")) for f in frames]
    depths = [read_depth(f.depth_path, 1e-3) for f in frames]

    def lift(i: int, pixels: np.ndarray) -> np.ndarray:
        return lift_keypoints(pixels, depths[i], frames[i].camera, frames[i].c2w)

    world = map_features(lambda i: rgbs[i], lift, [f.c2w for f in frames], RegisterParams())
    return frames, rgbs, depths, world


def _true_pair_matches(photo, train, depth: np.ndarray, stride: int = 6):
    """Pixels of a training image (every ``stride``-th with depth) and where the photo sees the same points: the
    matches a perfect pair matcher would give, from the scene's geometry."""
    rows, cols = np.mgrid[2:depth.shape[0] - 2:stride, 2:depth.shape[1] - 2:stride]
    train_px = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    world = lift_keypoints(train_px, depth, train.camera, train.c2w).astype(np.float64)
    known = np.all(np.isfinite(world), axis=1)
    w2c = np.linalg.inv(np.asarray(photo.c2w, np.float64) @ OPENGL_TO_OPENCV)
    cam = world[known] @ w2c[:3, :3].T + w2c[:3, 3]
    photo_px = np.stack([photo.camera.fx * cam[:, 0] / cam[:, 2] + photo.camera.cx - 0.5,
                         photo.camera.fy * cam[:, 1] / cam[:, 2] + photo.camera.cy - 0.5], axis=1)
    inside = (cam[:, 2] > 0) & np.all((photo_px > 0) & (photo_px < [photo.width - 1, photo.height - 1]), axis=1)
    return photo_px[inside], train_px[known][inside]


def test_pair_matches_lifted_by_the_maps_depth_register_the_photo_at_its_pose(tiny_scene: Path):
    """A training view held out of the map, matched with its two neighbours by the scene's true geometry: the pooled
    pair matches, lifted by the neighbours' depth maps, give its true pose (exact geometry: hundredths of a degree).
    Negative control: the same pixels with the photo's side shuffled (each training pixel paired with another's
    match) are refused."""
    frames, rgbs, depths, world = _tiny_map(tiny_scene)
    photo_index, neighbours = 7, (5, 9)
    photo = frames[photo_index]
    given = {i: _true_pair_matches(photo, frames[i], depths[i]) for i in neighbours}
    asked = []

    def pairs(gray, retrieved, shuffle=False):
        asked.append([int(i) for i in retrieved])
        rng = np.random.default_rng(0)
        matches = [(i, (rng.permutation(given[i][0]) if shuffle else given[i][0], given[i][1])) for i in neighbours]
        return lifted_pair_matches(matches, world.lift)

    params = RegisterParams(pair_images=4)
    result = register_photo(rgbs[photo_index], photo.camera, world, params, pairs)
    assert asked and len(asked[0]) == 4 and photo_index in asked[0]  # SIFT-vote retrieval finds the view itself
    assert result.registered, result.reason
    assert rotation_error_deg(result.c2w, photo.c2w) < 0.05
    assert np.linalg.norm(result.c2w[:3, 3] - photo.c2w[:3, 3]) < 0.005
    assert set(result.retrieved) == set(neighbours) and result.inliers > 0.9 * result.correspondences
    shuffled = register_photo(rgbs[photo_index], photo.camera, world, params,
                              lambda g, r: pairs(g, r, shuffle=True))
    assert not shuffled.registered and shuffled.c2w is None and shuffled.reason, shuffled


def test_lifted_pair_matches_drop_pixels_without_a_point_and_keep_each_images_owner():
    """Exact values: two images' matches pooled in order, a training pixel lifted to NaN dropped with its photo
    pixel."""
    def lift(i: int, pixels: np.ndarray) -> np.ndarray:
        points = np.column_stack([pixels, np.full(len(pixels), float(i))])
        points[pixels[:, 0] < 0] = np.nan
        return points

    photo_a, train_a = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[10.0, 20.0], [-1.0, 5.0]])
    photo_b, train_b = np.array([[5.0, 6.0]]), np.array([[7.0, 8.0]])
    pixels, points, owners = lifted_pair_matches([(3, (photo_a, train_a)), (8, (np.zeros((0, 2)), np.zeros((0, 2)))),
                                                  (5, (photo_b, train_b))], lift)
    np.testing.assert_array_equal(pixels, [[1.0, 2.0], [5.0, 6.0]])
    np.testing.assert_array_equal(points, [[10.0, 20.0, 3.0], [7.0, 8.0, 5.0]])
    np.testing.assert_array_equal(owners, [3, 5])


def test_loftr_pixels_map_back_to_the_images_own_and_images_are_never_enlarged(tmp_path: Path):
    """Exact values: the first pixel's centre of an image shrunk by 2 lies between the image's first two pixels; an
    image smaller than the matching size is matched at its own size (sides rounded to multiples of 8)."""
    import torch
    from kornia.feature import LoFTR

    from instance_nerfacto.core.loftr import LoFTRModel, resized_to_image, shrunk

    np.testing.assert_allclose(resized_to_image(np.array([[0.0, 0.0], [9.0, 4.0]]), np.array([2.0, 4.0])),
                               [[0.5, 1.5], [18.5, 17.5]])
    np.testing.assert_allclose(resized_to_image(np.array([[3.25, 7.0]]), np.array([1.0, 1.0])), [[3.25, 7.0]])
    small, scale = shrunk(np.zeros((120, 160), np.uint8), 320)
    assert small.shape == (120, 160) and tuple(scale) == (1.0, 1.0)
    large, scale = shrunk(np.zeros((480, 640), np.uint8), 320)
    assert large.shape == (240, 320) and tuple(scale) == (2.0, 2.0)
    odd, scale = shrunk(np.zeros((1000, 1500), np.uint8), 640)  # sides rounded to multiples of 8
    assert odd.shape == (424, 640) and np.allclose(scale, [1500 / 640, 1000 / 424])
    again, scale = shrunk(odd, 640)
    assert again is odd and tuple(scale) == (1.0, 1.0)  # a training image cached shrunk is matched as it is
    torch.save(LoFTR(pretrained=None).state_dict(), tmp_path / "loftr.pth")
    tensor, scale = LoFTRModel(tmp_path / "loftr.pth", size=320)._tensor(np.zeros((480, 640), np.uint8))
    assert tuple(tensor.shape) == (1, 1, 240, 320) and tuple(scale) == (2.0, 2.0)


def test_loftr_registration_runs_from_random_local_weights_and_accepts_no_wrong_pose(
        small_run: SmallRun, tmp_path: Path):
    """instance-loc --images --register.matcher loftr with randomly initialised LoFTR weights saved to a temporary
    file: the real loading code, LoFTR on every retrieved pair, lifting by the map's depth and PnP run; random
    weights match at random, so every photo is refused with a reason, none gets a pose or ids, and loc.json says
    LoFTR was used. Bad weights are one line each, raised before the map is loaded."""
    import torch
    from kornia.feature import LoFTR

    from instance_nerfacto.core.errors import InputError
    from instance_nerfacto.core.runs import RunOptions
    from instance_nerfacto.loc.cli import LocConfig, main

    torch.manual_seed(0)
    weights = tmp_path / "loftr_random.pth"
    torch.save(LoFTR(pretrained=None).state_dict(), weights)
    photos = tmp_path / "photos"
    photos.mkdir()
    for stem in small_run.val_stems[:2]:
        shutil.copy(small_run.scene / "images" / f"{stem}.png", photos / f"{stem}.png")

    def localize(out: Path, params: RegisterParams):
        return main(LocConfig(output=out, run=RunOptions(load_config=small_run.config), images=photos,
                              masks=small_run.scene / "masks", register=params))

    # confidence 0: every one of LoFTR's (random) matches reaches lifting and PnP
    params = RegisterParams(matcher="loftr", weights=weights, pair_images=2, pair_size=160, pair_confidence=0.0)
    with pytest.raises(InputError, match="none of the 2 photos could be registered"):
        localize(tmp_path / "out", params)
    records = {s: r["registration"] for s, r in json.loads((tmp_path / "out" / "loc.json").read_text()).items()}
    assert sorted(records) == small_run.val_stems[:2]
    for record in records.values():
        assert record["registered"] is False and record["reason"] and record["matcher"] == "loftr"
    assert max(r["correspondences"] for r in records.values()) > 0  # matches were made and lifted (then refused)
    assert not list((tmp_path / "out").glob("*.png"))
    assert json.loads((tmp_path / "out" / "poses.json").read_text())["frames"] == []

    for bad, expected in ((RegisterParams(matcher="loftr"), "LoFTR needs a local weights file"),
                          (RegisterParams(matcher="loftr", weights=tmp_path / "nope.pth"), "does not exist"),
                          (RegisterParams(weights=weights), "read by --register.matcher loftr only")):
        with pytest.raises(InputError) as err:
            localize(tmp_path / "bad", bad)
        assert expected in err.value.line() and "--register" in err.value.line(), err.value.line()
    torch.save({"not": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError) as err:
        localize(tmp_path / "bad", RegisterParams(matcher="loftr", weights=tmp_path / "other.pth"))
    assert "do not fit the model" in err.value.line()
    assert not (tmp_path / "bad").exists()
