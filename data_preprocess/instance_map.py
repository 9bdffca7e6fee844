"""``instance-map``: associate per-frame 2D instance masks into 3D-consistent pseudolabels (InstanceMap, 3DIML).

    instance-map --data data/room                       # depth matcher when depth/ exists, stereo otherwise
    instance-map --data data/room --matcher sift --pairs exhaustive

Stages (each a pure function in its own module, hloc style, cached under ``<output>/.cache``): pairs
(``pairs.py``) -> correspondences and mask overlap counts (``matching.py``, ``graph.py``) -> mutual-best edges ->
Leiden communities with cannot-link splitting and filters (``communities.py``) -> labels ordered by mean area
(``rasterize.py``) -> ``<output>/<stem>.png`` (uint16, 0 = unlabelled) and ``<output>/labels.json``.
"""

from __future__ import annotations

import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import tyro

from data_preprocess import communities as comm
from data_preprocess.cache import StageCache, cache_key, file_fingerprint
from data_preprocess.graph import OverlapRecords, mutual_best_edges, pair_overlaps
from data_preprocess.matching import make_matcher, sparse_depth, triangulate
from data_preprocess.pairs import View, exhaustive_pairs, pose_pairs, sequential_pairs, similarity_pairs
from data_preprocess.rasterize import frame_labels, order_labels, owner_map
from data_preprocess.stereo import stereo_depths
from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.files import atomic_write_png, read_depth
from instance_nerfacto.core.masks import MASK_SUFFIXES, load_frame_masks
from instance_nerfacto.core.pseudolabels import (
    LABELS_JSON,
    MAX_LABELS,
    default_pseudolabels_dir,
    previous_frames,
    write_labels_json,
)


@dataclass
class MapConfig:
    """Associate per-frame instance masks into 3D-consistent pseudolabels (InstanceMap)."""

    data: Path
    """Nerfstudio dataset folder (transforms.json, images/, optional depth/)."""
    masks: Optional[Path] = None
    """Folder of per-frame masks named by image stem (<stem>.png label image or <stem>.npz stack);
    default DATA/masks."""
    output: Optional[Path] = None
    """Output folder for <stem>.png pseudolabels and labels.json; default DATA/pseudolabels."""
    split: Literal["train", "val", "all"] = "train"
    """Frames of transforms.json to process; train keeps the held-out val frames unseen."""
    pairs: Literal["pose", "exhaustive", "sequential", "netvlad"] = "pose"
    """How to choose frame pairs: pose overlap, all pairs, a sequential window, or NetVLAD similarity (paper)."""
    matcher: Optional[Literal["depth", "stereo", "flow", "sift", "loftr"]] = None
    """Correspondences: depth reprojection, reprojection on depth estimated by multi-view stereo from the images and
    poses, pose-checked dense optical flow, SIFT, LoFTR; default depth when the dataset has depth maps, stereo
    otherwise."""
    stereo_neighbours: int = 4
    """Stereo: neighbour frames whose flow is triangulated into each frame's depth map."""
    stereo_min_agree: int = 1
    """Stereo: neighbours that must agree (within 5%) on a pixel's depth for it to be kept; a pixel whose estimates
    disagree is dropped either way."""
    weights: Optional[Path] = None
    """Local LoFTR weights file (--matcher loftr); never downloaded."""
    netvlad_weights: Optional[Path] = None
    """Local NetVLAD (VGG16) weights file (--pairs netvlad); never downloaded."""
    top_k: int = 30
    """Pairs kept per frame (best overlap or similarity first)."""
    min_pair_overlap: float = 0.3
    """Pose pairs: minimum fraction of a frame visible in the other (both ways); netvlad: minimum cosine similarity."""
    window: int = 5
    """Sequential pairs: frames matched ahead of each frame."""
    min_score: float = 0.3
    """Minimum correspondence IoU for an edge between two masks (mutual best matches only)."""
    min_shared: float = 3.0
    """Minimum number of correspondences behind an edge."""
    resolution: float = 0.0
    """Leiden CPM resolution. 0 is connected components of the (strictly pruned) mutual-best graph; the cannot-link
    split below undoes wrong joins, and a positive value fragments objects seen along a chain of views."""
    merge_min_score: float = 0.2
    """Fragment merging: correspondence IoU that counts as evidence that two communities overlap in a frame pair."""
    merge_affinity: float = 0.3
    """Fragment merging: join two communities when at least this fraction of their co-visible frame pairs agree."""
    revisit_agreement: Optional[float] = None
    """Join two never co-visible communities when this fraction of each one's 3D points falls inside the other's
    masks (an object revisited from another side; > 1 = off). Default 0.5 with depth maps, 0.25 with estimated depth
    (stereo) or the sparse depth triangulated from the matches (flow, sift, loftr) when the dataset has none."""
    absorb_vote: float = 0.3
    """Small communities and unlabelled masks join a larger community holding at least this fraction of their
    correspondences in the other views (1 = off)."""
    min_size: int = 2
    """Drop communities with fewer masks."""
    min_frames: int = 3
    """Drop labels seen in fewer frames."""
    allow_empty: bool = False
    """Accept frames whose mask file holds no mask (they get an all-zero pseudolabel) instead of failing."""
    workers: int = 2
    """Threads for matching frame pairs."""
    seed: int = 0
    """Seed of the Leiden optimiser; outputs are byte-identical for the same seed and inputs."""
    cache: bool = True
    """Reuse cached pairs / matches under OUTPUT/.cache when parameters and inputs are unchanged."""
    quiet: bool = False
    """No progress bars and no summary."""


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _log(cfg: MapConfig, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr)


