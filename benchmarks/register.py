"""Benchmark registration of photos without a pose (``instance-loc --images``) on rendered rooms.

Per room (``instance-synth --preset demo --seed S``, trained with ``instance-nerfacto-small`` on noisy pseudolabels;
``--no-depth`` trains on a copy without depth maps, so keypoints are lifted by the trained density's surface):

- photos: views between the training cameras (the mapped path walked again, +-10 cm, +-4 degrees: ``path``), and the
  room's held-out views at other heights (0.9 m and 2.0 m, ``held-out``);
- registration rate, median / 90th percentile rotation and translation error (translation relative to the room's
  floor diagonal);
- things PQ of instance-loc with the registered poses against the same photos at their true poses (a refused photo
  counts as a photo without ids), and over the registered photos only;
- seconds per photo of registration and of the query (model load and map features excluded);
- photos of another room (``--other-seed``): how many got a pose (must be 0).

    .venv/bin/python benchmarks/register.py --out /tmp/bench_register --seeds 5 6 [--no-depth] [--iterations 1000]
        [--matcher loftr --loftr-weights FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from instance_nerfacto.core.dataset import load_dataset  # noqa: E402
from instance_nerfacto.core.errors import InputError  # noqa: E402
from instance_nerfacto.core.files import read_image_size, write_label_png  # noqa: E402
from instance_nerfacto.core.runs import RunOptions  # noqa: E402
from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402
from instance_nerfacto.loc.cli import LocConfig  # noqa: E402
from instance_nerfacto.loc.cli import main as loc_main  # noqa: E402
from instance_nerfacto.loc.register import RegisterParams, rotation_error_deg  # noqa: E402


def room(out: Path, preset: str, seed: int) -> Path:
    from data_preprocess.synth.cli import SynthConfig
    from data_preprocess.synth.cli import main as synth_main

    scene = out / f"{preset}{seed}" / "scene"
    if not (scene / "transforms.json").is_file():
        synth_main(SynthConfig(out=scene, preset=preset, seed=seed))
    return scene


def trained(scene: Path, work: Path, iterations: int, depth: bool) -> Path:
    """config.yml of instance-nerfacto-small trained on the room (noisy ground-truth pseudolabels), with or without
    its depth maps; reused when it exists."""
    from instance_lift import prepare_scene, train

    found = sorted(work.glob("outputs/*/instance-nerfacto-small/bench/config.yml"))
    if found:
        return found[0]
    data = prepare_scene(scene, work)
    if not depth:
        meta = json.loads((data / "transforms.json").read_text())
        for frame in meta["frames"]:
            frame.pop("depth_file_path", None)
        (data / "transforms.json").write_text(json.dumps(meta, indent=2))
    return train(data, work, iterations, iterations, ["--pipeline.model.camera-optimizer.mode", "off"])


def photo_set(scene: Path, work: Path, kind: str, count: int) -> Path:
    """A posed dataset of photos of the room: views along the training path, or the held-out views."""
    from data_preprocess.synth.views import render_views, views_between_training_poses

    folder = work / f"photos_{kind}"
    if (folder / "transforms.json").is_file():
        return folder
    if kind == "path":
        return render_views(scene, views_between_training_poses(scene, count, seed=1), folder, prefix="path")
    held_out = load_dataset(scene).split("val")
    folder.mkdir(parents=True)
    for sub in ("images", "masks", "gt"):
        (folder / sub).mkdir()
        for frame in held_out:
            shutil.copy(scene / sub / f"{frame.stem}.png", folder / sub / f"{frame.stem}.png")
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"] = [f for f in meta["frames"] if Path(f["file_path"]).stem.startswith("val_")]
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
    meta["train_filenames"] = []
    (folder / "transforms.json").write_text(json.dumps(meta, indent=2))
    return folder


def pose_file_at_truth(photos: Path, applied: np.ndarray, path: Path) -> Path:
    """The photos at their true poses, in the training data's frame (``applied`` maps the room's frame there)."""
    meta = json.loads((photos / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["file_path"] = str(photos / frame["file_path"])
        frame["transform_matrix"] = (applied @ np.asarray(frame["transform_matrix"])).tolist()
        frame.pop("depth_file_path", None)
    meta["val_filenames"] = [f["file_path"] for f in meta["frames"]]
    path.write_text(json.dumps(meta))
    return path


def things_pq(pred: Path, photos: Path, stems: List[str], instances: Path) -> float:
    if not stems:
        return float("nan")
    return evaluate_dirs(pred, photos / "gt", things_json=instances, stems=stems)["scene_pq"]


def with_refused_blank(pred: Path, photos: Path, stems: List[str], folder: Path) -> Path:
    """A copy of ``pred`` where each refused photo is a photo without ids (so it counts against PQ)."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pred, folder)
    for stem in stems:
        if not (folder / f"{stem}.png").is_file():
            write_label_png(folder / f"{stem}.png", np.zeros(read_image_size(photos / "gt" / f"{stem}.png"), np.uint16))
    return folder


def error_summary(rotation: List[float], translation: List[float]) -> Dict:
    """Median and 90th percentile of the rotation (degrees) and relative translation errors (None without poses)."""
    def stat(values: List[float], q: float):
        return float(np.percentile(values, q)) if values else None

    return {"rotation_deg_median": stat(rotation, 50), "rotation_deg_p90": stat(rotation, 90),
            "translation_rel_median": stat(translation, 50), "translation_rel_p90": stat(translation, 90)}


