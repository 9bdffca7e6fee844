"""Reliability of ``instance-map`` (issue 8): repeatable, resumable after a kill, no partial outputs, no uint16 wrap.

- two runs with the same inputs and ``--seed`` give byte-identical pseudolabels and labels.json (timings aside);
- a run SIGKILLed once its pairs are cached leaves no half-written pseudolabel and no labels.json; the next run reuses
  the cached pairs (the cache file is not rewritten) and gives the same output as an uninterrupted run;
- more than 65,535 labels is one clear error and writes nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from tests.badinput import MAP, cli_env, run_cli

RUN_DEPENDENT = ("timings_s", "peak_rss_mb")  # wall-clock measurements differ from run to run
PATH_PARAMETERS = ("output",)  # each run writes to its own folder


def comparable_meta(path: Path) -> Dict:
    meta = json.loads(path.read_text())
    for key in RUN_DEPENDENT:
        meta.pop(key, None)
    for key in PATH_PARAMETERS:
        meta.get("parameters", {}).pop(key, None)
    return meta


def assert_same_output(a: Path, b: Path) -> None:
    pngs = sorted(p.name for p in a.glob("*.png"))
    assert pngs, f"no pseudolabels in {a}"
    assert pngs == sorted(p.name for p in b.glob("*.png"))
    differing = [n for n in pngs if (a / n).read_bytes() != (b / n).read_bytes()]
    assert not differing, f"pseudolabels differ: {differing[:5]}"
    assert comparable_meta(a / "labels.json") == comparable_meta(b / "labels.json")


def test_same_seed_gives_byte_identical_output(tiny_scene: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        proc = run_cli(MAP, "--data", tiny_scene, "--output", tmp_path / name, "--seed", "7", "--no-cache", "--quiet")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_output(tmp_path / "a", tmp_path / "b")
    meta = json.loads((tmp_path / "a" / "labels.json").read_text())
    assert meta["K"] >= 5 and meta["parameters"]["seed"] == 7
    assert "timings_s" in meta  # present, and excluded from the comparison only because it is a measurement


def test_killed_run_leaves_no_partial_output_and_resumes_from_cache(tiny_scene: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    proc = run_cli(MAP, "--data", tiny_scene, "--output", reference, "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]

    out = tmp_path / "out"
    cmd = [sys.executable, "-c", f"from {MAP} import entrypoint; entrypoint()", "--data", str(tiny_scene),
           "--output", str(out), "--workers", "1", "--quiet"]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())
    deadline = time.monotonic() + 240
    pairs_file = None
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            found = list((out / ".cache").glob("pairs-*.npz")) if (out / ".cache").is_dir() else []
            if found:
                pairs_file = found[0]
                break
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(timeout=60)
    assert pairs_file is not None, "instance-map never cached its pairs"
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    # nothing half-written: no labels.json (it is written last and marks a complete output), and every pseudolabel
    # that exists is a complete PNG of the image size (atomic rename); temporary names are hidden dot-files
    assert not (out / "labels.json").exists()
    for png in out.glob("*.png"):
        assert np.asarray(Image.open(png)).shape == (120, 160), png
    pairs_stat = pairs_file.stat()

    proc = run_cli(MAP, "--data", tiny_scene, "--output", out, "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = pairs_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (pairs_stat.st_ino, pairs_stat.st_mtime_ns), \
        "the resumed run recomputed the cached pairs instead of loading them"
    assert list((out / ".cache").glob("matches-*.npz")), "matches were not cached by the resumed run"
    assert_same_output(out, reference)
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") and not p.name.startswith(".")]
    assert not leftovers, leftovers


def test_more_labels_than_uint16_is_a_clear_error(tiny_scene: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Drive the real pipeline on the tiny scene, but let rasterization see 65,536 labels (building a mask set that
    really yields them needs >130k masks: too big for a unit test). The run must stop with one line, not wrap ids."""
    import data_preprocess.instance_map as instance_map
    from instance_nerfacto.core.errors import run_cli as run_in_process

    real_order_labels = instance_map.order_labels

    def too_many_labels(community, frame_of, area):
        label, stats = real_order_labels(community, frame_of, area)
        extra = [{"id": k, "frames": 2, "mean_area": 1.0} for k in range(len(stats) + 1, 65537)]
        return label, stats + extra

    monkeypatch.setattr(instance_map, "order_labels", too_many_labels)
    out = tmp_path / "out"
    cfg = instance_map.MapConfig(data=tiny_scene, output=out, quiet=True)
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(lambda: instance_map.main(cfg), argv=[], prog="instance-map")
    assert exit_info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "65536 labels" in lines[0] and "uint16" in lines[0] and "65535" in lines[0], lines
    assert not list(out.glob("*.png")) and not (out / "labels.json").exists()