def _progress(items, cfg: MapConfig, desc: str, total: Optional[int] = None):
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, disable=True if cfg.quiet else None, leave=False)


def load_views(cfg: MapConfig, mask_dir: Path):
    """Views of the selected frames with owner maps; InputError on missing/extra/bad mask files."""
    ds = load_dataset(cfg.data)
    frames = ds.split(cfg.split)
    if not frames:
        fail(f"transforms.json has no '{cfg.split}' frames", cfg.data / "transforms.json", "use --split all")
    if not mask_dir.is_dir():
        fail("mask folder does not exist", mask_dir, "run instance-segment first or pass --masks")
    all_stems = {f.stem for f in ds.frames}
    extra = sorted(p.name for p in mask_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in MASK_SUFFIXES and p.stem not in all_stems)
    if extra:
        fail(f"{len(extra)} mask file(s) match no frame of transforms.json, first '{extra[0]}'", mask_dir / extra[0],
             "remove them or pass the dataset they belong to")
    if len(frames) < 2:
        fail(f"only {len(frames)} frame in split '{cfg.split}'", cfg.data / "transforms.json",
             "InstanceMap associates masks across frames and needs at least two")
    use_depth = ds.has_depth and (cfg.matcher in (None, "depth") or cfg.pairs == "pose")
    views: List[View] = []
    n_masks: List[int] = []
    areas: List[np.ndarray] = []
    mask_files: List[Path] = []
    for fr in _progress(frames, cfg, "masks"):
        masks, _, path = load_frame_masks(mask_dir, fr.stem, fr.height, fr.width,
                                          "run instance-segment for every frame, or pass --split / --masks")
        if len(masks) == 0 and not cfg.allow_empty:
            fail(f"frame '{fr.stem}' has no masks", path, "re-run the segmenter on it, or pass --allow-empty")
        if len(masks) > np.iinfo(np.int16).max:
            fail(f"frame '{fr.stem}' has {len(masks)} masks", path, "keep at most 32767 masks per frame")
        owner = owner_map(masks)
        depth = None
        if use_depth:
            depth = read_depth(fr.depth_path)
            if depth.shape != (fr.height, fr.width):
                fail(f"depth map is {depth.shape[1]}x{depth.shape[0]}, image is {fr.width}x{fr.height}",
                     fr.depth_path, "write depth at the image resolution")
        views.append(View(fr.stem, fr.K, fr.c2w_cv, owner, fr.image_path, depth))
        n_masks.append(len(masks))
        areas.append(np.bincount(owner[owner >= 0].ravel(), minlength=len(masks)).astype(np.float64))
        mask_files.append(path)
    return ds, frames, views, n_masks, areas, mask_files


