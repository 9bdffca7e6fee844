"""InstanceMap benchmark: wall time and peak memory per stage, scene PQ / matched mIoU, against the oracle.

Runs ``instance-map`` (fresh, no cache) on 100-frame 320x240 rendered rooms: with depth (the depth matcher), and on a
copy of each scene whose transforms.json lists no depth maps (the no-depth setting) with the default (stereo) and with
SIFT; then scores each output against ``gt/`` (things only, and all ids) beside the oracle (every noisy mask given the
gt id it covers most) and the raw per-frame masks. Wall time, CPU time and peak RSS are the child process's; the
load average is printed beside them (the machines are shared).

    .venv/bin/python benchmarks/instance_map.py /tmp/scenes/demo [/tmp/scenes/other ...]
    .venv/bin/python benchmarks/instance_map.py --seed 3            # renders a demo room with instance-synth first
    .venv/bin/python benchmarks/instance_map.py ROOM --runs depth default-nodepth sift-nodepth flow-nodepth

A run is ``MATCHER`` or ``MATCHER-nodepth``; ``default`` passes no --matcher (the automatic choice).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from oracle_pq import oracle_scores  # noqa: E402

from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402

CLI = [sys.executable, "-c", "from data_preprocess.instance_map import entrypoint; entrypoint()"]


def run_timed(args: List[str]) -> Dict:
    """Run a command; wall seconds and the child's peak RSS (MB) from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"instance-map failed ({proc.returncode}): {err.strip()}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
            "load": os.getloadavg()[0], "summary_line": err.strip().splitlines()[-1]}


def no_depth_copy(scene: Path, dest: Path) -> Path:
    """The scene without depth: symlinked folders, transforms.json without depth_file_path."""
    dest.mkdir()
    for name in ("images", "masks", "gt"):
        (dest / name).symlink_to(scene / name)
    meta = json.loads((scene / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
    (dest / "transforms.json").write_text(json.dumps(meta))
    return dest


def score(pred: Path, scene: Path, stems=None) -> Dict[str, Dict]:
    return {"things": evaluate_dirs(pred, scene / "gt", things_json=scene / "instances.json", stems=stems),
            "all": evaluate_dirs(pred, scene / "gt", stems=stems)}


def fmt(name: str, m: Dict[str, Dict], extra: str = "") -> str:
    t, a = m["things"], m["all"]
    return (f"{name:<16} things PQ {t['scene_pq']:.3f} mIoU {t['matched_miou']:.3f} ({t['n_matched']}/{t['n_gt']})"
            f" | all ids PQ {a['scene_pq']:.3f} mIoU {a['matched_miou']:.3f}{extra}")


def bench_scene(scene: Path, runs: List[str], work: Path) -> Dict[str, Dict]:
    scene = scene.resolve()
    meta = json.loads((scene / "transforms.json").read_text())
    train = sorted(Path(f).stem for f in meta.get("train_filenames", [f["file_path"] for f in meta["frames"]]))
    print(f"scene {scene}: {len(train)} train frames, {meta['w']}x{meta['h']}, {os.cpu_count()} CPUs", flush=True)
    results = {"oracle": oracle_scores(scene, "train")}
    print(fmt("oracle", results["oracle"]))
    print(fmt("raw masks", score(scene / "masks", scene, train)), flush=True)
    for run in runs:
        matcher, _, variant = run.partition("-")
        data = scene if not variant else no_depth_copy(scene, work / f"{scene.name}-nodepth-{matcher}")
        out = work / f"{scene.name}-out-{run}"
        args = CLI + ["--data", str(data), "--output", str(out), "--no-cache"]
        res = run_timed(args + ([] if matcher == "default" else ["--matcher", matcher]))
        labels = json.loads((out / "labels.json").read_text())
        stages = ", ".join(f"{k} {v:.1f}s/{labels['peak_rss_mb'].get(k, 0):.0f}MB"
                           for k, v in labels["timings_s"].items() if k != "total")
        extra = (f" | K {labels['K']}, wall {res['wall_s']:.1f} s (cpu {res['cpu_s']:.1f} s, load {res['load']:.1f}),"
                 f" peak {res['peak_mb']:.0f} MB")
        results[run] = {**score(out, scene), **res, "matcher": labels["matcher"]}
        print(fmt(run, results[run], extra))
        print(f"{'':<16} stages: {stages}")
        print(f"{'':<16} {res['summary_line']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", type=Path, nargs="*", help="scene folders from instance-synth (default: render one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo room rendered when no scene is given")
    parser.add_argument("--runs", nargs="+", default=["depth", "default-nodepth", "sift-nodepth"],
                        help="which runs: MATCHER or MATCHER-nodepth (depth, default, stereo, flow, sift)")
    parser.add_argument("--json", type=Path, help="write all numbers to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-instance-map-"))
    scenes = args.scenes
    if not scenes:
        scenes = [work / "scene"]
        subprocess.run([sys.executable, "-c", "from data_preprocess.synth.cli import entrypoint; entrypoint()",
                        "--out", str(scenes[0]), "--preset", "demo", "--seed", str(args.seed)], check=True)
    table = {}
    for scene in scenes:
        table[str(scene)] = bench_scene(scene, args.runs, work)
    print("\nscene PQ (things) per room and run:")
    print(f"{'room':<24}" + "".join(f"{r:>18}" for r in ["oracle"] + args.runs))
    for scene, res in table.items():
        print(f"{Path(scene).name:<24}" + "".join(f"{res[r]['things']['scene_pq']:>18.3f}" for r in ["oracle"]
                                                  + args.runs))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2, default=float))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
