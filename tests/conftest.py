"""Shared fixtures: one tiny rendered room per test session (``instance-synth --preset tiny --seed 0``).

``tiny_scene`` is read-only for every test (160x120, 30 train + 8 val frames, gt/, masks/, depth/, instances.json);
tests that write into a dataset (pseudolabels/, outputs) take ``tiny_scene_copy``, a fresh copy per test.
``small_run`` is one small model trained by ns-train on a COLMAP-like copy of it (tests/small_run.py), for the tests
of what users see (tests/test_small_run.py).
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


@pytest.fixture(scope="session")
def small_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """One instance-nerfacto-small run (a few hundred iterations, end-of-training merge and bake included) on a
    COLMAP-like copy of the tiny scene with one object's label split in two (``tests.small_run.SmallRun``). Tests may
    read it; a test that changes the run (its merge table) restores it."""
    from tests.small_run import train_small_run

    run = train_small_run(tiny_scene, tmp_path_factory.mktemp("small_run"))
    print(f"\nsmall_run: ns-train took {run.train_seconds:.1f} s")
    return run
