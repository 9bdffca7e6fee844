"""``instance-loc --images DIR``: photos without a pose are registered against the map, then localized as posed ones.

Writes ``<output>/poses.json`` (the registered photos in transforms.json format, in the frame of the training data's
transforms.json, reusable as ``instance-loc --data <output>/poses.json``) and, per photo in ``loc.json``, its
registration: inliers (and those of the first pose, ``seed_inliers``), correspondences, median reprojection error,
the training images holding the most inliers (``retrieved``) and the time taken.
A photo that cannot be registered gets one line saying why, a ``registered: false`` record and no ids.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from instance_nerfacto.core.camera import DISTORTION_KEYS
from instance_nerfacto.core.console import say
from instance_nerfacto.core.dataset import Frame
from instance_nerfacto.core.errors import fail
from instance_nerfacto.core.files import atomic_write_json, read_image_size
from instance_nerfacto.loc.inputs import load_given_regions
from instance_nerfacto.loc.register import appearance_agreement, register_photo
from instance_nerfacto.loc.register_features import RegisterParams
from instance_nerfacto.loc.register_pairs import LoFTRPairs

if TYPE_CHECKING:
    from instance_nerfacto.core.loftr import LoFTRModel

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def photo_paths(folder: Path) -> List[Path]:
    """The photos of ``--images`` (png/jpg, sorted by name); one-line errors for a missing or empty folder and for
    two photos with the same stem (outputs are named by stem)."""
    if not folder.is_dir():
        fail("photo folder does not exist", folder, "pass --images the folder of photos to register")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        fail("no photos (.png/.jpg) in the folder", folder, "pass --images a folder of photos")
    stems: Dict[str, Path] = {}
    for photo in photos:
        if photo.stem in stems:
            fail(f"two photos share the name '{photo.stem}'", photo,
                 "rename one: outputs are named by the photo's stem")
        stems[photo.stem] = photo
    return photos


def check_intrinsics(intrinsics: Optional[Tuple[float, float, float, float]]) -> None:
    if intrinsics is None:
        return
    values = np.asarray(intrinsics, dtype=np.float64)
    if not np.all(np.isfinite(values)) or values[0] <= 0 or values[1] <= 0:
        fail(f"--intrinsics {' '.join(str(v) for v in intrinsics)} is not a camera", None,
             "pass --intrinsics FX FY CX CY in pixels (focal lengths > 0)")


EXIF_IFD = 0x8769
"""EXIF's own directory inside a photo's EXIF block (where the focal length tags are)."""
FOCAL_LENGTH, FOCAL_LENGTH_35MM = 0x920A, 0xA405
FOCAL_PLANE_X_RESOLUTION, FOCAL_PLANE_RESOLUTION_UNIT = 0xA20E, 0xA210
MM_PER_RESOLUTION_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
"""FocalPlaneResolutionUnit: inch, centimetre, millimetre, micrometre."""
FULL_FRAME_WIDTH_MM = 36.0
"""The long side of a 35 mm film frame, the reference of FocalLengthIn35mmFilm."""


def exif_intrinsics(photo: Path, width: int, height: int) -> Optional[Tuple[float, float, float, float]]:
    """FX FY CX CY (pixels, nerfstudio's convention) of a ``width`` x ``height`` photo from its EXIF focal length,
    None when it has none: the 35 mm equivalent focal length (FocalLengthIn35mmFilm x long side / 36 mm), else the
    focal length in mm times the sensor's pixels per mm (FocalLength x FocalPlaneXResolution). Square pixels, the
    principal point at the image centre and no lens distortion (EXIF records none of them)."""
    from PIL import Image

    try:
        with Image.open(photo) as image:
            exif = image.getexif()
            tags = {**dict(exif), **dict(exif.get_ifd(EXIF_IFD))}
    except (OSError, ValueError, SyntaxError):
        return None

    def number(tag: int) -> float:
        try:
            value = float(tags.get(tag, 0.0))
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0
        return value if np.isfinite(value) and value > 0 else 0.0

    focal = number(FOCAL_LENGTH_35MM) * max(width, height) / FULL_FRAME_WIDTH_MM
    if focal <= 0:
        unit = MM_PER_RESOLUTION_UNIT.get(int(number(FOCAL_PLANE_RESOLUTION_UNIT) or 2))
        focal = number(FOCAL_LENGTH) * number(FOCAL_PLANE_X_RESOLUTION) / unit if unit else 0.0
    if focal <= 0:
        return None
    return focal, focal, width / 2.0, height / 2.0


def photo_frames(photos: List[Path], train: Frame, intrinsics: Optional[Tuple[float, float, float, float]]
                 ) -> List[Frame]:
    """An (unposed) frame per photo: a copy of a training frame, so every camera field the dataset carries comes
    along, with the photo's path and size and ``--intrinsics`` when given. A photo of another size than the training
    images needs ``--intrinsics`` or a focal length in its EXIF (the training focal length in pixels would be wrong
    for it; :func:`exif_intrinsics`)."""
    frames = []
    for photo in photos:
        height, width = read_image_size(photo)
        camera = intrinsics
        if intrinsics is None and (height, width) != (train.height, train.width):
            camera = exif_intrinsics(photo, width, height)
            if camera is None:
                fail(f"photo is {width}x{height} but the map's camera is {train.width}x{train.height}, and the photo "
                     "has no EXIF focal length", photo, "pass --intrinsics FX FY CX CY for the photos' camera "
                     "(pixels), or resize them to the training size")
        if intrinsics is not None and frames and (height, width) != (frames[0].height, frames[0].width):
            fail(f"photo is {width}x{height} but '{frames[0].image_path.name}' is "
                 f"{frames[0].width}x{frames[0].height}", photo,
                 "--intrinsics describes one camera: register photos of one size per command")
        frame = dataclasses.replace(train, stem=photo.stem, image_path=photo, c2w=np.eye(4), depth_path=None,
                                    split="val", width=width, height=height)
        if camera is not None:
            fx, fy, cx, cy = (float(v) for v in camera)
            # another camera: a pinhole with these intrinsics, not the training lens
            frame = dataclasses.replace(frame, fx=fx, fy=fy, cx=cx, cy=cy, fisheye=False, distortion=(0.0,) * 6)
        frames.append(frame)
    return frames


def read_photo_rgb(frame: Frame) -> np.ndarray:
    import cv2

    image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
    if image is None:
        fail("cannot decode photo", frame.image_path, "replace the corrupt file or remove it from the folder")
    return np.ascontiguousarray(image[..., ::-1])


def camera_keys(frame: Frame) -> dict:
    """A frame's camera as transforms.json's keys (nerfstudio's)."""
    keys = {"camera_model": "OPENCV_FISHEYE" if frame.fisheye else "OPENCV", "fl_x": frame.fx, "fl_y": frame.fy,
            "cx": frame.cx, "cy": frame.cy, "w": frame.width, "h": frame.height,
            **dict(zip(DISTORTION_KEYS, frame.distortion))}
    if frame.fisheye:
        keys.pop("p1"), keys.pop("p2")
    return keys


def poses_json(frames: List[Frame], output: Path) -> dict:
    """transforms.json content for the registered frames: the first photo's camera (the training lens, or the
    pinhole of --intrinsics or of its EXIF focal length) as nerfstudio's shared keys, a photo with another camera
    (another EXIF focal length or size) with its own per-frame keys, paths relative to ``output``."""
    meta: dict = camera_keys(frames[0]) if frames else {}
    meta["frames"] = []
    for frame in frames:
        entry = {"file_path": os.path.relpath(Path(frame.image_path).resolve(), output.resolve()),
                 "transform_matrix": np.asarray(frame.c2w).tolist()}
        if frame.camera != frames[0].camera:
            own = camera_keys(frame)
            entry.update(own)
            entry.update({k: 0.0 for k in DISTORTION_KEYS if k not in own})  # no shared distortion for this camera
        meta["frames"].append(entry)
    return meta


def pair_model(params: RegisterParams) -> Optional["LoFTRModel"]:
    """The LoFTR model of ``--register.matcher loftr`` (None for SIFT), loaded from its local weights file."""
    if params.matcher == "sift":
        if params.weights is not None:
            fail("--register.weights is read by --register.matcher loftr only", params.weights,
                 "add --register.matcher loftr to register with LoFTR, or leave out --register.weights")
        return None
    import torch

    from instance_nerfacto.core.loftr import LoFTRModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return LoFTRModel(params.weights, device=device, size=params.pair_size, flag="--register.weights")


def register_images(cfg) -> Tuple[object, object, Dict[str, Dict]]:
    """Register ``cfg.images`` against ``cfg.run.load_config``'s map; returns the config to localize the registered
    photos with (``--data <output>/poses.json``), the loaded run, and per photo its registration record."""
    from instance_nerfacto.core.runs import check_run_files
    from instance_nerfacto.loc.register_map import rendered_view, run_map_features, training_frames
    from instance_nerfacto.render.bake import cached_density_grid
    from instance_nerfacto.render.run import load_run, training_transforms

    if cfg.data is not None:
        fail("--images and --data both given", cfg.images,
             "pass --images for photos without poses, or --data for posed images, not both")
    if cfg.frames is not None or cfg.split is not None:
        fail("--frames / --split choose frames of --data", cfg.images, "leave them out with --images")
    if cfg.run.load_config is None:
        fail("registration needs the trained map", None, "pass --load-config outputs/.../config.yml")
    if cfg.denoise is not None:
        fail("--denoise reads renders of posed frames", cfg.denoise, "leave it out with --images")
    photos = photo_paths(cfg.images)
    for folder in (cfg.images, cfg.masks):
        if folder is not None and cfg.output.resolve() == folder.resolve():
            fail("--output is an input folder", cfg.output,
                 "pass another --output: <stem>.png ids would overwrite the photos or masks of the same name")
    check_intrinsics(cfg.intrinsics)
    check_run_files(cfg.run.load_config, cfg.run.load_step)
    if cfg.masks is not None and not cfg.masks.is_dir():
        fail("mask folder does not exist", cfg.masks, "pass --masks the folder with <stem>.png / <stem>.npz masks")
    # every photo is checked against the training camera before the slow model load, so errors come at once
    train_json = training_transforms(cfg.run.load_config)
    train_frames = training_frames(train_json)
    frames = photo_frames(photos, train_frames[0], cfg.intrinsics)
    if cfg.masks is not None:
        for frame in frames:
            load_given_regions(cfg.masks, frame)  # a missing or misfit mask file stops here, not after registration
    loftr = pair_model(cfg.register)  # a missing or misfit weights file stops here, before the map is loaded
    run = load_run(cfg.run.load_config, cfg.run.load_step)
    started = time.perf_counter()
    world, lifted_by = run_map_features(run, train_frames, cfg.register, cfg.lift, cfg.grid_resolution,
                                        cfg.num_samples)
    map_s = time.perf_counter() - started
    pairs = None if loftr is None else LoFTRPairs(loftr, world, cfg.register)
    registered: List[Frame] = []
    records: Dict[str, Dict] = {}
    grid = cached_density_grid(run.model.field, run.checkpoint, run.step, cfg.grid_resolution)
    grid = grid.to(next(run.model.parameters()).device)
    for frame in frames:
        start = time.perf_counter()
        rgb = read_photo_rgb(frame)
        result = register_photo(rgb, frame.camera, world, cfg.register, pairs)
        agreement = None
        if result.registered:
            agreement = appearance_agreement(rgb, rendered_view(run, grid, result.c2w, frame))
            if agreement < cfg.register.min_agreement:
                result = dataclasses.replace(result, registered=False, c2w=None, reason=(
                    f"the map seen from the pose found does not look like the photo (agreement {agreement:.2f}, "
                    f"need {cfg.register.min_agreement})"))
        record = {"registered": result.registered, "matcher": cfg.register.matcher, "inliers": result.inliers,
                  "seed_inliers": result.seed_inliers,
                  "correspondences": result.correspondences,
                  "reprojection_error_px": round(result.error_px, 3) if np.isfinite(result.error_px) else None,
                  "appearance_agreement": None if agreement is None else round(agreement, 3),
                  "retrieved": [train_frames[i].stem for i in result.retrieved],
                  "register_s": round(time.perf_counter() - start, 4)}
        if result.registered:
            registered.append(dataclasses.replace(frame, c2w=result.c2w))
        else:
            record["reason"] = result.reason
            say(f"instance-loc: photo '{frame.image_path.name}' not registered: {result.reason}; it gets no ids")
        records[frame.stem] = record
    matched_by = ("SIFT" if loftr is None else
                  f"LoFTR from '{cfg.register.weights}' with {cfg.register.pair_images} retrieved images each")
    say(f"instance-loc: registered {len(registered)} of {len(frames)} photos against {len(train_frames)} training "
        f"images (matched by {matched_by}; keypoints lifted by the {lifted_by}; map features {map_s:.1f} s)")
    poses = cfg.output / "poses.json"
    atomic_write_json(poses, poses_json(registered, cfg.output))
    if not registered:
        atomic_write_json(cfg.output / "loc.json", {stem: {"registration": r} for stem, r in records.items()})
        fail(f"none of the {len(frames)} photos could be registered", cfg.images,
             "check that they show the mapped room (see loc.json for each photo's inliers), or pass --intrinsics "
             "if their camera differs from the training camera")
    return dataclasses.replace(cfg, data=poses, images=None, split="all"), run, records
