"""InstanceLift under load: seconds per training iteration of instance-nerfacto-small idle and beside competing
CPU-bound processes, as a ratio, for the package's thread defaults and for alternatives.

Each measurement is a fresh child process (OpenMP reads its environment once, when torch loads it) that trains
instance-nerfacto-small on the scene's batches: a few warm-up iterations, then ``--iterations`` timed ones (median).
"Loaded" starts ``--competitors`` busy loops (``python -c "while True: pass"``, normal priority) before the child and
stops them after; idle and loaded runs alternate (idle, loaded, idle, loaded) so drifting background load hits both.

    .venv/bin/python benchmarks/lift_load.py --scene /tmp/scenes/tiny --work /tmp/bench_load \\
        --configs default omp2-spin omp2-passive omp1

Configs: ``default`` sets nothing (what every entry point gets from ``import instance_nerfacto``); the others set
OMP_NUM_THREADS / OMP_WAIT_POLICY explicitly. The 2-core project machines are shared: the script prints the load
average before and after, and a ratio is only meaningful when the background load did not move much.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

CONFIGS: Dict[str, Dict[str, str]] = {
    "default": {},
    "omp2-spin": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "omp2-gomp-default": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": ""},
    "omp2-passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "omp1": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}
"""Named thread settings. An empty value removes the variable (libgomp's own default: spin ~300k rounds, then
sleep); ``default`` removes both so the package's import-time defaults decide."""


def worker(scene: Path, iterations: int, warmup: int) -> None:
    """Child: train instance-nerfacto-small for warmup + iterations steps, print one JSON line."""
    import importlib

    importlib.import_module("instance_nerfacto")  # first: the package's thread defaults, as every entry point gets
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instance_lift import build_models, run_iterations

    models, optimizers, datamanager = build_models(scene, which=("instance-nerfacto-small",))
    name = "instance-nerfacto-small"
    batches = [datamanager.next_train(step) for step in range(warmup + iterations)]
    run_iterations(models[name], optimizers[name], batches[:warmup])
    cpu = time.process_time()
    seconds = run_iterations(models[name], optimizers[name], batches[warmup:], step0=warmup)
    cpu = time.process_time() - cpu
    print(json.dumps({"median_s": float(np.median(seconds)), "mean_s": float(np.mean(seconds)),
                      "cpu_s_per_iteration": cpu / iterations, "threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def measure(scene: Path, config: str, iterations: int, warmup: int, competitors: int) -> Dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if config == "default" or CONFIGS[config].get(key) == "":
            env.pop(key, None)
    env.update({k: v for k, v in CONFIGS[config].items() if v})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", "--scene", str(scene), "--iterations",
                              str(iterations), "--warmup", str(warmup)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"worker failed ({config}):\n{out.stderr[-3000:]}")
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="a dataset with pseudolabels/ (or gt/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_lift_load"))
    parser.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--competitors", type=int, default=1, help="busy loops beside the loaded runs")
    parser.add_argument("--repeats", type=int, default=2, help="idle/loaded pairs per config")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.scene, args.iterations, args.warmup)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instance_lift import prepare_scene

    args.work.mkdir(parents=True, exist_ok=True)
    scene = prepare_scene(args.scene, args.work)
    report: Dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "competitors": args.competitors}
    for config in args.configs:
        idle: List[float] = []
        loaded: List[float] = []
        for _ in range(args.repeats):
            idle.append(measure(scene, config, args.iterations, args.warmup, 0)["median_s"])
            result = measure(scene, config, args.iterations, args.warmup, args.competitors)
            loaded.append(result["median_s"])
        idle_s, loaded_s = min(idle), min(loaded)
        report[config] = {"idle_s": idle, "loaded_s": loaded, "threads": result["threads"],
                          "ratio_loaded_over_idle": loaded_s / idle_s}
        print(f"{config:18s} threads {result['threads']}  idle {idle_s:.3f} s/iter  loaded ({args.competitors} busy) "
              f"{loaded_s:.3f} s/iter  ratio {loaded_s / idle_s:.2f}  (runs: idle {idle}, loaded {loaded})",
              flush=True)
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    (args.work / "load_report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
