"""`instance-loc`: InstanceLoc on new posed images: ids consistent with the trained 3D label map for each 2D region.

For every query image (a frame of ``--data``'s transforms.json, chosen by ``--frames`` or ``--split``): take its 2D
masks (``--masks DIR``, or segment the image), sample a few pixels per region, render only those rays through the
label field, and give each region the majority label. Writes ``<output>/<stem>.png`` (uint16 ids, merge table
applied), ``<output>/color/<stem>.png`` and ``<output>/loc.json`` (per stem: segment_s, query_s, regions with votes).
With ``--denoise RENDERS`` the regions vote over already rendered label maps instead (the paper's denoising of the
training renders); no model is loaded then.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import tyro
from jaxtyping import Float, Int, Integer

from instance_nerfacto.dataset_io import (
    Dataset,
    Frame,
    atomic_write_json,
    atomic_write_png,
    find_mask_file,
    load_dataset,
    read_image_size,
    read_label_png,
    read_masks,
)
from instance_nerfacto.errors import fail, run_cli
from instance_nerfacto.fast_path import DEFAULT_GRID_RESOLUTION, DEFAULT_NUM_SAMPLES
from instance_nerfacto.loc_dense import localize_dense
from instance_nerfacto.localize import VoteParams, localize_regions, paint_regions, vote_on_label_map
from instance_nerfacto.merge_table import MergeTable, load_merge_for_run
from instance_nerfacto.palette import colorize


@dataclass
class LocConfig:
    """Localize the 2D regions of new posed images in a trained instance-nerfacto label map (InstanceLoc)."""

    data: Path
    """Dataset folder with transforms.json holding the query images' poses and intrinsics, or a JSON file in that
    format (fl_x, fl_y, cx, cy, w, h and a camera-to-world transform_matrix per frame, in the training data's world
    frame; file paths relative to the JSON's folder)."""
    output: Path
    """Output folder: <stem>.png (uint16 ids), color/<stem>.png, loc.json."""
    load_config: Optional[Path] = None
    """config.yml of the training run (required unless --denoise is given)."""
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
    samples_per_region: int = 12
    """Pixels sampled (rays rendered) per region."""
    min_votes: int = 2
    """A region needs this many samples on its winning label, or it gets 0."""
    min_fraction: float = 0.4
    """... and the winner must hold this fraction of the region's samples."""
    min_region_pixels: int = 20
    """Regions smaller than this stay 0."""
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
    map_depth_stride: int = 4
    """Every stride-th pixel of each training depth map becomes a point of the splatted map depth."""
    mode: Literal["auto", "regions", "dense"] = "auto"
    """'regions': the paper's InstanceLoc, a few rays per 2D mask and a majority vote per mask. 'dense': every pixel
    reads the label field (a coarse grid plus full-resolution rays along label boundaries) and the masks relabel only
    pixels where the field is unsure (--min-confidence). 'auto': dense for frames read at a measured depth (their own
    or the map's, see --query-depth), where the field is more precise than noisy masks, regions otherwise. Measured
    on the novel views of three rendered rooms (things PQ, mean): dense at the frames' own depth 0.83, at the map's
    depth 0.79, regions 0.68, a plain render 0.73; without any depth a dense read through the rendered surface scores
    0.74 but marches ~25k rays (0.4-0.6 s per 320x240 image)."""
    dense_stride: int = 2
    """'dense' mode: one ray per stride x stride block away from label boundaries."""
    min_confidence: float = 0.7
    """'dense' mode: pixels whose field label has a lower softmax confidence take their mask's majority label."""
    depth_unit_scale_factor: float = 1e-3
    """Metres per unit of the depth maps (nerfstudio's default: millimetre PNGs)."""
    split_fraction: float = 0.25
    """Split a region whose samples hold two labels with at least this fraction each (a mask covering two objects):
    each pixel takes the label of its nearest sample. 0 = off."""
    fill_stride: int = 4
    """'regions' mode: pixels no mask labels (no mask there, or a too-weak vote) take the label field's id, one ray
    per stride x stride block (1 = every such pixel); 0 = off, they stay 0. Stride 4 keeps every image under 0.14 s
    where masks leave large areas uncovered (stride 2 took up to 0.6 s on such images, for +0.01 PQ on average)."""
    denoise: Optional[Path] = None
    """Folder of rendered label maps (<stem>.png, e.g. from instance-render): vote over them instead of rendering."""
    merge: bool = True
    """Apply the run's merge table (merge_table.json beside config.yml) to the votes."""
    edits: Optional[Path] = None
    """Hand-edit file ('A B' per line: label A becomes label B) applied on top of the merge table."""
    seed: int = 0
    """Seed of the pixel sampling."""
    threads: int = 1
    """torch threads for the query: a few hundred rays are too little work to share, and on a busy machine extra
    threads only wait on each other (measured: 1 thread ~7x faster than 2 on a loaded 2-core machine)."""


# ---------------------------------------------------------------------------------------------------------------
# inputs


def select_frames(dataset: Dataset, pattern: Optional[str], split: Optional[str]) -> List[Frame]:
    """Query frames: every image matched by ``pattern`` must have a pose in transforms.json. Without a pattern or a
    split: the val frames when the poses list any, else all of them."""
    if pattern is None and split is None:
        split = "val" if any(dataset.meta.get(k) for k in ("val_filenames", "test_filenames")) else "all"
    if pattern is None:
        frames = dataset.split(split)
        if not frames:
            fail(f"transforms.json has no '{split}' frames", dataset.transforms_path,
                 "pass --split all, or choose images with --frames GLOB")
        return frames
    by_stem = dataset.by_stem()
    files = sorted(p for p in dataset.root.glob(pattern) if p.is_file()) if "/" in pattern else []
    if not files and "/" not in pattern:
        folders = {f.image_path.parent for f in dataset.frames}
        files = sorted(p for d in folders for p in d.glob(pattern) if p.is_file())
    if files:
        for p in files:
            if p.stem not in by_stem:
                fail(f"query image '{p.name}' has no pose in transforms.json", p,
                     "add the frame (transform_matrix + intrinsics) to transforms.json or leave it out of --frames")
        return [by_stem[p.stem] for p in files]
    frames = [f for f in dataset.frames if fnmatch.fnmatch(f.stem, pattern) or fnmatch.fnmatch(f.image_path.name,
                                                                                                  pattern)]
    if not frames:
        fail(f"no query image matches --frames '{pattern}'", dataset.root,
             "give a glob relative to --data (e.g. 'images/val_*.png') or of image stems")
    return frames


def masks_to_regions(masks: np.ndarray) -> Int[np.ndarray, "H W"]:
    """Region map from a (possibly overlapping) mask stack: large masks drawn first so small ones stay on top."""
    order = np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable")
    regions = np.zeros(masks.shape[1:], dtype=np.int32)
    for i in order:
        regions[masks[i]] = i + 1
    return regions


def load_given_regions(mask_dir: Path, frame: Frame) -> Int[np.ndarray, "H W"]:
    path = find_mask_file(mask_dir, frame.stem)
    if path is None:
        fail(f"no masks for query image '{frame.stem}'", mask_dir / f"{frame.stem}.png",
             "write <stem>.png or <stem>.npz into --masks for every query image, or segment with --segmenter")
    masks, _ = read_masks(path)
    if masks.shape[1:] != (frame.height, frame.width):
        fail(f"masks are {masks.shape[2]}x{masks.shape[1]} but the image is {frame.width}x{frame.height}", path,
             "give masks at the image's resolution")
    if len(masks) == 0:
        fail(f"query image '{frame.stem}' has no masks (empty mask file)", path,
             "give at least one mask per query image, or leave the image out")
    return masks_to_regions(masks)


def check_image_size(frame: Frame) -> None:
    if frame.image_path.is_file():
        h, w = read_image_size(frame.image_path)
        if (h, w) != (frame.height, frame.width):
            fail(f"image is {w}x{h} but transforms.json says {frame.width}x{frame.height}", frame.image_path,
                 "fix w/h (and intrinsics) in transforms.json or resize the image")


def check_weights(cfg: LocConfig) -> None:
    if cfg.masks is None and cfg.segmenter == "fastsam":
        if cfg.weights is None:
            fail("--segmenter fastsam needs a local weights file", None,
                 "pass --weights FastSAM-s.pt, or --segmenter felzenszwalb, or --masks DIR")
        if not cfg.weights.is_file():
            fail("weights file does not exist", cfg.weights, "pass --weights a local FastSAM .pt file")


_SEGMENTERS: Dict[str, object] = {}


def segment_regions(cfg: LocConfig, frame: Frame) -> Int[np.ndarray, "H W"]:
    """Segment the query image with instance-segment's segmenters (weight-free felzenszwalb, or FastSAM from a
    local weights file), so instance-loc sees the same masks instance-segment would write."""
    if not frame.image_path.is_file():
        fail(f"image of query frame '{frame.stem}' is missing", frame.image_path, "restore it or pass --masks DIR")
    if cfg.segmenter == "fastsam":
        from data_preprocess.segment import FastSAMSegmenter

        segmenter = _SEGMENTERS.get("fastsam") or _SEGMENTERS.setdefault("fastsam", FastSAMSegmenter(cfg.weights))
        masks, _ = segmenter(frame.image_path, frame.height, frame.width, 0.0005)
        if len(masks) == 0:
            fail(f"the segmenter found no masks in query image '{frame.stem}'", frame.image_path,
                 "check the image, or give masks with --masks DIR")
        return masks_to_regions(masks)
    import cv2

    from data_preprocess.segment import felzenszwalb_labels

    image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
    if image is None:
        fail("cannot decode image", frame.image_path, "replace the corrupt file")
    return felzenszwalb_labels(image[..., ::-1].copy()).astype(np.int32)


def query_depth_paths(cfg: LocConfig, frames: List[Frame], poses: Optional[Path]) -> Dict[str, Path]:
    """Depth map of every query frame that is to be read at its measured depth (see ``--query-depth``)."""
    if cfg.query_depth == "off":
        return {}
    paths: Dict[str, Path] = {}
    for frame in frames:
        if frame.depth_path is None:
            if cfg.query_depth == "on":
                fail(f"query frame '{frame.stem}' lists no depth map", poses,
                     "add depth_file_path to the frame, or pass --query-depth auto / off")
            continue
        if not frame.depth_path.is_file():
            fail(f"depth map of query frame '{frame.stem}' is missing", frame.depth_path,
                 "restore the file, remove the frame's depth_file_path, or pass --query-depth off")
        paths[frame.stem] = frame.depth_path
    return paths


def load_query_depth(path: Path, frame: Frame, unit_scale: float) -> Float[np.ndarray, "H W"]:
    """Depth in metres (0 = no reading) of a query frame: a 16-bit PNG or a .npy array, as nerfstudio reads them."""
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path).astype(np.float32)
        except (OSError, ValueError) as err:
            fail(f"cannot read depth map ({err.__class__.__name__})", path, "replace the corrupt file")
        depth = depth[..., 0] if depth.ndim == 3 else depth
    else:
        depth = read_label_png(path).astype(np.float32)
    if depth.shape != (frame.height, frame.width):
        fail(f"depth map is {depth.shape[-1]}x{depth.shape[0]} but the image is {frame.width}x{frame.height}", path,
             "give depth maps at the image's resolution, or pass --query-depth off")
    return np.where(np.isfinite(depth) & (depth > 0), depth * unit_scale, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# model side


def frame_camera(frame: Frame, transform: Float[np.ndarray, "3 4"], scale: float, device):
    """A one-camera nerfstudio ``Cameras`` for a dataset frame, in the trained model's normalised world."""
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType

    c2w = np.asarray(frame.c2w, dtype=np.float64)
    t4 = np.vstack([transform, [0, 0, 0, 1]])
    c2w_ns = t4 @ c2w
    c2w_ns[:3, 3] *= scale
    return Cameras(
        camera_to_worlds=torch.from_numpy(c2w_ns[None, :3, :4].astype(np.float32)),
        fx=float(frame.fx), fy=float(frame.fy), cx=float(frame.cx), cy=float(frame.cy),
        width=int(frame.width), height=int(frame.height), camera_type=CameraType.PERSPECTIVE,
    ).to(device)


def load_trained_pipeline(config_path: Path):
    """(pipeline, dataparser transform 3x4, dataparser scale, checkpoint path, step) of a training run."""
    from instance_nerfacto.render import load_pipeline  # the shared loader (checkpoint checks, torch.load fix)

    pipeline, checkpoint, step = load_pipeline(Path(config_path))
    if hasattr(pipeline.model, "merge_table"):
        pipeline.model.merge_table = None  # raw ids: callers apply the merge table themselves, exactly once
    outputs = pipeline.datamanager.train_dataparser_outputs
    return (pipeline, outputs.dataparser_transform.cpu().numpy(), float(outputs.dataparser_scale), checkpoint,
            step)


# ---------------------------------------------------------------------------------------------------------------


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


@dataclass
class ModelQuery:
    """InstanceLoc of one frame through a loaded model: mask voting, or a dense read at the frame's measured depth."""

    model: object
    transform: Float[np.ndarray, "3 4"]
    scale: float
    device: object
    renderer: Optional[object]
    """Ray renderer of frames without a depth map (``SurfaceQuery``), or None for full volume rendering."""
    depth_by_stem: Dict[str, np.ndarray]
    """Measured depth (metres) of the frames read at their depth."""
    cfg: LocConfig
    map_points: Optional[np.ndarray] = None
    """Points of the training depth maps (model units), splatted into frames without a depth map."""

    def depth_source(self, frame: Frame) -> str:
        """'measured' (the frame's depth map), 'map' (the training depth maps splatted) or 'rendered'."""
        if frame.stem in self.depth_by_stem:
            return "measured"
        return "map" if self.map_points is not None else "rendered"

    def __call__(self, frame: Frame, region_map: np.ndarray, params: VoteParams, rng: np.random.Generator,
                 merge_table: Optional[Dict[int, int]]) -> Dict:
        from instance_nerfacto.loc_surface import DepthQuery, ray_distance_map

        cfg, model = self.cfg, self.model
        camera = frame_camera(frame, self.transform, self.scale, self.device)
        source = self.depth_source(frame)

        def volume(bundle, coords):
            return model(bundle)

        renderer = self.renderer
        if source == "measured":
            distance = ray_distance_map(self.depth_by_stem[frame.stem], frame.fx, frame.fy, frame.cx, frame.cy,
                                        self.scale)
        elif source == "map":
            from instance_nerfacto.loc_map_depth import fill_small_holes, splat_depth

            c2w = camera.camera_to_worlds[0].cpu().numpy()
            depth = fill_small_holes(splat_depth(self.map_points, c2w, frame.fx, frame.fy, frame.cx, frame.cy,
                                                 frame.height, frame.width))
            distance = ray_distance_map(depth, frame.fx, frame.fy, frame.cx, frame.cy, 1.0)  # already model units
        if source != "rendered":
            renderer = DepthQuery(model.field, distance, renderer or volume)
        if cfg.mode == "dense" or (cfg.mode == "auto" and source != "rendered"):
            return localize_dense(model, camera, region_map, renderer or volume, cfg.dense_stride, cfg.min_confidence,
                                  merge_table)
        return localize_regions(model, camera, region_map, params, rng, merge_table, renderer)


def main(cfg: LocConfig) -> Dict:
    if cfg.denoise is None and cfg.load_config is None:
        fail("no model given", None, "pass --load-config outputs/.../config.yml (or --denoise RENDERS)")
    if cfg.load_config is not None and not cfg.load_config.is_file():
        fail("training config not found", cfg.load_config, "pass the config.yml written by ns-train")
    if cfg.masks is not None and not cfg.masks.is_dir():
        fail("mask folder does not exist", cfg.masks, "pass --masks the folder with <stem>.png / <stem>.npz masks")
    if cfg.denoise is not None and not cfg.denoise.is_dir():
        fail("render folder does not exist", cfg.denoise, "pass --denoise the output folder of instance-render")
    check_weights(cfg)
    if cfg.dense_stride < 1:
        fail("--dense-stride must be at least 1", None, "pass e.g. --dense-stride 2")
    if cfg.map_depth_stride < 1:
        fail("--map-depth-stride must be at least 1", None, "pass e.g. --map-depth-stride 4")
    if cfg.samples_per_region < 1:
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
    if cfg.denoise is None:
        frame_of = {frame.stem: frame for frame in frames}
        for stem, path in query_depth_paths(cfg, frames, dataset.transforms_path).items():
            depth_by_stem[stem] = load_query_depth(path, frame_of[stem], cfg.depth_unit_scale_factor)
    params = VoteParams(cfg.samples_per_region, cfg.min_votes, cfg.min_fraction, cfg.min_region_pixels,
                        cfg.split_fraction, cfg.fill_stride)
    table = MergeTable()
    pipeline = None
    if cfg.load_config is not None and cfg.merge:
        table = load_merge_for_run(cfg.load_config.parent, cfg.edits)
    if cfg.denoise is None:
        pipeline, transform, scale, checkpoint, step = load_trained_pipeline(cfg.load_config)
        model = pipeline.model
        model.eval()
        device = next(model.parameters()).device
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(cfg.threads)
        renderer = None
        if cfg.renderer == "surface":
            from instance_nerfacto.loc_surface import SurfaceQuery

            renderer = SurfaceQuery(model, checkpoint, step, cfg.grid_resolution, cfg.num_samples)
        map_points = None
        if cfg.query_depth == "auto" and cfg.map_depth and any(f.stem not in depth_by_stem for f in frames):
            from instance_nerfacto.loc_map_depth import training_depth_points

            map_points = training_depth_points(pipeline, cfg.map_depth_stride)
        query = ModelQuery(model, transform, scale, device, renderer, depth_by_stem, cfg, map_points)
        sources = [query.depth_source(f) for f in frames]
        print(f"instance-loc: the label field is read at the measured depth of {sources.count('measured')} query "
              f"frames, at the map's depth (training depth maps splatted) of {sources.count('map')}, at the rendered "
              f"surface of {sources.count('rendered')} (--query-depth {cfg.query_depth}, --renderer {cfg.renderer})")
        # one throw-away query of the first frame, in the mode its real query takes: the first pass through each code
        # path pays one-off allocation/dispatch costs that would otherwise land on the first image's query_s
        halves = np.ones((frames[0].height, frames[0].width), dtype=np.int32)
        halves[:, frames[0].width // 2:] = 2
        query(frames[0], halves, params, np.random.default_rng(0), table.table)
    rng = np.random.default_rng(cfg.seed)
    report: Dict[str, Dict] = {}
    for frame in frames:
        if frame.stem not in regions_by_stem:
            start = time.perf_counter()
            regions_by_stem[frame.stem] = segment_regions(cfg, frame)
            segment_s[frame.stem] = time.perf_counter() - start
        region_map = regions_by_stem[frame.stem]
        start = time.perf_counter()
        if cfg.denoise is None:
            result = query(frame, region_map, params, rng, table.table)
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
        atomic_write_png(cfg.output / f"{frame.stem}.png", ids_image)
        atomic_write_png(cfg.output / "color" / f"{frame.stem}.png", colorize(ids_image))
        report[frame.stem] = {"segment_s": round(segment_s[frame.stem], 4), "query_s": round(query_s, 4),
                              "mode": "dense" if "rays" in result else "regions",
                              "depth": query.depth_source(frame) if cfg.denoise is None else None,
                              "regions": region_records(region_map, result)}
    atomic_write_json(cfg.output / "loc.json", report)
    if report:
        q = np.array([r["query_s"] for r in report.values()])
        print(f"instance-loc: {len(report)} images -> {cfg.output}; query {q.mean():.3f} s/image mean, "
              f"{np.median(q):.3f} median, {q.max():.3f} max")
    return report


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(LocConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
