"""instance-nerfacto model: nerfacto + an instance label field trained with cross-entropy on pseudolabels.

Logits are composited with the detached volume-rendering weights of the main field, so the label loss cannot change
geometry (the field additionally stops gradients into the sample positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.models.depth_nerfacto import DepthNerfactoModel, DepthNerfactoModelConfig
from nerfstudio.models.nerfacto import NerfactoModel
from torch import Tensor
from torch.nn import Parameter

from instance_nerfacto.core import compat
from instance_nerfacto.core.console import say
from instance_nerfacto.core.palette import colorize
from instance_nerfacto.edit.label_map import LabelEditState, LabelMap, MergeTable
from instance_nerfacto.lift.field import InstanceNerfactoField
from instance_nerfacto.lift.labels import DEFAULT_LABEL_TOP_K

compat.apply()  # checkpoints of this model load under torch's weights_only default (ns-render, ns-viewer)

PSEUDOLABEL_KEY = "pseudolabel"
"""Batch key of the pseudolabel of each ray: LongTensor[N, 1], 0 = unlabelled, 1..K = label."""
DEPTH_KEY = "depth_image"
"""Batch key of the measured depth of each ray (nerfstudio's depth-nerfacto key), present when the dataset has depth."""
LABEL_PARAM_GROUP = "instance_labels"


@dataclass
class InstanceNerfactoModelConfig(DepthNerfactoModelConfig):
    """Nerfacto plus an instance label field (3DIML InstanceLift). When the batches carry measured depth (a dataset
    whose transforms.json lists depth maps; ``--pipeline.datamanager.load-depth False`` turns it off), depth-nerfacto's
    depth loss supervises the geometry too; without depth it is plain nerfacto."""

    _target: Type = field(default_factory=lambda: InstanceNerfactoModel)
    depth_loss_mult: float = 1e-2
    """Weight of depth-nerfacto's depth loss when the batches carry depth (depth-nerfacto's own default is 1e-3, which
    on the demo room left textureless walls half transparent and novel-view PQ unchanged; 1e-2 fixed both)."""
    num_labels: int = 0
    """Number of instance labels K; 0 = read "num_labels" from <pseudolabels>/labels.json (the normal case)."""
    instance_loss_mult: float = 1.0
    """Weight of the cross-entropy between rendered instance logits and pseudolabels."""
    label_num_levels: int = 16
    """Levels of the instance hash grid."""
    label_base_res: int = 16
    """Coarsest resolution of the instance hash grid."""
    label_max_res: int = 1024
    """Finest resolution of the instance hash grid."""
    label_log2_hashmap_size: int = 19
    """log2 of the hash table size per level of the instance grid."""
    label_features_per_level: int = 2
    """Features per level of the instance hash grid."""
    label_hidden_dim: int = 64
    """Width of the instance MLP."""
    label_num_layers: int = 2
    """Layers of the instance MLP."""
    label_top_k: int = DEFAULT_LABEL_TOP_K
    """Samples per ray (the heaviest by volume-rendering weight) at which the label field is read; their class
    probabilities are averaged with those weights. Training, the full render and instance-render's fast path all
    composite this way (lift/labels.py). A value >= the samples per ray reads every sample."""
    fast_camera_outputs: bool = True
    """Camera outputs (what the viewer and ns-render show) from the baked density grid once the density is fixed: a
    loaded checkpoint (ns-render, ns-viewer, instance-viewer, ns-eval) or the end of training. Every output of the
    full render is there (rgb, depth, accumulation, instance, instance_id, instance_confidence, instance_logits);
    colour and labels are read at the heaviest samples of each ray (render/camera_outputs.py), about 10x faster on a
    CPU. False: nerfstudio's full volume render (edit it in config.yml for ns-render); the viewer's "Fast render
    (baked density grid)" checkbox switches at run time. Training and training-time eval always render in full."""
    merge_after_training: bool = True
    """Run label merging (instance-merge) at the end of training; the table is stored with the final checkpoint, so
    ns-render and the viewer show merged labels, and written to merge_table.json beside config.yml."""
    merge_views: int = 8
    """Views rendered and segmented by the end-of-training merge."""
    merge_renderer: Literal["fast", "volume"] = "fast"
    """How the end-of-training merge renders its views: the baked density grid (colour and labels at the heaviest
    samples) or nerfstudio's full volume render (~5x slower on CPU); see instance-merge --renderer."""
    merge_segmenter: Literal["felzenszwalb", "fastsam"] = "felzenszwalb"
    """Segmenter of the rendered views: weight-free felzenszwalb, or FastSAM with --pipeline.model.merge-weights."""
    merge_weights: Optional[Path] = None
    """Local FastSAM weights file for merge_segmenter fastsam (never downloaded)."""


class InstanceNerfactoModel(DepthNerfactoModel):
    """Nerfacto with an instance label branch; outputs ``instance``, ``instance_id``, ``instance_confidence``.

    Built on nerfstudio's DepthNerfactoModel so that measured depth, when the dataset has it, sharpens the geometry
    that the labels are rendered through (novel views depend on it); batches without depth take nerfacto's path."""

    config: InstanceNerfactoModelConfig
    field: InstanceNerfactoField

    def populate_modules(self):
        self.num_labels = self._resolve_num_labels()
        # Flush subnormal floats to zero (CPU): Adam's first moment of a hash-table entry that stopped receiving
        # gradient decays by 0.9 per step and enters the subnormal range ~650 steps later, where x86 arithmetic takes
        # a slow microcode path (~300x per element measured here). benchmarks/lift_drift.py counts them: none up to
        # step 500, then a growing share (0.15% of the optimizer state at step 750, 0.5% at 900); with this flag, none.
        torch.set_flush_denormal(True)
        # Stock nerfacto builds LPIPS, which downloads AlexNet weights: core/compat.py (applied at import) builds it
        # only when they are cached, else a stand-in
        super().populate_modules()
        nerfacto_field = self.field
        appearance_dim = self.config.appearance_embed_dim if self.config.use_appearance_embedding else 0
        self.field = InstanceNerfactoField(
            self.scene_box.aabb,
            num_images=self.num_train_data,
            num_labels=self.num_labels,
            label_num_levels=self.config.label_num_levels,
            label_base_res=self.config.label_base_res,
            label_max_res=self.config.label_max_res,
            label_log2_hashmap_size=self.config.label_log2_hashmap_size,
            label_features_per_level=self.config.label_features_per_level,
            label_hidden_dim=self.config.label_hidden_dim,
            label_num_layers=self.config.label_num_layers,
            label_top_k=getattr(self.config, "label_top_k", DEFAULT_LABEL_TOP_K),  # configs saved before it
            implementation=self.config.implementation,
            hidden_dim=self.config.hidden_dim,
            num_levels=self.config.num_levels,
            max_res=self.config.max_res,
            base_res=self.config.base_res,
            features_per_level=self.config.features_per_level,
            log2_hashmap_size=self.config.log2_hashmap_size,
            hidden_dim_color=self.config.hidden_dim_color,
            hidden_dim_transient=self.config.hidden_dim_transient,
            spatial_distortion=nerfacto_field.spatial_distortion,
            use_pred_normals=self.config.predict_normals,
            use_average_appearance_embedding=self.config.use_average_appearance_embedding,
            appearance_embedding_dim=appearance_dim,
            average_init_density=self.config.average_init_density,
        )
        del nerfacto_field
        self.instance_loss = torch.nn.CrossEntropyLoss(ignore_index=-1)
        # label -> merged label as a lookup table; a buffer, so the merge table travels inside the checkpoint and
        # ns-render / ns-viewer apply it without knowing the run folder. Identity until merging runs.
        self.register_buffer("merge_lut", torch.arange(self.num_labels + 1, dtype=torch.long), persistent=True)
        from nerfstudio.viewer.viewer_elements import ViewerCheckbox

        self.viewer_merged_labels = ViewerCheckbox(name="Merged instance labels", default_value=True)
        fast_default = bool(getattr(self.config, "fast_camera_outputs", True))  # configs saved before the flag
        self.viewer_fast_render = ViewerCheckbox(
            name="Fast render (baked density grid)", default_value=fast_default,
            hint="off: nerfstudio's full volume render (exact, ~10x slower on a CPU)")
        # set by the pipeline (instance_nerfacto/pipeline.py): camera outputs from the baked density grid live in
        # render/, above the model; None (a model built alone) always renders in full
        self.fast_camera = None
        self._told_crop = False
        self._told_full = False
        # Click the image in the viewer: the label under the cursor, its merged id, and how the pseudolabels saw it
        # (frames, mean area), so a user can write the hand-edit file of instance-merge --edits.
        from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerText

        self.viewer_control = ViewerControl()
        self.viewer_label_info = ViewerText(name="Label under cursor", default_value="click the image", disabled=True)
        metadata = self.kwargs.get("metadata") or {}
        self.label_stats: Dict[int, Dict] = {int(k): v for k, v in (metadata.get("label_stats") or {}).items()}
        self._click_registered = False
        # hand edits (merges, splits, names): the program, in the checkpoint
        self.label_edits = LabelEditState()
        # the viewer's panel to make them (edit/viewer.py), set by the pipeline: it is UI, which the model does not
        # import; None (a model built alone, ns-render) renders without a re-colour cache or a selection
        self.instance_edits = None

    def _resolve_num_labels(self) -> int:
        if self.config.num_labels > 0:
            return int(self.config.num_labels)
        metadata = self.kwargs.get("metadata") or {}
        if "num_labels" not in metadata:
            raise ValueError(
                "instance-nerfacto needs the number of labels: use instance-nerfacto's datamanager (it reads "
                "<pseudolabels>/labels.json) or set --pipeline.model.num-labels"
            )
        return int(metadata["num_labels"])

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["fields"] = self.field.geometry_parameters()
        groups[LABEL_PARAM_GROUP] = self.field.label_parameters()
        return groups

    @torch.no_grad()
    def ray_outputs(self, origin, direction) -> Tuple[RayBundle, Dict[str, Tensor]]:
        """The ray ``origin + t * direction`` (world coordinates) and the model's outputs for it, in eval mode (the
        training mode is left as it was): what a click in the viewer reads, from the renderer the picture comes from."""
        device = self.merge_lut.device
        bundle = RayBundle(
            origins=torch.tensor(origin, dtype=torch.float32, device=device).view(1, 3),
            directions=torch.nn.functional.normalize(
                torch.tensor(direction, dtype=torch.float32, device=device).view(1, 3), dim=-1),
            pixel_area=torch.full((1, 1), 1e-6, device=device),
            camera_indices=torch.zeros((1, 1), dtype=torch.long, device=device),
        )
        if self.uses_fast_camera():
            return bundle, self.fast_camera.ray_outputs(self, bundle.origins, bundle.directions)
        was_training = self.training
        self.eval()
        try:
            return bundle, self.forward(bundle)
        finally:
            self.train(was_training)

    def describe_label_at(self, origin, direction) -> str:
        """The label the field gives the ray ``origin + t * direction`` (world coordinates), as one line."""
        _, outputs = self.ray_outputs(origin, direction)
        raw = int(outputs["instance_logits"].argmax(dim=-1).view(-1)[0]) + 1
        merged = int(self.merge_lut[raw])
        confidence = float(outputs["instance_confidence"].view(-1)[0])
        stats = self.label_stats.get(raw, {})
        seen = (f"in {stats['frames']} pseudolabel frames, mean area {stats['mean_area']:.0f} px"
                if stats else "no pseudolabel statistics")
        merged_text = f" (merged into {merged})" if merged != raw else ""
        return f"label {raw}{merged_text}, confidence {confidence:.2f}, {seen}"

    def _on_viewer_click(self, click) -> None:
        if self.instance_edits is not None:
            self.instance_edits.on_click(click)

    def get_outputs_for_camera(self, camera, obb_box=None):
        # The viewer sets up ViewerControl after the model exists; register the click callback on first render.
        if not self._click_registered and getattr(self.viewer_control, "viewer", None) is not None:
            self.viewer_control.register_pointer_cb("click", self._on_viewer_click)
            self._click_registered = True
        if self.uses_fast_camera(obb_box):
            render, renderer = (lambda: self.fast_camera.render(self, camera)), "fast"
        else:
            render, renderer = (lambda: self.full_outputs_for_camera(camera, obb_box=obb_box)), "full"
        if self.instance_edits is None:
            return render()
        return self.instance_edits.outputs_for_camera(camera, render, renderer)

    def uses_fast_camera(self, obb_box=None) -> bool:
        """Whether camera outputs come from the baked density grid now: a checkpoint is attached (the density is
        fixed), the switch (config fast_camera_outputs, viewer checkbox) is on and no crop box is asked for."""
        fast = self.fast_camera
        if fast is None or not fast.attached:
            return False
        if not self.viewer_fast_render.value:
            if not self._told_full:  # never silently slow: say why views take the long way, and how to switch
                say("instance-nerfacto: fast render is off (fast_camera_outputs: false in config.yml, or the viewer's "
                    "checkbox): views are volume rendered in full, ~20x slower on a CPU; tick \"Fast render (baked "
                    "density grid)\" or set fast_camera_outputs: true")
                self._told_full = True
            return False
        if obb_box is not None:
            if not self._told_crop:  # never silently slow: say why this view takes the long way
                say("instance-nerfacto: a crop box is set, so views are volume rendered in full (slow on a CPU)")
                self._told_crop = True
            return False
        return True

    def full_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, Tensor]:
        """nerfstudio's full volume render of a camera, whatever the fast-render switch says (instance-render
        --full-render, instance-merge --renderer volume, comparisons)."""
        return super().get_outputs_for_camera(camera, obb_box=obb_box)

    def set_merge_table(self, table: MergeTable) -> None:
        """Hold a merge table (label -> merged label) in the model, and so in the next checkpoint it saves."""
        self.merge_lut.copy_(torch.from_numpy(table.lut(self.num_labels)).to(self.merge_lut.device))

    def label_map(self) -> LabelMap:
        """Raw ids (+ surface points) -> the ids every command shows: merge table, then the hand-edit program."""
        return LabelMap.from_parts(self.merge_lut, self.label_edits.get_extra_state())

    def set_label_map(self, label_map: LabelMap) -> None:
        """Hold a label map (merge table and hand-edit program) in the model, and so in its next checkpoint."""
        self.set_merge_table(label_map.merge)
        self.label_edits.set_extra_state(label_map.state())

    def final_ids(self, ids: Tensor, points: Optional[Tensor] = None) -> Tensor:
        """Raw ids -> what the viewer shows: merged and edited, or raw when "Merged instance labels" is off."""
        if not self.viewer_merged_labels.value:
            return ids
        ids = self.merge_lut.to(ids.device)[ids]
        program = self.label_edits.get_extra_state().get("program")
        if program and points is not None:
            ids = LabelMap(program=self.label_map().program).apply(ids, points)
        return ids

    def get_outputs(self, ray_bundle: RayBundle):
        if self.training:
            self.camera_optimizer.apply_to_raybundle(ray_bundle)
        ray_samples, weights_list, ray_samples_list = self.proposal_sampler(ray_bundle, density_fns=self.density_fns)
        field_outputs = self.field.forward(ray_samples, compute_normals=self.config.predict_normals)
        weights = ray_samples.get_weights(field_outputs[FieldHeadNames.DENSITY])
        weights_list.append(weights)
        ray_samples_list.append(ray_samples)

        rgb = self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights)
        with torch.no_grad():
            depth = self.renderer_depth(weights=weights, ray_samples=ray_samples)
        expected_depth = self.renderer_expected_depth(weights=weights, ray_samples=ray_samples)
        accumulation = self.renderer_accumulation(weights=weights)
        outputs = {"rgb": rgb, "accumulation": accumulation, "depth": depth, "expected_depth": expected_depth}
        points = ray_bundle.origins + ray_bundle.directions * depth  # surface point of each ray (label edits)
        outputs.update(self.instance_outputs(ray_samples.frustums.get_positions(), weights, points))
        if self.training:
            outputs["weights_list"] = weights_list
            outputs["ray_samples_list"] = ray_samples_list
        if ray_bundle.metadata is not None and "directions_norm" in ray_bundle.metadata:
            outputs["directions_norm"] = ray_bundle.metadata["directions_norm"]  # depth loss: z -> ray depth
        for i in range(self.config.num_proposal_iterations):
            outputs[f"prop_depth_{i}"] = self.renderer_depth(weights=weights_list[i], ray_samples=ray_samples_list[i])
        return outputs

    def instance_outputs(
        self, positions: Float[Tensor, "*bs S 3"], weights: Float[Tensor, "*bs S 1"],
        points: Optional[Float[Tensor, "*bs 3"]] = None,
    ) -> Dict[str, Tensor]:
        """Label log-probabilities from the heaviest samples (detached positions and weights; lift/labels.py); ids,
        confidence and a viewer colour from them outside training."""
        batch_shape = positions.shape[:-2]
        logits, _, _ = self.field.composite_labels(positions.reshape(-1, *positions.shape[-2:]),
                                                   weights.reshape(-1, weights.shape[-2]))
        logits = logits.reshape(*batch_shape, -1)
        outputs = {"instance_logits": logits}
        if not self.training:
            outputs.update(self.logits_to_outputs(logits, points))
        return outputs

    def logits_to_outputs(self, logits: Float[Tensor, "*bs K"], points: Optional[Tensor] = None) -> Dict[str, Tensor]:
        probs = torch.softmax(logits.float(), dim=-1)
        confidence, index = probs.max(dim=-1, keepdim=True)
        ids = self.final_ids(index + 1, points)
        colours = self.instance_edits.colours if self.instance_edits is not None else colorize
        colour = torch.from_numpy(colours(ids[..., 0].cpu().numpy())).to(logits.device).float()
        return {"instance": colour / 255.0, "instance_id": ids, "instance_confidence": confidence}

    def _depth_supervised(self, batch) -> bool:
        return DEPTH_KEY in batch and self.config.depth_loss_mult > 0

    def get_metrics_dict(self, outputs, batch):
        if self._depth_supervised(batch):
            metrics = super().get_metrics_dict(outputs, batch)
        else:
            metrics = NerfactoModel.get_metrics_dict(self, outputs, batch)
        if PSEUDOLABEL_KEY in batch:
            target = batch[PSEUDOLABEL_KEY].to(self.device).long().view(-1)
            pred = outputs["instance_logits"].argmax(dim=-1).view(-1) + 1
            labelled = target > 0
            if labelled.any():
                metrics["instance_accuracy"] = (pred[labelled] == target[labelled]).float().mean()
        return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        if self._depth_supervised(batch):
            loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        else:
            loss_dict = NerfactoModel.get_loss_dict(self, outputs, batch, metrics_dict)
        if PSEUDOLABEL_KEY in batch:
            target = batch[PSEUDOLABEL_KEY].to(self.device).long().view(-1) - 1  # 0 (unlabelled) -> -1 (ignored)
            target = torch.where(target >= self.num_labels, torch.full_like(target, -1), target)
            logits = outputs["instance_logits"].view(-1, self.num_labels)
            if (target >= 0).any():
                loss_dict["instance_loss"] = self.config.instance_loss_mult * self.instance_loss(logits, target)
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        if DEPTH_KEY in batch:
            metrics, images = super().get_image_metrics_and_images(outputs, batch)
        else:
            metrics, images = NerfactoModel.get_image_metrics_and_images(self, outputs, batch)
        if compat.lpips_skipped(self.lpips):
            metrics.pop("lpips", None)
        if PSEUDOLABEL_KEY in batch:
            target: Int[Tensor, "H W"] = batch[PSEUDOLABEL_KEY].to(self.device).long()[..., 0]
            pred = outputs["instance_logits"].argmax(dim=-1) + 1
            labelled = target > 0
            if labelled.any():
                metrics["instance_accuracy"] = float((pred[labelled] == target[labelled]).float().mean())
            gt_colour = torch.from_numpy(colorize(target.cpu().numpy())).float().to(self.device) / 255.0
            images["instance"] = torch.cat([gt_colour, outputs["instance"].to(self.device)], dim=1)
        return metrics, images
