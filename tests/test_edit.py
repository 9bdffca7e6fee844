"""Hand edits without a browser: the edit file, the label map every command applies (merges, splits by nearest seed,
names), the editing session (select, merge, split, undo, save) and its way into the checkpoint."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from instance_nerfacto.core.errors import InputError
from instance_nerfacto.core.palette import colorize
from instance_nerfacto.edit.edits import Merge, Name, Split, format_label_edits, parse_label_edits
from instance_nerfacto.edit.label_map import LabelEditState, LabelMap, MergeTable
from instance_nerfacto.edit.session import EditSession
from instance_nerfacto.edit.store import STATE_KEY, read_record, read_run_edits, store_label_edits

SPLIT = Split(7, ((7, (0.0, 0.0, 0.0)), (31, (1.0, 0.0, 0.0))))


def test_edit_file_round_trip_and_old_pair_files_still_parse() -> None:
    edits = [Merge(12, 4), SPLIT, Name(4, "red  chair"), Merge(9, 0)]
    parsed = parse_label_edits(format_label_edits(edits))
    assert parsed == [Merge(12, 4), SPLIT, Name(4, "red chair"), Merge(9, 0)]
    assert parse_label_edits("# old format\n12 4\n9 0  # noise\n") == [Merge(12, 4), Merge(9, 0)]


@pytest.mark.parametrize("line", ["split 7 7 0 0 0", "split 7 7 0 0 0 8 1 1", "split 7 7 a 0 0 8 1 1 1",
                                  "name 4", "1 2 3", "0 4", "split 7 7 0 0 0 8 inf 0 0"])
def test_bad_edit_lines_are_one_error_with_the_line(line: str) -> None:
    with pytest.raises(InputError, match="line 2"):
        parse_label_edits(f"3 1\n{line}\n")


def test_split_assigns_points_of_the_label_to_the_nearest_seed_and_leaves_others() -> None:
    label_map = LabelMap.compile({}, [SPLIT])
    ids = np.array([7, 7, 7, 5], dtype=np.uint16)
    points = np.array([[0.1, 0, 0], [0.9, 0, 0], [0.6, 0.2, 0], [0.9, 0, 0]])
    assert label_map.apply(ids, points).tolist() == [7, 31, 31, 5]
    out = label_map.apply(torch.from_numpy(ids.astype(np.int64)).view(2, 2), torch.from_numpy(points).view(2, 2, 3))
    assert out.shape == (2, 2) and out.view(-1).tolist() == [7, 31, 31, 5]
    with pytest.raises(InputError, match="split"):
        label_map.apply(ids)  # a split without points cannot be applied: never silently ignored


def test_edits_apply_in_order_through_merges_before_and_after_a_split() -> None:
    # automatic 3 -> 7; hand: 8 -> 7 (into the table); split 7; then the new part 31 joins 5
    label_map = LabelMap.compile({3: 7}, [Merge(8, 7), SPLIT, Merge(31, 5)])
    assert label_map.merge == MergeTable({3: 7, 8: 7}) and label_map.has_splits
    ids = np.array([3, 8, 7, 3, 5])
    points = np.array([[0.1, 0, 0], [0.2, 0, 0], [0.1, 0, 0], [0.95, 0, 0], [5, 5, 5]])
    assert label_map.apply(ids, points).tolist() == [7, 7, 7, 5, 5]
    # the checkpoint form gives back the same map
    again = LabelMap.from_parts(torch.from_numpy(label_map.merge.lut(40)), label_map.state())
    assert again.apply(ids, points).tolist() == [7, 7, 7, 5, 5]
    # merges only: the program stays empty, the map is the merge table (what instance-merge --edits stored before)
    assert LabelMap.compile({3: 1}, [Merge(12, 4)]).program == []


def test_state_module_travels_in_a_state_dict() -> None:
    state = LabelMap.compile({}, [SPLIT, Name(31, "lamp")]).state()
    module = LabelEditState()
    module.set_extra_state(state)
    copy = LabelEditState()
    copy.load_state_dict(module.state_dict())
    assert copy.get_extra_state() == state
    assert LabelMap.from_parts(np.arange(10), copy.get_extra_state()).names == {31: "lamp"}


def test_session_select_merge_split_name_undo() -> None:
    stats = {1: {"frames": 12}, 2: {"frames": 4}, 3: {"frames": 9}}
    session = EditSession(num_labels=3, automatic={}, label_stats=stats)
    session.click(1, (0, 0, 0))
    session.click(2, (1, 0, 0), add=True)
    assert session.selected_ids == [1, 2]
    colours = session.colours(np.array([1, 2, 3])).astype(int)
    plain = colorize(np.array([1, 2, 3])).astype(int)
    assert (colours[:2] == plain[:2]).all() and (colours[2] < plain[2]).all()  # the unselected 3 is dimmed
    assert session.merge_selected() == [Merge(2, 1)]
    assert session.label_map.apply(np.array([1, 2, 3])).tolist() == [1, 1, 3]
    assert "training frames 12 (label 1) + 4 (label 2)" in session.describe(1, pixels=50)
    # split label 3: the click that selected it keeps 3, the second click seeds a new id
    session.click(3, (0, 0, 0))
    session.arm_split()
    edit = session.click(3, (2, 0, 0))
    assert edit == Split(3, ((3, (0.0, 0.0, 0.0)), (4, (2.0, 0.0, 0.0))))
    assert session.selected_ids == [4] and "a split part" in session.describe(4)
    assert session.label_map.apply(np.array([3, 3]), np.array([[0.2, 0, 0], [1.9, 0, 0]])).tolist() == [3, 4]
    session.name_selected("  teddy ")
    assert session.label_map.names == {4: "teddy"}
    assert session.undo() == Name(4, "teddy") and session.undo() == edit
    assert not session.label_map.has_splits and session.edits == [Merge(2, 1)]
    with pytest.raises(ValueError):
        session.merge_selected()


def _fake_run(tmp_path: Path, num_labels: int = 5) -> Path:
    run = tmp_path / "run"
    (run / "nerfstudio_models").mkdir(parents=True)
    state = {"pipeline": {"_model.merge_lut": torch.arange(num_labels + 1), "_model.other": torch.zeros(2)}}
    torch.save(state, run / "nerfstudio_models" / "step-000000100.ckpt")
    (run / "merge_table.json").write_text(json.dumps({"merge": {"5": 4}, "edits": [], "final": {"5": 4}}))
    return run


def test_save_writes_the_edit_file_and_the_checkpoint_and_reload_gives_the_same_map(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    session = EditSession(num_labels=5, automatic=read_record(run)["merge"])
    session.click(2, (0, 0, 0))
    session.click(3, (0, 0, 0), add=True)
    session.merge_selected()
    session.arm_split()
    session.click(2, (1, 1, 1))
    saved = session.save(run)
    assert not session.unsaved
    assert read_run_edits(run) == session.edits  # the text file beside the run
    state = torch.load(run / "nerfstudio_models" / "step-000000100.ckpt", weights_only=False)["pipeline"]
    assert state["_model.merge_lut"].tolist() == [0, 1, 2, 2, 4, 4]  # automatic 5->4 and the hand merge 3->2
    assert state["_model." + STATE_KEY] == saved.state()
    reloaded = LabelMap.from_parts(state["_model.merge_lut"], state["_model." + STATE_KEY])
    ids, points = np.array([3, 3, 5]), np.array([[0, 0, 0], [1, 1, 0.9], [0, 0, 0]])
    assert reloaded.apply(ids, points).tolist() == saved.apply(ids, points).tolist() == [2, 6, 4]
    record = read_record(run)
    assert record["merge"] == {5: 4} and record["splits"] == 1 and record["edits"] == [[3, 2]]
    # a reopened session starts from the saved edits and can undo them
    again = EditSession(num_labels=5, automatic=record["merge"], edits=read_run_edits(run))
    assert again.undo() is not None and again.label_map.program == []


def test_store_without_edits_resets_the_program(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    store_label_edits(run, [SPLIT])
    store_label_edits(run, [])
    state = torch.load(run / "nerfstudio_models" / "step-000000100.ckpt", weights_only=False)["pipeline"]
    assert LabelMap.from_parts(state["_model.merge_lut"], state["_model." + STATE_KEY]).program == []


# -- the model: one owner of the edits for the viewer, ns-render and every command ----------------------------------


def _model(num_labels: int = 3):
    """A model with the viewer's edit panel, as the pipeline builds it."""
    from instance_nerfacto.edit.viewer import install_edit_panel
    from tests.test_field import build_model

    torch.manual_seed(0)
    model = build_model(num_labels)
    install_edit_panel(model)
    model.eval()
    return model


