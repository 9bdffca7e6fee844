"""Bad input never crashes silently or loses data (issue 8): every command, every DESIGN.md bad-input case reaching it.

Contract checked for each case (``tests/badinput.py``): non-zero exit (2), exactly one stderr line
``<prog>: error: <what>: <file> - <fix>`` naming the offending file, no traceback, and every input file byte-identical
afterwards with nothing left behind but a ``.cache`` folder. New-user cases that should simply work (uppercase
``.PNG``, 8-bit / RGBA-grey / npz masks, symlinked folders, spaces in paths) are run for real and must give the same
pseudolabels as the plain dataset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
from PIL import Image

from tests.badinput import (
    EVAL,
    EXPORT,
    LOC,
    MAP,
    MERGE,
    RENDER,
    SEGMENT,
    assert_one_line_error,
    assert_unchanged,
    check_bad_input,
    run_cli,
    snapshot,
)

VICTIM = "frame_00003"


# ---------------------------------------------------------------------------------------------------------------
# dataset mutations (each makes one bad input in a copy of the tiny scene; returns the name the error must give)


def _transforms(scene: Path) -> Dict:
    return json.loads((scene / "transforms.json").read_text())


def _write_transforms(scene: Path, meta: Dict) -> None:
    (scene / "transforms.json").write_text(json.dumps(meta, indent=2))


def _frame(meta: Dict, stem: str) -> Dict:
    return next(f for f in meta["frames"] if Path(f["file_path"]).stem == stem)


def missing_mask(scene: Path) -> str:
    (scene / "masks" / f"{VICTIM}.png").unlink()
    return VICTIM


def extra_mask(scene: Path) -> str:
    shutil.copy(scene / "masks" / f"{VICTIM}.png", scene / "masks" / "stray_frame.png")
    return "stray_frame.png"


def mask_size_mismatch(scene: Path) -> str:
    # another aspect ratio: a scaled copy of the photo (e.g. 80x60) is accepted, as full-size masks of images_N
    Image.fromarray(np.ones((60, 60), dtype=np.uint8)).save(scene / "masks" / f"{VICTIM}.png")
    return f"{VICTIM}.png"


def corrupt_mask_png(scene: Path) -> str:
    (scene / "masks" / f"{VICTIM}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    return f"{VICTIM}.png"


def truncated_mask_png(scene: Path) -> str:
    path = scene / "masks" / f"{VICTIM}.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return f"{VICTIM}.png"


def corrupt_mask_npz(scene: Path) -> str:
    (scene / "masks" / f"{VICTIM}.png").unlink()
    (scene / "masks" / f"{VICTIM}.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return f"{VICTIM}.npz"


def empty_mask(scene: Path) -> str:
    Image.fromarray(np.zeros((120, 160), dtype=np.uint8)).save(scene / "masks" / f"{VICTIM}.png")
    return f"{VICTIM}.png"


def colour_mask(scene: Path) -> str:
    rgb = np.zeros((120, 160, 3), dtype=np.uint8)
    rgb[:60, :, 0] = 200
    rgb[60:, :, 1] = 100
    Image.fromarray(rgb).save(scene / "masks" / f"{VICTIM}.png")
    return f"{VICTIM}.png"


def single_frame(scene: Path) -> str:
    meta = _transforms(scene)
    keep = {"frame_00000"} | {Path(n).stem for n in meta["val_filenames"]}
    meta["frames"] = [f for f in meta["frames"] if Path(f["file_path"]).stem in keep]
    meta["train_filenames"] = ["images/frame_00000.png"]
    _write_transforms(scene, meta)
    for p in (scene / "masks").iterdir():
        if p.stem not in keep:
            p.unlink()
    return "transforms.json"


def no_overlapping_pairs(scene: Path) -> str:
    meta = _transforms(scene)
    for i, fr in enumerate(meta["frames"]):
        fr["transform_matrix"][0][3] += 1000.0 * i  # every camera in its own far-away room
    _write_transforms(scene, meta)
    return "transforms.json"


def nan_pose(scene: Path) -> str:
    meta = _transforms(scene)
    _frame(meta, VICTIM)["transform_matrix"][1][3] = float("nan")
    _write_transforms(scene, meta)
    return "transforms.json"


def non_rigid_pose(scene: Path) -> str:
    meta = _transforms(scene)
    m = _frame(meta, VICTIM)["transform_matrix"]
    for r in range(3):
        m[r][0] *= 2.0  # a scaled axis: not a rotation
    _write_transforms(scene, meta)
    return "transforms.json"


def missing_transforms(scene: Path) -> str:
    (scene / "transforms.json").unlink()
    return "transforms.json"


def corrupt_transforms(scene: Path) -> str:
    (scene / "transforms.json").write_text('{"frames": [ {"file_path": ')
    return "transforms.json"


def image_missing_on_disk(scene: Path) -> str:
    (scene / "images" / f"{VICTIM}.png").unlink()
    return f"{VICTIM}.png"


def corrupt_image(scene: Path) -> str:
    (scene / "images" / f"{VICTIM}.png").write_bytes(b"not an image at all")
    return f"{VICTIM}.png"


def image_size_mismatch(scene: Path) -> str:
    path = scene / "images" / f"{VICTIM}.png"
    Image.open(path).resize((80, 60)).save(path)
    return f"{VICTIM}.png"


def depth_size_mismatch(scene: Path) -> str:
    Image.fromarray(np.full((60, 60), 1000, dtype=np.uint16)).save(scene / "depth" / f"{VICTIM}.png")
    return f"{VICTIM}.png"


MAP_CASES: Dict[str, Callable[[Path], str]] = {f.__name__: f for f in (
    missing_mask, extra_mask, mask_size_mismatch, corrupt_mask_png, truncated_mask_png, corrupt_mask_npz, empty_mask,
    colour_mask, single_frame, no_overlapping_pairs, nan_pose, non_rigid_pose, missing_transforms, corrupt_transforms,
    image_missing_on_disk, depth_size_mismatch,
)}


@pytest.mark.parametrize("case", sorted(MAP_CASES))
def test_instance_map_bad_input(case: str, tiny_scene_copy: Path) -> None:
    name = MAP_CASES[case](tiny_scene_copy)
    check_bad_input(MAP, ["--data", tiny_scene_copy, "--quiet"], [tiny_scene_copy], name)
    assert not (tiny_scene_copy / "pseudolabels").exists() or not any(
        p for p in (tiny_scene_copy / "pseudolabels").iterdir() if p.name != ".cache")


@pytest.mark.parametrize("flag", ["--weights", "--netvlad-weights"])
def test_instance_map_missing_weights_file(flag: str, tiny_scene: Path, tmp_path: Path) -> None:
    extra = ["--matcher", "loftr"] if flag == "--weights" else ["--pairs", "netvlad"]
    missing = tmp_path / "no such weights.pt"
    check_bad_input(MAP, ["--data", tiny_scene, "--output", tmp_path / "out", "--quiet", *extra, flag, missing],
                    [tiny_scene], "no such weights.pt")
    assert not (tmp_path / "out" / "labels.json").exists()


def test_instance_map_output_is_an_input_folder(tiny_scene_copy: Path) -> None:
    check_bad_input(MAP, ["--data", tiny_scene_copy, "--output", tiny_scene_copy / "masks", "--quiet"],
                    [tiny_scene_copy], "masks")


def test_instance_map_missing_depth_file_names_it(tiny_scene_copy: Path) -> None:
    (tiny_scene_copy / "depth" / f"{VICTIM}.png").unlink()
    check_bad_input(MAP, ["--data", tiny_scene_copy, "--matcher", "depth", "--quiet"], [tiny_scene_copy],
                    f"{VICTIM}.png")


def test_instance_map_allow_empty_accepts_a_frame_without_masks(tiny_scene_copy: Path) -> None:
    empty_mask(tiny_scene_copy)
    proc = run_cli(MAP, "--data", tiny_scene_copy, "--allow-empty", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    label = np.asarray(Image.open(tiny_scene_copy / "pseudolabels" / f"{VICTIM}.png"))
    assert label.shape == (120, 160) and not label.any()


# ---------------------------------------------------------------------------------------------------------------
# new-user inputs that must work: same pseudolabels as the plain dataset


def _rank_ids(labels: np.ndarray) -> np.ndarray:
    """Per-frame ids renumbered 1..n in the same order (ids are arbitrary per frame, order decides node order)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    ranked = inverse.reshape(labels.shape)
    return ranked if ids[0] == 0 else ranked + 1


