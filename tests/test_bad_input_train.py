"""Bad input to ``ns-train instance-nerfacto-small`` data loading (issue 8): a pseudolabel folder that does not match
the dataset (missing folder, missing frame, size mismatch) must stop with one line naming the file, write no
checkpoint and leave the dataset untouched. nerfstudio's own entrypoint catches the exception, so what holds today
(our line is the last stderr line) and the full contract (no traceback) are separate tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from tests.badinput import assert_one_line_error, assert_unchanged, cli_env, snapshot

VICTIM = "frame_00003"

NS_TRAIN_CASES = ["missing_pseudolabel_folder", "missing_pseudolabel_frame", "pseudolabel_size_mismatch",
                  "depth_listed_for_some_frames"]
_ns_train_results: Dict[str, tuple] = {}


def _ns_train_bad(case: str, tiny_scene: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str, Path, Dict]:
    """Run ns-train once per case on a scene with a broken pseudolabels/ (gt copied as pseudolabels otherwise)."""
    if case in _ns_train_results:
        return _ns_train_results[case]
    scene = Path(shutil.copytree(tiny_scene, tmp_path / "scene"))
    pseudo = scene / "pseudolabels"
    if case != "missing_pseudolabel_folder":
        shutil.copytree(scene / "gt", pseudo)
        n = int(max(np.asarray(Image.open(p)).max() for p in pseudo.glob("*.png")))
        (pseudo / "labels.json").write_text(json.dumps({"num_labels": n}))
    if case == "missing_pseudolabel_folder":
        name = "pseudolabels"
    elif case == "depth_listed_for_some_frames":  # nerfstudio's dataparser would stop with a 45-line assertion
        meta = json.loads((scene / "transforms.json").read_text())
        for frame in meta["frames"][::3]:
            frame.pop("depth_file_path")
        (scene / "transforms.json").write_text(json.dumps(meta))
        name = "transforms.json"
    elif case == "missing_pseudolabel_frame":
        (pseudo / f"{VICTIM}.png").unlink()
        name = f"{VICTIM}.png"
    else:
        Image.fromarray(np.ones((60, 80), dtype=np.uint16)).save(pseudo / f"{VICTIM}.png")
        name = f"{VICTIM}.png"
    before = snapshot(scene)
    cmd = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()",
           "instance-nerfacto-small", "--data", str(scene), "--machine.device-type", "cpu", "--max-num-iterations", "1",
           "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True", "--output-dir", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env())
    _ns_train_results[case] = (proc, name, scene, before)
    return _ns_train_results[case]


@pytest.mark.parametrize("case", NS_TRAIN_CASES)
def test_ns_train_bad_pseudolabels_last_line_is_ours(case: str, tiny_scene: Path, tmp_path: Path) -> None:
    """What holds today: non-zero exit, the last stderr line is our InputError naming the file and the fix, no
    checkpoint written, dataset untouched. (nerfstudio's entrypoint, not run_cli, catches the exception.)"""
    proc, name, scene, before = _ns_train_bad(case, tiny_scene, tmp_path)
    assert proc.returncode != 0
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("instance_nerfacto.core.errors.InputError: ") or ": error: " in last, proc.stderr[-3000:]
    assert name in last and " - " in last, last
    assert_unchanged(before, [scene])
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.parametrize("case", NS_TRAIN_CASES)
def test_ns_train_bad_pseudolabels_one_line(case: str, tiny_scene: Path, tmp_path: Path) -> None:
    proc, name, scene, before = _ns_train_bad(case, tiny_scene, tmp_path)
    assert_one_line_error(proc, name, last_line_only=True)
