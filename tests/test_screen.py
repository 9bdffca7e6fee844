"""Each command's screen is its own output: nerfstudio's tcnn notice, its console chatter while a run loads, and
torch's and nerfstudio's deprecation warnings stay off it; ``--verbose`` or INSTANCE_NERFACTO_VERBOSE=1 shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A command as the project writes them: run_cli around a main that imports nerfstudio lazily and builds the
# instance-nerfacto-small model with its default implementation (tcnn, which falls back to torch here, and prints the
# notice once per encoding and MLP), inside nerfstudio's console as eval_setup prints it. One nerfstudio module is
# imported before run_cli, as a command module may, to show that modules loaded earlier are quieted too.
COMMAND = """
import sys
import nerfstudio.field_components.mlp  # noqa: F401
from instance_nerfacto.core.errors import run_cli
from instance_nerfacto.core.third_party import nerfstudio_console_captured


def main():
    import torch
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.utils.rich_utils import CONSOLE

    from instance_nerfacto.config import instance_nerfacto_small_trainer

    config = instance_nerfacto_small_trainer().pipeline.model
    config.implementation = "tcnn"
    with nerfstudio_console_captured():
        CONSOLE.print("Loading latest checkpoint from load_dir")
    config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=4,
                 metadata={"num_labels": 3})
    print("the result")


run_cli(main, prog="demo-command")
"""


def _run(*args: str, verbose_env: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("INSTANCE_NERFACTO_VERBOSE", None)
    env.pop("PYTHONWARNINGS", None)
    if verbose_env:
        env["INSTANCE_NERFACTO_VERBOSE"] = "1"
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_command_prints_its_result_and_no_third_party_chatter() -> None:
    proc = _run("-c", COMMAND)
    assert proc.stdout.strip() == "the result", proc.stdout[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]
    shown = _run("-c", COMMAND, verbose_env=True)  # the escape: everything, so the check above can fail
    assert "Install tcnn for speedups" in shown.stdout and "Loading latest checkpoint" in shown.stdout
    assert "FutureWarning" in shown.stderr
    assert "tcnn" in _run("-c", COMMAND, "--verbose").stdout


def test_instance_synth_screen_has_only_its_result_line(tmp_path: Path) -> None:
    """pybullet prints its build time from native code when imported."""
    proc = _run("-c", "from data_preprocess.synth.cli import entrypoint; entrypoint()", "--out", str(tmp_path / "s"),
                "--preset", "tiny")
    assert proc.stderr == "" and proc.stdout.startswith("instance-synth: wrote") and proc.stdout.count("\n") == 1


def test_help_has_no_warnings() -> None:
    proc = _run("-c", "from data_preprocess.instance_map import entrypoint; entrypoint()", "--help")
    assert proc.stderr == "" and "tcnn" not in proc.stdout and "usage" in proc.stdout
