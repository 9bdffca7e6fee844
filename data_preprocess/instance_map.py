"""``instance-map``: associate per-frame 2D instance masks into 3D-consistent pseudolabels (InstanceMap, 3DIML).

    instance-map --data data/room                       # depth matcher when depth/ exists, stereo otherwise
    instance-map --data data/room --matcher sift --pairs exhaustive

Stages (each a pure function in its own module, hloc style, cached under ``<output>/.cache``): pairs
(``pairs.py``) -> correspondences and mask overlap counts (``matching.py``, ``graph.py``) -> mutual-best edges ->
Leiden communities with cannot-link splitting and filters (``communities.py``) -> labels ordered by mean area
(``rasterize.py``) -> ``<output>/<stem>.png`` (uint16, 0 = unlabelled) and ``<output>/labels.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import tyro

from data_preprocess import communities as comm
from data_preprocess import revisits, support
from data_preprocess.affinity import AffinityGate
from data_preprocess.cache import StageCache, cache_key, file_fingerprint
from data_preprocess.engine import LocalEngine, make_engine
from data_preprocess.frames import (
    FrameSpec,
    cached_view,
    choose_pairs,
    frame_summary,
    make_spec,
    mask_points,
    write_labels,
)
from data_preprocess.graph import match_stage, mutual_best_edges, split_by_frame
from data_preprocess.matching import depth_tolerance
from data_preprocess.rasterize import order_labels
from data_preprocess.steps import Steps, peak_rss_mb, stage_end_mb
from data_preprocess.stereo_stage import stereo_planes, stereo_stage
from data_preprocess.touching import split_exemptions
from instance_nerfacto.core.console import say, track
from instance_nerfacto.core.dataset import check_depth_listing, downscaled, load_dataset, training_downscale
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.masks import MASK_SUFFIXES, find_mask_file
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
    downscale: Optional[int] = None
    """Work on the photos nerfstudio trains on: images_N/ (and depths_N/) at this factor, as ns-train's
    --downscale-factor. Default: nerfstudio's own choice (halve while the longest side exceeds 1,600 px and
    ns-process-data wrote the next images_N/). Pseudolabels are written at that resolution; masks and depth maps may
    come at the full size or any scaled copy of it."""
    max_size: int = 640
    """Longest side of the grid the association runs on: larger photos (and every photo with lens distortion) are
    resampled onto a pinhole grid of at most this size; pseudolabels are still written at the photo's resolution."""
    depth_unit_scale_factor: float = 1e-3
    """Metres per stored unit of the dataset's depth maps, as nerfstudio's dataparser option of the same name (1e-3:
    millimetres, what RGB-D recorders write); give the value ns-train gets."""
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
    merge_conflicts: Optional[float] = None
    """Fragment merging: two communities that pass the affinity may share this fraction of the smaller one's frames
    (its masks there, strays of a poorly matched stretch, are dropped). 0.05 with estimated depth, 0 with depth maps."""
    revisit_agreement: Optional[float] = None
    """Join two never co-visible communities when this fraction of each one's 3D points (with depth maps: of those not
    hidden behind another surface) falls inside the other's masks (an object revisited from another side; > 1 = off).
    Default 0.5 with depth maps, 0.25 with estimated depth (stereo) or sparse depth triangulated from the matches."""
    revisit_min_masks: Optional[int] = None
    """Only communities of at least this many masks take part in revisit joining. Default: every community below
    1,000 frames (a 30-frame SIFT room lost PQ 0.2+ -> 0.13 with 3), max(min_size, min_frames) from 1,000 (the
    checks grow with the square of the communities, most of them 1-2 mask fragments: bench1000 PQ +0.01-0.035)."""
    absorb_vote: float = 0.3
    """Small communities and unlabelled masks join a larger community holding this fraction of their correspondences
    in the other views (1 = off)."""
    absorb_cover: Optional[float] = None
    """Absorbing also needs the larger community's frames to hold this fraction of all the smaller one's
    correspondences (evidence, not a vote of a few frame pairs). Default 0.5 with estimated depth, 0 with depth maps."""
    min_detection_rate: float = 0.35
    """Drop communities found in fewer than this fraction of the sampled frames that see their 3D points (in view,
    not occluded; ``support.py``): persistent frontend errors along a dense capture pass any frame count, not this
    rate. Needs depth maps (the dataset's or stereo's); 0 = off."""
    min_size: int = 2
    """Drop communities with fewer masks."""
    min_frames: int = 3
    """Drop labels seen in fewer frames."""
    allow_empty: bool = False
    """Accept frames whose mask file holds no mask (they get an all-zero pseudolabel) instead of failing."""
    workers: int = 2
    """Threads for the per-frame and per-pair tasks; with --ray-address local, the CPUs of the local Ray cluster."""
    ray_address: Optional[str] = None
    """Run the per-frame and per-pair tasks on Ray: local (start a cluster on this machine), auto (the cluster of
    `ray start` on this machine) or ray://HOST:PORT; needs the [ray] extra. Output is byte-identical to a run
    without."""
    seed: int = 0
    """Seed of the Leiden optimiser; outputs are byte-identical for the same seed and inputs."""
    cache: bool = True
    """Reuse cached pairs / matches under OUTPUT/.cache when parameters and inputs are unchanged."""
    quiet: bool = False
    """No progress bars and no summary."""


