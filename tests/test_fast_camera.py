"""The viewer's and ns-render's camera outputs come from the baked density grid once a checkpoint is loaded
(``render/camera_outputs.py``), agree with nerfstudio's full volume render, and the switch goes back to it.

On the ``small_run`` fixture (tests/small_run.py). Measured there (300 iterations, a 160x120 val view): fast and full
instance ids agree on 0.94 of the pixels both see, while the fast ids of one view against the full ids of another
agree on 0.31 (the negative control); mean rgb error 0.061 against 0.21 for the other view.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.small_run import SmallRun
from tests.test_small_run import BIN, ENV, viewer_setup, write_camera_path

AGREE_MIN = 0.8
"""Share of pixels (opaque in both renders) with the same instance id, fast vs full render of one view."""
CONTROL_MAX = 0.6
"""The same share for two different views (fast of one against full of another): must stay well below AGREE_MIN."""


def agreement(a: dict, b: dict) -> float:
    ids_a, ids_b = a["instance_id"][..., 0], b["instance_id"][..., 0]
    both = (a["accumulation"][..., 0] > 0.5) & (b["accumulation"][..., 0] > 0.5)
    assert both.float().mean() > 0.5  # the views look at the room, not into the void
    return float((ids_a[both] == ids_b[both]).float().mean())


@pytest.fixture(scope="module")
def loaded(small_run: SmallRun):
    """The run as ns-viewer and ns-render load it (nerfstudio's eval_setup) and two val cameras."""
    from instance_nerfacto.render.run import split_cameras

    pipeline = viewer_setup(small_run.config)
    assert pipeline.model.viewer_fast_render.value  # the config's default (fast_camera_outputs: true)
    frames = split_cameras(pipeline, "val")
    cameras = [frames[i][1][frames[i][2] : frames[i][2] + 1] for i in (0, len(frames) // 2)]
    return pipeline, cameras


def test_camera_outputs_come_from_the_baked_grid_and_agree_with_the_full_render(loaded):
    from instance_nerfacto.render.bake import render_label_logits

    pipeline, (camera, other) = loaded
    model = pipeline.model
    assert model.fast_camera is not None and model.fast_camera.attached  # eval_setup told the pipeline its checkpoint
    assert model.uses_fast_camera()
    with torch.no_grad():
        fast = model.get_outputs_for_camera(camera)
        full = model.full_outputs_for_camera(camera)
        full_other = model.full_outputs_for_camera(other)
        # the fast path's own function on the cached grid gives exactly what the model returned
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        logits, _, _ = render_label_logits(model.fast_camera.grid(model.field), model.field,
                                           rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3),
                                           num_samples=model.fast_camera.num_samples, near=model.config.near_plane,
                                           far=model.config.far_plane)
    torch.testing.assert_close(fast["instance_logits"].reshape(-1, logits.shape[-1]), logits)
    assert not torch.allclose(full["instance_logits"], fast["instance_logits"])  # and the full render is another
    # what ns-render and the viewer can ask for: every output of the full render, with its shape
    assert set(full) <= set(fast), set(full) - set(fast)
    for name, value in full.items():
        assert fast[name].shape == value.shape, (name, fast[name].shape, value.shape)
    # the same picture: ids and colour agree with the full render; a different view does not
    same, control = agreement(fast, full), agreement(fast, full_other)
    assert same >= AGREE_MIN, same
    assert control <= CONTROL_MAX, control
    both = (fast["accumulation"][..., 0] > 0.5) & (full["accumulation"][..., 0] > 0.5)
    rgb_error = (fast["rgb"] - full["rgb"]).abs()[both].mean()
    rgb_control = (fast["rgb"] - full_other["rgb"]).abs()[both].mean()
    assert rgb_error < 0.5 * rgb_control, (rgb_error, rgb_control)


def test_switch_goes_back_to_the_full_render(loaded):
    pipeline, (camera, _) = loaded
    model = pipeline.model
    model.viewer_fast_render.value = False  # the viewer's checkbox (default: config fast_camera_outputs)
    try:
        assert not model.uses_fast_camera()
        with torch.no_grad():
            switched = model.get_outputs_for_camera(camera)
            full = model.full_outputs_for_camera(camera)
    finally:
        model.viewer_fast_render.value = True
    torch.testing.assert_close(switched["instance_logits"], full["instance_logits"])
    assert not torch.equal(switched["expected_depth"], switched["depth"])  # the fast path sets them equal


def test_a_click_reads_the_id_the_picture_shows(loaded):
    """The edit panel's click ray (model.ray_outputs) goes through the renderer of the picture: on pixels where the
    fast and the full picture disagree, a click gives the fast id (the full one with the switch off)."""
    pipeline, (camera, _) = loaded
    model = pipeline.model
    with torch.no_grad():
        fast = model.get_outputs_for_camera(camera)["instance_logits"].argmax(-1) + 1
        full = model.full_outputs_for_camera(camera)["instance_logits"].argmax(-1) + 1
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    differ = torch.nonzero(fast != full)
    assert len(differ) > 0  # else this test could not tell the renderers apart
    pixels = differ[torch.linspace(0, len(differ) - 1, min(8, len(differ))).long()].tolist()

    def clicked(row: int, col: int) -> int:
        _, out = model.ray_outputs(rays.origins[row, col].tolist(), rays.directions[row, col].tolist())
        return int(out["instance_logits"].argmax(-1).view(-1)[0]) + 1

    assert [clicked(r, c) for r, c in pixels] == [int(fast[r, c]) for r, c in pixels]
    model.viewer_fast_render.value = False
    try:
        assert [clicked(r, c) for r, c in pixels] == [int(full[r, c]) for r, c in pixels]
    finally:
        model.viewer_fast_render.value = True


def test_a_run_without_a_baked_grid_bakes_it_once_and_says_so(loaded, capsys):
    from instance_nerfacto.render.camera_outputs import FastCameraOutputs

    pipeline, (camera, _) = loaded
    model = pipeline.model
    attached = model.fast_camera
    fresh = FastCameraOutputs(resolution=48)  # a resolution never baked for this run: as a run trained before
    fresh.attach(attached.checkpoint, attached.step)
    model.fast_camera = fresh
    try:
        with torch.no_grad():
            model.get_outputs_for_camera(camera)
            first = capsys.readouterr().out
            model.get_outputs_for_camera(camera)
            second = capsys.readouterr().out
    finally:
        model.fast_camera = attached
        from instance_nerfacto.render.bake import cache_path

        cache_path(attached.checkpoint, attached.step, 48).unlink(missing_ok=True)
    assert "no baked density grid" in first and "baking it once" in first, first
    assert "baking" not in second


def ns_render_instance(config: Path, path_json: Path, out: Path) -> np.ndarray:
    """The real ns-render command's ``instance`` image of the one camera of a camera path."""
    render = subprocess.run([str(BIN / "ns-render"), "camera-path", "--load-config", str(config),
                             "--camera-path-filename", str(path_json), "--output-path", str(out), "--output-format",
                             "images", "--image-format", "png", "--rendered-output-names", "instance"],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert render.returncode == 0, render.stderr[-3000:]
    return np.asarray(Image.open(out / "00000.png").convert("RGB")).astype(np.int64)


def test_ns_render_writes_the_fast_path_picture_and_the_config_flag_switches_it(small_run: SmallRun, loaded,
                                                                                 tmp_path: Path):
    """ns-render on a 40x30 camera path: the run's own config.yml (fast_camera_outputs true by default) and a config
    saved before the flag existed give the fast path's colours; a copy saying ``fast_camera_outputs: false`` gives the
    full render's."""
    import yaml
    from nerfstudio.cameras.camera_paths import get_path_from_json

    from instance_nerfacto.core.palette import colorize

    pipeline, _ = loaded
    cameras = pipeline.datamanager.eval_dataset.cameras
    write_camera_path(tmp_path / "path.json", cameras.camera_to_worlds[0].numpy(), float(cameras.fy[0]),
                      int(cameras.height[0]))
    view = get_path_from_json(json.loads((tmp_path / "path.json").read_text()))[0:1]
    model = pipeline.model
    with torch.no_grad():
        fast_ids = model.get_outputs_for_camera(view)["instance_id"][..., 0].numpy()
        full_ids = model.full_outputs_for_camera(view)["instance_id"][..., 0].numpy()
    assert (fast_ids != full_ids).any()  # else the pictures could not tell the renderers apart

    def matches(image: np.ndarray, ids: np.ndarray) -> float:
        return float((np.abs(image - colorize(ids).astype(np.int64)).max(axis=-1) <= 1).mean())

    image = ns_render_instance(small_run.config, tmp_path / "path.json", tmp_path / "default")
    assert matches(image, fast_ids) > 0.99, matches(image, fast_ids)
    assert matches(image, full_ids) < 0.99  # negative control: not the full render's picture

    config = yaml.load(small_run.config.read_text(), Loader=yaml.Loader)  # a copy names the run's checkpoints
    config.pipeline.model.fast_camera_outputs = False
    (tmp_path / "full" / "config.yml").parent.mkdir()
    (tmp_path / "full" / "config.yml").write_text(yaml.dump(config))
    image = ns_render_instance(tmp_path / "full" / "config.yml", tmp_path / "path.json", tmp_path / "full")
    assert matches(image, full_ids) > 0.99, matches(image, full_ids)

    del config.pipeline.model.__dict__["fast_camera_outputs"]  # a run trained before the flag: the fast path
    (tmp_path / "old" / "config.yml").parent.mkdir()
    (tmp_path / "old" / "config.yml").write_text(yaml.dump(config))
    assert "fast_camera_outputs" not in (tmp_path / "old" / "config.yml").read_text()
    image = ns_render_instance(tmp_path / "old" / "config.yml", tmp_path / "path.json", tmp_path / "old")
    assert matches(image, fast_ids) > 0.99, matches(image, fast_ids)
