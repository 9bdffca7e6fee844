"""InstanceLift on a GPU with the paper's config, next to the paper's numbers (3DIML: InstanceLift 5.6 min on a Replica
room, InstanceLoc 0.16 s per image).

Steps (each skipped when its output exists, so an interrupted run resumes):
1. ``instance-synth --preset room200`` (320x240, 200 train + 20 val frames) and ``instance-map`` (depth matches);
2. per-iteration seconds of ``instance-nerfacto`` vs ``nerfacto`` with the same sampler, grids and 4,096 rays,
   interleaved blocks in one process (CUDA synchronised around each iteration);
3. ``ns-train instance-nerfacto`` for 5,000 iterations: wall time (end-of-training merge and bake included) and the
   training loop alone (from nerfstudio's log of the total train time, when it prints one);
4. ``instance-render`` of the val views (fast path) and the full volume render: seconds per frame;
5. ``instance-loc`` on the val views with the given masks: query seconds per image (loc.json), with and without the
   views' depth maps.

    .venv/bin/python benchmarks/cuda_lift.py --work /tmp/cuda_lift            # on a CUDA machine
    .venv/bin/python benchmarks/cuda_lift.py --work /tmp/cuda_lift --dry-run  # print the plan, run nothing

Needs a CUDA device (tinycudann optional: without it nerfstudio's torch hash grid runs on the GPU, slower than the
paper's). Not run in the project's CPU-only sessions.
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

PAPER = {"instance_lift_minutes": 5.6, "instance_loc_seconds_per_image": 0.16}
"""3DIML's reported costs (Replica, one GPU)."""
PRESET = "room200"
METHOD = "instance-nerfacto"
ITERATIONS = 5000


def bin_path(name: str) -> str:
    """A console script of this environment (beside the running python)."""
    return str(Path(sys.executable).parent / name)


def plan(work: Path, iterations: int, seed: int) -> List[Dict]:
    """The commands of steps 1, 3, 4 and 5 (step 2 runs in this process)."""
    scene, runs = work / "scene", work / "runs"
    config = runs / "cuda" / METHOD / "bench" / "config.yml"
    return [
        {"name": "instance-synth", "done": scene / "transforms.json",
         "cmd": [bin_path("instance-synth"), "--out", scene, "--preset", PRESET, "--seed", seed]},
        {"name": "instance-map", "done": scene / "pseudolabels" / "labels.json",
         "cmd": [bin_path("instance-map"), "--data", scene]},
        {"name": "ns-train", "done": config,
         "cmd": [bin_path("ns-train"), METHOD, "--data", scene, "--output-dir", runs, "--experiment-name", "cuda",
                 "--timestamp", "bench", "--max-num-iterations", iterations, "--vis", "tensorboard",
                 "--viewer.quit-on-train-completion", "True", "--pipeline.model.camera-optimizer.mode", "off"]},
        {"name": "instance-render (fast)", "done": None, "out": work / "render_fast",
         "cmd": [bin_path("instance-render"), "--load-config", config, "--output", work / "render_fast",
                 "--split", "val"]},
        {"name": "instance-render (full)", "done": None, "out": work / "render_full",
         "cmd": [bin_path("instance-render"), "--load-config", config, "--output", work / "render_full",
                 "--split", "val", "--full-render"]},
        {"name": "instance-loc (depth)", "done": None, "out": work / "loc",
         "cmd": [bin_path("instance-loc"), "--load-config", config, "--data", scene, "--split", "val",
                 "--masks", scene / "masks", "--output", work / "loc"]},
        {"name": "instance-loc (no depth)", "done": None, "out": work / "loc_rgb",
         "cmd": [bin_path("instance-loc"), "--load-config", config, "--data", scene, "--split", "val",
                 "--masks", scene / "masks", "--output", work / "loc_rgb", "--query-depth", "off"]},
    ]


