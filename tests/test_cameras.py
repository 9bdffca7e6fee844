"""Dataset poses -> the model's frame, checked against nerfstudio's own dataparser, with and without the
``applied_transform`` that ns-process-data (COLMAP) writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.render.cameras import DatasetToModel
from tests.small_run import colmap_like_copy


def parsed(scene: Path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs("train")


@pytest.mark.parametrize("applied", [False, True])
def test_dataset_poses_land_where_nerfstudio_puts_them(tiny_scene: Path, tmp_path: Path, applied: bool):
    scene = tiny_scene
    if applied:
        scene = tmp_path / "colmap"
        colmap_like_copy(tiny_scene, scene)
    outputs = parsed(scene)
    meta = json.loads((scene / "transforms.json").read_text())
    to_model = DatasetToModel.from_dataparser(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale),
                                              meta)
    by_stem = load_dataset(scene).by_stem()
    expected = outputs.cameras.camera_to_worlds.numpy().astype(np.float64)
    got = np.stack([to_model.c2w(by_stem[Path(name).stem].c2w)[:3] for name in outputs.image_filenames])
    assert len(got) > 10
    assert np.abs(got - expected).max() < 1e-4
    # and back: camera centres of the model frame return to transforms.json's
    centres = np.stack([by_stem[Path(name).stem].c2w[:3, 3] for name in outputs.image_filenames])
    assert np.abs(to_model.points_to_dataset(expected[:, :3, 3]) - centres).max() < 1e-4

    # the convention a COLMAP dataset breaks: dataparser_transform applied to poses that already carry it
    naive = np.vstack([outputs.dataparser_transform.numpy(), [0, 0, 0, 1]])
    wrong = np.stack([(naive @ by_stem[Path(name).stem].c2w)[:3] for name in outputs.image_filenames])
    wrong[:, :3, 3] *= float(outputs.dataparser_scale)
    error = np.abs(wrong - expected).max()
    assert (error > 0.1) if applied else (error < 1e-4)


def test_depth_listed_for_some_frames_is_one_line(tiny_scene: Path, tmp_path: Path):
    from instance_nerfacto.core.dataset import check_depth_listing
    from instance_nerfacto.core.errors import InputError

    meta = json.loads((tiny_scene / "transforms.json").read_text())
    check_depth_listing(tiny_scene / "transforms.json")  # every frame lists one: fine
    for frame in meta["frames"][:5]:
        frame.pop("depth_file_path")
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"lists depth maps for {len(meta['frames']) - 5} of {len(meta['frames'])}"):
        check_depth_listing(path)
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
    path.write_text(json.dumps(meta))
    check_depth_listing(path)  # none: fine


LENSES = {
    "pinhole": dict(fisheye=False, distortion=(0.0,) * 6),
    "radial": dict(fisheye=False, distortion=(0.12, -0.05, 0.01, 0.0, 0.002, -0.001)),
    "fisheye": dict(fisheye=True, distortion=(0.05, 0.01, -0.01, 0.002, 0.0, 0.0)),
}


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_pixel_rays_from_the_lens_table_equal_nerfstudios_rays(lens: str):
    """InstanceLoc's rays come from a per-lens table of camera-frame rays, rotated and placed per query: they must be
    the rays nerfstudio generates for those pixels at that pose (lens distortion included), and a table of another
    lens must not be served for this one (the cache is keyed by the whole lens)."""
    import torch
    from nerfstudio.cameras.cameras import Cameras
    from scipy.spatial.transform import Rotation

    from instance_nerfacto.core.camera import CameraModel
    from instance_nerfacto.loc.rays import pixel_rays

    model = CameraModel(150.0, 152.0, 80.3, 59.7, 160, 120, **LENSES[lens])
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix()
    c2w[:3, 3] = [0.3, -1.0, 2.0]
    camera = Cameras(camera_to_worlds=torch.tensor(c2w[None, :3, :4], dtype=torch.float32), **model.nerfstudio())
    rng = np.random.default_rng(0)
    coords = np.stack([rng.integers(0, 120, 400), rng.integers(0, 160, 400)], axis=1)
    coords[:2] = [[0, 0], [119, 159]]  # the corners, where a lens bends most
    expected = camera.generate_rays(camera_indices=torch.zeros((len(coords), 1), dtype=torch.long),
                                    coords=torch.from_numpy(coords.astype(np.float32) + 0.5))
    got = pixel_rays(camera, coords)
    for key in ("origins", "directions", "pixel_area"):
        np.testing.assert_allclose(getattr(got, key).numpy(), getattr(expected, key).numpy(), atol=1e-5)
    np.testing.assert_allclose(got.metadata["directions_norm"].numpy(), expected.metadata["directions_norm"].numpy(),
                               atol=1e-5)
    # negative control: the same pixels through a lens with another k1 (the first call cached its own table)
    other = CameraModel(150.0, 152.0, 80.3, 59.7, 160, 120, fisheye=model.fisheye,
                        distortion=(model.distortion[0] + 0.2,) + model.distortion[1:])
    other_camera = Cameras(camera_to_worlds=camera.camera_to_worlds, **other.nerfstudio())
    moved = np.abs(pixel_rays(other_camera, coords[:2]).directions.numpy() - expected.directions[:2].numpy()).max()
    assert moved > 1e-2
    with pytest.raises(ValueError, match="outside the 160x120 image"):
        pixel_rays(camera, np.array([[120, 0]]))
    # a lens above the table's size limit takes nerfstudio's rays directly: the same rays
    import instance_nerfacto.loc.rays as rays

    limit, rays.TABLE_MAX_PIXELS = rays.TABLE_MAX_PIXELS, 100
    try:
        direct = pixel_rays(camera, coords)
    finally:
        rays.TABLE_MAX_PIXELS = limit
    np.testing.assert_allclose(direct.directions.numpy(), expected.directions.numpy(), atol=1e-6)
