"""`instance-loc`: InstanceLoc on new posed images: ids consistent with the trained 3D label map for each 2D region.

For every query image (a frame of ``--data``'s transforms.json, chosen by ``--frames`` or ``--split``): take its 2D
masks (``--masks DIR``, or segment the image), sample a few pixels per region, render only those rays through the
label field, and give each region the majority label. Writes ``<output>/<stem>.png`` (uint16 ids, merge table
applied), ``<output>/color/<stem>.png`` and ``<output>/loc.json`` (per stem: segment_s, query_s, regions with votes).
With ``--denoise RENDERS`` the regions vote over already rendered label maps instead (the paper's denoising of the
training renders); no model is loaded then. With ``--images DIR`` instead of ``--data``, photos without a pose are
registered against the map first (``register_cli.py``) and the registered ones localized at their poses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Dict, Literal, Optional, Tuple

import numpy as np
import tyro

from instance_nerfacto.core.console import say
from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.files import atomic_write_json, atomic_write_png, read_label_png, write_label_png
from instance_nerfacto.core.palette import colorize
from instance_nerfacto.core.runs import RunOptions, run_depth_unit_scale
from instance_nerfacto.core.settings import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES
from instance_nerfacto.edit.edits import read_label_edits
from instance_nerfacto.edit.label_map import LabelMap
from instance_nerfacto.loc.inputs import (
    check_image_size,
    load_given_regions,
    load_query_depth,
    query_depth_paths,
    read_query_rgb,
    select_frames,
)
from instance_nerfacto.loc.register_features import RegisterParams
from instance_nerfacto.loc.voting import VoteParams, paint_regions, region_records, vote_on_label_map

LOC_SPLIT_FRACTION = 0.25
"""instance-loc's --split-fraction: a mask covering two objects is split (voting's own default leaves it whole)."""
LOC_FILL_STRIDE = 4
"""instance-loc's --fill-stride: pixels no mask labels take the label field's id, one ray per 4 x 4 block (the
measured reason is in VoteParams.fill_stride, which --help shows)."""


@dataclass
class LocConfig:
    """Localize the 2D regions of new posed images in a trained instance-nerfacto label map (InstanceLoc)."""

    output: Path
    """Output folder: <stem>.png (uint16 ids), color/<stem>.png, loc.json (and poses.json with --images)."""
    data: Optional[Path] = None
    """Dataset folder with transforms.json holding the query images' poses and intrinsics, or a JSON file in that
    format (fl_x, fl_y, cx, cy, w, h and a camera-to-world transform_matrix per frame, in the training data's world
    frame; file paths relative to the JSON's folder)."""
    images: Optional[Path] = None
    """Folder of photos without poses (png/jpg), instead of --data: each is registered against the map (SIFT
    matches with the training images, or LoFTR's with --register.matcher loftr, lifted to 3D, PnP), then localized at
    that pose. Registered poses go to
    <output>/poses.json (reusable as --data); a photo that cannot be registered gets no ids."""
    intrinsics: Optional[Tuple[float, float, float, float]] = None
    """--images: the photos' camera as FX FY CX CY (pixels); default the training camera's. A photo of another size
    than the training images without it is taken with a pinhole of its EXIF focal length (35 mm equivalent, or focal
    length times focal plane resolution), and refused when it has none."""
    register: RegisterParams = field(default_factory=RegisterParams)
    """--images: retrieval, matching, PnP and acceptance parameters of registration."""
    lift: Literal["auto", "depth", "rendered"] = "auto"
    """--images: what lifts the training images' keypoints to 3D: their depth maps ('depth'; 'auto' when the map has
    them) or the trained density's surface through the baked grid ('rendered'; 'auto' otherwise)."""
    run: Annotated[RunOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=RunOptions)
    """The training run (--load-config, required unless --denoise is given), its checkpoint, merge table (applied
    to the votes) and torch threads."""
    frames: Optional[str] = None
    """Glob choosing the query images, relative to --data (e.g. 'images/val_*.png') or matched against stems."""
    split: Optional[Literal["train", "val", "all"]] = None
    """Split of the poses to localize when --frames is not given (default: 'val' when the JSON lists val or test
    files, else every frame, as in a pose file of new images)."""
    masks: Optional[Path] = None
    """Folder of given 2D masks (<stem>.png label image or <stem>.npz stack); otherwise the image is segmented."""
    segmenter: Literal["felzenszwalb", "fastsam"] = "felzenszwalb"
    """Segmenter used when --masks is not given (fastsam needs --weights)."""
    weights: Optional[Path] = None
    """Local FastSAM weights file (FastSAM-s.pt / FastSAM-x.pt)."""
    vote: Annotated[VoteParams, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: VoteParams(split_fraction=LOC_SPLIT_FRACTION, fill_stride=LOC_FILL_STRIDE))
    """How the regions vote: samples per region, the winner's minimum support, splitting and filling."""
    renderer: Literal["surface", "volume"] = "surface"
    """How the sampled rays are rendered: 'surface' marches a baked density grid (cached beside the checkpoint) and
    composites the label field at the heaviest samples (fast, and the same ids instance-render gives those pixels);
    'volume' is nerfstudio's full volume rendering of those rays."""
    grid_resolution: int = DEFAULT_GRID_RESOLUTION
    """Resolution of the baked density grid of the 'surface' renderer (shared cache with instance-render)."""
    num_samples: int = DEFAULT_NUM_SAMPLES
    """Samples per ray through the baked grid ('surface' renderer; instance-render's default)."""
    query_depth: Literal["auto", "on", "off"] = "auto"
    """Read the label field where each sampled ray meets the query frame's measured depth (depth_file_path of
    transforms.json, e.g. from an RGB-D camera) instead of the surface rendered from the learned density, which is the
    weak part of the map from new viewpoints. 'auto': for every query frame that lists a depth map, and for the
    others at the map's depth (--map-depth); 'on': every query frame must list one; 'off': always the rendered surface
    (--renderer). Pixels without a reading (0) use the rendered surface."""
    map_depth: bool = True
    """With --query-depth auto, a query frame without a depth map is read at the depth of the training frames' depth
    maps (when the map was trained on RGB-D data) splatted into its view: measured surfaces instead of the rendered
    one."""
    map_stereo_depth: bool = False
    """With --map-depth, a map trained without depth maps takes its map depth from the depth instance-map estimated
    for its training frames (the stereo stage's cache beside the pseudolabels), when that cache is there. Off by
    default: on the demo room (seed 5, colour-only field) the dense read at the stereo map depth scored things PQ
    0.38 against 0.69 for a plain render (0.80 at the true depth): stereo depth is ~5 cm off, and a field trained on
    colour holds its labels only at its own surface."""
    map_depth_stride: int = 4
    """Every stride-th pixel of each training depth map becomes a point of the splatted map depth."""
    mode: Literal["auto", "regions", "dense"] = "auto"
    """'regions': the paper's InstanceLoc, a few rays per 2D mask and a majority vote per mask. 'dense': every pixel
    reads the label field (a coarse grid plus full-resolution rays along label boundaries) and the masks relabel only
    pixels where the field is unsure (--min-confidence). 'auto' (the default): dense at the frame's own depth or the
    map's depth; at the rendered surface dense (sparser: --surface-strides) for a map trained without depth maps and
    regions for a depth-supervised one (demo room: 0.649 dense vs 0.691 regions there; a colour-only map: 0.544 vs
    0.470, and 0.688 vs 0.629 on seed 5); regions with --renderer volume.
    Measured on the novel views of three rendered rooms (things PQ, mean): dense at the frames' own depth 0.83, at the
    map's depth 0.79, regions 0.68, a plain render 0.73; without any depth a dense read through the rendered surface
    scores 0.74 at stride 2 (~25k marched rays, 0.4-0.6 s per 320x240 image; see --surface-strides)."""
    dense_stride: int = 2
    """'dense' mode at a measured or map depth: one ray per stride x stride block away from label boundaries."""
    surface_strides: Tuple[int, ...] = (8, 4, 2)
    """'dense' mode through the rendered surface (frames read at no depth): one ray per 8x8 block, then blocks along
    label boundaries split level by level (4x4, then 2x2 where a label still changes). Each stride a multiple of the
    next. Demo room, colour-only fields, 20 posed held-out photos each, things PQ seed 5 / seed 7 (plain instance-render
    0.691 / 0.737): (8, 4) 0.688 / 0.730 with 2,700 rays an image, (8, 4, 2) 0.699 / 0.773 with 6,400, (4, 2) 0.701 /
    0.774 with 8,600, (2, 1) 0.706 / 0.782 with 28,000."""
    min_confidence: float = 0.7
    """'dense' mode: pixels whose field label has a lower softmax confidence take their mask's majority label."""
    depth_unit_scale_factor: Optional[float] = None
    """Metres per unit of the query depth maps (default: the run's, as ns-train read its dataset's depth maps: 1e-3,
    millimetre PNGs, unless --pipeline.datamanager.dataparser.depth-unit-scale-factor said otherwise)."""
    denoise: Optional[Path] = None
    """Folder of rendered label maps (<stem>.png, e.g. from instance-render): vote over them instead of rendering."""
    edits: Optional[Path] = None
    """Hand-edit file ('A B' per line: label A becomes label B; 'split ...', 'name ...' lines as the viewer saves
    them, see instance_nerfacto/edit/edits.py) applied on top of the run's merge table and edits."""
    seed: int = 0
    """Seed of the pixel sampling."""


def check_weights(cfg: LocConfig) -> None:
    if cfg.masks is None and cfg.segmenter == "fastsam":
        if cfg.weights is None:
            fail("--segmenter fastsam needs a local weights file", None,
                 "pass --weights FastSAM-s.pt, or --segmenter felzenszwalb, or --masks DIR")
        if not cfg.weights.is_file():
            fail("weights file does not exist", cfg.weights, "pass --weights a local FastSAM .pt file")


def segment_query(cfg: LocConfig, frame) -> np.ndarray:
    """Segment a query image with instance-segment's segmenters, so instance-loc sees the masks it would write."""
    from instance_nerfacto.core.segmenters import segment_regions

    regions = segment_regions(read_query_rgb(frame), cfg.segmenter, cfg.weights)
    if cfg.segmenter == "fastsam" and not regions.any():
        fail(f"the segmenter found no masks in query image '{frame.stem}'", frame.image_path,
             "check the image, or give masks with --masks DIR")
    return regions


def main(cfg: LocConfig) -> Dict:
    if cfg.images is not None:
        from instance_nerfacto.loc.register_cli import register_images

        posed, run, registrations = register_images(cfg)
        return localize(posed, run, registrations)
    if cfg.data is None:
        fail("no query images given", None, "pass --data (posed images: transforms.json or a pose file) or --images "
                                            "DIR (photos without poses)")
    return localize(cfg)


def localize(cfg: LocConfig, run=None, registrations: Optional[Dict[str, Dict]] = None) -> Dict:
    """InstanceLoc of the posed frames of ``cfg.data``; ``run`` when already loaded; ``registrations`` (per photo
    stem) go into loc.json beside the registered photos' records, and the refused photos' records are added."""
    if cfg.denoise is None and cfg.run.load_config is None:
        fail("no model given", None, "pass --load-config outputs/.../config.yml (or --denoise RENDERS)")
    if cfg.run.load_config is not None:
        cfg.run.require_config()
    if cfg.masks is not None and not cfg.masks.is_dir():
        fail("mask folder does not exist", cfg.masks, "pass --masks the folder with <stem>.png / <stem>.npz masks")
    if cfg.denoise is not None and not cfg.denoise.is_dir():
        fail("render folder does not exist", cfg.denoise, "pass --denoise the output folder of instance-render")
    check_weights(cfg)
    if cfg.dense_stride < 1:
        fail("--dense-stride must be at least 1", None, "pass e.g. --dense-stride 2")
    strides = list(cfg.surface_strides)
    if not strides or min(strides) < 1 or any(a % b for a, b in zip(strides, strides[1:])):
        fail(f"--surface-strides {' '.join(map(str, strides))}: each stride must be >= 1 and a multiple of the next",
             None, "pass e.g. --surface-strides 8 4 2")
    if cfg.map_depth_stride < 1:
        fail("--map-depth-stride must be at least 1", None, "pass e.g. --map-depth-stride 4")
    if cfg.vote.samples_per_region < 1:
        fail("--samples-per-region must be at least 1", None, "pass e.g. --samples-per-region 12")
    dataset = load_dataset(cfg.data, check_files=False)
    frames = select_frames(dataset, cfg.frames, cfg.split)
    regions_by_stem: Dict[str, np.ndarray] = {}
    segment_s: Dict[str, float] = {}
    for frame in frames:  # validate every input before the slow model load, so errors come at once
        check_image_size(frame)
        if cfg.masks is not None:
            start = time.perf_counter()
            regions_by_stem[frame.stem] = load_given_regions(cfg.masks, frame)
            segment_s[frame.stem] = time.perf_counter() - start
        elif not frame.image_path.is_file():
            fail(f"image of query frame '{frame.stem}' is missing", frame.image_path, "restore it or pass --masks DIR")
    depth_by_stem: Dict[str, np.ndarray] = {}
    map_source = ""  # what the map's depth of frames without a depth map comes from ('' = none)
    if cfg.denoise is None:
        frame_of = {frame.stem: frame for frame in frames}
        depth_paths = query_depth_paths(cfg.query_depth, frames, dataset.transforms_path)
        unit = cfg.depth_unit_scale_factor
        if unit is None and depth_paths:
            unit = run_depth_unit_scale(cfg.run.load_config)  # the query frames' depth is in the map's unit
        for stem, path in depth_paths.items():
            depth_by_stem[stem] = load_query_depth(path, frame_of[stem], unit)
    params = cfg.vote
    edits = read_label_edits(cfg.edits) if cfg.edits is not None else []
    table = LabelMap().with_edits(edits)  # --denoise: the rendered labels carry the run's merges already
    if cfg.denoise is None:
        from instance_nerfacto.loc.query import ModelQuery
        from instance_nerfacto.render.run import load_run

        run = run if run is not None else load_run(cfg.run.load_config, cfg.run.load_step)
        if cfg.run.merge:
            table = run.label_map().with_edits(edits)
        model = run.model
        device = next(model.parameters()).device
        cfg.run.set_threads()
        renderer = None
        if cfg.renderer == "surface":
            from instance_nerfacto.loc.surface import SurfaceQuery

            renderer = SurfaceQuery(model, run.checkpoint, run.step, cfg.grid_resolution, cfg.num_samples)
        map_points = None
        if cfg.query_depth == "auto" and cfg.map_depth and any(f.stem not in depth_by_stem for f in frames):
            from instance_nerfacto.loc.map_depth import training_depth_points

            map_points, map_source = training_depth_points(run.pipeline, cfg.map_depth_stride, cfg.map_stereo_depth)
        map_has_depth = bool(run.pipeline.datamanager.train_dataparser_outputs.metadata.get("depth_filenames"))
        query = ModelQuery(model, run.to_model, device, renderer, depth_by_stem, cfg.mode, cfg.dense_stride,
                           cfg.min_confidence, map_points, not map_has_depth, tuple(cfg.surface_strides))
        sources = [query.depth_source(f) for f in frames]
        say(f"instance-loc: the label field is read at the measured depth of {sources.count('measured')} query "
            f"frames, at the map's depth (training {map_source or 'depth maps'} splatted) of "
            f"{sources.count('map')}, at the rendered surface of {sources.count('rendered')} (--query-depth "
            f"{cfg.query_depth}, --renderer {cfg.renderer})")
        # one throw-away query of the first frame, in the mode its real query takes: the first pass through each code
        # path pays one-off allocation/dispatch costs that would otherwise land on the first image's query_s
        halves = np.ones((frames[0].height, frames[0].width), dtype=np.int32)
        halves[:, frames[0].width // 2:] = 2
        query(frames[0], halves, params, np.random.default_rng(0), table)
    rng = np.random.default_rng(cfg.seed)
    report: Dict[str, Dict] = {}
    for frame in frames:
        if frame.stem not in regions_by_stem:
            start = time.perf_counter()
            regions_by_stem[frame.stem] = segment_query(cfg, frame)
            segment_s[frame.stem] = time.perf_counter() - start
        region_map = regions_by_stem[frame.stem]
        start = time.perf_counter()
        if cfg.denoise is None:
            result = query(frame, region_map, params, rng, table)
        else:
            render_path = cfg.denoise / f"{frame.stem}.png"
            rendered = table.apply(read_label_png(render_path))
            if rendered.shape != region_map.shape:
                fail(f"rendered labels are {rendered.shape[1]}x{rendered.shape[0]}, masks "
                     f"{region_map.shape[1]}x{region_map.shape[0]}", render_path, "render at the images' resolution")
            ids, labels, support = vote_on_label_map(region_map, rendered, params)
            result = {"region_ids": ids, "labels": labels, "support": support, "votes": None}
        ids_image = result.get("image")
        if ids_image is None:
            ids_image = paint_regions(region_map, result["region_ids"], result["labels"])
        query_s = time.perf_counter() - start
        write_label_png(cfg.output / f"{frame.stem}.png", ids_image)
        atomic_write_png(cfg.output / "color" / f"{frame.stem}.png", colorize(ids_image))
        report[frame.stem] = {"segment_s": round(segment_s[frame.stem], 4), "query_s": round(query_s, 4),
                              "mode": "dense" if "rays" in result else "regions",
                              "depth": query.depth_source(frame) if cfg.denoise is None else None,
                              "map_depth": map_source or None,
                              "regions": region_records(region_map, result)}
    for stem, record in (registrations or {}).items():
        report.setdefault(stem, {})["registration"] = record
    atomic_write_json(cfg.output / "loc.json", report)
    q = np.array([r["query_s"] for r in report.values() if "query_s" in r])
    if len(q):
        say(f"instance-loc: {len(q)} images -> {cfg.output}; query {q.mean():.3f} s/image mean, "
            f"{np.median(q):.3f} median, {q.max():.3f} max")
    return report


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(LocConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
