"""What users notice, on one small model trained by ns-train on a COLMAP-like dataset (the ``small_run`` fixture):

- a hand edit given to ``instance-merge --edits`` reaches ``ns-render``'s ``instance`` output, the viewer's outputs
  (and its "Merged instance labels" checkbox), ``instance-render`` and ``instance-loc``;
- the end-of-training merge's table is in the checkpoint and keeps the identical twins apart;
- ``instance-loc`` in each of its modes gives the ids ``instance-render`` gives the same frames (and a query camera
  posed with the old ``dataparser_transform @ c2w`` convention does not);
- FastSAM from a local weights file gives masks through every caller (instance-segment, label merging,
  instance-loc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image

from instance_nerfacto.core.files import read_label_png
from instance_nerfacto.core.palette import colorize
from instance_nerfacto.core.runs import latest_checkpoint
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.edit.store import MERGE_TABLE_NAME
from tests.fake_fastsam import random_fastsam_weights
from tests.small_run import SmallRun

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}


def viewer_ids(pipeline, camera, merged: bool) -> np.ndarray:
    """``instance_id`` of one camera as the viewer renders it, with the "Merged instance labels" checkbox set."""
    model = pipeline.model
    model.viewer_merged_labels.value = merged
    try:
        with torch.no_grad():
            out = model.get_outputs_for_camera(camera.to(model.device))
    finally:
        model.viewer_merged_labels.value = True
    return out["instance_id"][..., 0].cpu().numpy().astype(np.int64)


def viewer_setup(config: Path):
    """The pipeline as ns-viewer loads it (nerfstudio's eval_setup, test mode)."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    return pipeline


def write_camera_path(path: Path, c2w_model: np.ndarray, fy: float, image_height: int, width: int = 40,
                      height: int = 30) -> None:
    """A camera-path JSON (the viewer's export format, model frame) with one camera at width x height."""
    fov = float(np.degrees(2 * np.arctan(image_height / 2 / fy)))
    c2w = np.vstack([np.asarray(c2w_model)[:3, :4], [0, 0, 0, 1]])
    path.write_text(json.dumps({
        "camera_type": "perspective", "render_height": height, "render_width": width, "seconds": 1.0,
        "camera_path": [{"camera_to_world": c2w.ravel().tolist(), "fov": fov, "aspect": width / height}],
    }))


def render_split(config: Path, out: Path, split: str = "val", every: int = 1) -> Path:
    from instance_nerfacto.core.runs import RunOptions
    from instance_nerfacto.render.cli import RenderConfig
    from instance_nerfacto.render.cli import main as render_main

    render_main(RenderConfig(run=RunOptions(load_config=config, threads=1), output=out, split=split, every=every))
    return out


def localize(run: SmallRun, data: Path, out: Path, **options) -> Dict:
    from instance_nerfacto.core.runs import RunOptions
    from instance_nerfacto.loc.cli import LocConfig
    from instance_nerfacto.loc.cli import main as loc_main

    options.setdefault("masks", run.scene / "masks")
    return loc_main(LocConfig(data=data, output=out, run=RunOptions(load_config=run.config), **options))


def agreement(a_dir: Path, b_dir: Path, stems) -> float:
    """Fraction of the pixels both label (id > 0) on which the ids of two folders of label PNGs agree."""
    same = total = 0
    for stem in stems:
        a, b = read_label_png(a_dir / f"{stem}.png"), read_label_png(b_dir / f"{stem}.png")
        both = (a > 0) & (b > 0)
        same += int((a[both] == b[both]).sum())
        total += int(both.sum())
    return same / max(total, 1)


def pose_file(run: SmallRun, path: Path, stems, depth: bool, pose=lambda c2w: c2w) -> Path:
    """The frames ``stems`` of the dataset as a pose file of new photos (absolute paths; ``pose`` maps each
    transform_matrix), with or without their depth maps."""
    meta = json.loads((run.scene / "transforms.json").read_text())
    shots = {k: v for k, v in meta.items() if k not in ("frames", "train_filenames", "val_filenames")}
    frames = []
    for frame in meta["frames"]:
        if Path(frame["file_path"]).stem not in stems:
            continue
        frame = {**frame, "file_path": str(run.scene / frame["file_path"]),
                 "transform_matrix": np.asarray(pose(np.asarray(frame["transform_matrix"]))).tolist()}
        if depth:
            frame["depth_file_path"] = str(run.scene / frame["depth_file_path"])
        else:
            frame.pop("depth_file_path", None)
        frames.append(frame)
    path.write_text(json.dumps({**shots, "frames": frames}))
    return path


# ---------------------------------------------------------------------------------------------------------------
# 2. merged ids reach ns-render, the viewer, instance-render and instance-loc


def test_hand_edit_reaches_ns_render_viewer_instance_render_and_loc(small_run: SmallRun, tmp_path: Path):
    """``instance-merge --edits`` with 'A B' for two ids visible in a view: ns-render's ``instance`` image paints A's
    pixels in B's colour, the viewer's ``instance_id`` holds B there (raw ids with the checkbox off),
    ``instance-render`` and ``instance-loc`` give B where A was. The old design (the table only in a JSON file that
    ns-render ignored) leaves colour(A) in ns-render's image and fails here."""
    from instance_nerfacto.render.run import split_cameras

    run = small_run
    config = run.config
    pipeline = viewer_setup(config)
    stem, cameras, index = split_cameras(pipeline, "val")[0]
    c2w = cameras.camera_to_worlds[index].numpy()
    write_camera_path(tmp_path / "path.json", c2w, float(cameras.fy[index]), int(cameras.height[index]))
    from nerfstudio.cameras.camera_paths import get_path_from_json

    view = get_path_from_json(json.loads((tmp_path / "path.json").read_text()))[0:1]
    merged_before = viewer_ids(pipeline, view, merged=True)
    raw_before = viewer_ids(pipeline, view, merged=False)
    assert merged_before.shape == (30, 40)
    table_before = MergeTable.from_lut(pipeline.model.merge_lut.cpu().numpy())
    np.testing.assert_array_equal(merged_before, table_before.apply(raw_before))
    del pipeline

    rendered_before = read_label_png(render_split(config, tmp_path / "render_before", every=8) / f"{stem}.png")
    # A and B: the two ids covering most of the view, in the 40x30 volume render and in instance-render's frame
    ids, counts = np.unique(merged_before[merged_before > 0], return_counts=True)
    visible = [int(i) for i, c in sorted(zip(ids, counts), key=lambda t: -t[1])
               if c >= 20 and (rendered_before == i).sum() >= 200]
    assert len(visible) >= 2, (ids, counts)
    a, b = visible[:2]

    checkpoint = latest_checkpoint(config.parent)
    saved = checkpoint.read_bytes(), (config.parent / MERGE_TABLE_NAME).read_bytes()
    try:
        (tmp_path / "fixes.txt").write_text(f"# label {a} is the same object as label {b}\n{a} {b}\n")
        merge = subprocess.run([str(BIN / "instance-merge"), "--load-config", str(config), "--edits",
                                str(tmp_path / "fixes.txt")], capture_output=True, text=True, env=ENV, timeout=600)
        assert merge.returncode == 0, merge.stderr[-3000:]
        # its screen is its own output: its one line, no tcnn notice, checkpoint path or warnings (tests/test_screen.py)
        assert merge.stdout.startswith("instance-merge:") and merge.stdout.count("\n") == 1, merge.stdout[-3000:]
        assert merge.stderr == "", merge.stderr[-3000:]
        expected = np.where(merged_before == a, b, merged_before)

        # ns-render, the real command, with the camera path
        render = subprocess.run([str(BIN / "ns-render"), "camera-path", "--load-config", str(config),
                                 "--camera-path-filename", str(tmp_path / "path.json"),
                                 "--output-path", str(tmp_path / "ns" / "view"), "--output-format", "images",
                                 "--image-format", "png", "--rendered-output-names", "instance"],
                                capture_output=True, text=True, env=ENV, timeout=600)
        assert render.returncode == 0, render.stderr[-3000:]
        image = np.asarray(Image.open(tmp_path / "ns" / "view" / "00000.png").convert("RGB")).astype(np.int64)
        assert image.shape == (30, 40, 3)
        close = np.abs(image - colorize(expected).astype(np.int64)).max(axis=-1) <= 1
        was_a = merged_before == a
        assert close[was_a].mean() > 0.95, close[was_a].mean()  # A's pixels are B's colour now
        assert close[~was_a].mean() > 0.95, close[~was_a].mean()  # and the others kept theirs
        still_a = np.abs(image - colorize(np.full_like(merged_before, a)).astype(np.int64)).max(axis=-1) <= 1
        assert still_a.mean() < 0.02

        # the viewer: a fresh load (as ns-viewer starts) shows merged ids, and raw ids with the checkbox off
        pipeline = viewer_setup(config)
        np.testing.assert_array_equal(viewer_ids(pipeline, view, merged=True), expected)
        raw = viewer_ids(pipeline, view, merged=False)
        np.testing.assert_array_equal(raw, raw_before)
        assert (raw[was_a] != b).all()
        del pipeline

        # instance-render and instance-loc on that frame
        rendered = read_label_png(render_split(config, tmp_path / "render_after", every=8) / f"{stem}.png")
        np.testing.assert_array_equal(rendered, np.where(rendered_before == a, b, rendered_before))
        localize(run, run.scene, tmp_path / "loc", frames=stem)
        located = read_label_png(tmp_path / "loc" / f"{stem}.png")
        assert a not in located and b in located
        on_a = rendered_before == a
        assert (located[on_a] == b).mean() > 0.7, (located[on_a] == b).mean()
    finally:
        from instance_nerfacto.core.files import atomic_write_bytes

        atomic_write_bytes(checkpoint, saved[0])
        atomic_write_bytes(config.parent / MERGE_TABLE_NAME, saved[1])


# ---------------------------------------------------------------------------------------------------------------
# 3. merging joins the split label


def test_end_of_training_merge_is_in_the_checkpoint_and_keeps_things_apart(small_run: SmallRun):
    """The merge that ns-train runs after training puts its table into the checkpoint that ns-render, the viewer and
    every command read (the same table as its record merge_table.json), and merges no two of the other things (the
    room holds identical twins, which the cannot-link set of the pseudolabels must keep apart).

    Whether it joins the split label at this size is not asserted: over three view seeds, the split pair scored 0.33,
    0.33 and 0.60 against the 0.5 threshold after 300 iterations (the slow test in test_merging_trained.py trains 600
    iterations for that)."""
    from instance_nerfacto.edit.store import read_record

    run = small_run
    record = read_record(run.config.parent)
    assert record["checkpoint"] == latest_checkpoint(run.config.parent).name
    state = torch.load(latest_checkpoint(run.config.parent), map_location="cpu", weights_only=False)
    table = MergeTable.from_lut(state["pipeline"]["_model.merge_lut"].numpy())
    assert table == MergeTable(record["final"]), record
    merged = table.apply(np.array(run.other_things))
    assert len(set(merged.tolist())) == len(run.other_things), record
    names = [v["name"] for v in json.loads((run.scene / "instances.json").read_text()).values() if v["is_thing"]]
    assert len(names) > len(set(names))  # the scene really holds identical objects


def test_merge_views_from_the_fast_renderer_look_like_the_volume_render(small_run: SmallRun):
    """The end-of-training merge segments views rendered from the baked density grid (colour and labels at the
    heaviest samples of each ray); they must show what nerfstudio's volume render shows at the same poses (same seed,
    same perturbed views), and differ from the volume render of other views (negative control)."""
    from instance_nerfacto.merge.views import fast_views, volume_views
    from instance_nerfacto.render.run import load_run

    loaded = load_run(small_run.config)
    loaded.pipeline.model.eval()
    cameras = loaded.pipeline.datamanager.train_dataparser_outputs.cameras
    fast = list(fast_views(loaded.pipeline, cameras, 3, 2.0, np.random.default_rng(7), loaded.checkpoint, loaded.step))
    volume = list(volume_views(loaded.pipeline.model, cameras, 3, 2.0, np.random.default_rng(7)))
    for (rgb_fast, ids_fast), (rgb_volume, ids_volume) in zip(fast, volume):
        assert rgb_fast.shape == rgb_volume.shape and rgb_fast.dtype == np.uint8
        assert np.abs(rgb_fast.astype(int) - rgb_volume.astype(int)).mean() < 12  # of 255
        assert (ids_fast == ids_volume).mean() > 0.8
    shifted = np.abs(fast[0][0].astype(int) - volume[1][0].astype(int)).mean()
    assert shifted > 2 * np.abs(fast[0][0].astype(int) - volume[0][0].astype(int)).mean()


# ---------------------------------------------------------------------------------------------------------------
# 4. instance-loc in each mode agrees with instance-render


THRESHOLD = 0.75
"""Agreement of instance-loc with instance-render (pixels both label). Measured on the fixture run (300 iterations, val
frames 0-2): regions 0.87, dense through the rendered surface 0.96, measured depth 0.88, --query-depth off 0.88, map
depth 0.84; the old pose convention 0.29."""

LOC_MODES = {
    "regions": dict(mode="regions"),
    "dense_rendered_surface": dict(mode="dense", query_depth="off", surface_strides=(2, 1)),  # every boundary pixel
    "query_depth_on": dict(query_depth="on"),
    "query_depth_off": dict(query_depth="off"),
}


def test_instance_loc_modes_agree_with_instance_render(small_run: SmallRun, tmp_path: Path):
    """On the COLMAP-like dataset (poses carry applied_transform), every instance-loc mode gives the val frames the
    ids instance-render gives them on most pixels: masks voting, dense reads through the rendered surface, at the
    frames' measured depth, and (a pose file of new photos without depth) at the map's depth. The same photos posed
    with the old convention (dataparser_transform applied on top of poses that already carry applied_transform)
    land elsewhere in the map and fail the same threshold."""
    run = small_run
    stems = run.val_stems[:3]
    reference = render_split(run.config, tmp_path / "render")
    scores, reports = {}, {}
    for name, options in LOC_MODES.items():
        reports[name] = localize(run, run.scene, tmp_path / name, frames="val_0000[0-2]", **options)
        scores[name] = agreement(tmp_path / name, reference, stems)
    photos = pose_file(run, tmp_path / "photos.json", stems, depth=False)
    reports["map_depth"] = localize(run, photos, tmp_path / "map_depth")
    scores["map_depth"] = agreement(tmp_path / "map_depth", reference, stems)
    # the old convention for the query camera: the dataset pose A @ c2w is mapped as if it were c2w
    wrong = pose_file(run, tmp_path / "wrong.json", stems, depth=False, pose=lambda c2w: run.applied @ c2w)
    localize(run, wrong, tmp_path / "wrong", query_depth="off")
    scores["wrong_convention"] = agreement(tmp_path / "wrong", reference, stems)
    print(scores)

    assert sorted(reports["regions"]) == stems
    assert {r["mode"] for r in reports["regions"].values()} == {"regions"}
    assert {(r["mode"], r["depth"]) for r in reports["dense_rendered_surface"].values()} == {("dense", "rendered")}
    assert {(r["mode"], r["depth"]) for r in reports["query_depth_on"].values()} == {("dense", "measured")}
    # the map was trained on depth maps: auto reads its rendered surface by mask voting
    assert {(r["mode"], r["depth"]) for r in reports["query_depth_off"].values()} == {("regions", "rendered")}
    assert {(r["mode"], r["depth"]) for r in reports["map_depth"].values()} == {("dense", "map")}
    for name in ("regions", "dense_rendered_surface", "query_depth_on", "query_depth_off", "map_depth"):
        assert scores[name] > THRESHOLD, scores
    assert scores["wrong_convention"] < THRESHOLD, scores


# ---------------------------------------------------------------------------------------------------------------
# 5. FastSAM through every caller


@pytest.fixture(scope="module")
def fastsam_weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fastsam")
    cwd = os.getcwd()
    os.chdir(root)  # ultralytics may write settings or runs/ beside the working directory
    try:
        return random_fastsam_weights(root / "fastsam_random.pt")
    finally:
        os.chdir(cwd)


def test_fastsam_gives_masks_through_every_caller(small_run: SmallRun, fastsam_weights: Path, tmp_path: Path):
    from instance_nerfacto.core.masks import read_masks
    from instance_nerfacto.merge.views import MergeViews, merge_labels
    from instance_nerfacto.render.run import load_run

    run = small_run
    # instance-segment (the CLI) on two frames
    two = pose_file(run, tmp_path / "two.json", run.val_stems[:2], depth=False)
    data = tmp_path / "two"
    data.mkdir()
    (data / "transforms.json").write_text(two.read_text())
    proc = subprocess.run([str(BIN / "instance-segment"), "--data", str(data), "--segmenter", "fastsam", "--weights",
                           str(fastsam_weights), "--imgsz", "160", "--quiet"], capture_output=True, text=True, env=ENV,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted((data / "masks").glob("*.npz"))
    assert [p.stem for p in files] == run.val_stems[:2]
    for path in files:
        masks, scores = read_masks(path)
        assert masks.shape[0] > 0 and masks.shape[1:] == (120, 160) and scores.shape == (len(masks),)
        assert masks.reshape(len(masks), -1).any(axis=1).all()

    # label merging on views from the fast renderer and from nerfstudio's volume render
    loaded = load_run(run.config)
    for renderer in ("fast", "volume"):
        how = MergeViews(views=2, renderer=renderer, segmenter="fastsam", weights=fastsam_weights)
        _, stats = merge_labels(loaded.pipeline, how, loaded.checkpoint, loaded.step)
        assert stats["labels_seen"] > 0, stats  # labels were counted inside FastSAM regions: the regions are not empty
    del loaded

    # instance-loc segmenting a query photo
    report = localize(run, run.scene, tmp_path / "loc", frames=run.val_stems[0], masks=None, segmenter="fastsam",
                      weights=fastsam_weights, query_depth="off")
    assert len(report[run.val_stems[0]]["regions"]) > 0
    assert read_label_png(tmp_path / "loc" / f"{run.val_stems[0]}.png").any()


def test_fastsam_without_detections_gives_an_empty_region_map(tiny_scene: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    """Random weights as built (no anchor passes the confidence): no masks is an empty region map, not a crash (label
    merging segments rendered views where FastSAM may find nothing; instance-loc then reports it in one line)."""
    from instance_nerfacto.core.segmenters import segment_regions

    monkeypatch.chdir(tmp_path)
    weights = random_fastsam_weights(tmp_path / "silent.pt", detect=False)
    rgb = np.asarray(Image.open(tiny_scene / "images" / "frame_00000.png").convert("RGB"))
    regions = segment_regions(rgb, "fastsam", weights, imgsz=160)
    assert regions.shape == (120, 160) and not regions.any()
    detecting = random_fastsam_weights(tmp_path / "detecting.pt")
    assert segment_regions(rgb, "fastsam", detecting, imgsz=160).any()
