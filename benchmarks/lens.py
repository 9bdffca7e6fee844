"""Benchmark lens distortion: InstanceMap's pseudolabels on rooms seen through radial (OPENCV) and fisheye
(OPENCV_FISHEYE) lenses against their pinhole twin (same room, poses, intrinsics and mask noise), with and without
depth maps, and the same lens rooms read as if they were pinholes (the distortion dropped from transforms.json).

    .venv/bin/python benchmarks/lens.py --out /tmp/lens --seeds 5 12 [--preset demo]

With ``--loc RUN_DIR`` (a ``config.yml`` under ``RUN_DIR/<lens>/`` for runs trained on the seed's lens rooms, e.g. by
``ns-train instance-nerfacto-small --data OUT/<preset>_s<seed>_<lens>``), InstanceLoc on the rooms' held-out
(distorted) views is scored too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402

BIN = Path(sys.executable).parent
LENSES = ("pinhole", "radial", "fisheye")


def variant(room: Path, out: Path, depth: bool, distortion: bool) -> Path:
    """A copy of a room's transforms.json (images, depth, masks linked) without depth maps and/or distortion."""
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((room / "transforms.json").read_text())
    if not depth:
        for frame in meta["frames"]:
            frame.pop("depth_file_path", None)
    if not distortion:
        meta.update(camera_model="OPENCV", k1=0.0, k2=0.0, k3=0.0, k4=0.0)
    (out / "transforms.json").write_text(json.dumps(meta))
    for sub in ("images", "depth", "masks"):
        if not (out / sub).exists():
            (out / sub).symlink_to((room / sub).resolve())
    return out


def map_pq(data: Path, room: Path, output: Path) -> float:
    if not (output / "labels.json").is_file():
        subprocess.run([str(BIN / "instance-map"), "--data", str(data), "--output", str(output), "--quiet"],
                       check=True)
    return evaluate_dirs(output, room / "gt", things_json=room / "instances.json")["scene_pq"]


def loc_pq(config: Path, room: Path, output: Path) -> float:
    if not (output / "loc.json").is_file():
        subprocess.run([str(BIN / "instance-loc"), "--load-config", str(config), "--data", str(room), "--split",
                        "val", "--masks", str(room / "masks"), "--output", str(output)], check=True,
                       stdout=subprocess.DEVNULL)
    stems = [p.stem for p in output.glob("val_*.png")]
    return evaluate_dirs(output, room / "gt", things_json=room / "instances.json", stems=stems)["scene_pq"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[5])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--loc", type=Path, help="folder of trained runs <lens>/.../config.yml (one seed)")
    args = parser.parse_args()
    header = f"{'room':16} {'lens':8} {'depth':>6} {'no depth':>9} {'ignored':>8}"
    print(header + ("  instance-loc" if args.loc else ""))
    for seed in args.seeds:
        rows = {}
        for lens in LENSES:
            room = args.out / f"{args.preset}_s{seed}_{lens}"
            if not (room / "synth.json").is_file():
                subprocess.run([str(BIN / "instance-synth"), "--out", str(room), "--preset", args.preset, "--seed",
                                str(seed), "--lens", lens, "--overwrite"], check=True, stdout=subprocess.DEVNULL)
            work = args.out / "work" / room.name
            depth = map_pq(room, room, work / "depth")
            no_depth = map_pq(variant(room, work / "nd_data", False, True), room, work / "nd")
            ignored = None if lens == "pinhole" else \
                map_pq(variant(room, work / "ignored_data", False, False), room, work / "ignored")
            loc = None
            config = next((args.loc / lens).rglob("config.yml"), None) if args.loc else None
            if config is not None:
                loc = loc_pq(config, room, work / "loc")
            rows[lens] = (depth, no_depth, ignored, loc)
            print(f"{room.name:16} {lens:8} {depth:6.3f} {no_depth:9.3f} "
                  f"{'' if ignored is None else f'{ignored:8.3f}':>8}" + ("" if loc is None else f"  {loc:12.3f}"),
                  flush=True)
        pin = rows["pinhole"]
        for lens in LENSES[1:]:
            gaps = [f"{rows[lens][k] - pin[k]:+.3f}" for k in (0, 1)]
            loc_gap = "" if rows[lens][3] is None or pin[3] is None else f", instance-loc {rows[lens][3] - pin[3]:+.3f}"
            print(f"  {lens} - pinhole twin: depth {gaps[0]}, no depth {gaps[1]}{loc_gap}")


if __name__ == "__main__":
    main()
