"""Registration of photos without a pose against a map built through COLMAP (the photos-only path).

Reads an ``--out`` folder of ``benchmarks/colmap_path.py`` (its rendered room, the COLMAP dataset and a trained run)
and registers two sets of photos with ``instance-loc --images DIR --masks DIR``, as a user with extra photos would:

- the held-out photos (``val_filenames``): poses against COLMAP's own poses of the same photos (rotation in degrees,
  translation relative to the diagonal of the training cameras' box), and things PQ of instance-loc at the registered
  poses against instance-loc at COLMAP's poses (a refused photo counts as a photo without ids; and over the registered
  photos only);
- the photos COLMAP could not pose at all (ns-process-data dropped them): how many register, and their things PQ
  against the room's ground truth.

    .venv/bin/python benchmarks/register_colmap.py --out /tmp/colmap_bench [--camera-optimizer off]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from register import error_summary, things_pq, with_refused_blank  # noqa: E402

from instance_nerfacto.core.dataset import load_dataset  # noqa: E402
from instance_nerfacto.core.runs import RunOptions  # noqa: E402
from instance_nerfacto.loc.cli import LocConfig  # noqa: E402
from instance_nerfacto.loc.cli import main as loc_main  # noqa: E402
from instance_nerfacto.loc.register import rotation_error_deg  # noqa: E402


def photo_folder(folder: Path, sources: Dict[str, Path]) -> Path:
    """``folder`` with images/, masks/ and gt/ of the photos ``{stem: folder holding images/ masks/ gt/}``."""
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("images", "masks", "gt"):
        (folder / sub).mkdir(parents=True)
    for stem, source in sources.items():
        for sub in ("images", "masks", "gt"):
            shutil.copy(source / sub / f"{stem}.png", folder / sub / f"{stem}.png")
    return folder


def register(config: Path, photos: Path, out: Path) -> Dict[str, Dict]:
    """instance-loc --images: the registered poses (stem -> c2w in the training data's frame) and loc.json."""
    shutil.rmtree(out, ignore_errors=True)
    try:
        loc_main(LocConfig(output=out, run=RunOptions(load_config=config), images=photos / "images",
                           masks=photos / "masks"))
    except SystemExit as err:  # every photo refused: instance-loc stops with one line
        print(f"  ({photos.name}: none registered, exit {err.code})")
    report = json.loads((out / "loc.json").read_text())
    poses = {f.stem: f.c2w for f in load_dataset(out / "poses.json").frames} if (out / "poses.json").is_file() else {}
    return {"poses": poses, "report": report}


def colmap_to_room(colmap_pose: Dict[str, np.ndarray], room_pose: Dict[str, np.ndarray]):
    """The similarity from COLMAP's frame to the room's, fitted to the camera centres of the photos both posed
    (Umeyama): a function mapping a COLMAP-frame camera-to-world matrix into the room's frame."""
    from scipy.spatial.transform import Rotation

    stems = sorted(set(colmap_pose) & set(room_pose))
    x = np.array([colmap_pose[s][:3, 3] for s in stems])
    y = np.array([room_pose[s][:3, 3] for s in stems])
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    rotation = Rotation.align_vectors(yc, xc)[0].as_matrix()
    scale = float(np.sum(yc * (xc @ rotation.T)) / np.sum(xc * xc))
    shift = y.mean(axis=0) - scale * rotation @ x.mean(axis=0)

    def to_room(c2w: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = rotation @ c2w[:3, :3]
        out[:3, 3] = scale * rotation @ c2w[:3, 3] + shift
        return out

    return to_room


def errors_to_truth(poses: Dict[str, np.ndarray], to_room, truth: Dict[str, np.ndarray], diagonal: float) -> str:
    """Median / p90 rotation (degrees) and translation (% of the room's floor diagonal) against the true poses."""
    if not poses:
        return "-"
    rot = [rotation_error_deg(to_room(c2w), truth[s]) for s, c2w in poses.items()]
    trans = [100 * float(np.linalg.norm(to_room(c2w)[:3, 3] - truth[s][:3, 3])) / diagonal for s, c2w in poses.items()]
    return (f"{np.median(rot):.2f}/{np.percentile(rot, 90):.2f} deg, "
            f"{np.median(trans):.2f}/{np.percentile(trans, 90):.2f} % of the room's diagonal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the --out folder of benchmarks/colmap_path.py")
    parser.add_argument("--camera-optimizer", choices=["SO3xR3", "off"], default="off", help="which of its runs")
    args = parser.parse_args()
    out = args.out.resolve()
    data, scene = out / "colmap", out / "scene"
    config = next((out / f"runs_{args.camera_optimizer}").rglob("config.yml"))
    meta = json.loads((data / "transforms.json").read_text())
    held_out = sorted(Path(f).stem for f in meta["val_filenames"])
    colmap_pose = {f.stem: f.c2w for f in load_dataset(data).frames}
    train_centres = np.array([colmap_pose[Path(f).stem][:3, 3] for f in meta["train_filenames"]])
    extent = float(np.linalg.norm(train_centres.max(axis=0) - train_centres.min(axis=0)))
    # ns-process-data named the photos frame_00001... in the sorted order of the room's photos
    originals = sorted(p.stem for p in (scene / "images").glob("*.png"))
    unposed = [stem for i, stem in enumerate(originals) if f"frame_{i + 1:05d}" not in colmap_pose]
    # the truth: the room's own poses, and COLMAP's frame mapped onto the room's by the photos COLMAP posed
    room_pose = {f.stem: f.c2w for f in load_dataset(scene).frames}
    original_of = {f"frame_{i + 1:05d}": stem for i, stem in enumerate(originals)}
    to_room = colmap_to_room({original_of[s]: c2w for s, c2w in colmap_pose.items()}, room_pose)
    held_out_truth = {s: room_pose[original_of[s]] for s in held_out}
    diagonal = float(np.hypot(*json.loads((scene / "synth.json").read_text())["room_size_m"]))
    work = out / f"register_{args.camera_optimizer}"
    instances = data / "instances.json"
    result: Dict[str, Dict] = {}

    photos = photo_folder(work / "held_out", {stem: data for stem in held_out})
    reg = register(config, photos, work / "held_out_registered")
    at_colmap = work / "held_out_colmap_poses"
    shutil.rmtree(at_colmap, ignore_errors=True)
    loc_main(LocConfig(output=at_colmap, run=RunOptions(load_config=config), data=data, split="val",
                       masks=data / "masks"))
    poses = reg["poses"]
    rotation = [rotation_error_deg(poses[s], colmap_pose[s]) for s in poses]
    translation = [float(np.linalg.norm(poses[s][:3, 3] - colmap_pose[s][:3, 3])) / extent for s in poses]
    scored = with_refused_blank(work / "held_out_registered", photos, held_out, work / "held_out_registered_all")
    registered = sorted(poses)
    times = [r["registration"]["register_s"] for r in reg["report"].values()]
    result["held-out"] = {
        "photos": len(held_out), "registered": len(registered), **error_summary(rotation, translation),
        "pq_registered_all": things_pq(scored, photos, held_out, instances),
        "pq_colmap_poses_all": things_pq(at_colmap, photos, held_out, instances),
        "pq_registered_only": things_pq(scored, photos, registered, instances),
        "pq_colmap_poses_registered_only": things_pq(at_colmap, photos, registered, instances),
        "registered_to_truth": errors_to_truth(poses, to_room, held_out_truth, diagonal),
        "colmap_to_truth": errors_to_truth({s: colmap_pose[s] for s in held_out}, to_room, held_out_truth, diagonal),
        "register_s": float(np.mean(times)),
        "query_s": float(np.mean([r["query_s"] for r in reg["report"].values() if "query_s" in r] or [np.nan])),
    }
    if unposed:
        photos = photo_folder(work / "unposed", {stem: scene for stem in unposed})
        reg = register(config, photos, work / "unposed_registered")
        scored = with_refused_blank(work / "unposed_registered", photos, unposed, work / "unposed_registered_all")
        got = sorted(reg["poses"])
        result["not posed by COLMAP"] = {"photos": len(unposed), "registered": len(got),
                                         "pq_all": things_pq(scored, photos, unposed, instances),
                                         "pq_registered_only": things_pq(scored, photos, got, instances),
                                         "registered_to_truth": errors_to_truth(reg["poses"], to_room, room_pose,
                                                                                diagonal)}

    print(f"\nregistration against the COLMAP path's map (camera optimizer {args.camera_optimizer}, load "
          f"{os.getloadavg()[0]:.2f})")
    r = result["held-out"]
    errors = "-" if r["rotation_deg_median"] is None else (
        f"rot {r['rotation_deg_median']:.2f}/{r['rotation_deg_p90']:.2f} deg, trans "
        f"{100 * r['translation_rel_median']:.2f}/{100 * r['translation_rel_p90']:.2f} % of the cameras' extent "
        "(median/p90, against COLMAP's poses)")
    print(f"  held-out photos  registered {r['registered']}/{r['photos']}  {errors}")
    print(f"                   against the room's true poses: registered {r['registered_to_truth']}; COLMAP's own "
          f"{r['colmap_to_truth']} (COLMAP's frame fitted to the room's by the photos it posed)")
    print(f"                   things PQ registered {r['pq_registered_all']:.3f} vs COLMAP's poses "
          f"{r['pq_colmap_poses_all']:.3f} (registered photos only {r['pq_registered_only']:.3f} vs "
          f"{r['pq_colmap_poses_registered_only']:.3f}); s/photo register {r['register_s']:.3f} + query "
          f"{r['query_s']:.3f}")
    if "not posed by COLMAP" in result:
        u = result["not posed by COLMAP"]
        print(f"  photos COLMAP could not pose: registered {u['registered']}/{u['photos']}, things PQ {u['pq_all']:.3f}"
              f" (refused photos count as photos without ids; registered photos only {u['pq_registered_only']:.3f});"
              f" poses against the room's: {u['registered_to_truth']}")
    (out / f"register_{args.camera_optimizer}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