def test_model_outputs_apply_merges_and_splits_at_the_surface_point_and_the_checkpoint_carries_them() -> None:
    from tests.test_field import random_rays

    model = _model()
    label_map = LabelMap.compile({2: 1, 3: 1}, [Split(1, ((1, (0.0, 0.0, -5.0)), (9, (0.0, 0.0, 5.0)))),
                                                Name(9, "lamp")])
    model.set_label_map(label_map)
    rays = random_rays(64)
    with torch.no_grad():
        outputs = model.get_outputs(rays)
    points = rays.origins + rays.directions * outputs["depth"]
    expected = np.where(points[:, 2].numpy() > 0, 9, 1)
    assert outputs["instance_id"][:, 0].tolist() == expected.tolist() and len(set(expected.tolist())) == 2
    raw = outputs["instance_logits"].argmax(-1) + 1
    assert model.label_map().apply(raw, points).tolist() == expected.tolist()  # what instance-render etc. call
    again = _model()
    again.load_state_dict(model.state_dict())
    assert again.label_map().state() == label_map.state() and again.label_map().names == {9: "lamp"}
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("label_edits")}
    fresh = _model()
    fresh.load_state_dict(old, strict=False)  # a checkpoint from before edits: no program
    assert fresh.label_map().program == []


def test_the_pipeline_gives_the_model_its_edit_panel_and_a_model_alone_renders_without_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline
    from nerfstudio.utils import eval_utils

    from instance_nerfacto.edit.viewer import InstanceEditPanel
    from instance_nerfacto.export.selection import export_selection
    from instance_nerfacto.pipeline import InstancePipeline
    from tests.test_field import build_model

    torch.manual_seed(0)
    alone = build_model(3).eval()
    assert alone.instance_edits is None  # the model imports no UI: ns-render and tests build it without a panel
    camera = Cameras(camera_to_worlds=torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5]]]), fx=8.0,
                     fy=8.0, cx=4.0, cy=3.0, width=8, height=6)
    outputs = alone.get_outputs_for_camera(camera)
    expected = torch.from_numpy(colorize(outputs["instance_id"][..., 0].numpy())).float() / 255.0
    assert outputs["instance_id"].shape == (6, 8, 1) and torch.allclose(outputs["instance"], expected)

    def vanilla_init(pipeline, *args, **kwargs) -> None:  # nerfstudio's pipeline without a datamanager
        torch.nn.Module.__init__(pipeline)
        pipeline._model = build_model(3)

    monkeypatch.setattr(VanillaPipeline, "__init__", vanilla_init)
    monkeypatch.setattr(eval_utils, "eval_load_checkpoint", eval_utils.eval_load_checkpoint)  # the pipeline wraps it
    pipeline = InstancePipeline()
    panel = pipeline.model.instance_edits
    assert isinstance(panel, InstanceEditPanel) and panel.exporter is export_selection
    assert "instance_edits" not in "".join(pipeline.model.state_dict())  # UI only: nothing of it in a checkpoint


