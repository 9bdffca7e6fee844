"""Long captures: InstanceMap quality and cost as a capture of one room grows (100 / 1,000 / 10,000 frames).

For each room it prints scene PQ (things) over all train frames beside the mask oracle (each noisy mask given its
true id) and their ratio (target >= 0.95), the PQ of a run on the every-10th subsample against the full run's PQ on
the same frames (target: within 0.02), the per-stage time and peak memory (from labels.json) and the wall time, CPU
time and peak RSS of the run with the load average. Each room runs with its depth maps and without (a copy whose
transforms.json lists none: the stereo default).

    .venv/bin/python benchmarks/long_capture.py --seeds 4 9            # demo rooms at 100 and 1,000 frames
    .venv/bin/python benchmarks/long_capture.py SCENE [SCENE ...]      # scenes rendered by instance-synth
    .venv/bin/python benchmarks/long_capture.py --seeds 4 --frames 100 1000 10000 --runs depth

``--seeds`` renders ``instance-synth --preset demo --frames N`` per seed and length: one room along one camera loop at
several densities (the every-10th frame of the 1,000-frame capture has the pose of the 100-frame capture's frame).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from instance_map import CLI, no_depth_copy, run_timed  # noqa: E402
from oracle_pq import oracle_scores  # noqa: E402

from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402

SYNTH = [sys.executable, "-c", "from data_preprocess.synth.cli import entrypoint; entrypoint()"]


def every_kth(scene: Path, dest: Path, k: int) -> List[str]:
    """A dataset of every k-th train frame of ``scene`` (symlinked files): a shorter capture of the same loop."""
    meta = json.loads((scene / "transforms.json").read_text())
    keep = meta["train_filenames"][::k]
    meta.update(frames=[f for f in meta["frames"] if f["file_path"] in keep], train_filenames=keep, val_filenames=[])
    (dest / "masks").mkdir(parents=True)
    for name in ("images", "depth", "gt"):
        if (scene / name).exists():
            (dest / name).symlink_to(scene / name)
    stems = [Path(f).stem for f in keep]
    for stem in stems:
        (dest / "masks" / f"{stem}.png").symlink_to(scene / "masks" / f"{stem}.png")
    (dest / "transforms.json").write_text(json.dumps(meta))
    return stems


def things_pq(pred: Path, scene: Path, stems=None) -> float:
    return evaluate_dirs(pred, scene / "gt", things_json=scene / "instances.json", stems=stems)["scene_pq"]


def run_map(data: Path, out: Path) -> Dict:
    res = run_timed(CLI + ["--data", str(data), "--output", str(out), "--no-cache"])
    labels = json.loads((out / "labels.json").read_text())
    res["stages"] = {k: (round(v, 1), labels["peak_rss_mb"].get(k, 0)) for k, v in labels["timings_s"].items()
                     if k != "total"}
    res["labels"] = labels["K"]
    return res


def bench_room(scene: Path, runs: List[str], work: Path) -> Dict[str, Dict]:
    meta = json.loads((scene / "transforms.json").read_text())
    n = len(meta["train_filenames"])
    oracle = oracle_scores(scene, "train")["things"]["scene_pq"]
    print(f"\nroom {scene.name}: {n} train frames, {meta['w']}x{meta['h']}, oracle things PQ {oracle:.3f}", flush=True)
    out: Dict[str, Dict] = {}
    for run in runs:
        data = scene if run == "depth" else no_depth_copy(scene, work / f"{scene.name}-nodepth")
        res = run_map(data, work / f"{scene.name}-out-{run}")
        res["pq"] = things_pq(work / f"{scene.name}-out-{run}", scene)
        res["oracle"] = oracle
        line = (f"  {run:<8} PQ {res['pq']:.3f} = {res['pq'] / max(oracle, 1e-9):.3f} x oracle, {res['labels']} labels,"
                f" wall {res['wall_s']:.1f} s (cpu {res['cpu_s']:.1f} s, load {res['load']:.1f}), "
                f"peak {res['peak_mb']:.0f} MB")
        if n >= 200:  # the every-10th subsample as a capture of its own, scored on the shared frames
            sub = work / f"{scene.name}-{run}-every10"
            stems = every_kth(data, sub, 10)
            run_map(sub, work / f"{scene.name}-{run}-every10-out")
            res["pq_every10_run"] = things_pq(work / f"{scene.name}-{run}-every10-out", scene, stems)
            res["pq_full_on_every10"] = things_pq(work / f"{scene.name}-out-{run}", scene, stems)
            line += (f"\n           every-10th frames: own run PQ {res['pq_every10_run']:.3f}, full run on them "
                     f"{res['pq_full_on_every10']:.3f} (diff {res['pq_full_on_every10'] - res['pq_every10_run']:+.3f})")
        print(line)
        print("           stages: " + ", ".join(f"{k} {t}s/{m:.0f}MB" for k, (t, m) in res["stages"].items()),
              flush=True)
        out[run] = res
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, nargs="*", help="scene folders from instance-synth")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="render demo rooms of these seeds")
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000], help="lengths rendered per seed")
    parser.add_argument("--runs", nargs="+", choices=("depth", "nodepth"), default=["depth", "nodepth"])
    parser.add_argument("--json", type=Path, help="write all numbers to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-long-capture-"))
    scenes = [s.resolve() for s in args.scenes]
    for seed in args.seeds:
        for n in args.frames:
            scenes.append(work / f"demo-s{seed}-{n}")
            subprocess.run(SYNTH + ["--out", str(scenes[-1]), "--preset", "demo", "--seed", str(seed), "--frames",
                                    str(n)], check=True, stdout=subprocess.DEVNULL)
    table = {scene.name: bench_room(scene, args.runs, work) for scene in scenes}
    print("\nthings PQ / oracle per room and run:")
    for name, res in table.items():
        print(f"  {name:<24}" + "".join(f"  {r} {v['pq']:.3f} / {v['oracle']:.3f} ({v['pq'] / v['oracle']:.2f}x)"
                                        for r, v in res.items()))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2, default=float))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