def test_frame_labels_round_trip_at_the_uint16_limit() -> None:
    """The largest legal id (65,535) survives rasterization and a PNG round trip unchanged."""
    from data_preprocess.rasterize import frame_labels

    owner = np.array([[-1, 0], [1, 1]], dtype=np.int16)
    labels = frame_labels(owner, np.array([65535, 1]))
    assert labels.dtype == np.uint16 and labels.tolist() == [[0, 65535], [1, 1]]


def test_label_png_writer_casts_refuses_wrapping_ids_and_renames_into_place(tmp_path: Path) -> None:
    """The one label PNG writer: any integer ids in 0..65535 become the uint16 PNG the reader gives back; an id
    outside is one line and no file, never an id wrapped around."""
    from instance_nerfacto.core.errors import InputError
    from instance_nerfacto.core.files import read_label_png, write_label_png

    ids = np.array([[0, 65535], [7, 1]], dtype=np.int64)
    write_label_png(tmp_path / "labels" / "a.png", ids)
    back = read_label_png(tmp_path / "labels" / "a.png")
    assert back.dtype == np.uint16 and back.tolist() == ids.tolist()
    for bad in (np.array([[0, 65536]]), np.array([[-1, 2]])):
        with pytest.raises(InputError, match="do not fit a 16-bit label PNG") as err:
            write_label_png(tmp_path / "labels" / "b.png", bad)
        assert "\n" not in err.value.line()
    with pytest.raises(TypeError):
        write_label_png(tmp_path / "labels" / "c.png", np.zeros((2, 2), np.float32))
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["a.png"]  # no temporary or partial file left


def test_depth_reader_reads_png_and_npy_in_the_runs_unit_as_nerfstudio_does(tmp_path: Path) -> None:
    """The one depth reader: stored units times the dataset's scale, float32, resized like nerfstudio's depth loader,
    and a reading that is not a depth (NaN, negative) is 0 like a missing one."""
    import torch
    from nerfstudio.data.utils.data_utils import get_depth_image_from_path

    from instance_nerfacto.core.errors import InputError
    from instance_nerfacto.core.files import atomic_save_npy, depth_unit_scale, read_depth, write_label_png

    mm = np.array([[0, 1234, 65535], [7, 500, 2]], dtype=np.uint16)
    write_label_png(tmp_path / "d.png", mm)
    assert depth_unit_scale({}) == 1e-3 and depth_unit_scale({"depth_unit_scale_factor": 1e-4}) == 1e-4
    depth = read_depth(tmp_path / "d.png")
    assert depth.dtype == np.float32 and np.array_equal(depth, mm.astype(np.float32) * 1e-3)
    scale = 1e-4 * 0.37  # a tenth-of-a-millimetre unit, times a dataparser scale
    for size in ((2, 3), (4, 6), (1, 2)):
        ours = read_depth(tmp_path / "d.png", scale, size)
        theirs = get_depth_image_from_path(tmp_path / "d.png", size[0], size[1], scale)[..., 0]
        assert torch.equal(torch.from_numpy(ours), theirs), size
    atomic_save_npy(tmp_path / "d.npy", np.array([[1.5, np.nan], [-2.0, 0.25]], np.float64)[..., None])
    assert read_depth(tmp_path / "d.npy", 1.0).tolist() == [[1.5, 0.0], [0.0, 0.25]]
    with pytest.raises(InputError, match="depth map is missing"):
        read_depth(tmp_path / "none.png")
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="cannot read depth map"):
        read_depth(tmp_path / "bad.npy")


