"""A training run's files: its folder and its checkpoints, named and found the way nerfstudio names and finds them.

ns-train writes a run into ``<output_dir>/<experiment_name>/<method_name>/<timestamp>/`` (config.yml, and the
checkpoints ``nerfstudio_models/step-<step:09d>.ckpt``), and nerfstudio's ``eval_setup`` (behind ``ns-render``,
``ns-viewer`` and every command of this project) loads the newest checkpoint of that folder, computed from the
config's fields, not from where config.yml lies. :func:`run_folder` resolves a config.yml the same way, so a command
that writes into a checkpoint (label merging, hand edits) writes the one every reader loads, even for a copied or
moved run folder whose config still names the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import DEFAULT_DEPTH_UNIT_SCALE

MODELS_DIR_NAME = "nerfstudio_models"
"""The checkpoint folder of a run (nerfstudio's default ``relative_model_dir``)."""


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint of a training step, as nerfstudio's trainer saves it."""
    return f"step-{int(step):09d}.ckpt"


def checkpoint_step(path: Path | str) -> int:
    """The training step of a checkpoint file (``step-000000300.ckpt`` -> 300)."""
    return int(Path(path).stem.split("-")[-1])


def models_dir(run_dir: Path | str) -> Path:
    """The checkpoint folder of a run folder."""
    return Path(run_dir) / MODELS_DIR_NAME


def checkpoint_path(run_dir: Path | str, step: int) -> Path:
    """The checkpoint of a training step in a run folder."""
    return models_dir(run_dir) / checkpoint_name(step)


def has_checkpoint(run_dir: Path | str) -> bool:
    return models_dir(run_dir).is_dir() and any(models_dir(run_dir).glob("step-*.ckpt"))


def latest_checkpoint(run_dir: Path | str) -> Path:
    """The newest ``step-*.ckpt`` of a run folder (the one nerfstudio loads by default; the zero-padded names sort
    as their steps do)."""
    models = sorted(models_dir(run_dir).glob("step-*.ckpt"))
    if not models:
        fail(
            "training run has no checkpoint",
            models_dir(run_dir),
            "train longer than one save interval, or check the path",
        )
    return models[-1]


def read_config(config_path: Path | str):
    """A run's config.yml as nerfstudio loads it (a ``TrainerConfig``); one-line InputError when it is missing or is
    not one."""
    config_path = Path(config_path)
    if not config_path.is_file():
        fail("training config not found", config_path, "pass the config.yml that ns-train printed at the end")
    config = try_read_config(config_path)
    if config is None:
        fail("file is not a nerfstudio training config", config_path, "pass the config.yml that ns-train wrote")
    return config


def try_read_config(config_path: Path | str):
    """The ``TrainerConfig`` of an existing config.yml, or None when the file does not hold one."""
    import yaml

    try:
        config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    except Exception:  # yaml and the constructors of the classes it names raise many types
        return None
    return config if hasattr(config, "get_base_dir") else None


def run_folder(config_path: Path | str, config: Optional[object] = None) -> Path:
    """The folder nerfstudio loads a run's checkpoints from (``eval_setup``: ``output_dir/experiment_name/
    method_name/timestamp``, a relative ``output_dir`` taken from the working directory as nerfstudio takes it). It
    is the folder beside config.yml unless the run was moved or copied, or ns-train ran elsewhere."""
    config = read_config(config_path) if config is None else config
    return Path(config.get_base_dir())


def run_depth_unit_scale(config_path: Path | str) -> float:
    """Metres per stored depth unit of the dataset a run was trained on, as ns-train's dataparser read its depth maps
    (``--pipeline.datamanager.dataparser.depth-unit-scale-factor``; nerfstudio's default when the config does not say
    or cannot be read, which the loaders report)."""
    config = try_read_config(config_path) if Path(config_path).is_file() else None
    dataparser = getattr(getattr(getattr(config, "pipeline", None), "datamanager", None), "dataparser", None)
    return float(getattr(dataparser, "depth_unit_scale_factor", DEFAULT_DEPTH_UNIT_SCALE))


def holds_config(run_dir: Path | str, config_path: Path | str) -> bool:
    """Whether ``run_dir`` is the folder that holds config.yml (it is unless the run was moved or copied)."""
    return Path(run_dir).resolve() == Path(config_path).parent.resolve()


def moved_run_note(run_dir: Path | str, config_path: Path | str) -> Optional[str]:
    """A line telling where a run's checkpoints are when its config.yml lies elsewhere (None when beside it)."""
    if holds_config(run_dir, config_path):
        return None
    return (
        f"note: {config_path} names the run folder {run_dir} (its output_dir, experiment_name, method_name and "
        "timestamp): nerfstudio loads the checkpoints there, so that folder is the one read and written"
    )


def check_run_files(config_path: Path | str, load_step: Optional[int] = None) -> Path:
    """The run folder of a config.yml (:func:`run_folder`: where nerfstudio loads its checkpoints from), after
    checking that the config and the wanted checkpoint exist."""
    config_path = Path(config_path)
    if not config_path.is_file():
        fail("training config not found", config_path, "pass the config.yml that ns-train printed at the end")
    config = try_read_config(config_path)
    # a file that is no config is reported after the checkpoint check: a run folder without checkpoints is the
    # likelier mistake, and that message names the folder to look at
    run_dir = run_folder(config_path, config) if config is not None else config_path.parent
    if not has_checkpoint(run_dir):
        if not holds_config(run_dir, config_path) and has_checkpoint(config_path.parent):
            fail(
                f"run folder was moved: config.yml still names {run_dir}",
                models_dir(run_dir),
                "set output_dir in config.yml to the folder above <experiment>/<method>/<timestamp> now "
                "(nerfstudio loads the checkpoints from there), or run from the folder ns-train ran in",
            )
        fail(
            "training run has no checkpoint",
            models_dir(run_dir),
            "train longer than one save interval, or check the path",
        )
    if load_step is not None and not checkpoint_path(run_dir, load_step).is_file():
        fail(
            f"no checkpoint for step {load_step}",
            models_dir(run_dir),
            "pick a step-*.ckpt that exists, or omit --load-step",
        )
    if config is None:
        read_config(config_path)  # the one-line error for a file that is not a training config
    return run_dir


@dataclass
class RunChoice:
    """Which trained run a command reads: the --load-config flag of every command that opens a run (nested in each
    command's config without a prefix). :meth:`run_dir` finds the run's folder as nerfstudio does, so a command
    that writes into the run (instance-merge, the viewer's edit panel) writes the checkpoint every reader loads."""

    load_config: Optional[Path] = None
    """config.yml of the training run (outputs/<experiment>/instance-nerfacto*/<timestamp>/config.yml); required,
    except by instance-loc --denoise, which reads rendered label maps instead of a model."""

    def require_config(self) -> Path:
        """``load_config``, after a one-line error when it is not given or does not exist."""
        if self.load_config is None:
            fail("no training run given", None, "pass --load-config outputs/.../config.yml")
        if not Path(self.load_config).is_file():
            fail("training config not found", self.load_config, "pass the config.yml written by ns-train")
        return Path(self.load_config)

    def run_dir(self, command: str, load_step: Optional[int] = None) -> Path:
        """The folder nerfstudio loads the run's checkpoints from (:func:`check_run_files`), after
        :meth:`require_config`; says so when it is not the folder of config.yml (a moved or copied run)."""
        config_path = self.require_config()
        run_dir = check_run_files(config_path, load_step)
        note = moved_run_note(run_dir, config_path)
        if note is not None:
            say(f"{command}: {note}")
        return run_dir


@dataclass
class RunOptions(RunChoice):
    """Which trained run a command reads and how: the options instance-render, instance-export and instance-loc share
    (nested in each command's config without a prefix, so the flags read --load-config, --load-step, --merge /
    --no-merge and --threads everywhere)."""

    load_step: Optional[int] = None
    """Checkpoint step to load (default: the latest)."""
    merge: bool = True
    """Apply the merge table and hand edits the run's checkpoint holds (what ns-render and the viewer show);
    --no-merge gives the raw label ids."""
    threads: int = 1
    """torch threads (0 = leave torch's setting: OMP_NUM_THREADS, else the package's 1). One by default: renders
    already run their chunks on one thread per core (render/bake.render_workers), and a query of a few hundred rays
    is too little work to share; on a busy machine extra torch threads only wait on each other (measured with
    instance-loc: 1 thread ~7x faster than 2 on a loaded 2-core machine)."""

    def set_threads(self) -> None:
        """Give torch ``threads`` intra-op threads (0 leaves its setting)."""
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)
