"""Oracle scene PQ of a rendered scene's frontend masks: the ceiling any mask-association method can reach.

The oracle gives every frontend mask of every frame the ground-truth id it covers most (void included), i.e. perfect
association; what it loses is the frontend's own errors (splits, merges, misses, boundary noise). Scored with the
project's metric (``instance_nerfacto.eval.metrics``: scene PQ over all frames concatenated, matched mIoU), things only
(stuff = void) and with all ids.

    .venv/bin/python benchmarks/oracle_pq.py /tmp/scenes/demo [--split train|val|all] [--per-object]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
from jaxtyping import UInt16

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance_nerfacto.core.files import read_label_png  # noqa: E402
from instance_nerfacto.eval.metrics import PanopticAccumulator, load_stuff_ids  # noqa: E402


def oracle_labels(masks: UInt16[np.ndarray, "H W"], gt: UInt16[np.ndarray, "H W"]) -> UInt16[np.ndarray, "H W"]:
    """Each mask id replaced by the gt id it overlaps most (0 stays 0)."""
    mask_ids, inverse = np.unique(masks, return_inverse=True)
    inverse = inverse.ravel()
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    table = np.zeros((len(mask_ids), len(gt_ids)), dtype=np.int64)
    np.add.at(table, (inverse, gt_index.ravel()), 1)
    best = gt_ids[np.argmax(table, axis=1)]
    best[mask_ids == 0] = 0
    return best[inverse].reshape(masks.shape).astype(np.uint16)


def _frames(root: Path, stems: List[str]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    for stem in stems:
        gt = read_label_png(root / "gt" / f"{stem}.png")
        yield oracle_labels(read_label_png(root / "masks" / f"{stem}.png"), gt), gt


def oracle_accumulator(root: Path, split: str = "all") -> PanopticAccumulator:
    """The oracle's (gt, pred) table over the frames of ``split`` (train = frame_*, val = val_*), no stuff ids set."""
    prefix = {"train": "frame_", "val": "val_", "all": ""}[split]
    stems = sorted(p.stem for p in (root / "gt").glob("*.png") if p.stem.startswith(prefix))
    if not stems:
        raise SystemExit(f"no gt/*.png frames for split '{split}' in {root}")
    acc = PanopticAccumulator()
    for pred, gt in _frames(root, stems):
        acc.add(pred, gt)
    return acc


def oracle_scores(root: Path, split: str = "all") -> Dict[str, Dict]:
    """{"things": metrics with stuff = void, "all": metrics over every gt id} of the oracle over ``split``."""
    acc = oracle_accumulator(root, split)
    all_ids = acc.result()
    acc.stuff_ids = load_stuff_ids(root / "instances.json")  # stuff ids are applied only in result()
    return {"things": acc.result(), "all": all_ids}


def per_object(root: Path, acc: PanopticAccumulator) -> List[str]:
    """One line per gt instance: pixels per frame, and IoU / recall / precision of the oracle's segment of that id."""
    names = json.loads((root / "instances.json").read_text())
    gt_ids, pred_ids, counts = acc.table()
    lines = []
    for gid, entry in sorted(names.items(), key=lambda kv: int(kv[0])):
        g = int(gid)
        gt_area = int(counts[gt_ids == g].sum())
        pred_area = int(counts[pred_ids == g].sum())
        inter = int(counts[(gt_ids == g) & (pred_ids == g)].sum())
        kind = "thing" if entry["is_thing"] else "stuff"
        lines.append(f"  {g:>3} {entry['name']:<14} {kind}  px/frame {gt_area / max(acc.n_frames, 1):7.0f}  "
                     f"IoU {inter / max(gt_area + pred_area - inter, 1):.2f}  recall {inter / max(gt_area, 1):.2f}  "
                     f"precision {inter / max(pred_area, 1):.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path, help="scene folder written by instance-synth (gt/, masks/, instances.json)")
    parser.add_argument("--split", choices=("train", "val", "all"), default="all")
    parser.add_argument("--per-object", action="store_true", help="print the oracle IoU of every gt instance")
    args = parser.parse_args()
    acc = oracle_accumulator(args.scene, args.split)
    scores = {"all": acc.result()}
    acc.stuff_ids = load_stuff_ids(args.scene / "instances.json")
    scores["things"] = acc.result()
    for kind in ("things", "all"):
        m = scores[kind]
        print(f"oracle {kind:<6} scene PQ {m['scene_pq']:.3f} (SQ {m['scene_sq']:.3f} RQ {m['scene_rq']:.3f}; "
              f"TP {m['tp']} FP {m['fp']} FN {m['fn']})  matched mIoU {m['matched_miou']:.3f} "
              f"({m['n_matched']}/{m['n_gt']})")
    if args.per_object:
        print("\n".join(per_object(args.scene, acc)))


if __name__ == "__main__":
    main()
