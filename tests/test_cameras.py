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