def test_mask_formats_symlinks_spaces_and_uppercase_give_the_same_pseudolabels(tiny_scene: Path, tmp_path: Path):
    plain_out = tmp_path / "plain"
    proc = run_cli(MAP, "--data", tiny_scene, "--output", plain_out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]

    # the same scene as a new user might hand it over: a path with spaces, the dataset reached through a symlink,
    # masks in a symlinked folder elsewhere, in five encodings
    real = Path(shutil.copytree(tiny_scene, tmp_path / "my scans" / "room one", ignore=shutil.ignore_patterns("masks")))
    masks = tmp_path / "mask store" / "sam masks"
    masks.mkdir(parents=True)
    (real / "masks").symlink_to(masks, target_is_directory=True)
    link = tmp_path / "link to room"
    link.symlink_to(real, target_is_directory=True)
    encodings = ["16bit", "8bit", "upper", "rgba", "npz"]
    for k, src in enumerate(sorted((tiny_scene / "masks").glob("*.png"))):
        labels = np.asarray(Image.open(src)).astype(np.uint16)
        ranked = _rank_ids(labels)
        kind = encodings[k % len(encodings)]
        if kind == "16bit":
            shutil.copy(src, masks / src.name)
        elif kind == "8bit":
            assert ranked.max() < 256
            Image.fromarray(ranked.astype(np.uint8)).save(masks / src.name)
        elif kind == "upper":
            Image.fromarray(ranked.astype(np.uint8)).save(masks / f"{src.stem}.PNG", format="PNG")
        elif kind == "rgba":
            grey = ranked.astype(np.uint8)
            Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA").save(masks / src.name)
        else:
            ids = np.unique(labels)
            ids = ids[ids != 0]
            np.savez_compressed(masks / f"{src.stem}.npz", masks=labels[None] == ids[:, None, None])
    before = snapshot(real, masks)
    proc = run_cli(MAP, "--data", link, "--output", tmp_path / "out put", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_unchanged(before, [real, masks])
    plain = sorted(p.name for p in plain_out.glob("*.png"))
    assert plain and plain == sorted(p.name for p in (tmp_path / "out put").glob("*.png"))
    for name in plain:
        a = np.asarray(Image.open(plain_out / name))
        b = np.asarray(Image.open(tmp_path / "out put" / name))
        assert np.array_equal(a, b), f"{name}: mask encoding changed the pseudolabels"


def test_palette_png_masks_are_read_by_index(tmp_path: Path) -> None:
    from instance_nerfacto.core.masks import read_masks

    ids = np.zeros((20, 30), dtype=np.uint8)
    ids[2:8, 3:9] = 1
    ids[10:15, 10:20] = 7
    image = Image.fromarray(ids, "P")
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)  # one colour for all ids: only the index tells them apart
    image.save(tmp_path / "frame.png")
    masks, _ = read_masks(tmp_path / "frame.png")
    assert masks.shape == (2, 20, 30)
    assert np.array_equal(masks[0], ids == 1) and np.array_equal(masks[1], ids == 7)


