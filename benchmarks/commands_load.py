"""The stage commands under load: wall time of instance-map, instance-render and instance-loc idle and beside one
competing CPU-bound process (``python -c "while True: pass"``, normal priority), as ratios from one run.

Each command runs as a user runs it (its console script, the package's thread defaults), idle and loaded alternately
(idle, loaded, idle, loaded, ...) so drifting background load hits both; the ratio is min(loaded) / min(idle).

    .venv/bin/python benchmarks/commands_load.py --scene outputs/demo/scene \\
        --config outputs/demo/runs/scene/instance-nerfacto-small/<run>/config.yml --work /tmp/bench_commands_load

``--scene`` needs transforms.json with val frames and masks/; ``--config`` a trained run on that scene. Outputs go
under ``--work`` (the scene is only read). Target (issue 15): loaded <= 2.5x idle for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

BIN = Path(sys.executable).parent


def commands(scene: Path, config: Path, work: Path) -> Dict[str, List[str]]:
    return {
        "instance-map": [str(BIN / "instance-map"), "--data", str(scene), "--output", str(work / "pseudolabels"),
                         "--no-cache", "--quiet"],
        "instance-render": [str(BIN / "instance-render"), "--load-config", str(config), "--split", "val", "--every",
                            "4", "--output", str(work / "render")],
        "instance-loc": [str(BIN / "instance-loc"), "--load-config", str(config), "--data", str(scene), "--split",
                         "val", "--masks", str(scene / "masks"), "--output", str(work / "loc")],
    }


def timed(command: List[str], competitors: int) -> float:
    """Wall seconds of one run of ``command`` beside ``competitors`` busy loops."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if out.returncode != 0:
        raise SystemExit(f"{Path(command[0]).name} failed:\n{out.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_commands_load"))
    parser.add_argument("--repeats", type=int, default=2, help="idle/loaded pairs per command")
    parser.add_argument("--only", nargs="+", default=None, help="a subset of the commands")
    args = parser.parse_args()
    report: Dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    for name, command in commands(args.scene, args.config, args.work).items():
        if args.only and name not in args.only:
            continue
        idle, loaded = [], []
        for _ in range(args.repeats):
            for runs, competitors in ((idle, 0), (loaded, 1)):
                shutil.rmtree(args.work, ignore_errors=True)
                args.work.mkdir(parents=True)
                runs.append(round(timed(command, competitors), 2))
        ratio = min(loaded) / min(idle)
        report[name] = {"idle_s": idle, "loaded_s": loaded, "ratio_loaded_over_idle": round(ratio, 2)}
        print(f"{name:16s} idle {min(idle):7.2f} s  beside one busy loop {min(loaded):7.2f} s  ratio {ratio:.2f}  "
              f"(runs: idle {idle}, loaded {loaded})", flush=True)
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "commands_load.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