def iteration_ratio(scene: Path, iterations: int = 30, blocks: int = 4) -> Dict:
    """Seconds per iteration of the paper's config vs nerfacto with the same settings, on CUDA."""
    import numpy as np
    import torch
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from instance_nerfacto.config import instance_nerfacto_trainer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instance_lift import run_iterations

    trainer = instance_nerfacto_trainer()
    trainer.pipeline.datamanager.dataparser.data = scene
    datamanager = trainer.pipeline.datamanager.setup(device="cuda", test_mode="val")
    instance_config = trainer.pipeline.model
    instance_config.camera_optimizer.mode = "off"
    nerfacto_config = NerfactoModelConfig(**{name: getattr(instance_config, name) for name in
                                             NerfactoModelConfig.__dataclass_fields__ if name != "_target"})
    common = dict(scene_box=datamanager.train_dataset.scene_box, num_train_data=len(datamanager.train_dataset),
                  metadata=datamanager.train_dataset.metadata)
    # LPIPS is offline-safe once the plugin is imported (core/compat.py)
    models = {"nerfacto": nerfacto_config.setup(**common).cuda(), METHOD: instance_config.setup(**common).cuda()}
    optimizers = {name: [trainer.optimizers[group]["optimizer"].setup(params=params)
                         for group, params in model.get_param_groups().items() if params]
                  for name, model in models.items()}
    batches = []
    for step in range(iterations):
        bundle, batch = datamanager.next_train(step)
        batches.append((bundle, {k: v for k, v in batch.items() if k != "depth_image"}))
    seconds: Dict[str, List[float]] = {name: [] for name in models}
    for block in range(blocks):
        for name, model in models.items():
            torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.autocast("cuda", enabled=trainer.mixed_precision):
                run_iterations(model, optimizers[name], batches)
            torch.cuda.synchronize()
            if block > 0:
                seconds[name].append((time.perf_counter() - started) / iterations)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    return {"seconds_per_iteration": median, "ratio": median[METHOD] / median["nerfacto"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cuda_lift"))
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parser.parse_args()
    steps = plan(args.work, args.iterations, args.seed)
    if args.dry_run:
        for step in steps:
            print(f"{step['name']}: {' '.join(str(c) for c in step['cmd'])}")
        print(f"paper: {PAPER}")
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("cuda_lift: no CUDA device (this benchmark is for a GPU machine; --dry-run prints the plan)")
    args.work.mkdir(parents=True, exist_ok=True)
    report: Dict = {"preset": PRESET, "iterations": args.iterations, "paper": PAPER,
                    "device": torch.cuda.get_device_name(0)}
    seconds: Dict[str, float] = {}
    for step in steps:
        if step["name"] == "ns-train":  # the per-iteration ratio first, on a GPU nothing else uses yet
            report["iteration"] = iteration_ratio(args.work / "scene")
            print(f"per-iteration: {report['iteration']}", flush=True)
        if step["done"] is not None and Path(step["done"]).exists():
            continue
        if step.get("out") is not None:
            shutil.rmtree(step["out"], ignore_errors=True)
        started = time.perf_counter()
        subprocess.run([str(c) for c in step["cmd"]], check=True)
        seconds[step["name"]] = time.perf_counter() - started
        print(f"{step['name']}: {seconds[step['name']]:.1f} s", flush=True)
    report["seconds"] = seconds
    val_frames = len(list((args.work / "render_fast").glob("*.png")))
    for name, folder in (("fast", "render_fast"), ("full", "render_full")):
        report[f"instance_render_{name}_s_per_frame"] = seconds[f"instance-render ({name})"] / max(val_frames, 1)
    for name, folder in (("depth", "loc"), ("no_depth", "loc_rgb")):
        loc = json.loads((args.work / folder / "loc.json").read_text())
        query = sorted(r["query_s"] for r in loc.values())
        report[f"instance_loc_{name}_query_s"] = {"median": query[len(query) // 2], "max": query[-1]}
    train_s = seconds.get("ns-train")
    print(f"InstanceLift {args.iterations} iterations: "
          f"{train_s / 60:.1f} min wall (paper {PAPER['instance_lift_minutes']} min)" if train_s else
          "InstanceLift: run reused, no wall time")
    print(f"instance-nerfacto / nerfacto per iteration: {report['iteration']['ratio']:.3f}")
    print(f"instance-render: {report['instance_render_fast_s_per_frame']:.3f} s/frame fast, "
          f"{report['instance_render_full_s_per_frame']:.3f} s/frame full")
    print(f"instance-loc query: {report['instance_loc_depth_query_s']} s (depth), "
          f"{report['instance_loc_no_depth_query_s']} s (no depth); paper {PAPER['instance_loc_seconds_per_image']} s")
    (args.work / "cuda_report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