# ---------------------------------------------------------------------------------------------------------------
# instance-segment

SEGMENT_CASES: Dict[str, Callable[[Path], str]] = {f.__name__: f for f in (
    missing_transforms, corrupt_transforms, nan_pose, non_rigid_pose, image_missing_on_disk, corrupt_image,
    image_size_mismatch,
)}


@pytest.mark.parametrize("case", sorted(SEGMENT_CASES))
def test_instance_segment_bad_input(case: str, tiny_scene_copy: Path, tmp_path: Path) -> None:
    name = SEGMENT_CASES[case](tiny_scene_copy)
    out = tmp_path / "new masks"
    check_bad_input(SEGMENT, ["--data", tiny_scene_copy, "--out", out, "--quiet"], [tiny_scene_copy], name)
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith(".")) or \
        case in ("corrupt_image", "image_size_mismatch")  # frames before the bad one may be written (atomic each)


def test_instance_segment_missing_weights(tiny_scene: Path, tmp_path: Path) -> None:
    check_bad_input(SEGMENT, ["--data", tiny_scene, "--out", tmp_path / "m", "--segmenter", "fastsam", "--weights",
                              tmp_path / "FastSAM-s.pt", "--quiet"], [tiny_scene], "FastSAM-s.pt")


def test_instance_segment_output_is_the_image_folder(tiny_scene_copy: Path) -> None:
    check_bad_input(SEGMENT, ["--data", tiny_scene_copy, "--out", tiny_scene_copy / "images", "--quiet"],
                    [tiny_scene_copy], "images")


