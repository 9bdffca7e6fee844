"""InstanceLoc: give each 2D region of a new posed image the id of the 3D label field.

Pure core: :func:`sample_region_pixels` (a few interior pixels per region) and :func:`vote` (confidence-weighted
majority per region, 0 when the votes are weak or land on nothing). The query (:func:`query_rays`) renders only the
sampled rays through a trained model: a few hundred rays instead of a whole frame, which is what makes InstanceLoc
fast. :func:`localize_regions` ties the three together for one image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int, Integer, UInt16

from instance_nerfacto.edit.label_map import MergeTable

ACCUMULATION_MIN = 0.5  # a ray whose accumulated density is below this hit nothing: its vote is 0


@dataclass
class VoteParams:
    """How the 2D regions of a query image vote on the label field's ids."""

    samples_per_region: int = 12
    """Pixels sampled (and rays rendered) per region."""
    min_votes: int = 2
    """A region needs at least this many samples on its winning label, or it gets 0."""
    min_fraction: float = 0.4
    """... and the winning label must hold at least this fraction of the region's samples."""
    min_region_pixels: int = 20
    """Regions smaller than this are left 0 (too small to vote on)."""
    split_fraction: float = 0.0
    """When > 0, a region where two or more labels each get at least this fraction of the samples (a mask that
    covers two objects, or spills over onto a neighbour) is split: each pixel takes the label of the nearest such
    sample. 0 turns splitting off."""
    fill_stride: int = 0
    """When > 0, pixels that no mask labels (no mask there, or the region's vote was too weak) take the label
    field's id, queried on a grid with this stride (1 = every such pixel). The frontend's masks miss objects; the map
    does not. 0 leaves them 0 (pure mask voting). 'regions' mode of instance-loc only; its default 4 keeps every
    image under 0.14 s where masks leave large areas uncovered (stride 2: up to 0.6 s, for +0.01 PQ on average)."""


