"""The GPU benchmark cannot run here (no CUDA in CI): check that it imports, that its dry run prints the plan, and
that every flag it passes exists on the command it calls, so a GPU session does not die on a typo."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import typing
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def flags(cmd) -> set:
    return {str(c)[2:].replace("-", "_") for c in cmd if str(c).startswith("--")}


def flag_fields(config) -> set:
    """Field names a config takes as flags: its own, and those of dataclasses nested without a prefix
    (``Annotated[Options, tyro.conf.OmitArgPrefixes]``, e.g. the shared run options)."""
    hints = typing.get_type_hints(config, include_extras=True)
    names = set()
    for f in dataclasses.fields(config):
        hint = hints[f.name]
        if typing.get_origin(hint) is typing.Annotated and tyro.conf.OmitArgPrefixes in typing.get_args(hint)[1:]:
            names |= flag_fields(typing.get_args(hint)[0])
        else:
            names.add(f.name)
    return names


def test_cuda_lift_dry_run_and_flags(tmp_path: Path):
    from data_preprocess.instance_map import MapConfig
    from data_preprocess.synth.cli import PRESETS, SynthConfig
    from instance_nerfacto.config import instance_nerfacto
    from instance_nerfacto.loc.cli import LocConfig
    from instance_nerfacto.render.cli import RenderConfig

    cuda_lift = load("cuda_lift")
    assert cuda_lift.PRESET in PRESETS and PRESETS[cuda_lift.PRESET].n_train == 200
    assert instance_nerfacto.config.method_name == cuda_lift.METHOD
    steps = {step["name"]: step["cmd"] for step in cuda_lift.plan(tmp_path, 5000, 0)}
    known = {"instance-synth": SynthConfig, "instance-map": MapConfig, "instance-render": RenderConfig,
             "instance-loc": LocConfig}
    for name, cmd in steps.items():
        config = known.get(name.split(" ")[0])
        if config is not None:
            missing = flags(cmd) - flag_fields(config)
            assert not missing, (name, missing)
    train = [str(c) for c in steps["ns-train"]]
    assert train[1] == "instance-nerfacto" and train[train.index("--max-num-iterations") + 1] == "5000"

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_lift.py"), "--work", str(tmp_path),
                          "--dry-run"], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "ns-train: " in out.stdout and "--preset room200" in out.stdout and "5.6" in out.stdout


def test_colmap_frame_is_fitted_onto_the_room_by_the_shared_cameras():
    """benchmarks/register_colmap.py scores registered poses against the room's truth through a similarity fitted to
    the cameras COLMAP posed: a known similarity (scale, rotation, shift) must be recovered exactly, poses included."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    module = load("register_colmap")
    rng = np.random.default_rng(3)
    rotation = Rotation.from_euler("zyx", [40, -15, 100], degrees=True).as_matrix()
    scale, shift = 2.5, np.array([1.0, -2.0, 0.5])
    room, colmap = {}, {}
    for i in range(12):
        c2w = np.eye(4)
        c2w[:3, :3] = Rotation.random(random_state=i).as_matrix()
        c2w[:3, 3] = rng.normal(size=3)
        colmap[f"p{i}"] = c2w
        truth = np.eye(4)
        truth[:3, :3] = rotation @ c2w[:3, :3]
        truth[:3, 3] = scale * rotation @ c2w[:3, 3] + shift
        room[f"p{i}"] = truth
    to_room = module.colmap_to_room(colmap, room)
    for stem in room:
        np.testing.assert_allclose(to_room(colmap[stem]), room[stem], atol=1e-9)
    assert module.errors_to_truth(colmap, to_room, room, 10.0).startswith("0.00/0.00 deg, 0.00/0.00 %")
    # negative control: the poses left in COLMAP's frame are far from the room's
    assert not module.errors_to_truth(colmap, lambda c2w: c2w, room, 10.0).startswith("0.00/0.00 deg")