class _FakeViewer:
    def __init__(self, run_dir: Path) -> None:
        self.log_filename = run_dir / "viewer_log_filename.txt"
        self.rerenders = 0

    def _trigger_rerender(self) -> None:
        self.rerenders += 1


def test_viewer_panel_click_selects_highlights_from_the_cached_render_and_splits(tmp_path: Path) -> None:
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.viewer.viewer_elements import ViewerClick

    model = _model()
    run = _fake_run(tmp_path, num_labels=3)
    (run / "merge_table.json").unlink()
    viewer = _FakeViewer(run)
    model.viewer_control.viewer = viewer
    c2w = torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5]]])
    camera = Cameras(camera_to_worlds=c2w, fx=20.0, fy=20.0, cx=16.0, cy=12.0, width=32, height=24)
    renders = []

    def render():
        renders.append(1)
        return super(type(model), model).get_outputs_for_camera(camera)

    panel = model.instance_edits
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement

    # what nerfstudio's viewer installs: the panel's elements, found without walking back into the model
    names = [element.name for _, element in parse_object(model, ViewerElement, "Custom Elements")]
    assert {"Merge selected", "Split: click its other object", "Undo last edit", "Save edits",
            "Export selection"} <= set(names)
    first = panel.outputs_for_camera(camera, render)
    centre = first["instance_id"][12, 16, 0].item()
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    origin, direction = rays.origins[12, 16].tolist(), rays.directions[12, 16].tolist()
    panel.on_click(ViewerClick(tuple(origin), tuple(direction), (0.5, 0.5)))
    assert viewer.rerenders == 1 and panel.edit_session().selected_ids == [centre]
    second = panel.outputs_for_camera(camera, render)
    assert len(renders) == 1  # same pose: re-coloured from the cache, not rendered again
    ids = second["instance_id"][..., 0]
    dimmed = second["instance"][ids != centre]
    assert torch.allclose(second["instance"][ids == centre], first["instance"][ids == centre])
    assert dimmed.numel() == 0 or float(dimmed.max()) <= float(first["instance"][ids != centre].max()) * 0.3
    assert f"id {centre}" in panel.e1_selected.value and "px in view" in panel.e1_selected.value
    assert panel.last_timing["click_to_render_s"] < 1.0
    # the viewer asks for the same view at another size (moving, then still): re-coloured at the size it asked for
    small = Cameras(camera_to_worlds=c2w, fx=10.0, fy=10.0, cx=8.0, cy=6.0, width=16, height=12)
    resized = panel.outputs_for_camera(small, render)
    assert len(renders) == 1 and resized["depth"].shape == (12, 16, 1) and resized["instance"].shape == (12, 16, 3)
    # split the centre instance with a second click elsewhere inside it, save, and the checkpoint has it
    inside = np.argwhere(ids.numpy() == centre)
    far = inside[np.argmax(np.abs(inside - [12, 16]).sum(axis=1))]
    panel._do(panel._split)
    panel.on_click(ViewerClick(tuple(rays.origins[far[0], far[1]].tolist()),
                               tuple(rays.directions[far[0], far[1]].tolist()), (0.0, 0.0)))
    third = panel.outputs_for_camera(camera, render)["instance_id"][..., 0]
    assert len(renders) == 1 and int(third[far[0], far[1]]) == 4 and int(third[12, 16]) == centre
    panel._do(panel._save)
    assert "saved 1 edits" in panel.f2_status.value and read_run_edits(run)[0].label == centre
    panel._do(panel._undo)
    assert int(panel.outputs_for_camera(camera, render)["instance_id"][far[0], far[1], 0]) == centre