def interior_distance(region_map: Integer[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
    """Distance (pixels) of every pixel to the nearest boundary between two different regions."""
    import cv2

    r = np.asarray(region_map)
    edge = np.zeros(r.shape, dtype=bool)
    edge[:, 1:] |= r[:, 1:] != r[:, :-1]
    edge[:, :-1] |= r[:, 1:] != r[:, :-1]
    edge[1:, :] |= r[1:, :] != r[:-1, :]
    edge[:-1, :] |= r[1:, :] != r[:-1, :]
    if not edge.any():
        return np.full(r.shape, float(max(r.shape)), dtype=np.float32)
    return cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)


def sample_region_pixels(
    region_map: Integer[np.ndarray, "H W"], n: int, rng: np.random.Generator, min_pixels: int = 1
) -> Tuple[Int[np.ndarray, "R"], Int[np.ndarray, "R n 2"]]:
    """``n`` pixels (row, col) of every non-zero region, drawn with probability rising with the distance to the
    region's boundary: mask edges are where both 2D masks and rendered labels are least reliable.

    Regions with fewer than ``min_pixels`` pixels are skipped. Regions smaller than ``n`` are sampled with
    replacement. Returns region ids (sorted) and coordinates.
    """
    region_map = np.asarray(region_map)
    flat = region_map.ravel().astype(np.int64)
    order = np.argsort(flat, kind="stable")
    ids, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    dist = interior_distance(region_map).ravel()
    region_ids: List[int] = []
    coords: List[np.ndarray] = []
    width = region_map.shape[1]
    for rid, start, count in zip(ids.tolist(), starts.tolist(), counts.tolist()):
        if rid == 0 or count < min_pixels:
            continue
        pix = order[start:start + count]
        weight = dist[pix].astype(np.float64) ** 2 + 1e-3
        chosen = rng.choice(pix, size=n, replace=count < n, p=weight / weight.sum())
        region_ids.append(rid)
        coords.append(np.stack([chosen // width, chosen % width], axis=-1))
    if not region_ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, n, 2), dtype=np.int64)
    return np.asarray(region_ids, dtype=np.int64), np.stack(coords).astype(np.int64)


def vote(
    labels_per_sample: Integer[np.ndarray, "R n"],
    confidences: Optional[Float[np.ndarray, "R n"]] = None,
    min_votes: int = 2,
    min_fraction: float = 0.4,
) -> Tuple[Int[np.ndarray, "R"], Float[np.ndarray, "R"]]:
    """Majority label per region (row), weighted by confidence; 0 when the winner has fewer than ``min_votes``
    samples or less than ``min_fraction`` of all samples (samples on label 0, i.e. on nothing, count against it).

    Returns the label and the fraction of samples that voted for it.
    """
    labels = np.asarray(labels_per_sample).astype(np.int64)
    if labels.ndim != 2:
        raise ValueError(f"labels_per_sample must be (regions, samples), got {labels.shape}")
    conf = np.ones(labels.shape) if confidences is None else np.asarray(confidences, dtype=np.float64)
    n_regions, n = labels.shape
    out = np.zeros(n_regions, dtype=np.int64)
    support = np.zeros(n_regions, dtype=np.float64)
    for r in range(n_regions):
        row, w = labels[r], conf[r]
        valid = row != 0
        if not valid.any():
            continue
        cand, inverse = np.unique(row[valid], return_inverse=True)
        weight = np.bincount(inverse, weights=w[valid], minlength=len(cand))
        count = np.bincount(inverse, minlength=len(cand))
        best = int(np.argmax(weight + 1e-9 * count))  # weight first; ties broken by raw count
        frac = count[best] / n
        support[r] = frac
        if count[best] >= min_votes and frac >= min_fraction:
            out[r] = cand[best]
    return out, support


def paint_regions(region_map: Integer[np.ndarray, "H W"], region_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint16 image: every pixel of region ``region_ids[i]`` gets ``labels[i]``; other pixels 0."""
    region_map = np.asarray(region_map).astype(np.int64)
    lut = np.zeros(int(max(region_map.max(), region_ids.max() if len(region_ids) else 0)) + 1, dtype=np.int64)
    lut[region_ids] = labels
    return lut[region_map].astype(np.uint16)


def strong_labels(row: Integer[np.ndarray, "n"], min_votes: int, fraction: float) -> List[int]:
    """Non-zero labels holding at least ``fraction`` of the samples of one region (and ``min_votes`` of them)."""
    ids, counts = np.unique(row[row != 0], return_counts=True)
    need = max(min_votes, fraction * len(row))
    return [int(i) for i, c in zip(ids, counts) if c >= need]


def split_regions(
    image: np.ndarray,
    region_map: Integer[np.ndarray, "H W"],
    region_ids: np.ndarray,
    coords: Int[np.ndarray, "R n 2"],
    sample_labels: Integer[np.ndarray, "R n"],
    min_votes: int,
    fraction: float,
) -> List[int]:
    """Repaint (in place) every region whose samples hold two or more strong labels: nearest strong sample wins.
    Returns the ids of the regions split."""
    split = []
    for r, rid in enumerate(region_ids.tolist()):
        strong = strong_labels(sample_labels[r], min_votes, fraction)
        if len(strong) < 2:
            continue
        keep = np.isin(sample_labels[r], strong)
        pts, labs = coords[r][keep].astype(np.float32), sample_labels[r][keep]
        ys, xs = np.nonzero(region_map == rid)
        d = (ys[:, None] - pts[None, :, 0]) ** 2 + (xs[:, None] - pts[None, :, 1]) ** 2
        image[ys, xs] = labs[np.argmin(d, axis=1)]
        split.append(int(rid))
    return split


def vote_on_label_map(
    region_map: Integer[np.ndarray, "H W"], label_map: Integer[np.ndarray, "H W"], params: VoteParams
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Denoising a rendered label map (the paper's use of InstanceLoc on training renders): every region votes over
    all of its pixels of ``label_map``. Returns region ids, labels, support."""
    region = np.asarray(region_map).astype(np.int64).ravel()
    labels = np.asarray(label_map).astype(np.int64).ravel()
    if region.shape != labels.shape:
        raise ValueError(f"region map {np.shape(region_map)} and label map {np.shape(label_map)} differ in size")
    ids, sizes = np.unique(region, return_counts=True)
    keep = (ids != 0) & (sizes >= params.min_region_pixels)
    span = int(labels.max()) + 1 if labels.size else 1
    keys, counts = np.unique(region * span + labels, return_counts=True)
    out_ids, out_labels, out_support = [], [], []
    size_of = dict(zip(ids.tolist(), sizes.tolist()))
    best: Dict[int, Tuple[int, int]] = {}
    for key, count in zip(keys.tolist(), counts.tolist()):
        rid, lab = divmod(key, span)
        if lab != 0 and count > best.get(rid, (0, 0))[1]:
            best[rid] = (lab, count)
    for rid in ids[keep].tolist():
        lab, count = best.get(rid, (0, 0))
        frac = count / size_of[rid]
        out_ids.append(rid)
        out_labels.append(lab if frac >= params.min_fraction else 0)
        out_support.append(frac)
    return np.asarray(out_ids, dtype=np.int64), np.asarray(out_labels, dtype=np.int64), np.asarray(out_support)


# -------------------------------------------------------------------------------------------------------------
# the query: render only the sampled rays through a trained model


def query_rays(model, camera, coords: Int[np.ndarray, "... 2"], renderer=None, labels=None
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Label id and confidence of the rays through pixel centres ``coords`` (row, col) of a one-camera ``Cameras``.

    ``renderer(ray_bundle, coords) -> outputs`` when given (:class:`instance_nerfacto.loc_surface.SurfaceQuery`
    marches the baked density; :class:`instance_nerfacto.loc_surface.DepthQuery` reads the field at the query frame's
    measured depth, which needs the pixel ``coords``), else the model's ``render_label_rays(ray_bundle)`` hook when it
    has one, otherwise a normal forward pass (volume rendering) of only these rays. Rays that hit nothing vote 0.
    ``labels`` (the run's :class:`~instance_nerfacto.edit.label_map.LabelMap`) maps the ids at each ray's surface
    point (the renderer's ``depth``), so merges and splits apply as in every other command.
    """
    import torch

    from instance_nerfacto.loc.rays import pixel_rays

    shape = coords.shape[:-1]
    with torch.no_grad():
        bundle = pixel_rays(camera, coords.reshape(-1, 2))
        if renderer is not None:
            outputs = renderer(bundle, coords.reshape(-1, 2))
        else:
            hook = getattr(model, "render_label_rays", None)
            outputs = hook(bundle) if callable(hook) else model(bundle)
        ids, conf = label_outputs(outputs)
        if labels is not None:
            depth = outputs.get("depth")
            points = None if depth is None else bundle.origins.reshape(-1, 3) + bundle.directions.reshape(-1, 3) * \
                depth.reshape(-1, 1).to(bundle.origins.device)
            ids = labels.apply(ids, points)
    return ids.reshape(shape), conf.reshape(shape)


def label_outputs(outputs: Mapping) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, confidence) as int64 / float numpy arrays from a model's outputs (flat rays), zeroing empty rays."""
    import torch

    if "instance_id" in outputs:
        ids = outputs["instance_id"]
        conf = outputs.get("instance_confidence")
        if conf is None:
            conf = torch.ones_like(ids, dtype=torch.float32)
    else:
        logits = next((outputs[k] for k in ("instance_logits", "instance_probs") if k in outputs), None)
        if logits is None:
            raise KeyError(f"model outputs have no instance labels (keys: {sorted(outputs)})")
        probs = logits.softmax(-1) if "instance_logits" in outputs else logits
        conf, ids = probs.max(-1)
        ids = ids + 1  # logit k is label k + 1 (label 0, unlabelled, has no logit)
    ids = ids.reshape(-1).long()
    conf = conf.reshape(-1).float()
    acc = outputs.get("accumulation")
    if acc is not None and acc.numel() == ids.numel():
        ids = torch.where(acc.reshape(-1) < ACCUMULATION_MIN, torch.zeros_like(ids), ids)
    return ids.cpu().numpy(), conf.cpu().numpy()


def fill_unlabelled(
    image: UInt16[np.ndarray, "H W"], model, camera, stride: int, merge_table=None, renderer=None
) -> int:
    """In place: give the pixels still 0 in ``image`` the label field's id, one ray per ``stride x stride`` block of
    such pixels. Returns the number of rays rendered."""
    rows, cols = np.nonzero(image == 0)
    if len(rows) == 0:
        return 0
    blocks = np.stack([rows - rows % stride, cols - cols % stride], axis=1)
    reps, inverse = np.unique(blocks, axis=0, return_inverse=True)
    ids, _ = query_rays(model, camera, reps, renderer, merge_table)
    image[rows, cols] = np.asarray(ids).reshape(-1)[np.asarray(inverse).reshape(-1)].astype(image.dtype)
    return len(reps)


def localize_regions(
    model,
    camera,
    region_map: Integer[np.ndarray, "H W"],
    params: VoteParams,
    rng: np.random.Generator,
    merge_table: Optional[MergeTable] = None,
    renderer=None,
) -> Dict:
    """InstanceLoc for one image: sample, render the sampled rays, vote. Returns region ids, labels, support and
    per-sample votes. Votes are mapped through the merge table first, so split labels pool their votes."""
    region_ids, coords = sample_region_pixels(region_map, params.samples_per_region, rng, params.min_region_pixels)
    if len(region_ids) == 0:
        return {"region_ids": region_ids, "labels": region_ids.copy(), "support": np.zeros(0), "votes": [],
                "image": np.zeros(np.shape(region_map), dtype=np.uint16), "split": []}
    sample_ids, conf = query_rays(model, camera, coords, renderer, merge_table)
    labels, support = vote(sample_ids, conf, params.min_votes, params.min_fraction)
    image = paint_regions(region_map, region_ids, labels)
    split = []
    if params.split_fraction > 0:
        split = split_regions(image, region_map, region_ids, coords, sample_ids, params.min_votes,
                              params.split_fraction)
    if params.fill_stride > 0:
        fill_unlabelled(image, model, camera, params.fill_stride, merge_table, renderer)
    return {"region_ids": region_ids, "labels": labels, "support": support, "votes": sample_ids, "image": image,
            "split": split}


def region_records(region_map: Integer[np.ndarray, "H W"], result: Dict) -> List[Dict]:
    ids, sizes = np.unique(region_map, return_counts=True)
    size_of = dict(zip(ids.tolist(), sizes.tolist()))
    votes = result.get("votes")
    records = []
    for i, rid in enumerate(result["region_ids"].tolist()):
        rec = {"region": int(rid), "label": int(result["labels"][i]), "pixels": int(size_of.get(rid, 0)),
               "support": round(float(result["support"][i]), 3)}
        if rid in result.get("split", ()):
            rec["split"] = True
        if votes is not None and len(votes):
            rec["votes"] = [int(v) for v in np.asarray(votes[i]).tolist()]
        records.append(rec)
    return records
