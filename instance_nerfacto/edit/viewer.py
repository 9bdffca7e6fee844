"""The viewer's edit panel: click to select, merge, split, name, undo, save and export, on the live render.

Installed on the model as ``instance_edits`` by the pipeline (:func:`install_edit_panel`; nerfstudio's viewer lists it
under "Custom Elements"), so the model does not depend on its UI. A click reads the label field along the click ray
(:meth:`InstanceEditPanel.pick`: the raw id, the surface point, the id after the run's edits) and hands it to the
:class:`~instance_nerfacto.edit.session.EditSession`; the model applies the session's label map at once
(:meth:`InstanceNerfactoModel.set_label_map`), so the next render shows it.

A click or an edit does not move the camera, so the next render re-colours the last one instead of volume rendering
again: :meth:`InstanceEditPanel.outputs_for_camera` keeps the last real render's raw ids and surface points, and a
render of the same view only re-applies the label map (merges, and splits by nearest seed on the cached surface
points) and the highlight. That is what keeps click -> highlighted render well under a second on a CPU. A view is
its pose and field of view whatever size the viewer asks for (:class:`View`): the viewer renders each view small
first, then at full size, and after every click or button it starts over with the small preview.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerText

from instance_nerfacto.core.console import say
from instance_nerfacto.edit.session import EditSession, selection_pixels

RUN_DIR: Optional[Path] = None
"""The run folder of the viewer (instance-viewer sets it; else the folder of the viewer's log)."""


@dataclass(frozen=True)
class View:
    """A viewer camera: pose, field of view and aspect (what the picture shows) and its size in pixels."""

    pose: Tuple[float, ...]
    focal: float  # fy / height: the vertical field of view
    aspect: float  # width / height
    height: int
    width: int

    @classmethod
    def of(cls, camera) -> "View":
        height, width = int(camera.height.view(-1)[0]), int(camera.width.view(-1)[0])
        pose = tuple(camera.camera_to_worlds.reshape(-1).float().cpu().tolist())
        return cls(pose, float(camera.fy.view(-1)[0]) / height, width / height, height, width)

    def same_picture(self, other: "View") -> bool:
        """The same pose and field of view at any size. The viewer sizes one view by its height and truncates the
        other side to whole pixels, so the aspects of two sizes differ by up to a pixel of the smaller one (a fixed
        rounding of the aspect would tell some sizes of one view apart, and miss the cache)."""
        slack = max(self.aspect, other.aspect) * (1.0 / min(self.height, other.height) +
                                                  1.0 / min(self.width, other.width))
        return (np.allclose(self.pose, other.pose, atol=1e-4) and abs(self.focal - other.focal) <= 1e-3 * self.focal
                and abs(self.aspect - other.aspect) <= slack + 1e-9)

    def covers(self, other: "View") -> bool:
        return self.height >= other.height and self.width >= other.width


def resize_nearest(value, height: int, width: int):
    """An [H, W, C] output at another resolution (nearest pixel); anything else as it is. The viewer composites depth
    at the size it asked for, so a re-coloured render must come back at that size."""
    if not isinstance(value, torch.Tensor) or value.dim() != 3 or tuple(value.shape[:2]) == (height, width):
        return value
    rows = (torch.arange(height, device=value.device) * value.shape[0]) // height
    cols = (torch.arange(width, device=value.device) * value.shape[1]) // width
    return value[rows][:, cols]


def preview_render() -> bool:
    """Whether the render asked for now is one of the viewer's quick previews (it renders a small picture while the
    camera moves and right after a click or a button, then the full size once the view is still): the render thread
    is nerfstudio's RenderStateMachine, whose state says which. Elsewhere (ns-render, tests) a render is final."""
    return getattr(threading.current_thread(), "state", "high") in ("low_move", "low_static")


_thread = threading.local()


def count_real_renders_only() -> None:
    """Leave re-coloured renders out of the viewer's rays-per-second estimate.

    nerfstudio sizes its preview renders by the rays per second of recent renders. A re-coloured render takes
    milliseconds, so counting it would make the viewer believe it renders millions of rays a second and render the
    next camera move at full size (seconds per frame on a CPU). Idempotent."""
    from nerfstudio.utils import writer

    original = writer.put_time
    if getattr(original, "skips_recoloured", False):
        return

    rays_per_sec = writer.EventName.VIS_RAYS_PER_SEC.value

    def put_time(name, duration, step, *args, **kwargs):
        if getattr(_thread, "recoloured", False) and getattr(name, "value", name) == rays_per_sec:
            _thread.recoloured = False
            return None
        return original(name, duration, step, *args, **kwargs)

    put_time.skips_recoloured = True
    writer.put_time = put_time


def install_edit_panel(model, exporter: Optional[Callable] = None) -> "InstanceEditPanel":
    """Give an instance-nerfacto model the viewer's edit panel (what the pipeline does when it is built);
    ``exporter(pipeline, run_dir, ids) -> out dir`` backs the panel's "Export selection" button."""
    panel = InstanceEditPanel(model)
    object.__setattr__(panel, "exporter", exporter)
    model.instance_edits = panel
    return panel


class InstanceEditPanel(torch.nn.Module):
    """Viewer controls for hand edits (no parameters, nothing in the checkpoint: the edits are in ``label_edits``)."""

    def __init__(self, model) -> None:
        super().__init__()
        object.__setattr__(self, "_model_ref", weakref.ref(model))
        self._session: Optional[EditSession] = None
        self._cache: Optional[Dict] = None
        self._shown_ids: Optional[np.ndarray] = None  # the ids of the last render, for the pixel counts
        self._lock = threading.Lock()
        # a click or edit being timed: what, when it arrived, when its effect was in place (renders begun earlier may
        # not show it), and the first render that shows it (the viewer's preview) once there is one
        self._pending: Optional[Dict] = None
        self.last_timing: Dict = {}
        # set by install_edit_panel: exporting renders through render/ and export/, which sit above the edits
        object.__setattr__(self, "exporter", None)
        # nerfstudio lists a module's elements in name order
        self.e1_selected = ViewerText("Selected", "click an instance", disabled=True)
        self.e2_add = ViewerCheckbox("Add clicks to selection", False)
        self.e3_merge = ViewerButton("Merge selected", cb_hook=lambda _: self._do(self._merge, "merge"))
        self.e4_split = ViewerButton("Split: click its other object", cb_hook=lambda _: self._do(self._split))
        self.e5_name = ViewerText("Name", "", hint="name for the selected instance, then press 'Set name'")
        self.e6_set_name = ViewerButton("Set name", cb_hook=lambda _: self._do(self._set_name))
        self.e7_undo = ViewerButton("Undo last edit", cb_hook=lambda _: self._do(self._undo, "undo"))
        self.e8_clear = ViewerButton("Clear selection", cb_hook=lambda _: self._do(self._clear, "clear"))
        self.e9_save = ViewerButton("Save edits", cb_hook=lambda _: self._do(self._save))
        self.f1_export = ViewerButton("Export selection", cb_hook=lambda _: self._do(self._export))
        self.f2_status = ViewerText("Edit status", "no edits yet", disabled=True)

    # -- the run and its session -------------------------------------------------------------------------------------

    @property
    def _model(self):  # private: nerfstudio walks public attributes for viewer elements (and would loop back here)
        return self._model_ref()

    def run_dir(self) -> Path:
        if RUN_DIR is not None:
            return Path(RUN_DIR)
        return Path(self._model.viewer_control.viewer.log_filename).parent

    def edit_session(self) -> EditSession:
        """The session, started from the run's saved edits the first time it is needed."""
        if self._session is None:
            from instance_nerfacto.edit.store import automatic_merges, read_run_edits

            run_dir = self.run_dir()
            self._session = EditSession(self._model.num_labels, automatic_merges(run_dir), read_run_edits(run_dir),
                                        self._model.label_stats)
        return self._session

    def colours(self, ids: np.ndarray) -> np.ndarray:
        from instance_nerfacto.core.palette import colorize

        return self._session.colours(ids) if self._session is not None else colorize(ids)

    # -- clicks ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def pick(self, origin, direction):
        """(id as shown now, surface point in the model's frame) along a world ray, read from the label field."""
        model = self._model
        bundle, outputs = model.ray_outputs(origin, direction)
        point = (bundle.origins + bundle.directions * outputs["depth"]).view(3)
        raw = outputs["instance_logits"].argmax(dim=-1).view(1) + 1
        label = int(model.label_map().apply(raw, point.view(1, 3))[0]) if outputs["accumulation"].item() > 0.5 else 0
        return label, tuple(float(v) for v in point.tolist())

    def on_click(self, click) -> None:
        started = time.perf_counter()
        what = "split click" if self.edit_session().split_armed else "click"
        try:
            label, point = self.pick(click.origin, click.direction)
            edit = self.edit_session().click(label, point, add=bool(self.e2_add.value))
            if edit is not None:
                self._model.set_label_map(self.edit_session().label_map)
                self.f2_status.value = f"split {edit.label}: new id {edit.new_ids[0]} ({self._unsaved()})"
        except ValueError as err:
            self.f2_status.value = str(err)
        self._show_selection()
        self._pending = {"what": what, "started": started, "applied": time.perf_counter(), "first": None}
        say(f"instance-nerfacto viewer: click -> {self.e1_selected.value}")
        viewer = getattr(self._model.viewer_control, "viewer", None)
        if viewer is not None:
            viewer._trigger_rerender()

    # -- buttons -----------------------------------------------------------------------------------------------------

    def _do(self, action: Callable[[], str], timed: Optional[str] = None) -> None:
        """Run a button's action; ``timed`` names one that changes the picture (timed up to the next render)."""
        started = time.perf_counter()
        try:
            self.f2_status.value = action()
        except ValueError as err:
            self.f2_status.value = str(err)
        except Exception as err:  # the viewer must survive a failed export or save; say what happened
            traceback.print_exc()
            self.f2_status.value = f"failed: {err.__class__.__name__}: {err}"
        self._model.set_label_map(self.edit_session().label_map)
        self._show_selection()
        if timed is not None:
            self._pending = {"what": timed, "started": started, "applied": time.perf_counter(), "first": None}
        say(f"instance-nerfacto viewer: {self.f2_status.value}")

    def _unsaved(self) -> str:
        return f"{len(self.edit_session().edits)} edits, unsaved" if self.edit_session().unsaved else "saved"

    def _merge(self) -> str:
        made = self.edit_session().merge_selected()
        return f"merged {', '.join(str(e.source) for e in made)} into {self.edit_session().selected_ids[0]} " \
               f"({self._unsaved()})"

    def _split(self) -> str:
        self.edit_session().arm_split()
        return f"now click the other object inside {self.edit_session().selected_ids[0]}"

    def _set_name(self) -> str:
        edit = self.edit_session().name_selected(str(self.e5_name.value))
        return f"named {edit.label} '{edit.name}' ({self._unsaved()})"

    def _undo(self) -> str:
        edit = self.edit_session().undo()
        return "nothing to undo" if edit is None else f"undid {edit} ({self._unsaved()})"

    def _clear(self) -> str:
        self.edit_session().clear()
        return "selection cleared"

    def _save(self) -> str:
        from instance_nerfacto.edit.store import edits_path

        self.edit_session().save(self.run_dir())
        return f"saved {len(self.edit_session().edits)} edits -> {edits_path(self.run_dir())} and the checkpoint"

    def _export(self) -> str:
        export_selection = self.exporter
        if export_selection is None:
            raise ValueError("exporting needs the instance-nerfacto pipeline (load the run with instance-viewer)")
        ids = self.edit_session().selected_ids
        if not ids:
            raise ValueError("select the instances to export first")
        viewer = self._model.viewer_control.viewer
        out = export_selection(viewer.pipeline, self.run_dir(), ids)
        return f"exported {ids} -> {out}"

    def _selection_text(self) -> str:
        session = self.edit_session()
        ids = session.selected_ids
        if not ids:
            return "click an instance" + (" (split armed)" if session.split_armed else "")
        shown = self._shown_ids
        pixels = selection_pixels(shown, ids) if shown is not None else {}
        return "; ".join(session.describe(i, pixels.get(i)) for i in ids)

    def _show_selection(self) -> None:
        self.e1_selected.value = self._selection_text()
        ids, names = self.edit_session().selected_ids, self.edit_session().label_map.names
        if len(ids) == 1 and ids[0] in names:
            self.e5_name.value = names[ids[0]]

    def _report_selection(self) -> None:
        """After a render: the selection's pixel counts in it (the Name field is left alone, it may be typed in)."""
        if self._session is None or not self._session.selected_ids:
            return
        text = self._selection_text()
        if text != self.e1_selected.value:
            self.e1_selected.value = text

    # -- rendering ---------------------------------------------------------------------------------------------------

    def outputs_for_camera(self, camera, render: Callable[[], Dict], renderer: str = "full") -> Dict:
        """The model's outputs for a viewer camera; a view rendered before is re-coloured, not rendered again.

        The cache holds the last real render. It serves the same view at its size or smaller, and at any size for
        the viewer's previews (the first picture after a click); the viewer's final full-size render of a view seen
        only at preview size is rendered for real, once, and replaces it. ``renderer`` names how ``render`` renders
        ("fast" or "full"): switching it renders again."""
        model = self._model
        if getattr(model.viewer_control, "viewer", None) is None:
            return render()  # ns-render, instance-render --full-render, tests: no cache
        count_real_renders_only()
        begun = time.perf_counter()
        view = View.of(camera)
        with self._lock:
            cache = self._cache
        hit = cache is not None and cache["renderer"] == renderer and cache["view"].same_picture(view) and (
            preview_render() or cache["view"].covers(view))
        _thread.recoloured = hit
        if not hit:
            started = time.perf_counter()
            outputs = render()
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            cache = {"view": view, "renderer": renderer, "outputs": outputs,
                     "raw": outputs["instance_logits"].argmax(-1, keepdim=True) + 1,
                     "points": (rays.origins + rays.directions * outputs["depth"].to(rays.origins.device))}
            say(f"instance-nerfacto viewer render ({renderer}): {view.width}x{view.height} px in "
                f"{time.perf_counter() - started:.1f} s")
        outputs = {k: resize_nearest(v, view.height, view.width) for k, v in cache["outputs"].items()}
        ids = model.final_ids(resize_nearest(cache["raw"], view.height, view.width),
                              resize_nearest(cache["points"], view.height, view.width))
        outputs["instance_id"] = ids
        ids_np = ids[..., 0].cpu().numpy()
        outputs["instance"] = torch.from_numpy(self.colours(ids_np)).to(ids.device).float() / 255.0
        with self._lock:
            self._cache = cache
            self._shown_ids = ids_np
        self._report_selection()  # the pixel counts of what is on screen now (a split part has none before)
        self._time_pending(begun, f"{'re-coloured' if hit else 'rendered'}, {view.width}x{view.height} px")
        return outputs

    def _time_pending(self, begun: float, how: str) -> None:
        """Log the time from a click or edit to the first render that shows it and to the first full-size one."""
        pending = self._pending
        if pending is None or begun < pending["applied"]:
            return
        now = time.perf_counter() - pending["started"]
        if pending["first"] is None:
            pending["first"] = f"{now:.3f} s ({how})"
            self.last_timing = {"action": pending["what"], "click_to_render_s": now}
        if preview_render():
            return
        self._pending = None
        self.last_timing["click_to_full_render_s"] = now
        say(f"instance-nerfacto viewer timing: {pending['what']} -> highlighted render {pending['first']}; "
            f"full size {now:.3f} s ({how})")