def _log(cfg: MapConfig, msg: str) -> None:
    if not cfg.quiet:
        say(msg, err=True)


def _progress(items, cfg: MapConfig, desc: str, total: Optional[int] = None):
    return track(items, desc, total, quiet=cfg.quiet)


def load_frames(cfg: MapConfig, mask_dir: Path):
    """Dataset, selected frames, use of depth maps, and one :class:`FrameSpec` per frame (paths, pose); InputError
    on missing/extra mask files. Mask contents are checked by the per-frame stage (:func:`summarize_frames`)."""
    check_depth_listing(cfg.data / "transforms.json")  # the rule of ns-train: depth for every frame or for none
    ds = load_dataset(cfg.data)
    ds = downscaled(ds, training_downscale(ds, cfg.downscale))  # the images (and sizes) nerfstudio trains on
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
    specs = []
    for k, fr in enumerate(frames):
        path = find_mask_file(mask_dir, fr.stem)
        if path is None:
            fail(f"frame '{fr.stem}' has no mask file", mask_dir / f"{fr.stem}.png",
                 "run instance-segment for every frame, or pass --split / --masks")
        specs.append(make_spec(k, fr, path, use_depth, cfg.max_size, cfg.depth_unit_scale_factor))
    return ds, frames, specs


def summarize_frames(cfg: MapConfig, specs: List[FrameSpec], engine):
    """Per-frame stage: every mask file read once (on the engine), kept as mask counts, areas and touching pairs."""
    n_masks, areas, touching = [], [], set()
    results = engine.map(frame_summary, ((s, cfg.allow_empty) for s in specs), chunk=16, processes=True)
    offset = 0
    for s, r in zip(specs, _progress(results, cfg, "masks", len(specs))):
        n_masks.append(r["n_masks"])
        areas.append(r["area"])
        touching.update(map(tuple, (r["touching"] + offset).tolist()))
        offset += r["n_masks"]
    offsets = np.concatenate([[0], np.cumsum(n_masks)]).astype(np.int64)
    specs = [replace(s, n_masks=n, offset=int(o)) for s, n, o in zip(specs, n_masks, offsets[:-1])]
    return specs, offsets, np.concatenate(areas) if areas else np.zeros(0), touching


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

    engine = make_engine(cfg.ray_address, cfg.workers)
    try:
        return _run(cfg, engine, mask_dir, output, t_start, timings, memory_mb)
    finally:
        engine.close()