def choose_pairs(cfg: MapConfig, views: List[View]) -> np.ndarray:
    if cfg.pairs == "pose":
        return pose_pairs(views, cfg.min_pair_overlap, cfg.top_k)
    if cfg.pairs == "exhaustive":
        return exhaustive_pairs(len(views))
    if cfg.pairs == "sequential":
        return sequential_pairs(len(views), cfg.window)
    from data_preprocess.netvlad import netvlad_descriptors

    if cfg.netvlad_weights is None:
        fail("--pairs netvlad needs --netvlad-weights", None, "pass a local NetVLAD checkpoint or use --pairs pose")
    desc = netvlad_descriptors([v.image_path for v in views], cfg.netvlad_weights)
    return similarity_pairs(desc, cfg.min_pair_overlap, cfg.top_k)


def main(cfg: MapConfig) -> Dict:
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    memory_mb: Dict[str, float] = {}  # peak RSS of the process after each stage
    mask_dir = cfg.masks or cfg.data / "masks"
    output = cfg.output or default_pseudolabels_dir(cfg.data)
    for protected in (mask_dir, cfg.data, cfg.data / "images", cfg.data / "depth"):
        if output.exists() and protected.exists() and output.resolve() == protected.resolve():
            fail("output folder is an input folder", output,
                 "pass --output a separate folder (default DATA/pseudolabels)")

    t = time.perf_counter()
    ds, frames, views, n_masks, areas, mask_files = load_views(cfg, mask_dir)
    timings["load"] = time.perf_counter() - t
    memory_mb["load"] = _peak_rss_mb()
    matcher_name = cfg.matcher or ("depth" if ds.has_depth else "stereo")
    matcher_note = {"depth": "depth (dataset has depth maps)" if cfg.matcher is None else "depth",
                    "stereo": "stereo (no depth maps: depth triangulated from optical flow between posed frames)"
                    if cfg.matcher is None else "stereo"}.get(matcher_name, matcher_name)
    if matcher_name == "depth" and not ds.has_depth:
        missing = next((f for f in ds.frames if f.depth_path is None or not f.depth_path.exists()), None)
        where = missing.depth_path if missing is not None and missing.depth_path is not None else \
            cfg.data / "transforms.json"
        fail(f"--matcher depth needs depth maps for every frame; frame '{missing.stem if missing else '?'}' has none",
             where, "restore the depth file / add depth_file_path per frame, or use --matcher stereo|flow|sift")
    if matcher_name == "depth" and views[0].depth is None:
        for v, fr in zip(views, frames):
            v.depth = read_depth(fr.depth_path)

    dense_depth = all(v.depth is not None for v in views)  # before triangulated sparse depth may fill them in
    cache = StageCache(output if cfg.cache else None)
    stems = [v.stem for v in views]
    inputs = file_fingerprint([cfg.data / "transforms.json"] + mask_files + [f.depth_path for f in frames])
    image_inputs = file_fingerprint([v.image_path for v in views]) \
        if matcher_name in ("stereo", "flow", "sift", "loftr") else []
    if matcher_name == "stereo":
        t = time.perf_counter()
        stereo_params = {"k": cfg.stereo_neighbours, "min_agree": cfg.stereo_min_agree, "split": cfg.split}
        skey = cache_key("stereo", {**stereo_params, "stems": stems}, inputs + image_inputs)
        cached = cache.load("stereo", skey)
        if cached is None:
            for v in views:  # estimated from the images alone, also when --matcher stereo runs on an RGB-D dataset
                v.depth = None
            depths, _ = stereo_depths(views, cfg.stereo_neighbours, min_agree=cfg.stereo_min_agree,
                                                 workers=cfg.workers)
            cached = {"depth": np.stack(depths)}
            cache.save("stereo", skey, **cached)
        stereo_maps = cached["depth"]  # given to the views after the pairs: holes would hide overlapping frames
        dense_depth = False
        timings["stereo"] = time.perf_counter() - t
        memory_mb["stereo"] = _peak_rss_mb()

    t = time.perf_counter()
    pair_params = {k: getattr(cfg, k) for k in ("pairs", "top_k", "min_pair_overlap", "window", "split")}
    pkey = cache_key("pairs", {**pair_params, "stems": stems}, inputs)
    cached = cache.load("pairs", pkey)
    pairs = cached["pairs"] if cached is not None else choose_pairs(cfg, views)
    if cached is None:
        cache.save("pairs", pkey, pairs=pairs)
    timings["pairs"] = time.perf_counter() - t
    memory_mb["pairs"] = _peak_rss_mb()
    if matcher_name == "stereo":
        for v, d in zip(views, stereo_maps):
            v.depth = d
    if len(pairs) == 0:
        fail(f"no two of the {len(views)} frames overlap (pairs: {cfg.pairs})", cfg.data / "transforms.json",
             "check the poses, lower --min-pair-overlap, or use --pairs exhaustive")

    t = time.perf_counter()
    offsets = np.concatenate([[0], np.cumsum(n_masks)]).astype(np.int64)
    frame_of = np.repeat(np.arange(len(views)), n_masks)
    mkey = cache_key("matches", {"matcher": matcher_name, "pairs": pkey, "weights": str(cfg.weights)},
                     inputs + image_inputs)
    cached = cache.load("matches", mkey)
    tri_keys = ("tri_frame", "tri_pixel", "tri_depth")
    if cached is not None:
        records = OverlapRecords(**{k: v for k, v in cached.items() if k not in tri_keys})
        tri = tuple(cached[k] for k in tri_keys)
    else:
        match = make_matcher(matcher_name, cfg.weights)
        want_tri = matcher_name not in ("depth", "stereo")

        def run_pair(ij):
            i, j = int(ij[0]), int(ij[1])
            corr = match(views[i], views[j])
            rec = pair_overlaps(views[i], views[j], n_masks[i], n_masks[j], corr, offsets[i], offsets[j])
            if not want_tri:
                return rec, None
            pa, za, pb, zb = triangulate(views[i], views[j], corr)
            return rec, (np.r_[np.full(len(pa), i), np.full(len(pb), j)], np.r_[pa, pb], np.r_[za, zb])

        workers = max(1, cfg.workers if matcher_name != "loftr" else 1)
        with ThreadPoolExecutor(workers) as pool:
            parts = list(_progress(pool.map(run_pair, pairs), cfg, f"matching ({matcher_name})", len(pairs)))
        records = OverlapRecords.concat([p[0] for p in parts])
        tri_parts = [p[1] for p in parts if p[1] is not None]
        tri = tuple(np.concatenate([t[k] for t in tri_parts]) if tri_parts else np.zeros(0) for k in range(3))
        cache.save("matches", mkey, **records.to_arrays(), **dict(zip(tri_keys, tri)))
    if any(v.depth is None for v in views) and len(tri[0]):
        # no depth maps: the 3D stage (revisit merging) uses depth triangulated from the matches and known poses
        frame_idx = tri[0].astype(np.int64)
        for k, v in enumerate(views):
            sel = frame_idx == k
            v.depth = sparse_depth(v.height, v.width, tri[1][sel].astype(np.int64), tri[2][sel])
    timings["matching"] = time.perf_counter() - t
    memory_mb["matching"] = _peak_rss_mb()

    t = time.perf_counter()
    edges, weights = mutual_best_edges(records, frame_of, cfg.min_score, cfg.min_shared)
    timings["graph"] = time.perf_counter() - t
    memory_mb["graph"] = _peak_rss_mb()

    t = time.perf_counter()
    n_nodes = int(offsets[-1])
    membership = comm.leiden(n_nodes, edges, weights, cfg.resolution, cfg.seed)
    n_communities = len(np.unique(membership))
    touching = set()
    for k, v in enumerate(views):
        touching |= comm.touching_pairs(v.owner, int(offsets[k]))
    membership = comm.split_cannot_link(membership, frame_of, edges, weights, touching)
    n_split = len(np.unique(membership))
    membership = comm.merge_fragments(membership, frame_of, records.node_a, records.node_b, records.score, pairs,
                                      touching, cfg.merge_min_score, cfg.merge_affinity)
    n_merged = len(np.unique(membership))
    if cfg.absorb_vote < 1.0:
        membership = comm.absorb_fragments(membership, frame_of, records.node_a, records.node_b, records.shared,
                                           records.total_a, records.total_b, touching, cfg.absorb_vote)
    agreement = cfg.revisit_agreement if cfg.revisit_agreement is not None else (0.5 if dense_depth else 0.25)
    if agreement <= 1.0:
        membership = comm.merge_revisits(membership, frame_of, offsets, views, agreement)
    n_revisit = len(np.unique(membership))
    membership = comm.filter_communities(membership, frame_of, cfg.min_size, cfg.min_frames)
    timings["communities"] = time.perf_counter() - t
    memory_mb["communities"] = _peak_rss_mb()

    t = time.perf_counter()
    area = np.concatenate(areas) if areas else np.zeros(0)
    node_label, stats = order_labels(membership, frame_of, area)
    if len(stats) > MAX_LABELS:
        fail(f"{len(stats)} labels do not fit uint16 pseudolabels", mask_dir,
             f"raise --min-frames/--min-size so that at most {MAX_LABELS} labels remain")
    output.mkdir(parents=True, exist_ok=True)
    stale = set(previous_frames(output))
    # labels.json is written last and marks a complete output: remove the old one before any PNG changes, so an
    # interrupted run never leaves a labels.json beside a mix of old and new PNGs.
    (output / LABELS_JSON).unlink(missing_ok=True)
    for k, v in enumerate(_progress(views, cfg, "writing")):
        atomic_write_png(output / f"{v.stem}.png", frame_labels(v.owner, node_label[offsets[k]:offsets[k + 1]]))
    for stem in sorted(stale - set(stems)):
        (output / f"{stem}.png").unlink(missing_ok=True)
    timings["write"] = time.perf_counter() - t
    memory_mb["write"] = _peak_rss_mb()
    timings["total"] = time.perf_counter() - t_start

    summary = {
        "frames": len(views), "pairs": int(len(pairs)), "matches": int(len(records.shared)),
        "nodes": n_nodes, "edges": int(len(edges)), "communities": n_communities,
        "communities_after_split": n_split, "communities_after_merge": n_merged,
        "communities_after_revisits": n_revisit, "labels": len(stats),
    }
    peak_mb = _peak_rss_mb()
    meta = write_labels_json(  # last: its presence marks a complete output
        output, len(stats), stats, stems, matcher=matcher_name, pairs=cfg.pairs, summary=summary,
        parameters={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        timings_s={k: round(v, 3) for k, v in timings.items()}, peak_rss_mb=memory_mb)
    _log(cfg, f"instance-map: {len(views)} frames, {len(pairs)} pairs ({cfg.pairs}), matcher {matcher_note}, "
              f"{len(records.shared)} mask overlaps, graph {n_nodes} nodes / {len(edges)} edges, "
              f"{n_communities} communities ({n_split} after cannot-link split, {n_merged} after fragment merge, "
              f"{n_revisit} after revisit merge), "
              f"{len(stats)} labels kept, "
              f"{timings['total']:.1f} s, peak {peak_mb:.0f} MB -> {output}")
    return meta


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(MapConfig)))


if __name__ == "__main__":
    entrypoint()
