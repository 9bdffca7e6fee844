"""Scene PQ / matched mIoU (instance_nerfacto.eval.metrics) and the instance-eval CLI, against hand-computed values."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.errors import InputError
from instance_nerfacto.core.files import atomic_write_png
from instance_nerfacto.eval.metrics import PanopticAccumulator, evaluate_dirs, load_stuff_ids, scene_metrics

# ---------------------------------------------------------------------------------------------------------------
# the hand-computed two-frame case (1 x 12 images; column index = pixel)
#
#   idx        0 1 2 3 4 5 6 7 8 9 10 11
#   frame 1 gt 1 1 1 1 0 0 2 2 3 3 2  2
#         pred 5 5 5 0 5 7 6 6 0 0 7  0
#   frame 2 gt 1 1 2 2 2 0 0 0 3 3 1  0
#         pred 5 5 6 6 8 7 7 7 0 8 0  8
#
# gt segments: |g1| = 4 + 3 = 7, |g2| = 4 + 3 = 7, |g3| = 2 + 2 = 4; void = f1{4,5}, f2{5,6,7,11}.
# p5: f1{0,1,2,4} f2{0,1}: |p5| = 6, p5∩g1 = 5, p5∩void = 1 -> IoU = 5 / (6 + 7 - 5 - 1) = 5/7   (TP)
# p6: f1{6,7} f2{2,3}:     |p6| = 4, p6∩g2 = 4              -> IoU = 4 / (4 + 7 - 4)     = 4/7   (TP)
# p7: f1{5,10} f2{5,6,7}:  |p7| = 5, 4 on void (80 %)       -> unmatched, mostly on void: ignored, not an FP
# p8: f2{4,9,11}:          |p8| = 3, 1 on void (33 %), IoU with g3 = 1 / (3 + 4 - 1 - 1) = 1/5  -> a real FP
# pred 0 (unlabelled) is never a segment; its pixels on g1 and g3 still count in |g|.
# g3 has no TP -> FN.  TP = 2, FP = 1, FN = 1.
# PQ = (5/7 + 4/7) / (2 + 1/2 + 1/2) = (9/7) / 3 = 3/7;  SQ = (9/7) / 2 = 9/14;  RQ = 2/3
# matched mIoU = mean(5/7, 4/7) = 9/14 over n_matched = 2 of n_gt = 3.

GT1 = np.array([[1, 1, 1, 1, 0, 0, 2, 2, 3, 3, 2, 2]], dtype=np.uint16)
PRED1 = np.array([[5, 5, 5, 0, 5, 7, 6, 6, 0, 0, 7, 0]], dtype=np.uint16)
GT2 = np.array([[1, 1, 2, 2, 2, 0, 0, 0, 3, 3, 1, 0]], dtype=np.uint16)
PRED2 = np.array([[5, 5, 6, 6, 8, 7, 7, 7, 0, 8, 0, 8]], dtype=np.uint16)

# the same case with frame 1's void pixels 4 and 5 turned into gt id 9 (stuff when instances.json says so)
GT1_STUFF = GT1.copy()
GT1_STUFF[0, 4:6] = 9


def _check(result: dict, pq: float, sq: float, rq: float, miou: float, n_matched: int, n_gt: int) -> None:
    assert result["scene_pq"] == pytest.approx(pq, abs=1e-9)
    assert result["scene_sq"] == pytest.approx(sq, abs=1e-9)
    assert result["scene_rq"] == pytest.approx(rq, abs=1e-9)
    assert result["matched_miou"] == pytest.approx(miou, abs=1e-9)
    assert result["n_matched"] == n_matched
    assert result["n_gt"] == n_gt


def test_hand_computed_two_frames():
    res = scene_metrics([(PRED1, GT1), (PRED2, GT2)])
    _check(res, pq=3 / 7, sq=9 / 14, rq=2 / 3, miou=9 / 14, n_matched=2, n_gt=3)
    assert (res["tp"], res["fp"], res["fn"], res["n_frames"]) == (2, 1, 1, 2)
    assert res["fp_ignored_on_void"] == 1
    assert [(m["gt"], m["pred"]) for m in res["matches"]] == [(1, 5), (2, 6)]
    assert res["matches"][0]["iou"] == pytest.approx(5 / 7)


def test_stuff_ids_are_void():
    # with 9 declared stuff, the case is exactly the hand-computed one above
    res = scene_metrics([(PRED1, GT1_STUFF), (PRED2, GT2)], stuff_ids={9})
    _check(res, pq=3 / 7, sq=9 / 14, rq=2 / 3, miou=9 / 14, n_matched=2, n_gt=3)
    # without it, g9 = f1{4,5} is a thing segment (|g9| = 2) that nobody matches:
    # p5 no longer has void pixels: IoU(p5, g1) = 5 / (6 + 7 - 5) = 5/8; IoU(p6, g2) = 4/7 unchanged;
    # p7 has 3 of 5 pixels on void (60 %) -> still ignored; p8 still a real FP; FN = g3, g9.
    # PQ = (5/8 + 4/7) / (2 + 1/2 + 2/2) = (67/56) / 3.5 = 67/196;  SQ = 67/112;  RQ = 2/3.5 = 4/7
    res = scene_metrics([(PRED1, GT1_STUFF), (PRED2, GT2)])
    _check(res, pq=67 / 196, sq=67 / 112, rq=4 / 7, miou=67 / 112, n_matched=2, n_gt=4)
    assert (res["tp"], res["fp"], res["fn"]) == (2, 1, 2)


def _random_scene(rng: np.random.Generator, n_frames: int, shape=(12, 16), n_ids: int = 6) -> list:
    """Frames of blocky random gt ids (each id in every frame: a fixed layout shifted a little)."""
    base = np.repeat(np.repeat(rng.integers(0, n_ids, size=(shape[0] // 4, shape[1] // 4)), 4, 0), 4, 1)
    return [np.roll(base, shift=int(rng.integers(0, 3)), axis=1).astype(np.uint16) for _ in range(n_frames)]


def test_gt_against_itself_and_permuted_ids():
    rng = np.random.default_rng(0)
    gts = _random_scene(rng, 5)
    _check(scene_metrics((g, g) for g in gts), 1.0, 1.0, 1.0, 1.0, n_matched=len(np.unique(gts[0])) - 1,
           n_gt=len(np.unique(gts[0])) - 1)
    perm = np.zeros(6, dtype=np.uint16)
    perm[1:] = rng.permutation(np.arange(101, 106))  # 0 stays unlabelled; every other id renamed once for all frames
    res = scene_metrics((perm[g], g) for g in gts)
    _check(res, 1.0, 1.0, 1.0, 1.0, n_matched=res["n_gt"], n_gt=len(np.unique(gts[0])) - 1)
    assert res["fp"] == 0 and res["fn"] == 0


def test_new_ids_every_frame_score_zero():
    # 3 objects of equal area visible in all 4 frames; each frame renames them with fresh ids, so every predicted
    # segment covers a quarter of its gt segment: IoU = 1/4 < 0.5 -> no TP, PQ = 0, all gt FN, 12 FP.
    gt = np.array([[1, 1, 2, 2, 3, 3, 0, 0]], dtype=np.uint16)
    frames = []
    for f in range(4):
        remap = np.array([0, 10 + 3 * f, 11 + 3 * f, 12 + 3 * f], dtype=np.uint16)
        frames.append((remap[gt], gt))
    res = scene_metrics(frames)
    _check(res, 0.0, 0.0, 0.0, 0.0, n_matched=0, n_gt=3)
    assert (res["tp"], res["fp"], res["fn"]) == (0, 12, 3)


def _reference(frames: list, stuff: set) -> dict:
    """Dense brute force: concatenate all frames, loop over every (gt, pred) pair with boolean masks."""
    pred = np.concatenate([p.ravel() for p, _ in frames]).astype(np.int64)
    gt = np.concatenate([g.ravel() for _, g in frames]).astype(np.int64)
    void = (gt == 0) | np.isin(gt, list(stuff))
    gt_segs = [g for g in np.unique(gt[~void])]
    pred_segs = [p for p in np.unique(pred) if p != 0]
    tp_ious, matched_p, best = [], set(), []
    for g in gt_segs:
        gm = gt == g
        best_g = 0.0
        for p in pred_segs:
            pm = pred == p
            inter = np.sum(gm & pm)
            iou = inter / (pm.sum() + gm.sum() - inter - np.sum(pm & void))
            best_g = max(best_g, iou)
            if iou > 0.5:
                tp_ious.append(iou)
                matched_p.add(p)
        best.append(best_g)
    fp = sum(1 for p in pred_segs if p not in matched_p and np.sum((pred == p) & void) / np.sum(pred == p) <= 0.5)
    tp, fn = len(tp_ious), len(gt_segs) - len(tp_ious)
    denom = tp + fp / 2 + fn / 2
    matched = [b for b in best if b > 0.5]
    return {"scene_pq": sum(tp_ious) / denom if denom else 0.0, "scene_rq": tp / denom if denom else 0.0,
            "matched_miou": float(np.mean(matched)) if matched else 0.0, "tp": tp, "fp": fp, "fn": fn}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_dense_reference_on_noisy_predictions(seed):
    # 70 frames: more than the accumulator's compaction interval, so merged and pending tables are both exercised
    rng = np.random.default_rng(seed)
    frames = []
    for g in _random_scene(rng, 70, n_ids=7):
        pred = g.copy()
        noise = rng.random(g.shape) < 0.25
        pred[noise] = rng.integers(0, 9, size=int(noise.sum()))
        if rng.random() < 0.3:  # sometimes relabel one object in one frame
            pred[pred == 2] = 20 + int(rng.integers(0, 3))
        frames.append((pred, g))
    for stuff in (set(), {1}):
        res, ref = scene_metrics(frames, stuff_ids=stuff), _reference(frames, stuff)
        for key in ref:
            assert res[key] == pytest.approx(ref[key], abs=1e-9), key


def test_accumulator_rejects_bad_arrays():
    acc = PanopticAccumulator()
    with pytest.raises(ValueError):
        acc.add(np.zeros((2, 3), np.uint16), np.zeros((3, 2), np.uint16))
    with pytest.raises(ValueError):
        acc.add(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint16))
    assert acc.result()["n_frames"] == 0


def test_load_stuff_ids(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"1": {"name": "floor", "is_thing": False}, "4": {"name": "cup", "is_thing": True},
                                "9": {"name": "wall", "is_thing": False}}))
    assert load_stuff_ids(path) == {1, 9}
    path.write_text(json.dumps({"a": {"name": "floor", "is_thing": False}}))
    with pytest.raises(InputError):
        load_stuff_ids(path)
    with pytest.raises(InputError):
        load_stuff_ids(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------------------------
# folders and the CLI


def _write_case(root: Path) -> tuple[Path, Path, Path]:
    pred, gt = root / "pred", root / "gt"
    atomic_write_png(pred / "frame_00000.png", PRED1)
    atomic_write_png(pred / "frame_00001.png", PRED2)
    atomic_write_png(gt / "frame_00000.png", GT1_STUFF)
    atomic_write_png(gt / "frame_00001.png", GT2)
    atomic_write_png(gt / "frame_00002.png", GT2)  # gt without prediction: not evaluated
    things = root / "instances.json"
    things.write_text(json.dumps({"9": {"name": "wall", "is_thing": False}, "1": {"name": "box", "is_thing": True}}))
    return pred, gt, things


def test_evaluate_dirs_prefix_and_things(tmp_path):
    pred, gt, things = _write_case(tmp_path)
    atomic_write_png(pred / "other_00000.png", PRED1)  # no gt: only reachable without the prefix
    res = evaluate_dirs(pred, gt, prefix="frame_", things_json=things)
    _check(res, pq=3 / 7, sq=9 / 14, rq=2 / 3, miou=9 / 14, n_matched=2, n_gt=3)
    assert res["n_frames"] == 2
    with pytest.raises(InputError, match="other_00000"):
        evaluate_dirs(pred, gt)
    with pytest.raises(InputError, match="starting with 'nope'"):
        evaluate_dirs(pred, gt, prefix="nope")


def _eval_cmd(*args) -> list:
    return [sys.executable, "-c", "from instance_nerfacto.eval.cli import entrypoint; entrypoint()", *map(str, args)]


def _checksums(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_json_and_prints_table(tmp_path):
    pred, gt, things = _write_case(tmp_path)
    before = _checksums(tmp_path)
    out = tmp_path / "out" / "eval.json"
    proc = subprocess.run(_eval_cmd("--pred", pred, "--gt", gt, "--things", things, "--json", out),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scene PQ" in proc.stdout and "0.4286" in proc.stdout
    res = json.loads(out.read_text())
    _check(res, pq=3 / 7, sq=9 / 14, rq=2 / 3, miou=9 / 14, n_matched=2, n_gt=3)
    assert (res["tp"], res["fp"], res["fn"], res["n_frames"]) == (2, 1, 1, 2)
    assert {p: c for p, c in _checksums(tmp_path).items() if p != out} == before
    assert not [p for p in out.parent.iterdir() if p.name != "eval.json"]  # no temp files left


@pytest.mark.parametrize("problem", ["missing_gt", "size_mismatch", "corrupt_png", "empty_selection"])
def test_cli_bad_input_one_line_exit_2(tmp_path, problem):
    pred, gt, things = _write_case(tmp_path)
    prefix = "frame_"
    if problem == "missing_gt":
        (gt / "frame_00001.png").unlink()
        expect = "frame_00001"
    elif problem == "size_mismatch":
        atomic_write_png(gt / "frame_00001.png", np.zeros((2, 12), np.uint16))
        expect = "differ in size"
    elif problem == "corrupt_png":
        (pred / "frame_00001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        expect = "corrupt"
    else:
        prefix = "val_"
        expect = "no label PNGs"
    before = _checksums(tmp_path)
    out = tmp_path / "eval.json"
    proc = subprocess.run(_eval_cmd("--pred", pred, "--gt", gt, "--things", things, "--prefix", prefix, "--json", out),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()
    assert _checksums(tmp_path) == before
