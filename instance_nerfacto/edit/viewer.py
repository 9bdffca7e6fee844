"""The viewer's edit panel: click to select, merge, split, name, undo, save and export, on the live render.

Installed by the model as ``instance_edits`` (nerfstudio's viewer lists it under "Custom Elements"). A click reads
the label field along the click ray (:meth:`InstanceEditPanel.pick`: the raw id, the surface point, the id after the
run's edits) and hands it to the :class:`~instance_nerfacto.edit.session.EditSession`; the model applies the
session's label map at once (:meth:`InstanceNerfactoModel.set_label_map`), so the next render shows it.

A click or an edit does not move the camera, so the next render re-colours the last one instead of volume rendering
again: :meth:`InstanceEditPanel.outputs_for_camera` keeps the last render's raw ids and surface points per camera
pose, and a render of the same pose (at any resolution the viewer asks) only re-applies the label map and the
highlight. That is what keeps click -> highlighted render well under a second on a CPU.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerText

from instance_nerfacto.edit.session import EditSession, selection_pixels

RUN_DIR: Optional[Path] = None
"""The run folder of the viewer (instance-viewer sets it; else the folder of the viewer's log)."""


def camera_key(camera) -> bytes:
    """A camera's pose and field of view, independent of the resolution the viewer renders it at."""
    height, width = float(camera.height.view(-1)[0]), float(camera.width.view(-1)[0])
    # the viewer renders one view at several sizes (rounded to whole pixels): compare shape to 1%
    intrinsics = np.array([float(camera.fx.view(-1)[0]) / height, float(camera.cx.view(-1)[0]) / width,
                           float(camera.cy.view(-1)[0]) / height, width / height])
    pose = camera.camera_to_worlds.reshape(-1).float().cpu().numpy()
    return np.round(pose, 4).tobytes() + np.round(intrinsics, 2).tobytes()


def resize_nearest(value, height: int, width: int):
    """An [H, W, C] output at another resolution (nearest pixel); anything else as it is. The viewer composites depth
    at the size it asked for, so a re-coloured render must come back at that size."""
    if not isinstance(value, torch.Tensor) or value.dim() != 3 or tuple(value.shape[:2]) == (height, width):
        return value
    rows = (torch.arange(height, device=value.device) * value.shape[0]) // height
    cols = (torch.arange(width, device=value.device) * value.shape[1]) // width
    return value[rows][:, cols]


class InstanceEditPanel(torch.nn.Module):
    """Viewer controls for hand edits (no parameters, nothing in the checkpoint: the edits are in ``label_edits``)."""

    def __init__(self, model) -> None:
        super().__init__()
        object.__setattr__(self, "_model_ref", weakref.ref(model))
        self._session: Optional[EditSession] = None
        self._cache: Optional[Dict] = None
        self._lock = threading.Lock()
        self.last_timing: Dict[str, float] = {}
        # set by the pipeline (instance_nerfacto/pipeline.py): exporting renders through render/ and export/, which
        # sit above the model this panel belongs to
        object.__setattr__(self, "exporter", None)
        # nerfstudio lists a module's elements in name order
        self.e1_selected = ViewerText("Selected", "click an instance", disabled=True)
        self.e2_add = ViewerCheckbox("Add clicks to selection", False)
        self.e3_merge = ViewerButton("Merge selected", cb_hook=lambda _: self._do(self._merge))
        self.e4_split = ViewerButton("Split: click its other object", cb_hook=lambda _: self._do(self._split))
        self.e5_name = ViewerText("Name", "", hint="name for the selected instance, then press 'Set name'")
        self.e6_set_name = ViewerButton("Set name", cb_hook=lambda _: self._do(self._set_name))
        self.e7_undo = ViewerButton("Undo last edit", cb_hook=lambda _: self._do(self._undo))
        self.e8_clear = ViewerButton("Clear selection", cb_hook=lambda _: self._do(self._clear))
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
        try:
            label, point = self.pick(click.origin, click.direction)
            edit = self.edit_session().click(label, point, add=bool(self.e2_add.value))
            if edit is not None:
                self._model.set_label_map(self.edit_session().label_map)
                self.f2_status.value = f"split {edit.label}: new id {edit.new_ids[0]} ({self._unsaved()})"
        except ValueError as err:
            self.f2_status.value = str(err)
        self._show_selection()
        self.last_timing = {"click_s": time.perf_counter() - started, "clicked_at": time.time()}
        print(f"instance-nerfacto viewer: click -> {self.e1_selected.value}")
        viewer = getattr(self._model.viewer_control, "viewer", None)
        if viewer is not None:
            viewer._trigger_rerender()

    # -- buttons -----------------------------------------------------------------------------------------------------

    def _do(self, action: Callable[[], str]) -> None:
        try:
            self.f2_status.value = action()
        except ValueError as err:
            self.f2_status.value = str(err)
        except Exception as err:  # the viewer must survive a failed export or save; say what happened
            traceback.print_exc()
            self.f2_status.value = f"failed: {err.__class__.__name__}: {err}"
        self._model.set_label_map(self.edit_session().label_map)
        self._show_selection()
        print(f"instance-nerfacto viewer: {self.f2_status.value}")

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

    def _show_selection(self) -> None:
        session = self.edit_session()
        ids = session.selected_ids
        if not ids:
            self.e1_selected.value = "click an instance" + (" (split armed)" if session.split_armed else "")
            return
        last = self._cache.get("ids") if self._cache else None
        pixels = selection_pixels(last, ids) if last is not None else {}
        self.e1_selected.value = "; ".join(session.describe(i, pixels.get(i)) for i in ids)
        names = session.label_map.names
        if len(ids) == 1 and ids[0] in names:
            self.e5_name.value = names[ids[0]]

    # -- rendering ---------------------------------------------------------------------------------------------------

    def outputs_for_camera(self, camera, render: Callable[[], Dict]) -> Dict:
        """The model's outputs for a viewer camera; a pose rendered before is re-coloured, not rendered again."""
        model = self._model
        if getattr(model.viewer_control, "viewer", None) is None:
            return render()  # ns-render, instance-render --full-render, tests: no cache
        key = camera_key(camera)
        with self._lock:
            cache = self._cache if self._cache is not None and self._cache["key"] == key else None
        hit = cache is not None
        if cache is None:
            outputs = render()
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            cache = {"key": key, "outputs": outputs, "raw": outputs["instance_logits"].argmax(-1, keepdim=True) + 1,
                     "points": (rays.origins + rays.directions * outputs["depth"].to(rays.origins.device))}
        height, width = int(camera.height.view(-1)[0]), int(camera.width.view(-1)[0])
        outputs = {k: resize_nearest(v, height, width) for k, v in cache["outputs"].items()}
        ids = model.final_ids(resize_nearest(cache["raw"], height, width),
                              resize_nearest(cache["points"], height, width))
        outputs["instance_id"] = ids
        ids_np = ids[..., 0].cpu().numpy()
        outputs["instance"] = torch.from_numpy(self.colours(ids_np)).to(ids.device).float() / 255.0
        cache["ids"] = ids_np
        with self._lock:
            self._cache = cache
        if "clicked_at" in self.last_timing:
            self.last_timing["click_to_render_s"] = time.time() - self.last_timing.pop("clicked_at")
            print(f"instance-nerfacto viewer timing: click -> highlighted render "
                  f"{self.last_timing['click_to_render_s']:.3f} s ({'re-coloured' if hit else 'rendered'})")
        return outputs
