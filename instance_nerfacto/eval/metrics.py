"""Scene-level panoptic quality (Panoptic Lifting) and matched mIoU (3DIML) over a sequence of label images.

Both metrics treat the whole sequence as one image: a ground-truth segment is every pixel of one gt id over all frames,
a predicted segment every pixel of one predicted id over all frames. So a prediction only scores if its ids are
consistent across views, which is what 3D instance mapping is about.

Conventions (implemented exactly; other tools compare against these numbers):
- gt id 0 is void; gt ids listed as stuff (``is_thing: false`` in instances.json) are void too. Pred id 0 is
  "unlabelled" and never a segment.
- IoU(p, g) = |p∩g| / (|p| + |g| - |p∩g| - |p∩void|): predicted pixels on void do not count against a prediction
  (COCO panopticapi), gt pixels predicted 0 do (they are in |g|).
- IoU > 0.5 is a true positive (unique by construction). FN = gt segments without a TP. FP = predicted segments without
  a TP, except those lying mostly (> 50 %) on void, which are ignored.
- PQ = ΣIoU_TP / (TP + FP/2 + FN/2), SQ = ΣIoU_TP / TP, RQ = TP / (TP + FP/2 + FN/2) (0 when the denominator is 0).
- Matched mIoU: each gt segment's best predicted segment by that IoU; the pairs above 0.5 are matched; the metric is
  their mean IoU, with the number matched and the number of gt segments beside it.

Only a sparse (gt id, pred id) -> pixel-count table is kept, so memory does not grow with the number of frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
from jaxtyping import Integer

from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import read_json, read_label_png

IOU_MATCH_THRESHOLD = 0.5
VOID_FRACTION_IGNORE = 0.5  # an unmatched prediction lying more than this much on void is not a false positive
_KEY_SHIFT = np.int64(1 << 32)  # key = gt * 2^32 + pred; ids are non-negative and below 2^31
_COMPACT_EVERY = 64  # merge the per-frame tables after this many frames so the pending list stays small


class PanopticAccumulator:
    """Accumulates the (gt id, pred id) intersection table frame by frame; ``result()`` computes the metrics.

    Stuff ids are applied only in ``result()``, so one accumulator can be scored things-only and with all ids.
    """

    def __init__(self, stuff_ids: Iterable[int] = ()) -> None:
        self.stuff_ids: Set[int] = {int(i) for i in stuff_ids}
        self.n_frames = 0
        self._keys = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []

    def add(self, pred: Integer[np.ndarray, "H W"], gt: Integer[np.ndarray, "H W"]) -> None:
        """Add one frame: predicted and ground-truth id images of the same shape."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
        for name, ids in (("prediction", pred), ("ground truth", gt)):
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{name} ids must be integers, got {ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= 1 << 31):
                raise ValueError(f"{name} ids must lie in [0, 2^31)")
        keys = gt.astype(np.int64).ravel() * _KEY_SHIFT + pred.astype(np.int64).ravel()
        self._pending.append(np.unique(keys, return_counts=True))
        self.n_frames += 1
        if len(self._pending) >= _COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self._counts] + [c for _, c in self._pending])
        self._pending = []
        self._keys, inverse = np.unique(keys, return_inverse=True)
        self._counts = np.bincount(inverse.ravel(), weights=counts, minlength=len(self._keys)).astype(np.int64)

    def table(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gt ids, pred ids, pixel counts) of every non-empty (gt, pred) pair seen so far, raw ids (0 included)."""
        self._compact()
        return self._keys // _KEY_SHIFT, self._keys % _KEY_SHIFT, self._counts.copy()

    def result(self) -> Dict:
        """The metrics dict (see the module docstring) plus ``matches``: [{gt, pred, iou}] of the true positives."""
        gt_ids, pred_ids, counts = self.table()
        stuff = np.array(sorted(self.stuff_ids), dtype=np.int64)
        is_void = (gt_ids == 0) | np.isin(gt_ids, stuff)
        labelled = pred_ids != 0

        # per-segment areas: gt segments include pixels predicted 0; pred segments include pixels on void
        gt_area = _sum_by(gt_ids[~is_void], counts[~is_void])
        pred_area = _sum_by(pred_ids[labelled], counts[labelled])
        pred_on_void = _sum_by(pred_ids[labelled & is_void], counts[labelled & is_void])

        pair = labelled & ~is_void
        inter_g, inter_p, inter = gt_ids[pair], pred_ids[pair], counts[pair]
        union = (np.array([gt_area[g] for g in inter_g.tolist()], dtype=np.int64)
                 + np.array([pred_area[p] for p in inter_p.tolist()], dtype=np.int64)
                 - inter
                 - np.array([pred_on_void.get(p, 0) for p in inter_p.tolist()], dtype=np.int64))
        iou = inter / np.maximum(union, 1)

        tp_sel = iou > IOU_MATCH_THRESHOLD
        matches = [{"gt": int(g), "pred": int(p), "iou": float(v)}
                   for g, p, v in zip(inter_g[tp_sel], inter_p[tp_sel], iou[tp_sel])]
        matches.sort(key=lambda m: m["gt"])
        matched_gt = {m["gt"] for m in matches}
        matched_pred = {m["pred"] for m in matches}
        tp = len(matches)
        fn = sum(1 for g in gt_area if g not in matched_gt)
        fp = sum(1 for p, area in pred_area.items()
                 if p not in matched_pred and pred_on_void.get(p, 0) / area <= VOID_FRACTION_IGNORE)
        n_void_ignored = sum(1 for p, area in pred_area.items()
                             if p not in matched_pred and pred_on_void.get(p, 0) / area > VOID_FRACTION_IGNORE)
        iou_sum = float(sum(m["iou"] for m in matches))
        denom = tp + 0.5 * fp + 0.5 * fn

        # 3DIML: best prediction per gt segment; above 0.5 it is necessarily the TP partner, computed on its own anyway
        best_iou: Dict[int, float] = {}
        for g, v in zip(inter_g.tolist(), iou.tolist()):
            best_iou[g] = max(best_iou.get(g, 0.0), v)
        matched_ious = [v for v in best_iou.values() if v > IOU_MATCH_THRESHOLD]

        return {
            "scene_pq": iou_sum / denom if denom > 0 else 0.0,
            "scene_sq": iou_sum / tp if tp > 0 else 0.0,
            "scene_rq": tp / denom if denom > 0 else 0.0,
            "matched_miou": float(np.mean(matched_ious)) if matched_ious else 0.0,
            "n_matched": len(matched_ious),
            "n_gt": len(gt_area),
            "n_pred": len(pred_area),
            "n_frames": self.n_frames,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "fp_ignored_on_void": n_void_ignored,
            "stuff_ids": sorted(self.stuff_ids),
            "matches": matches,
        }


def _sum_by(ids: np.ndarray, counts: np.ndarray) -> Dict[int, int]:
    """Total count per id, as a dict (ids are few: one entry per segment)."""
    if len(ids) == 0:
        return {}
    uniq, inverse = np.unique(ids, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=counts, minlength=len(uniq)).astype(np.int64)
    return dict(zip(uniq.tolist(), sums.tolist()))


def scene_metrics(frames: Iterable[Tuple[np.ndarray, np.ndarray]], stuff_ids: Iterable[int] = ()) -> Dict:
    """Scene PQ/SQ/RQ and matched mIoU of an iterable of (pred, gt) id images (see the module docstring)."""
    acc = PanopticAccumulator(stuff_ids)
    for pred, gt in frames:
        acc.add(pred, gt)
    return acc.result()


def load_stuff_ids(path: Path | str) -> Set[int]:
    """Stuff gt ids from an instances.json ``{"<gt id>": {"name": ..., "is_thing": bool}}``; ids absent are things."""
    path = Path(path)
    if not path.is_file():
        fail("instances file does not exist", path, 'pass a JSON {"<gt id>": {"name": ..., "is_thing": bool}}')
    data = read_json(path, "instances file", "fix or regenerate it", expect=None)
    if not isinstance(data, dict):
        fail("instances file must be a JSON object keyed by gt id", path,
             'write {"<gt id>": {"name": ..., "is_thing": bool}}')
    stuff: Set[int] = set()
    for key, entry in data.items():
        try:
            gid = int(key)
        except ValueError:
            fail(f"instances file has a key '{key}' that is not an integer gt id", path, "key entries by gt id")
        if not isinstance(entry, dict) or not isinstance(entry.get("is_thing", True), bool):
            fail(f"entry '{key}' of the instances file needs a boolean 'is_thing'", path,
                 'write {"name": ..., "is_thing": true|false}')
        if entry.get("is_thing", True) is False:
            stuff.add(gid)
    return stuff


def select_stems(pred_dir: Path, prefix: str = "") -> List[str]:
    """Stems of the label PNGs in ``pred_dir`` that start with ``prefix``, sorted."""
    return sorted(p.stem for p in pred_dir.iterdir()
                  if p.is_file() and p.suffix.lower() == ".png" and p.stem.startswith(prefix))


def evaluate_dirs(pred_dir: Path | str, gt_dir: Path | str, prefix: str = "",
                  things_json: Optional[Path | str] = None, stems: Optional[Sequence[str]] = None) -> Dict:
    """Evaluate the label PNGs of ``pred_dir`` against the same-stem PNGs of ``gt_dir``; InputError on bad input.

    Frames present in ``pred_dir`` (filtered by ``prefix``, or exactly ``stems`` when given) are evaluated; each must
    have a ground-truth PNG of the same size.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for name, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            fail(f"{name} folder does not exist", folder, "pass a folder of uint16 label PNGs named by image stem")
    stuff_ids = load_stuff_ids(things_json) if things_json is not None else set()
    if stems is None:
        stems = select_stems(pred_dir, prefix)
    if not stems:
        what = f"no label PNGs starting with '{prefix}'" if prefix else "no label PNGs"
        fail(f"{what} in the prediction folder", pred_dir, "check --pred and --prefix")
    acc = PanopticAccumulator(stuff_ids)
    for stem in stems:
        pred_path = pred_dir / f"{stem}.png"
        gt_path = gt_dir / f"{stem}.png"
        if not gt_path.is_file():
            fail(f"prediction frame '{stem}' has no ground-truth PNG", gt_path,
                 "evaluate only frames that have ground truth (use --prefix) or add the missing file")
        pred = read_label_png(pred_path)
        gt = read_label_png(gt_path)
        if pred.shape != gt.shape:
            fail(f"prediction {pred.shape[1]}x{pred.shape[0]} and ground truth {gt.shape[1]}x{gt.shape[0]} "
                 f"of frame '{stem}' differ in size", pred_path, "render predictions at the ground-truth resolution")
        acc.add(pred, gt)
    return acc.result()