def test_instance_segment_uppercase_png_images_symlink_and_spaces(tiny_scene: Path, tmp_path: Path) -> None:
    real = Path(shutil.copytree(tiny_scene, tmp_path / "my data" / "scene", ignore=shutil.ignore_patterns("masks")))
    meta = _transforms(real)
    meta["frames"] = meta["frames"][:4]
    for fr in meta["frames"]:
        src = real / fr["file_path"]
        src.rename(src.with_suffix(".PNG"))
        fr["file_path"] = str(Path(fr["file_path"]).with_suffix(".PNG"))
    meta.pop("train_filenames")
    meta.pop("val_filenames")
    _write_transforms(real, meta)
    link = tmp_path / "scene link"
    link.symlink_to(real, target_is_directory=True)
    before = snapshot(real / "images", real / "transforms.json")
    proc = run_cli(SEGMENT, "--data", link, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_unchanged(before, [real / "images", real / "transforms.json"])
    written = sorted(p.name for p in (real / "masks").iterdir())
    assert written == [f"frame_0000{i}.png" for i in range(4)]
    assert np.asarray(Image.open(real / "masks" / "frame_00000.png")).max() > 1  # segmented into several masks


# ---------------------------------------------------------------------------------------------------------------
# instance-eval (prediction vs ground-truth folders)


def _pred_gt(tiny_scene: Path, tmp_path: Path) -> tuple[Path, Path]:
    pred = Path(shutil.copytree(tiny_scene / "gt", tmp_path / "pred"))
    return pred, tiny_scene / "gt"


@pytest.mark.parametrize("case", ["missing_pred_folder", "size_mismatch", "corrupt_png", "frame_without_gt"])
def test_instance_eval_bad_input(case: str, tiny_scene: Path, tmp_path: Path) -> None:
    pred, gt = _pred_gt(tiny_scene, tmp_path)
    name = f"{VICTIM}.png"
    if case == "missing_pred_folder":
        shutil.rmtree(pred)
        name = "pred"
    elif case == "size_mismatch":
        Image.fromarray(np.ones((60, 80), dtype=np.uint16)).save(pred / name)
    elif case == "corrupt_png":
        (pred / name).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    else:
        shutil.copy(pred / name, pred / "frame_99999.png")
        name = "frame_99999.png"
    inputs = [gt] + ([pred] if pred.exists() else [])
    check_bad_input(EVAL, ["--pred", pred, "--gt", gt, "--json", tmp_path / "eval.json"], inputs, name)
    assert not (tmp_path / "eval.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# commands on a trained run: render, export, merge, loc (cases that fail before the model loads)


@pytest.fixture
def run_without_checkpoint(tmp_path: Path) -> Path:
    """A run folder whose config.yml exists but whose nerfstudio_models/ holds no checkpoint."""
    run = tmp_path / "outputs" / "tiny" / "instance-nerfacto-small" / "run"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "config.yml").write_text("# never loaded: the checkpoint check comes first\n")
    return run / "config.yml"


@pytest.mark.parametrize("module", [RENDER, EXPORT, MERGE, LOC])
def test_missing_training_config(module: str, tiny_scene: Path, tmp_path: Path) -> None:
    missing = tmp_path / "outputs" / "config.yml"
    args = {RENDER: ["--output", tmp_path / "r"], EXPORT: ["--output", tmp_path / "s.ply"], MERGE: [],
            LOC: ["--data", tiny_scene, "--output", tmp_path / "l"]}[module]
    check_bad_input(module, ["--load-config", missing, *args], [tiny_scene], "config.yml")
    assert not any(tmp_path.rglob("*.png")) and not any(tmp_path.rglob("*.ply"))


@pytest.mark.parametrize("module", [RENDER, EXPORT, MERGE])
def test_no_training_config_given(module: str, tiny_scene: Path, tmp_path: Path) -> None:
    """--load-config sits in the shared run options, optional there for instance-loc --denoise: the commands that
    need a run say so in one line."""
    out = tmp_path / ("labels" if module == RENDER else "scene.ply")
    line = check_bad_input(module, ["--output", out] if module != MERGE else [], [tiny_scene], "--load-config")
    assert "no training run given" in line
    assert not out.exists()


@pytest.mark.parametrize("module", [pytest.param(RENDER, marks=pytest.mark.slow),
                                    pytest.param(EXPORT, marks=pytest.mark.slow)])
def test_run_without_checkpoint(module: str, run_without_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / ("labels" if module == RENDER else "scene.ply")
    check_bad_input(module, ["--load-config", run_without_checkpoint, "--output", out], [run_without_checkpoint.parent],
                    "nerfstudio_models", timeout=600)
    assert not out.exists()


def test_render_bad_every(run_without_checkpoint: Path, tmp_path: Path) -> None:
    line = check_bad_input(RENDER, ["--load-config", run_without_checkpoint, "--output", tmp_path / "r", "--every",
                                    "0"], [run_without_checkpoint.parent], "--every")
    assert "--downscale" in line


def test_export_output_not_ply(run_without_checkpoint: Path, tmp_path: Path) -> None:
    check_bad_input(EXPORT, ["--load-config", run_without_checkpoint, "--output", tmp_path / "scene.obj"],
                    [run_without_checkpoint.parent], "scene.obj")


def test_merge_missing_weights(run_without_checkpoint: Path, tmp_path: Path) -> None:
    check_bad_input(MERGE, ["--load-config", run_without_checkpoint, "--segmenter", "fastsam", "--weights",
                            tmp_path / "FastSAM-x.pt"], [run_without_checkpoint.parent], "FastSAM-x.pt")


LOC_CASES: Dict[str, Callable[[Path], str]] = {f.__name__: f for f in (
    missing_transforms, corrupt_transforms, nan_pose, non_rigid_pose, image_size_mismatch, corrupt_image,
    image_missing_on_disk,
)}


@pytest.mark.parametrize("case", sorted(LOC_CASES))
def test_instance_loc_bad_input(case: str, tiny_scene_copy: Path, run_without_checkpoint: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "VICTIM", "val_00002")  # instance-loc localizes the val split
    name = LOC_CASES[case](tiny_scene_copy)
    out = tmp_path / "loc"
    check_bad_input(LOC, ["--data", tiny_scene_copy, "--output", out, "--load-config", run_without_checkpoint],
                    [tiny_scene_copy, run_without_checkpoint.parent], name)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["missing_masks_folder", "missing_weights", "mask_size_mismatch", "missing_mask"])
def test_instance_loc_bad_masks_and_weights(case: str, tiny_scene_copy: Path, run_without_checkpoint: Path,
                                            tmp_path: Path) -> None:
    masks = tiny_scene_copy / "masks"
    args = ["--data", tiny_scene_copy, "--output", tmp_path / "loc", "--load-config", run_without_checkpoint]
    if case == "missing_masks_folder":
        args += ["--masks", tmp_path / "no masks here"]
        name = "no masks here"
    elif case == "missing_weights":
        args += ["--segmenter", "fastsam", "--weights", tmp_path / "FastSAM-s.pt"]
        name = "FastSAM-s.pt"
    elif case == "mask_size_mismatch":
        Image.fromarray(np.ones((60, 80), dtype=np.uint8)).save(masks / "val_00002.png")
        args += ["--masks", masks]
        name = "val_00002.png"
    else:
        (masks / "val_00002.png").unlink()
        args += ["--masks", masks]
        name = "val_00002"
    check_bad_input(LOC, args, [tiny_scene_copy, run_without_checkpoint.parent], name)


def test_helpers_catch_a_traceback_and_a_modified_input(tmp_path: Path) -> None:
    """The contract checker itself must fail on a traceback, on several lines, and on a touched input."""
    crash = subprocess.run([sys.executable, "-c", "open('/nonexistent/x')"], capture_output=True, text=True)
    with pytest.raises(AssertionError, match="traceback"):
        assert_one_line_error(crash, "x")
    two = subprocess.run([sys.executable, "-c", "import sys; print('a', file=sys.stderr); "
                          "print('p: error: bad: x - do y', file=sys.stderr); sys.exit(2)"],
                         capture_output=True, text=True)
    with pytest.raises(AssertionError, match="2 stderr lines"):
        assert_one_line_error(two, "x")
    one = subprocess.run([sys.executable, "-c", "import sys; "
                          "print('p: error: bad: /a/x - do y about it', file=sys.stderr); sys.exit(2)"],
                         capture_output=True, text=True)
    assert assert_one_line_error(one, "/a/x").endswith("do y about it")
    (tmp_path / "f").write_text("a")
    before = snapshot(tmp_path)
    (tmp_path / "f").write_text("b")
    with pytest.raises(AssertionError, match="modified"):
        assert_unchanged(before, [tmp_path])
    (tmp_path / "f").write_text("a")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "pairs.npz").write_text("ok")
    assert_unchanged(before, [tmp_path])
    (tmp_path / "partial.png").write_text("half")
    with pytest.raises(AssertionError, match="left behind"):
        assert_unchanged(before, [tmp_path])


