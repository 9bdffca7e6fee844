"""Per-frame stage of InstanceMap: what one frame contributes, read from disk by whichever process needs it.

The driver never keeps every frame's masks: it keeps a :class:`FrameSpec` per frame (paths, intrinsics, pose, mask
count, node offset) and the small per-frame results of :func:`frame_summary` (mask areas, touching mask pairs).
Pair tasks, the revisit stage and the writer read owner maps and depth maps through :func:`cached_view`, a small
per-process LRU cache (frames of neighbouring pairs are read once, not once per pair), so memory does not grow with the
number of frames. Every function here is a pure function of files and arguments, so it runs the same in the driver,
in a thread or in a Ray worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from jaxtyping import Float, Int

from data_preprocess.pairs import (
    NEAREST_PER_PARTNER,
    PACKED_DEPTH_UNIT,
    PoseIndex,
    View,
    _cam_arrays,
    backproject,
    median_depths,
    overlap_rows,
    proxy_depth,
    select_sparse_pairs,
)
from data_preprocess.rasterize import frame_labels
from instance_nerfacto.core.camera import Lens, working_lens
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import DEFAULT_DEPTH_UNIT_SCALE, read_depth, read_image_size, write_label_png
from instance_nerfacto.core.masks import read_mask_owner, same_picture

VIEW_CACHE_SIZE = 160
"""Frames (owner map, depth, back-projected pixels) kept per process: ~0.3 MB each at 160x120."""


@dataclass(frozen=True)
class FrameSpec:
    """Everything a task needs to read one frame; hashable (the key of the per-process view cache)."""

    index: int
    stem: str
    K: Tuple[Tuple[float, ...], ...]
    c2w_cv: Tuple[Tuple[float, ...], ...]
    height: int
    width: int
    mask_path: Path
    image_path: Path
    depth_path: Optional[Path] = None
    """Read when the stage needs dense depth (None: no depth map used)."""
    n_masks: int = -1
    """Masks of the frame (-1 until the summary stage has counted them)."""
    offset: int = 0
    """Global node id of the frame's first mask."""
    stamp: tuple = ()
    """Size and mtime of the mask and depth files: part of the cache key, so a long-lived worker never serves a
    frame from a file that has changed since it read it."""
    lens: Optional[Lens] = None
    """A distorted or large photo: ``K``, ``height`` and ``width`` are its working pinhole grid's, onto which masks,
    depth and image are resampled when read; the pseudolabels are written on the photo's own grid (the resolution
    nerfstudio trains on). None: the photo's own grid is the working grid."""
    depth_on_photo: bool = True
    """``depth_path`` is on the photo's grid (the dataset's depth maps), not on the pinhole grid (stereo's)."""
    depth_unit: float = DEFAULT_DEPTH_UNIT_SCALE
    """Metres per stored unit of the dataset's depth maps (nerfstudio's ``depth_unit_scale_factor``)."""

    @property
    def photo_size(self) -> Tuple[int, int]:
        """(height, width) of the frame's files: image, masks, dataset depth, pseudolabels."""
        return (self.height, self.width) if self.lens is None else (self.lens.photo.height, self.lens.photo.width)


def make_spec(index: int, frame, mask_path: Path, depth: bool, max_size: int = 1 << 30,
              depth_unit: float = DEFAULT_DEPTH_UNIT_SCALE) -> FrameSpec:
    depth_path = frame.depth_path if depth else None
    stamp = tuple((st.st_size, st.st_mtime_ns) for st in (Path(p).stat() for p in (mask_path, depth_path) if p))
    lens = working_lens(frame.camera, max_size)
    K, height, width = (frame.K, frame.height, frame.width) if lens is None else \
        (lens.K, lens.pinhole.height, lens.pinhole.width)
    return FrameSpec(index, frame.stem, tuple(map(tuple, K.tolist())), tuple(map(tuple, frame.c2w_cv.tolist())),
                     height, width, mask_path, frame.image_path, depth_path, stamp=stamp, lens=lens,
                     depth_unit=depth_unit)


