"""InstanceMap benchmark: wall time and peak memory per stage, scene PQ / matched mIoU, against the oracle.

Runs ``instance-map`` (fresh, no cache) on a 100-frame 320x240 rendered room with the depth matcher, with SIFT, and
with SIFT on a copy of the scene whose transforms.json lists no depth maps (the no-depth setting), then scores each
output against ``gt/`` (things only, and all ids) beside the oracle (every noisy mask given the gt id it covers most)
and the raw per-frame masks.

    .venv/bin/python benchmarks/instance_map.py /tmp/scenes/demo
    .venv/bin/python benchmarks/instance_map.py --seed 3            # renders a demo room with instance-synth first
"""

from __future__ import annotations

import argparse
import json
import os
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
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"instance-map failed ({proc.returncode}): {err.strip()}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "summary_line": err.strip().splitlines()[-1]}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path, nargs="?", help="scene folder from instance-synth (default: render one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo room rendered when no scene is given")
    parser.add_argument("--runs", nargs="+", default=["depth", "sift", "sift-nodepth"],
                        help="which runs: depth, sift, flow, sift-nodepth, flow-nodepth")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-instance-map-"))
    scene = args.scene
    if scene is None:
        scene = work / "scene"
        subprocess.run([sys.executable, "-c", "from data_preprocess.synth.cli import entrypoint; entrypoint()",
                        "--out", str(scene), "--preset", "demo", "--seed", str(args.seed)], check=True)
    scene = scene.resolve()
    meta = json.loads((scene / "transforms.json").read_text())
    train = sorted(Path(f).stem for f in meta.get("train_filenames", [f["file_path"] for f in meta["frames"]]))
    print(f"scene {scene}: {len(train)} train frames, {meta['w']}x{meta['h']}, {os.cpu_count()} CPUs")
    oracle = oracle_scores(scene, "train")
    print(fmt("oracle", oracle))
    print(fmt("raw masks", score(scene / "masks", scene, train)))
    for run in args.runs:
        matcher, _, variant = run.partition("-")
        data = scene if not variant else no_depth_copy(scene, work / f"nodepth-{matcher}")
        out = work / f"out-{run}"
        res = run_timed(CLI + ["--data", str(data), "--output", str(out), "--matcher", matcher, "--no-cache"])
        labels = json.loads((out / "labels.json").read_text())
        stages = ", ".join(f"{k} {v:.1f}s/{labels['peak_rss_mb'].get(k, 0):.0f}MB"
                           for k, v in labels["timings_s"].items() if k != "total")
        extra = f" | K {labels['K']}, wall {res['wall_s']:.1f} s, peak {res['peak_mb']:.0f} MB"
        print(fmt(run, score(out, scene), extra))
        print(f"{'':<16} stages: {stages}")
        print(f"{'':<16} {res['summary_line']}")


if __name__ == "__main__":
    main()