def _run(cfg: MapConfig, engine, mask_dir: Path, output: Path, t_start: float, timings: Dict[str, float],
         memory_mb: Dict[str, float]) -> Dict:
    t = time.perf_counter()
    ds, frames, specs = load_frames(cfg, mask_dir)
    specs, offsets, area, touching = summarize_frames(cfg, specs, engine)
    n_masks = [s.n_masks for s in specs]
    timings["load"] = time.perf_counter() - t
    memory_mb["load"] = stage_end_mb()
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
    if matcher_name == "depth" and specs[0].depth_path is None:
        specs = [replace(s, depth_path=fr.depth_path) for s, fr in zip(specs, frames)]

    dense_depth = all(s.depth_path is not None for s in specs)  # else depth triangulated from the matches
    cache = StageCache(output if cfg.cache else None)
    stems = [s.stem for s in specs]
    inputs = file_fingerprint([cfg.data / "transforms.json"] + [s.mask_path for s in specs] +
                              [f.depth_path for f in frames]) + [["depth unit", cfg.depth_unit_scale_factor]]
    image_inputs = file_fingerprint([s.image_path for s in specs]) \
        if matcher_name in ("stereo", "flow", "sift", "loftr") else []
    if matcher_name == "stereo":
        t = time.perf_counter()
        stereo_specs = stereo_stage(specs, inputs + image_inputs, output, cfg.stereo_neighbours, cfg.stereo_min_agree,
                                    cfg.split, cfg.workers)
        dense_depth = False
        timings["stereo"] = time.perf_counter() - t
        memory_mb["stereo"] = stage_end_mb()

    t = time.perf_counter()
    pair_params = {k: getattr(cfg, k) for k in ("pairs", "top_k", "min_pair_overlap", "window", "split")}
    pair_params["grids"] = [[s.K, s.height, s.width, s.image_path.parent.name] for s in specs]  # working grids
    planes = stereo_planes(stereo_specs, specs) if matcher_name == "stereo" else None  # the pair stage's planes
    pair_params.update({} if planes is None else {"planes": np.round(planes, 4).tolist()})
    pkey = cache_key("pairs", {**pair_params, "stems": stems}, inputs)
    cached = cache.load("pairs", pkey)
    pairs = cached["pairs"] if cached is not None else choose_pairs(
        cfg.pairs, specs, engine, cfg.min_pair_overlap, cfg.top_k, cfg.window, cfg.netvlad_weights, planes)
    if cached is None:
        cache.save("pairs", pkey, pairs=pairs)
    timings["pairs"] = time.perf_counter() - t
    memory_mb["pairs"] = stage_end_mb()
    if matcher_name == "stereo":  # given to the frames after the pairs: holes would hide overlapping frames
        specs = stereo_specs
    if len(pairs) == 0:
        fail(f"no two of the {len(specs)} frames overlap (pairs: {cfg.pairs})", cfg.data / "transforms.json",
             "check the poses, lower --min-pair-overlap, or use --pairs exhaustive")

    t = time.perf_counter()
    frame_of = np.repeat(np.arange(len(specs)), n_masks)
    mkey = cache_key("matches", {"matcher": matcher_name, "pairs": pkey, "weights": str(cfg.weights)},
                     inputs + image_inputs)
    if matcher_name == "loftr" and engine.name == "local":
        engine = LocalEngine(1)  # one LoFTR model per process
    records, tri = match_stage(specs, pairs, matcher_name, cfg.weights, cache, mkey, engine,
                               progress=lambda it, n: _progress(it, cfg, f"matching ({matcher_name})", n))
    timings["matching"] = time.perf_counter() - t
    memory_mb["matching"] = stage_end_mb()

    t = time.perf_counter()
    edges, weights = mutual_best_edges(records, frame_of, cfg.min_score, cfg.min_shared)
    timings["graph"] = time.perf_counter() - t
    memory_mb["graph"] = stage_end_mb()

    t = time.perf_counter()
    step = Steps("communities", timings, memory_mb)  # each step's time and the peak so far, under communities.*
    n_nodes = int(offsets[-1])
    membership = comm.leiden(n_nodes, edges, weights, cfg.resolution, cfg.seed)
    n_communities = len(np.unique(membership))
    step("leiden")
    separable = split_exemptions(touching, frame_of, records, dense_depth)  # refined split: see its docstring
    gate = None if dense_depth else AffinityGate(  # see affinity.py
        frame_of, records.node_a, records.node_b, records.score, pairs, cfg.merge_min_score, cfg.merge_affinity)
    membership = comm.split_cannot_link(membership, frame_of, edges, weights, separable, refine=not dense_depth,
                                        gate=gate)
    n_split = len(np.unique(membership))
    step("split")
    conflicts = cfg.merge_conflicts if cfg.merge_conflicts is not None else (0.0 if dense_depth else 0.05)
    membership = comm.merge_fragments(membership, frame_of, records.node_a, records.node_b, records.score, pairs,
                                      touching, cfg.merge_min_score, cfg.merge_affinity, max_conflicts=conflicts)
    n_merged = len(np.unique(membership))
    step("merge")
    cover = cfg.absorb_cover if cfg.absorb_cover is not None else (0.0 if dense_depth else 0.5)
    if cfg.absorb_vote < 1.0:
        membership = comm.absorb_fragments(membership, frame_of, records.node_a, records.node_b, records.shared,
                                           records.total_a, records.total_b, touching, cfg.absorb_vote, cover)
    step("absorb")
    agreement = cfg.revisit_agreement if cfg.revisit_agreement is not None else (0.5 if dense_depth else 0.25)
    views_have_depth = all(s.depth_path is not None for s in specs)  # depth maps of the dataset or of stereo
    sparse = None if views_have_depth else split_by_frame(tri, len(specs))

    def frame_points(fs: List[int], source):  # streamed in frame order; processes: numpy on small masks holds the GIL
        return engine.map(mask_points, ((specs[f], source and source[f]) for f in fs), chunk=16, processes=True)

    collected, before_revisits = None, membership
    if agreement <= 1.0 and (views_have_depth or len(tri[0])):
        min_masks = cfg.revisit_min_masks if cfg.revisit_min_masks is not None else \
            (max(cfg.min_size, cfg.min_frames) if len(specs) >= 1000 else 1)
        collected = revisits.collect_points(membership, frame_of, offsets, lambda fs: frame_points(fs, sparse),
                                            min_masks)
        membership = revisits.merge_revisits(membership, frame_of, offsets, None, lambda f: cached_view(specs[f]),
                                             agreement, collected=collected,  # hidden points: views with depth
                                             occlusion_tol=depth_tolerance(matcher_name) if views_have_depth else None)
    n_revisit = len(np.unique(membership))
    step("revisits")
    membership = comm.filter_communities(membership, frame_of, cfg.min_size, cfg.min_frames)
    n_supported = None
    if cfg.min_detection_rate > 0 and views_have_depth:
        if collected is not None and sparse is None:  # the revisit stage's points, on the same depth maps
            points = support.support_points(collected[0], membership, before_revisits)
        else:
            points = support.support_points(revisits.collect_points(
                membership, frame_of, offsets, lambda fs: frame_points(fs, None), 1)[0], membership, membership)
        rates = support.detection_rates(points, membership, offsets, support.check_frames(len(specs)),
                                        lambda f: cached_view(specs[f]), depth_tol=depth_tolerance(matcher_name))
        membership = support.drop_unsupported(membership, rates, cfg.min_detection_rate)
        n_supported = len(np.unique(membership[membership >= 0]))
    step("support")
    timings["communities"] = time.perf_counter() - t
    memory_mb["communities"] = stage_end_mb()

    t = time.perf_counter()
    node_label, stats = order_labels(membership, frame_of, area)
    if len(stats) > MAX_LABELS:
        fail(f"{len(stats)} labels do not fit uint16 pseudolabels", mask_dir,
             f"raise --min-frames/--min-size so that at most {MAX_LABELS} labels remain")
    output.mkdir(parents=True, exist_ok=True)
    stale = set(previous_frames(output))
    # labels.json is written last and marks a complete output: remove the old one before any PNG changes, so an
    # interrupted run never leaves a labels.json beside a mix of old and new PNGs.
    (output / LABELS_JSON).unlink(missing_ok=True)
    # on this machine's threads even with a Ray cluster: the output folder is this machine's
    writer = engine if engine.name == "local" else LocalEngine(cfg.workers)
    written = writer.map(write_labels, ((spec, node_label[offsets[k]:offsets[k + 1]], output)
                                        for k, spec in enumerate(specs)), chunk=16, processes=True)
    for _ in _progress(written, cfg, "writing", len(specs)):
        pass
    for stem in sorted(stale - set(stems)):
        (output / f"{stem}.png").unlink(missing_ok=True)
    timings["write"] = time.perf_counter() - t
    memory_mb["write"] = stage_end_mb()
    timings["total"] = time.perf_counter() - t_start

    summary = {
        "frames": len(specs), "pairs": int(len(pairs)), "matches": int(len(records.shared)),
        "nodes": n_nodes, "edges": int(len(edges)), "communities": n_communities,
        "communities_after_split": n_split, "communities_after_merge": n_merged,
        "communities_after_revisits": n_revisit, "communities_supported": n_supported, "labels": len(stats),
    }
    peak_mb = peak_rss_mb()
    meta = write_labels_json(  # last: its presence marks a complete output
        output, len(stats), stats, stems, matcher=matcher_name, pairs=cfg.pairs, summary=summary,
        parameters={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        timings_s={k: round(v, 3) for k, v in timings.items()}, peak_rss_mb=memory_mb)
    _log(cfg, f"instance-map: {len(specs)} frames, {len(pairs)} pairs ({cfg.pairs}), matcher {matcher_note}, "
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
