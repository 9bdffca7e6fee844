"""Shared fixtures: one tiny rendered room per test session (``instance-synth --preset tiny --seed 0``).

``tiny_scene`` is read-only for every test (160x120, 30 train + 8 val frames, gt/, masks/, depth/, instances.json);
tests that write into a dataset (pseudolabels/, outputs) take ``tiny_scene_copy``, a fresh copy per test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def make_scene(out: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Render a scene into ``out`` (must not exist) in this process; about 1-2 s for the tiny preset.

    In process is safe: the generator uses its own pybullet DIRECT client and disconnects it (no global state left),
    and it writes to a temporary sibling folder renamed into place, so a failure leaves nothing half-written.
    """
    from data_preprocess.synth.cli import SynthConfig, main

    main(SynthConfig(out=out, preset=preset, seed=seed))
    return out


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the session's tiny scene (preset tiny, seed 0). Do not write into it: use ``tiny_scene_copy``."""
    return make_scene(tmp_path_factory.mktemp("synth") / "tiny")


@pytest.fixture
def tiny_scene_copy(tiny_scene: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny scene in this test's tmp_path, free to write into."""
    return Path(shutil.copytree(tiny_scene, tmp_path / "tiny"))