def _viewer_camera(height: int, aspect: float = 1.37, fov: float = 1.0, x: float = 0.0, max_res: int = 512):
    """A camera as nerfstudio's viewer makes it for one view at one height (render_state_machine, viewer.utils)."""
    from nerfstudio.cameras.cameras import Cameras

    width = int(height * aspect)
    if width > max_res:
        width, height = max_res, int(max_res / aspect)
    focal = height / 2 / np.tan(fov / 2)
    c2w = torch.tensor([[[1.0, 0, 0, x], [0, 1, 0, 0], [0, 0, 1, 0.5]]])
    return Cameras(camera_to_worlds=c2w, fx=focal, fy=focal, cx=width / 2, cy=height / 2, width=width, height=height)


def test_viewer_cache_tells_views_apart_by_pose_and_field_of_view_at_any_size() -> None:
    from instance_nerfacto.edit.viewer import View

    full = View.of(_viewer_camera(512))
    for aspect in (0.61, 1.0, 1.234, 1.37, 1.79):  # rounding the aspect to a fixed step split some of these
        sizes = [View.of(_viewer_camera(h, aspect)) for h in (30, 47, 60, 100, 333, 512, 700)]
        assert all(a.same_picture(b) for a in sizes for b in sizes), aspect
    assert full.covers(View.of(_viewer_camera(60))) and not View.of(_viewer_camera(60)).covers(full)
    assert not full.same_picture(View.of(_viewer_camera(512, x=0.01)))  # moved
    assert not full.same_picture(View.of(_viewer_camera(512, fov=1.1)))  # zoomed
    assert not full.same_picture(View.of(_viewer_camera(512, aspect=1.5)))  # the window changed shape


