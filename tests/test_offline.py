"""Offline-proof nerfstudio: with no network and no cached LPIPS weights, stock `ns-train nerfacto` (not only our
method) trains on a rendered scene, because every ns-* command imports this plugin, which makes LPIPS optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_stock_nerfacto_trains_offline_on_a_synth_scene(tiny_scene: Path, tmp_path: Path) -> None:
    from instance_nerfacto.core.compat import lpips_weights_available

    if lpips_weights_available():
        pytest.skip("AlexNet weights are cached here: LPIPS is built normally, nothing offline to prove")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ns-train"), "nerfacto", "--data", str(tiny_scene),
         "--machine.device-type", "cpu", "--max-num-iterations", "2", "--vis", "tensorboard",
         "--viewer.quit-on-train-completion", "True", "--output-dir", str(tmp_path / "runs"),
         "--pipeline.datamanager.train-num-rays-per-batch", "256"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lpips metric is skipped" in proc.stderr
    assert any((tmp_path / "runs").rglob("step-*.ckpt"))