def measure(config: Path, scene: Path, photos: Path, work: Path, applied: np.ndarray, register: RegisterParams
            ) -> Dict:
    stems = sorted(f.stem for f in load_dataset(photos).frames)
    truth = {f.stem: applied @ f.c2w for f in load_dataset(photos).frames}
    synth = json.loads((scene / "synth.json").read_text())
    extent = float(np.hypot(*synth["room_size_m"]))
    out_reg, out_true = work / f"{photos.name}_registered", work / f"{photos.name}_true"
    for folder in (out_reg, out_true):
        shutil.rmtree(folder, ignore_errors=True)
    run = RunOptions(load_config=config)
    try:
        report = loc_main(LocConfig(output=out_reg, run=run, images=photos / "images", masks=photos / "masks",
                                    register=register))
    except InputError as err:  # no photo registered: instance-loc stops with one line, loc.json has each record
        print(f"  ({photos.name}: {err.line()})")
        report = json.loads((out_reg / "loc.json").read_text())
    loc_main(LocConfig(output=out_true, run=run, data=pose_file_at_truth(photos, applied, work / "t.json"),
                       masks=photos / "masks", split="all"))
    listed = json.loads((out_reg / "poses.json").read_text())["frames"]
    poses = {f.stem: f.c2w for f in load_dataset(out_reg / "poses.json").frames} if listed else {}
    rotation = [rotation_error_deg(poses[s], truth[s]) for s in poses]
    translation = [float(np.linalg.norm(poses[s][:3, 3] - truth[s][:3, 3])) / extent for s in poses]
    scored = with_refused_blank(out_reg, photos, stems, work / f"{photos.name}_registered_all")
    registered = sorted(poses)
    instances = scene / "instances.json"
    return {
        "photos": len(stems), "registered": len(registered), **error_summary(rotation, translation),
        "pq_registered_all": things_pq(scored, photos, stems, instances),
        "pq_true_all": things_pq(out_true, photos, stems, instances),
        "pq_registered_only": things_pq(out_reg, photos, registered, instances),
        "pq_true_registered_only": things_pq(out_true, photos, registered, instances),
        "register_s": float(np.mean([r["registration"]["register_s"] for r in report.values()])),
        "query_s": float(np.mean([r["query_s"] for r in report.values() if "query_s" in r] or [np.nan])),
    }


def other_room(config: Path, other: Path, work: Path, register: RegisterParams) -> Dict:
    photos = work / "other_room"
    shutil.rmtree(photos, ignore_errors=True)
    photos.mkdir(parents=True)
    for path in sorted((other / "images").glob("*.png"))[::3]:
        shutil.copy(path, photos / path.name)
    out = work / "other_room_out"
    shutil.rmtree(out, ignore_errors=True)
    try:
        report = loc_main(LocConfig(output=out, run=RunOptions(load_config=config), images=photos,
                                    masks=other / "masks", register=register))
    except Exception as err:  # every photo refused: instance-loc stops with one line (the result we want)
        print(f"  (other room: {err})")
    report = json.loads((out / "loc.json").read_text())
    return {"photos": len(report), "accepted": sum(bool(r["registration"]["registered"]) for r in report.values()),
            "max_inliers": max(r["registration"]["inliers"] for r in report.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[5])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--no-depth", action="store_true", help="train on the rooms without their depth maps")
    parser.add_argument("--path-views", type=int, default=20)
    parser.add_argument("--other-seed", type=int, default=99)
    parser.add_argument("--matcher", choices=("sift", "loftr"), default="sift",
                        help="what gives the first pose (instance-loc --register.matcher)")
    parser.add_argument("--loftr-weights", type=Path, help="local LoFTR weights for --matcher loftr")
    parser.add_argument("--pair-images", type=int, default=RegisterParams.pair_images,
                        help="--matcher loftr: retrieved training images matched per photo")
    args = parser.parse_args()
    register = RegisterParams(matcher=args.matcher, weights=args.loftr_weights, pair_images=args.pair_images)
    out = args.out.resolve()
    other = room(out, args.preset, args.other_seed)
    results = {}
    for seed in args.seeds:
        scene = room(out, args.preset, seed)
        work = out / f"{args.preset}{seed}" / ("no_depth" if args.no_depth else "depth")
        config = trained(scene, work, args.iterations, not args.no_depth)
        # instance_lift.prepare_scene copies the room as it is: the training frame is the room's own
        applied = np.eye(4)
        rows = {kind: measure(config, scene, photo_set(scene, work, kind, args.path_views), work, applied, register)
                for kind in ("path", "held-out")}
        rows["other room"] = other_room(config, other, work, register)
        results[f"{args.preset}{seed}"] = rows
        print(f"\n{args.preset} seed {seed}, map {'without' if args.no_depth else 'with'} depth maps, "
              f"{args.iterations} iterations, matched by {args.matcher} (load {os.getloadavg()[0]:.2f})")
        for kind in ("path", "held-out"):
            r = rows[kind]
            med = "-" if r["rotation_deg_median"] is None else (
                f"rot {r['rotation_deg_median']:.2f}/{r['rotation_deg_p90']:.2f} deg, trans "
                f"{100 * r['translation_rel_median']:.2f}/{100 * r['translation_rel_p90']:.2f} % (median/p90)")
            print(f"  {kind:9s} registered {r['registered']:2d}/{r['photos']}  {med}")
            print(f"  {'':9s} things PQ registered {r['pq_registered_all']:.3f} vs true poses {r['pq_true_all']:.3f}"
                  f" (registered photos only {r['pq_registered_only']:.3f} vs {r['pq_true_registered_only']:.3f});"
                  f" s/photo register {r['register_s']:.3f} + query {r['query_s']:.3f}")
        o = rows["other room"]
        print(f"  another room: {o['accepted']}/{o['photos']} photos got a pose (max {o['max_inliers']} inliers)")
    name = f"result_{'no_depth' if args.no_depth else 'depth'}{'_loftr' if args.matcher == 'loftr' else ''}.json"
    (out / name).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