def read_owner(spec: FrameSpec, allow_empty: bool = True, on_photo: bool = False) -> Tuple[np.ndarray, int]:
    """Owner map (int16, -1 = no mask) and mask count of one frame, on the working grid (or ``on_photo``: the
    photo's grid); InputError on a bad mask file. Masks may come at the photo's size or any scaled copy of it."""
    read = _resampled_owner if spec.lens is not None and not on_photo else _owner_at
    owner, n = read(spec.mask_path, spec.stem, spec.photo_size, (spec.height, spec.width), spec.lens, on_photo,
                    spec.stamp)
    if n == 0 and not allow_empty:
        fail(f"frame '{spec.stem}' has no masks", spec.mask_path, "re-run the segmenter on it, or pass --allow-empty")
    return owner, n


def _owner_at(mask_path: Path, stem: str, photo_size: Tuple[int, int], grid: Tuple[int, int], lens: Optional[Lens],
              on_photo: bool, stamp: tuple) -> Tuple[np.ndarray, int]:
    owner, n, _ = read_mask_owner(mask_path.parent, stem, *photo_size,
                                  "run instance-segment for every frame, or pass --split / --masks")
    if on_photo or lens is None:
        return resize_nearest(owner, *(photo_size if on_photo else grid)), n
    return lens.for_size(owner.shape[1], owner.shape[0]).to_pinhole(owner, nearest=True, fill=-1), n