class _RenderThread(threading.Thread):
    """Stands for nerfstudio's RenderStateMachine: the render thread, whose ``state`` says preview or full size."""

    def __init__(self, state: str, work) -> None:
        super().__init__()
        self.state, self.work, self.result = state, work, None

    def run(self) -> None:
        self.result = self.work()


def test_viewer_previews_reuse_the_cache_full_size_renders_once_and_speed_counts_real_renders_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nerfstudio.configs import base_config  # noqa: F401  (first: it and the writer import each other)
    from nerfstudio.utils import writer

    from instance_nerfacto.edit.viewer import count_real_renders_only

    model = _model()
    model.viewer_control.viewer = _FakeViewer(_fake_run(tmp_path, num_labels=3))
    panel, renders = model.instance_edits, []

    def render(camera):
        renders.append(int(camera.height))
        return super(type(model), model).get_outputs_for_camera(camera)

    def outputs(camera, state):
        thread = _RenderThread(state, lambda: panel.outputs_for_camera(camera, lambda: render(camera)))
        thread.start()
        thread.join()
        return thread.result

    small, full = _viewer_camera(24, max_res=40), _viewer_camera(40, max_res=40)
    outputs(small, "low_static")
    assert outputs(full, "low_move")["instance"].shape[:2] == (full.height, full.width)  # a preview: any size
    assert renders == [24]
    assert outputs(full, "high")["depth"].shape[:2] == (full.height, full.width) and renders == [24, full.height]
    for state in ("low_move", "low_static", "high"):  # after a click: every size of the view from the cache
        outputs(small, state)
        outputs(full, state)
    assert renders == [24, full.height]
    # nerfstudio's timing of each render (a writer of this test's own, put back afterwards)
    monkeypatch.setattr(writer, "put_time", writer.put_time)
    monkeypatch.setattr(writer, "GLOBAL_BUFFER", {"events": {}, "max_buffer_size": 20})
    monkeypatch.setattr(writer, "EVENT_STORAGE", [])
    count_real_renders_only()
    name, events = writer.EventName.VIS_RAYS_PER_SEC, writer.GLOBAL_BUFFER["events"]
    thread = _RenderThread("high", lambda: (panel.outputs_for_camera(full, lambda: render(full)),
                                            writer.put_time(name, 1e9, step=0)))
    thread.start()
    thread.join()
    assert name.value not in events  # a re-coloured render says nothing about how fast the model renders
    moved = _viewer_camera(40, x=0.5, max_res=40)
    thread = _RenderThread("high", lambda: (panel.outputs_for_camera(moved, lambda: render(moved)),
                                            writer.put_time(name, 1000.0, step=0)))
    thread.start()
    thread.join()
    assert len(renders) == 3 and events[name.value]["avg"] == 1000.0  # a real render does
