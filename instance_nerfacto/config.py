"""Method configs registered with nerfstudio: ``instance-nerfacto`` (paper: nerfacto defaults, 5,000 iterations) and
``instance-nerfacto-small`` (CPU-sized: 512 rays, small grids, fewer samples)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from instance_nerfacto.core.errors import install_excepthook
from instance_nerfacto.lift.datamanager import InstanceDataManagerConfig
from instance_nerfacto.lift.model import LABEL_PARAM_GROUP, InstanceNerfactoModelConfig
from instance_nerfacto.pipeline import InstancePipelineConfig

# ns-train is nerfstudio's program: our bad-input errors raised inside it still print one line and exit 2.
install_excepthook()


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config with torch's fused implementation switched on (CPU and CUDA)."""

    fused: Optional[bool] = True
    """torch.optim.Adam's single-kernel update. Without it torch runs Adam on CPU tensors as a loop of separate ops per
    tensor: on instance-nerfacto-small's ~3.6M hash-table values ~0.01-0.016 CPU s per step against ~0.0025 s fused
    (1 thread), ~4% of an iteration. None = torch's default choice."""


def _optimizers(max_steps: int, camera_steps: int) -> dict:
    return {
        "proposal_networks": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
        },
        "fields": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
        },
        LABEL_PARAM_GROUP: {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=max_steps),
        },
        "camera_opt": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=camera_steps),
        },
    }


def instance_nerfacto_trainer() -> TrainerConfig:
    """Paper settings: nerfacto defaults (4,096 rays, full grids), 5,000 iterations."""
    return TrainerConfig(
        method_name="instance-nerfacto",
        steps_per_eval_batch=500,
        steps_per_save=1000,
        max_num_iterations=5000,
        mixed_precision=True,
        pipeline=InstancePipelineConfig(
            datamanager=InstanceDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(),
                train_num_rays_per_batch=4096,
                eval_num_rays_per_batch=4096,
            ),
            model=InstanceNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers=_optimizers(max_steps=200000, camera_steps=5000),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, websocket_host="127.0.0.1"),
        vis="viewer",
    )


def instance_nerfacto_small_trainer() -> TrainerConfig:
    """CPU-sized: 512 rays, small hash grids, fewer samples per ray, no mixed precision (CPU autocast is slower),
    camera optimizer off: rendered / depth-sensor poses are exact, and on COLMAP poses of a rendered room it did better
    off (held-out things PQ 0.711 against 0.614 with ``--pipeline.model.camera-optimizer.mode SO3xR3``,
    benchmarks/colmap_path.py)."""
    full = instance_nerfacto_trainer()  # what is not set here is the paper config's
    model = replace(
        full.pipeline.model,
        eval_num_rays_per_chunk=1 << 13,
        num_levels=8,
        max_res=512,
        log2_hashmap_size=17,
        hidden_dim=32,
        hidden_dim_color=32,
        appearance_embed_dim=8,
        num_proposal_samples_per_ray=(64, 32),
        num_nerf_samples_per_ray=24,
        proposal_net_args_list=[
            {"hidden_dim": 16, "log2_hashmap_size": 15, "num_levels": 5, "max_res": 64, "use_linear": False},
            {"hidden_dim": 16, "log2_hashmap_size": 15, "num_levels": 5, "max_res": 128, "use_linear": False},
        ],
        label_num_levels=8,
        label_max_res=256,
        label_log2_hashmap_size=16,
        label_hidden_dim=32,
        camera_optimizer=CameraOptimizerConfig(mode="off"),
    )
    datamanager = replace(full.pipeline.datamanager, train_num_rays_per_batch=512, eval_num_rays_per_batch=512)
    return replace(
        full,
        method_name="instance-nerfacto-small",
        steps_per_eval_batch=250,
        steps_per_eval_image=100000,  # a full-image volume render is ~20 s on 2 CPU cores
        steps_per_eval_all_images=1000000,
        steps_per_save=500,
        max_num_iterations=2000,
        mixed_precision=False,
        pipeline=replace(full.pipeline, datamanager=datamanager, model=model),
        optimizers=_optimizers(max_steps=20000, camera_steps=2000),
        viewer=replace(full.viewer, num_rays_per_chunk=1 << 13),
    )


instance_nerfacto = MethodSpecification(
    config=instance_nerfacto_trainer(),
    description="3DIML InstanceLift: nerfacto + instance label field trained on InstanceMap pseudolabels",
)

instance_nerfacto_small = MethodSpecification(
    config=instance_nerfacto_small_trainer(),
    description="instance-nerfacto sized for CPUs: 512 rays, small grids, fewer samples",
)