def test_depth_writer_is_the_readers_inverse_and_writes_the_synthetic_rooms_bytes(tmp_path: Path) -> None:
    """The one depth writer: metres -> the 16-bit PNG read_depth reads back to the nearest stored unit; no reading
    (0, negative, NaN, beyond 65.535 m) is 0; the file is renamed into place, so no temporary name is left; and the
    bytes are those instance-synth wrote before it used this writer (rounded millimetres, cv2's PNG encoder)."""
    import cv2

    from instance_nerfacto.core.files import read_depth, write_depth_png

    depth = np.array([[0.0, 1.2344, 65.535, 70.0], [-1.0, np.nan, 0.0004, 2.5006]], np.float32)
    write_depth_png(tmp_path / "depth" / "d.png", depth)
    assert sorted(p.name for p in (tmp_path / "depth").iterdir()) == ["d.png"]
    expected = [[0.0, 1.234, 65.535, 0.0], [0.0, 0.0, 0.0, 2.501]]
    assert np.allclose(read_depth(tmp_path / "depth" / "d.png"), expected, rtol=0, atol=1e-5)
    write_depth_png(tmp_path / "tenths.png", depth, scale=1e-4)
    assert read_depth(tmp_path / "tenths.png", 1e-4)[0, 1] == pytest.approx(1.2344, abs=1e-6)
    rng = np.random.default_rng(0)
    rendered = rng.uniform(0.0, 9.0, (24, 32)).astype(np.float32)
    old = np.round(rendered * 1000.0)
    old[(old <= 0) | (old > 65535)] = 0
    assert cv2.imwrite(str(tmp_path / "old.png"), old.astype(np.uint16))
    write_depth_png(tmp_path / "new.png", rendered)
    assert (tmp_path / "new.png").read_bytes() == (tmp_path / "old.png").read_bytes()
    with pytest.raises(TypeError, match="2D"):
        write_depth_png(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.float32))


def test_atomic_outputs_get_ordinary_file_permissions(tmp_path: Path) -> None:
    import os

    from instance_nerfacto.core.files import atomic_write_png

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_png(tmp_path / "a.png", np.zeros((2, 2), dtype=np.uint16))
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_instance_map_output_is_accepted_by_ns_train(tiny_scene_copy: Path, tmp_path: Path) -> None:
    """The handover between the two stages: pseudolabels written by instance-map load into ns-train as they are."""
    proc = run_cli(MAP, "--data", tiny_scene_copy, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmd = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()",
           "instance-nerfacto-small", "--data", str(tiny_scene_copy), "--machine.device-type", "cpu",
           "--max-num-iterations", "1", "--pipeline.model.merge-after-training", "False", "--vis", "tensorboard",
           "--pipeline.bake-after-training", "False",
           "--viewer.quit-on-train-completion", "True",
           "--output-dir", str(tmp_path / "runs")]
    train = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=cli_env())
    assert train.returncode == 0, train.stderr[-1500:]


def test_interrupted_rewrite_does_not_look_complete(tiny_scene: Path, tmp_path: Path, monkeypatch) -> None:
    import data_preprocess.instance_map as instance_map

    out = tmp_path / "out"
    instance_map.main(instance_map.MapConfig(data=tiny_scene, output=out, quiet=True))
    old = {p.name: p.read_bytes() for p in out.glob("*.png")}
    old_meta = (out / "labels.json").read_bytes()

    import data_preprocess.frames as frames

    real_write = frames.write_label_png  # the pseudolabel PNGs go through frames.write_labels
    written = []

    def write_then_die(path, image):
        if len(written) == 10:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill between two files) does halfway through the stage
        written.append(path)
        real_write(path, image)

    monkeypatch.setattr(frames, "write_label_png", write_then_die)
    with pytest.raises(KeyboardInterrupt):  # one worker: the writes run in this process, where the patch is
        instance_map.main(instance_map.MapConfig(data=tiny_scene, output=out, quiet=True, min_frames=6, workers=1))
    changed = [p.name for p in written if p.read_bytes() != old[p.name]]
    assert changed, "the second run's parameters should change some pseudolabels"
    assert not (out / "labels.json").exists() or (out / "labels.json").read_bytes() != old_meta, \
        f"old labels.json still marks the folder complete although {changed[:3]} were rewritten"


def test_query_depth_defaults_to_the_unit_the_run_read_its_depth_in(tmp_path: Path) -> None:
    """instance-loc reads query depth maps in the unit ns-train read the map's depth maps in (its config), not in a
    unit of its own; nerfstudio's default when the config does not say or is not a config."""
    import yaml
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    from instance_nerfacto.core.runs import run_depth_unit_scale

    def config(**dataparser) -> Path:
        datamanager = VanillaDataManagerConfig(dataparser=NerfstudioDataParserConfig(**dataparser))
        path = tmp_path / f"config{len(dataparser)}.yml"
        path.write_text(yaml.dump(TrainerConfig(pipeline=VanillaPipelineConfig(datamanager=datamanager))))
        return path

    assert run_depth_unit_scale(config(depth_unit_scale_factor=1e-4)) == 1e-4
    assert run_depth_unit_scale(config()) == 1e-3
    (tmp_path / "junk.yml").write_text("# not a config\n")
    assert run_depth_unit_scale(tmp_path / "junk.yml") == 1e-3 and run_depth_unit_scale(tmp_path / "no.yml") == 1e-3
