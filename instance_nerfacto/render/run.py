"""Loading a trained instance-nerfacto run: one loader for every command, benchmark and test.

:func:`load_run` wraps nerfstudio's ``eval_setup`` (inference mode, no images decoded) with one-line errors for a
missing config, a run without checkpoints, a step that does not exist and a run of another method, and returns the
pipeline together with what every consumer needs next to it: the checkpoint (the baked density grid is cached per
checkpoint), the map from dataset poses to the model's frame, and the run's merge table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from instance_nerfacto.core.dataset import check_depth_listing
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.runs import check_run_files, checkpoint_step, latest_checkpoint, read_config
from instance_nerfacto.core.third_party import nerfstudio_console_captured
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.render.cameras import DatasetToModel


@dataclass
class TrainedRun:
    """A loaded training run."""

    pipeline: object
    """nerfstudio pipeline in eval mode; ``pipeline.model`` is an InstanceNerfactoModel."""
    config_path: Path
    """The run's config.yml."""
    checkpoint: Path
    """The checkpoint that was loaded."""
    step: int
    """Its training step."""
    to_model: DatasetToModel
    """Dataset frame (transforms.json poses) -> the model's normalised frame."""

    @classmethod
    def around(cls, pipeline, config_path: Path, checkpoint: Path, step: Optional[int] = None) -> "TrainedRun":
        """The run of a pipeline loaded from ``checkpoint`` (by :func:`load_run`, or elsewhere: the viewer's)."""
        step = checkpoint_step(checkpoint) if step is None else int(step)
        return cls(pipeline, Path(config_path), Path(checkpoint), step, DatasetToModel.from_pipeline(pipeline))

    @classmethod
    def of_run_folder(cls, pipeline, run_dir: Path) -> "TrainedRun":
        """The run of a pipeline that was loaded from the latest checkpoint of ``run_dir`` (the viewer's)."""
        return cls.around(pipeline, Path(run_dir) / "config.yml", latest_checkpoint(run_dir))

    @property
    def model(self):
        return self.pipeline.model

    @property
    def run_dir(self) -> Path:
        """The run folder the checkpoint was loaded from (see :func:`instance_nerfacto.core.runs.run_folder`)."""
        return self.checkpoint.parent.parent

    def merge_table(self) -> MergeTable:
        """The merge table the model carries (what ns-render and the viewer show)."""
        return MergeTable.from_lut(self.model.merge_lut.cpu().numpy())

    def label_map(self):
        """The merge table and hand edits the model carries: ``apply(ids, points)`` gives the ids every command
        shows (a split needs the surface point of each id)."""
        return self.model.label_map()


def load_run(config_path: Path | str, load_step: Optional[int] = None) -> TrainedRun:
    """Load a run for inference; InputError with one line when it cannot be found or is not instance-nerfacto."""
    from nerfstudio.utils.eval_utils import eval_setup

    from instance_nerfacto.core import compat
    from instance_nerfacto.lift.model import InstanceNerfactoModel

    compat.apply()
    config_path = Path(config_path)
    check_run_files(config_path, load_step)
    check_depth_listing(training_transforms(config_path))

    def pick_step(config):
        config.load_step = load_step
        return config

    with nerfstudio_console_captured():  # the dataparser's indices and the checkpoint path: not this command's output
        _, pipeline, checkpoint, step = eval_setup(config_path, test_mode="inference",
                                                   update_config_callback=pick_step)
    pipeline.eval()
    if not isinstance(pipeline.model, InstanceNerfactoModel):
        fail(f"run is a {type(pipeline.model).__name__}, not instance-nerfacto", config_path,
             "train with ns-train instance-nerfacto or instance-nerfacto-small")
    return TrainedRun.around(pipeline, config_path, Path(checkpoint), step)


def training_transforms(config_path: Path) -> Path:
    """transforms.json of the dataset a run was trained on, read from its config.yml as nerfstudio does."""
    config = read_config(config_path)
    datamanager = config.pipeline.datamanager
    data = Path(datamanager.data if getattr(datamanager, "data", None) is not None else datamanager.dataparser.data)
    return data if data.suffix == ".json" else data / "transforms.json"


def split_cameras(pipeline, split: str) -> List[Tuple[str, object, int]]:
    """(image stem, Cameras, index) for every frame of the split, in dataset order, as the dataparser posed them."""
    datamanager = pipeline.datamanager
    sources = {"train": [datamanager.train_dataset], "val": [datamanager.eval_dataset]}
    sources["all"] = sources["train"] + sources["val"]
    frames = []
    for dataset in sources[split]:
        outputs = dataset._dataparser_outputs
        for index, filename in enumerate(outputs.image_filenames):
            frames.append((Path(filename).stem, outputs.cameras, index))
    return frames
