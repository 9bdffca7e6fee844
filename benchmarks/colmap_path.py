"""The photos-only path, end to end: COLMAP poses -> InstanceMap without depth -> InstanceLift -> InstanceLoc.

A rendered room is turned into what a phone user has: its photos (training and held-out views together, no poses, no
depth) and per-photo masks. ``ns-process-data images --no-gpu --matching-method exhaustive --camera-type TYPE``
(default perspective) poses them; the held-out photos are listed in ``val_filenames``; then ``instance-map`` (no
depth anywhere), ``ns-train instance-nerfacto-small``, ``instance-render`` and ``instance-loc`` (given masks) on the
held-out photos, each scored by ``instance-eval`` against the room's ground truth. Prints one table.

    .venv/bin/python benchmarks/colmap_path.py --out /tmp/colmap_bench --preset demo --seed 5
    .venv/bin/python benchmarks/colmap_path.py --out /tmp/colmap_bench --camera-optimizer SO3xR3

A second run with the same --out reuses the room and its COLMAP poses; each writes result_<mode>.json.
--camera-optimizer defaults to off, instance-nerfacto-small's default, which the README recommends for COLMAP poses
(seed 5: held-out things PQ of instance-render 0.711 off, 0.614 SO3xR3).

Needs Debian ``colmap`` (``make colmap``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_preprocess.synth.photos import colmap_dataset  # noqa: E402

BIN = Path(sys.executable).parent


def run(name: str, cmd: List, timings: Dict[str, float]) -> None:
    print(f"== {name}: {' '.join(str(c) for c in cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    timings[name] = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def evaluate(pred: Path, data: Path) -> Dict:
    out = pred / "eval.json"
    subprocess.run([str(BIN / "instance-eval"), "--pred", str(pred), "--gt", str(data / "gt"), "--things",
                    str(data / "instances.json"), "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
    things = json.loads(out.read_text())  # things only (--things)
    return {"pq": round(things["scene_pq"], 3), "matched": f"{things['n_matched']}/{things['n_gt']}",
            "miou": round(things["matched_miou"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scene", type=Path, help="a rendered room (instance-synth output); default: render one")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--camera-optimizer", choices=["SO3xR3", "off"], default="off")
    parser.add_argument("--camera-type", choices=["perspective", "pinhole", "fisheye"], default="perspective",
                        help="ns-process-data --camera-type (its default: perspective, COLMAP's OPENCV model)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: Dict[str, float] = {}
    scene = args.scene or out / "scene"
    if not (scene / "transforms.json").exists():
        run("instance-synth", [BIN / "instance-synth", "--out", scene, "--preset", args.preset, "--seed",
                               str(args.seed)], timings)
    data = out / "colmap"
    if not (data / "transforms.json").exists():
        start = time.perf_counter()
        colmap_dataset(scene, data, args.camera_type)
        timings["ns-process-data (COLMAP)"] = round(time.perf_counter() - start, 1)
    pseudo = data / "pseudolabels"
    if pseudo.exists():
        shutil.rmtree(pseudo)
    run("instance-map", [BIN / "instance-map", "--data", data], timings)
    runs = out / f"runs_{args.camera_optimizer}"
    run("ns-train", [BIN / "ns-train", "instance-nerfacto-small", "--data", data, "--output-dir", runs,
                     "--timestamp", "run", "--max-num-iterations", args.iterations, "--machine.device-type", "cpu",
                     "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True",
                     "--pipeline.model.camera-optimizer.mode", args.camera_optimizer], timings)
    config = next(runs.rglob("config.yml"))
    rows = {"pseudolabels (train photos)": evaluate(pseudo, data)}
    for split in ("train", "val"):
        render = out / f"render_{args.camera_optimizer}_{split}"
        run(f"instance-render {split}", [BIN / "instance-render", "--load-config", config, "--output", render,
                                         "--split", split], timings)
        rows[f"instance-render, {split} photos"] = evaluate(render, data)
    loc = out / f"loc_{args.camera_optimizer}"
    run("instance-loc", [BIN / "instance-loc", "--load-config", config, "--data", data, "--split", "val", "--masks",
                         data / "masks", "--output", loc], timings)
    rows["instance-loc, held-out photos (masks given)"] = evaluate(loc, data)
    loc_s = [r["query_s"] for r in json.loads((loc / "loc.json").read_text()).values()]
    print(f"\ncamera optimizer {args.camera_optimizer}, {args.iterations} iterations")
    for name, row in rows.items():
        print(f"{name:48s} things PQ {row['pq']:.3f}  matched {row['matched']:>6s}  mIoU {row['miou']:.3f}")
    print(f"instance-loc query {sum(loc_s) / len(loc_s):.3f} s/image mean, {max(loc_s):.3f} max")
    print("seconds:", json.dumps(timings))
    (out / f"result_{args.camera_optimizer}.json").write_text(json.dumps({"rows": rows, "seconds": timings}, indent=2))


if __name__ == "__main__":
    main()