# a photo resampled onto its working grid is read by the per-frame, pair and write stages: decoding a 12 MP mask or
# depth file for each was most of instance-map's time on phone photos (the small grids are cheap to keep)
_resampled_owner = lru_cache(maxsize=VIEW_CACHE_SIZE)(_owner_at)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label or depth image of another scale brought to ``height x width`` (nearest: ids and depths intact)."""
    import cv2

    if array.shape[:2] == (height, width):
        return array
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)


def check_depth_size(spec: FrameSpec) -> None:
    """The frame's depth map has the photo's size (or a scaled copy's), read from its header only."""
    if spec.depth_path is None or not spec.depth_on_photo:
        return
    size = read_image_size(spec.depth_path)
    if not same_picture(size, spec.photo_size):
        fail(f"depth map is {size[1]}x{size[0]}, image is {spec.photo_size[1]}x{spec.photo_size[0]}",
             spec.depth_path, "write depth at the image resolution (or a scaled copy of it)")


def read_frame_depth(spec: FrameSpec) -> Optional[np.ndarray]:
    """Depth of the frame on its working grid (metres, 0 = unknown), or None."""
    if spec.depth_path is None:
        return None
    if spec.lens is not None and spec.depth_on_photo:
        return _resampled_depth(spec.depth_path, spec.photo_size, spec.lens, spec.stamp, spec.depth_unit)
    return _depth_at(spec)


@lru_cache(maxsize=VIEW_CACHE_SIZE)
def _resampled_depth(depth_path: Path, photo_size: Tuple[int, int], lens: Lens, stamp: tuple,
                     depth_unit: float) -> np.ndarray:
    depth = _photo_depth(depth_path, photo_size, depth_unit)
    # z-depth is the same for a point on both grids: resampled, not rescaled
    return lens.for_size(depth.shape[1], depth.shape[0]).to_pinhole(depth, nearest=True)


def _depth_at(spec: FrameSpec) -> np.ndarray:
    if not spec.depth_on_photo:  # estimated by the stereo stage (.npy, metres), on the working grid
        return np.load(spec.depth_path)
    return resize_nearest(_photo_depth(spec.depth_path, spec.photo_size, spec.depth_unit), spec.height, spec.width)


def _photo_depth(depth_path: Path, photo_size: Tuple[int, int], depth_unit: float) -> np.ndarray:
    """A depth map of the dataset in metres (``depth_unit`` metres per stored unit), at its own size, checked against
    the photo's."""
    depth = read_depth(depth_path, depth_unit)
    if not same_picture(depth.shape, photo_size):
        fail(f"depth map is {depth.shape[1]}x{depth.shape[0]}, image is {photo_size[1]}x{photo_size[0]}",
             depth_path, "write depth at the image resolution (or a scaled copy of it)")
    return depth


@lru_cache(maxsize=VIEW_CACHE_SIZE)
def cached_view(spec: FrameSpec) -> View:
    """The frame as a :class:`View` (owner map, depth when ``spec.depth_path``), cached per process."""
    owner, _ = read_owner(spec)
    return View(spec.stem, np.array(spec.K), np.array(spec.c2w_cv), owner, spec.image_path, read_frame_depth(spec),
                lens=spec.lens)


def pose_view(spec: FrameSpec, with_depth: bool = False) -> View:
    """A View without masks (an empty owner map of the right size), for pose-only stages."""
    depth = read_frame_depth(spec) if with_depth else None
    return View(spec.stem, np.array(spec.K), np.array(spec.c2w_cv), np.full((spec.height, spec.width), -1, np.int16),
                spec.image_path, depth, lens=spec.lens)


def touching_array(owner: np.ndarray, offset: int) -> Int[np.ndarray, "T 2"]:
    from data_preprocess.touching import touching_pairs

    return np.array(sorted(touching_pairs(owner, offset)), dtype=np.int64).reshape(-1, 2)


def frame_summary(spec: FrameSpec, allow_empty: bool) -> dict:
    """Per-frame task of the load stage: validates the mask (and depth) file, counts masks, areas and touching pairs
    (node ids local to the frame: add the frame's offset)."""
    owner, n = read_owner(spec, allow_empty)
    check_depth_size(spec)  # once, before any pair task trusts it
    area = np.bincount(owner[owner >= 0].ravel(), minlength=n).astype(np.float64)
    return {"n_masks": n, "area": area, "touching": touching_array(owner, 0)}


def mask_points(spec: FrameSpec, sparse: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                points_per_mask: int = 150) -> List[Optional[Float[np.ndarray, "P 3"]]]:
    """Per-frame task of the revisit stage: a sample of each mask's back-projected pixels (None for a mask without
    depth). Depth is the frame's depth map, or the sparse depth triangulated from the matches (``sparse``: flat pixel
    indices and depths) when the dataset has none."""
    from data_preprocess.matching import sparse_depth

    view = cached_view(spec)
    depth = view.depth if sparse is None else sparse_depth(spec.height, spec.width, *sparse)
    out: List[Optional[np.ndarray]] = []
    for m in range(spec.n_masks):
        vv, uu = np.nonzero((view.owner == m) & (depth > 0))
        if len(vv) == 0:
            out.append(None)
            continue
        step = max(1, len(vv) // points_per_mask)
        vv, uu = vv[::step], uu[::step]
        out.append(backproject(view, uu.astype(np.float64), vv.astype(np.float64), depth[vv, uu].astype(np.float64)))
    return out


def write_labels(spec: FrameSpec, node_labels: Int[np.ndarray, "M"], output: Path) -> None:
    """Per-frame task of the write stage: ``<output>/<stem>.png`` from the frame's owner map and its masks' labels,
    on the photo's own grid (the images nerfstudio trains on)."""
    write_label_png(output / f"{spec.stem}.png", frame_labels(photo_owner(spec), node_labels))


def photo_owner(spec: FrameSpec) -> Int[np.ndarray, "H W"]:
    """The owner map on the photo's grid: the masks as given, so a label covers exactly its masks' pixels."""
    return cached_view(spec).owner if spec.lens is None else read_owner(spec, on_photo=True)[0]


PARTNERS_PER_TOP_K = 4
"""Directed overlaps kept per frame, as a multiple of --top-k, before the symmetric pair selection (a pair's symmetric
score is the smaller of its two directed ones). Every capture where no frame overlaps more than ``4 x top_k`` others
(120 at the default top_k 30: every capture under 121 frames) gets exactly the full selection. Along a dense capture
a frame's best partners are its near neighbours on both sides, which rank high in both directions; scoring more of
them exactly was most of the pair stage's time (32 x top_k: 0.46 s per frame of a 1,000-frame demo room, 4 x top_k:
0.16 s) and did not change the pseudolabels' PQ (demo room seed 4 at 1,000 frames)."""


def _rows_task(rows: np.ndarray, cams: dict, min_score: float, max_partners: int) -> tuple:
    return overlap_rows(rows, cams["K"], cams["c2w"], cams["size"], cams["depth_mm"], cams["proxies"], min_score,
                        max_partners=max_partners, w2c=cams["w2c"], near=cams["near"])


def pose_pairs_sparse(specs, min_overlap: float, top_k: int, engine, rows_per_task: int = 16,
                      planes: Optional[Float[np.ndarray, "F"]] = None) -> Int[np.ndarray, "P 2"]:
    """:func:`pose_pairs` for many frames: rows of the overlap matrix as per-frame tasks on ``engine`` (the raw depth
    maps go to the object store once), kept sparse (only entries that reach ``min_overlap``, at most
    ``PARTNERS_PER_TOP_K x top_k`` per frame, so memory grows with the frames, not with the pairs that overlap).
    Without depth maps each frame's pixels lie on a plane at ``planes[i]`` metres (default: the distance to the point
    all optical axes aim at, :func:`proxy_depth`)."""
    K, c2w, size = _cam_arrays(specs)
    depth_mm = proxies = None
    if all(s.depth_path is not None for s in specs):
        depth_mm = np.zeros((len(specs), int(size[:, 0].max()), int(size[:, 1].max())), dtype=np.uint16)
        for k, s in enumerate(specs):  # metres to packed mm: exact for millimetre PNGs (uint16 * 1e-3 in float32)
            d = np.round(read_frame_depth(s).astype(np.float64) * (1.0 / PACKED_DEPTH_UNIT))
            depth_mm[k, :s.height, :s.width] = d.astype(np.uint16)
    elif planes is not None:
        proxies = np.asarray(planes, dtype=np.float64)
    else:
        proxies = proxy_depth([View(s.stem, np.array(s.K), np.array(s.c2w_cv), np.zeros((1, 1), np.int16),
                                    s.image_path) for s in specs])
    n = len(specs)
    blocks = [(np.arange(a, min(a + rows_per_task, n)),) for a in range(0, n, rows_per_task)]
    max_partners = PARTNERS_PER_TOP_K * top_k
    # the pose index serves only captures longer than the frames a row may consider (a median per depth map to build)
    near = PoseIndex.build(c2w, median_depths(depth_mm, proxies)) if n > NEAREST_PER_PARTNER * max_partners else None
    cams = {"K": K, "c2w": c2w, "w2c": np.linalg.inv(c2w), "size": size, "depth_mm": depth_mm, "proxies": proxies,
            "near": near}
    common = {"cams": cams, "min_score": min_overlap, "max_partners": max_partners}
    # worker processes (GIL-bound rows) unless there are depth maps, which each worker would then hold a copy of
    parts = list(engine.map(_rows_task, blocks, common=common, processes=depth_mm is None))
    i, j, s = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return select_sparse_pairs(i, j, s, n, min_overlap, top_k)


def choose_pairs(method: str, specs, engine, min_overlap: float, top_k: int, window: int,
                 netvlad_weights: Optional[Path], planes: Optional[np.ndarray] = None) -> np.ndarray:
    """Frame pairs to match by instance-map's --pairs method: pose, exhaustive, sequential or netvlad (``planes``:
    see :func:`pose_pairs_sparse`)."""
    if method == "pose":
        return pose_pairs_sparse(specs, min_overlap, top_k, engine, planes=planes)
    from data_preprocess.pairs import exhaustive_pairs, sequential_pairs, similarity_pairs

    if method == "exhaustive":
        return exhaustive_pairs(len(specs))
    if method == "sequential":
        return sequential_pairs(len(specs), window)
    from data_preprocess.netvlad import netvlad_descriptors

    if netvlad_weights is None:
        fail("--pairs netvlad needs --netvlad-weights", None, "pass a local NetVLAD checkpoint or use --pairs pose")
    return similarity_pairs(netvlad_descriptors([s.image_path for s in specs], netvlad_weights), min_overlap, top_k)
