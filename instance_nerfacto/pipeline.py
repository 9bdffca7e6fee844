"""The training pipeline of instance-nerfacto: nerfstudio's VanillaPipeline plus the steps that follow training.

The model (``lift/``) knows nothing of what is done with it afterwards; this composition root adds, after the last
iteration, label merging (``merge/``: its table goes into the final checkpoint, so ns-render and the viewer show merged
labels) and the density-grid bake of the fast label renderer (``render/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from instance_nerfacto.merge.views import MergeViews, merge_callback
from instance_nerfacto.render.bake import bake_callback


@dataclass
class InstancePipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline plus end-of-training label merging and density-grid bake."""

    _target: Type = field(default_factory=lambda: InstancePipeline)


class InstancePipeline(VanillaPipeline):
    """Adds the after-training callbacks and the viewer's selection export; training itself is nerfstudio's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        panel = getattr(self.model, "instance_edits", None)
        if panel is not None:
            from instance_nerfacto.edit.export import export_selection

            object.__setattr__(panel, "exporter", export_selection)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> List[TrainingCallback]:
        callbacks = list(super().get_training_callbacks(training_callback_attributes))
        model_config = self.model.config
        # the bake first: the merge reads labels through the fast renderer and its grid (labels never move density,
        # so merging does not invalidate it)
        callbacks.append(bake_callback(training_callback_attributes))
        if model_config.merge_after_training:
            how = MergeViews(views=model_config.merge_views, renderer=getattr(model_config, "merge_renderer", "fast"),
                             segmenter=model_config.merge_segmenter, weights=model_config.merge_weights)
            callbacks.append(merge_callback(training_callback_attributes, how))
        return callbacks