def test_instance_map_refuses_depth_listed_for_only_some_frames(tiny_scene: Path, tmp_path: Path) -> None:
    """The rule ns-train applies (depth_file_path on every frame or on none), not a quiet switch to stereo."""
    data = Path(shutil.copytree(tiny_scene, tmp_path / "room"))
    meta = json.loads((data / "transforms.json").read_text())
    del meta["frames"][3]["depth_file_path"]
    (data / "transforms.json").write_text(json.dumps(meta))
    before = (data / "transforms.json").read_bytes()
    proc = subprocess.run([sys.executable, "-c", "from data_preprocess.instance_map import entrypoint; entrypoint()",
                           "--data", str(data)], capture_output=True, text=True)
    assert proc.returncode == 2 and "depth maps for 37 of 38 frames" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and (data / "transforms.json").read_bytes() == before
    assert not (data / "pseudolabels").exists()


@pytest.mark.parametrize("text, needle", [("{not json", "is not valid JSON"), ("[1, 2]", "is not a JSON object"),
                                          (b"\xff\xfe{", "is not valid JSON")])
def test_json_inputs_get_one_line_errors(text, needle: str, tmp_path: Path) -> None:
    """transforms.json, labels.json and the instances file are read by one reader: a broken file is one line that
    names it, whatever is wrong with it; optional files read as absent."""
    from instance_nerfacto.core.dataset import check_depth_listing, load_dataset
    from instance_nerfacto.core.errors import InputError
    from instance_nerfacto.core.files import try_read_json
    from instance_nerfacto.core.pseudolabels import previous_frames, read_label_stats, read_labels_json
    from instance_nerfacto.eval.metrics import load_stuff_ids

    for name in ("transforms.json", "labels.json", "instances.json"):
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    readers = [(lambda: load_dataset(tmp_path), "transforms.json"), (lambda: read_labels_json(tmp_path), "labels.json"),
               (lambda: load_stuff_ids(tmp_path / "instances.json"), "instances file")]
    for read, what in readers:
        if what == "instances file" and needle == "is not a JSON object":
            needle_here = "must be a JSON object keyed by gt id"  # its own line says what the object holds
        else:
            needle_here = needle
        with pytest.raises(InputError) as err:
            read()
        line = err.value.line()
        assert "\n" not in line and what in line and needle_here in line, line
    assert try_read_json(tmp_path / "labels.json") in (None, [1, 2]) and try_read_json(tmp_path / "none.json") is None
    assert previous_frames(tmp_path) == [] and read_label_stats(tmp_path) == {}
    check_depth_listing(tmp_path / "transforms.json")  # reported by the loaders that need it, not here
