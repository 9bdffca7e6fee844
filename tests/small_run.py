"""One small trained run for the fast tests of what users notice (the ``small_run`` session fixture of conftest.py).

The tiny rendered room as ns-process-data (COLMAP) would write it: every pose in a rigidly moved frame ``A @ c2w``
with ``A`` recorded as ``applied_transform`` (nerfstudio's dataparser undoes it; every command of this project that
maps a dataset pose into the model must too), depth maps kept so the depth-based InstanceLoc modes run, pseudolabels
made from the ground truth with noise, and one object's label split in two across its frames (what label merging must
join). ``instance-nerfacto-small`` is trained on it for a few hundred iterations with ns-train, end-of-training merge
and density bake included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
from scipy.spatial.transform import Rotation

ITERATIONS = 300


def colmap_like_copy(scene: Path, dest: Path, keep_depth: bool = False) -> np.ndarray:
    """The scene as ns-process-data writes a COLMAP dataset: frames in a transformed frame A @ c2w, with A recorded as
    ``applied_transform``. Returns A (4x4). With ``keep_depth``, depth/ and the frames' depth_file_path stay (A is
    rigid, so the depth maps' metres are still right)."""
    shutil.copytree(scene / "images", dest / "images")
    if keep_depth:
        shutil.copytree(scene / "depth", dest / "depth")
    meta = json.loads((scene / "transforms.json").read_text())
    applied = np.eye(4)
    applied[:3, :3] = Rotation.from_euler("xyz", [90, 20, -35], degrees=True).as_matrix()
    applied[:3, 3] = [0.4, -1.2, 0.7]
    for frame in meta["frames"]:
        frame["transform_matrix"] = (applied @ np.asarray(frame["transform_matrix"])).tolist()
        if not keep_depth:
            frame.pop("depth_file_path", None)
    meta["applied_transform"] = applied[:3].tolist()
    (dest / "transforms.json").write_text(json.dumps(meta))
    return applied


@dataclass
class SmallRun:
    """A trained run on a COLMAP-like copy of the tiny scene."""

    scene: Path
    """The dataset (transforms.json with applied_transform, images/, depth/, gt/, masks/, pseudolabels/)."""
    config: Path
    """config.yml of the run."""
    applied: np.ndarray
    """The applied_transform (4x4) of the dataset's poses."""
    split_label: int
    """The object whose label was split ..."""
    split_new: int
    """... and the label it carries in the later half of its frames."""
    other_things: List[int]
    """Ids of the other things (twins among them: they must never be merged)."""
    train_seconds: float
    """Wall time of ns-train (training, end-of-training merge and bake)."""

    @property
    def val_stems(self) -> List[str]:
        meta = json.loads((self.scene / "transforms.json").read_text())
        return sorted(Path(f).stem for f in meta["val_filenames"])


def train_command(data: Path, out: Path, iterations: int) -> list:
    """ns-train instance-nerfacto-small on CPU for ``iterations`` steps, one checkpoint at the end, no viewer; the run
    lands in ``out/<data name>/instance-nerfacto-small/run``."""
    return [
        sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()",
        "instance-nerfacto-small", "--data", str(data), "--machine.device-type", "cpu",
        "--max-num-iterations", str(iterations), "--steps-per-save", str(iterations),
        "--viewer.quit-on-train-completion", "True", "--vis", "tensorboard", "--output-dir", str(out),
        "--timestamp", "run",
    ]


def train_small_run(tiny_scene: Path, root: Path, iterations: int = ITERATIONS) -> SmallRun:
    from instance_nerfacto.eval.noisy_labels import make_noisy_pseudolabels
    from tests.test_merging_trained import split_most_seen_thing

    scene = root / "colmap_scene"
    scene.mkdir(parents=True)
    applied = colmap_like_copy(tiny_scene, scene, keep_depth=True)
    for name in ("gt", "masks"):
        shutil.copytree(tiny_scene / name, scene / name)
    shutil.copy(tiny_scene / "instances.json", scene / "instances.json")
    make_noisy_pseudolabels(scene / "gt", scene / "pseudolabels", seed=0)
    target, new, others = split_most_seen_thing(scene)
    out = root / "outputs"
    command = train_command(scene, out, iterations) + ["--pipeline.model.camera-optimizer.mode", "off"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}  # robust on a busy machine
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    configs = list(out.glob("*/instance-nerfacto-small/run/config.yml"))
    assert len(configs) == 1
    return SmallRun(scene, configs[0], applied, target, new, others, seconds)
