"""The training pipeline of instance-nerfacto: nerfstudio's VanillaPipeline plus the steps that follow training.

The model (``lift/``) knows nothing of what is done with it afterwards; this composition root adds, after the last
iteration, label merging (``merge/``: its table goes into the final checkpoint, so ns-render and the viewer show merged
labels) and the density-grid bake of the fast label renderer (``render/``), and hands the model the fast camera renderer
(``render/camera_outputs.py``) that the viewer and ns-render use once a checkpoint is loaded, and the viewer's edit
panel (``edit/viewer.py``) with its selection exporter (``export/selection.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from instance_nerfacto.edit.viewer import install_edit_panel
from instance_nerfacto.export.selection import export_selection
from instance_nerfacto.merge.views import MergeViews, merge_callback
from instance_nerfacto.render.bake import bake_callback
from instance_nerfacto.render.camera_outputs import FastCameraOutputs


@dataclass
class InstancePipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline plus end-of-training label merging and density-grid bake."""

    _target: Type = field(default_factory=lambda: InstancePipeline)
    bake_after_training: bool = True
    """Bake the density grid of the fast label renderer (ns-render, the viewer, instance-render and instance-loc read
    it) right after training. False: the first render bakes it instead."""


class InstancePipeline(VanillaPipeline):
    """Adds the after-training callbacks and the viewer's edit panel; training itself is nerfstudio's."""

    config: InstancePipelineConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if hasattr(self.model, "instance_edits"):
            install_edit_panel(self.model, exporter=export_selection)
        if hasattr(self.model, "fast_camera"):
            self.model.fast_camera = FastCameraOutputs()
            tell_pipelines_their_checkpoint()

    def attach_checkpoint(self, checkpoint: Path, step: int, grid=None) -> None:
        """The checkpoint the pipeline holds (its density is fixed from now on): camera outputs come from its baked
        grid (``grid`` when already baked, else loaded or baked once on the first render)."""
        fast = getattr(self.model, "fast_camera", None)
        if fast is not None:
            fast.attach(checkpoint, step, grid)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> List[TrainingCallback]:
        callbacks = list(super().get_training_callbacks(training_callback_attributes))
        model_config = self.model.config
        # the bake first: the merge reads labels through the fast renderer and its grid (labels never move density,
        # so merging does not invalidate it)
        if self.config.bake_after_training:
            callbacks.append(bake_callback(training_callback_attributes))
        if model_config.merge_after_training:
            how = MergeViews(views=model_config.merge_views, renderer=getattr(model_config, "merge_renderer", "fast"),
                             segmenter=model_config.merge_segmenter, weights=model_config.merge_weights)
            callbacks.append(merge_callback(training_callback_attributes, how))
        return callbacks


def tell_pipelines_their_checkpoint() -> None:
    """Wrap nerfstudio's ``eval_load_checkpoint`` (ns-render, ns-viewer, ns-eval, instance-* commands all load through
    it) so that a pipeline learns which checkpoint it holds: nerfstudio passes only the state dict and step, and the
    baked grid is cached per checkpoint beside it. Called when a pipeline is built, i.e. after nerfstudio's method
    configs (which eval_utils imports) are complete; idempotent."""
    from nerfstudio.utils import eval_utils

    original = eval_utils.eval_load_checkpoint
    if getattr(original, "attaches_checkpoint", False):
        return

    def eval_load_checkpoint(config, pipeline) -> tuple:
        checkpoint, step = original(config, pipeline)
        attach: Optional[object] = getattr(pipeline, "attach_checkpoint", None)
        if callable(attach):
            attach(Path(checkpoint), int(step))
        return checkpoint, step

    eval_load_checkpoint.attaches_checkpoint = True
    eval_utils.eval_load_checkpoint = eval_load_checkpoint
