"""InstanceLift drift: does an iteration of ``ns-train instance-nerfacto-small`` get slower as training goes on?

Runs nerfstudio's own Trainer (callbacks, eval batches, checkpoints, tensorboard writer: what ns-train runs) for
``--iterations`` steps and times every ``train_iteration`` (wall and the main thread's CPU seconds). Every
``--every`` steps it counts subnormal floats in the optimizer state (Adam's first moment of hash-table entries that
stopped receiving gradient decays by 0.9 per step into the subnormal range, where x86 arithmetic takes a slow
microcode path unless flush-to-zero is on). Prints the median per window and the ratio of the last window to the
first after warm-up.

    .venv/bin/python benchmarks/lift_drift.py --scene /tmp/scenes/demo --iterations 2000
    .venv/bin/python benchmarks/lift_drift.py --scene /tmp/scenes/demo --iterations 2000 --no-flush-denormal
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch


def subnormal_fraction(optimizers) -> float:
    """Fraction of the optimizer-state floats (of tensors with more than one value) that are subnormal."""
    count = total = 0
    for optimizer in optimizers.optimizers.values():
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value) and value.is_floating_point() and value.numel() > 1:
                    tiny = torch.finfo(value.dtype).tiny
                    count += int(((value != 0) & (value.abs() < tiny)).sum())
                    total += value.numel()
    return count / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="a dataset with pseudolabels/ (or gt/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_drift"))
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--window", type=int, default=500, help="steps per reported window")
    parser.add_argument("--warmup", type=int, default=50, help="steps left out of the first window")
    parser.add_argument("--rays", type=int, default=512, help="rays per batch (fewer: reach late steps sooner)")
    parser.add_argument("--every", type=int, default=250, help="count subnormals every N steps")
    parser.add_argument("--no-flush-denormal", action="store_true",
                        help="turn flush-to-zero off again after the model set it (the behaviour before the fix)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from instance_lift import prepare_scene

    from instance_nerfacto.config import instance_nerfacto_small_trainer

    data = prepare_scene(args.scene, args.work)
    config = instance_nerfacto_small_trainer()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser.data = data
    config.pipeline.datamanager.train_num_rays_per_batch = args.rays
    config.pipeline.model.camera_optimizer.mode = "off"
    config.pipeline.model.merge_after_training = False
    config.machine.device_type = "cpu"
    config.max_num_iterations = args.iterations
    config.vis = "tensorboard"
    config.output_dir = args.work / "outputs"
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    # after-training steps (density-grid bake, merging) are not iterations; they only delay the report
    trainer.callbacks = [c for c in trainer.callbacks if TrainingCallbackLocation.AFTER_TRAIN not in c.where_to_run]
    if args.no_flush_denormal:  # building the model switched flush-to-zero on
        torch.set_flush_denormal(False)

    wall: List[float] = []
    cpu: List[float] = []
    optimizer_step: List[float] = []
    subnormals: Dict[int, float] = {}
    train_iteration = trainer.train_iteration

    def timed(step: int):
        started, started_cpu = time.perf_counter(), time.thread_time()
        out = train_iteration(step)
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
        if step % args.every == 0 or step == args.iterations - 1:
            subnormals[step] = subnormal_fraction(trainer.optimizers)
        return out

    trainer.train_iteration = timed
    optimizer_step_some = trainer.optimizers.optimizer_scaler_step_some

    def timed_step(*step_args, **step_kwargs):
        started = time.perf_counter()
        out = optimizer_step_some(*step_args, **step_kwargs)
        optimizer_step.append(time.perf_counter() - started)
        return out

    trainer.optimizers.optimizer_scaler_step_some = timed_step
    trainer.train()

    windows = []
    for start in range(0, len(wall), args.window):
        first = start + (args.warmup if start == 0 else 0)
        windows.append({"steps": f"{first}-{min(start + args.window, len(wall)) - 1}",
                        "wall_median_s": float(np.median(wall[first:start + args.window])),
                        "cpu_median_s": float(np.median(cpu[first:start + args.window])),
                        "optimizer_step_median_s": float(np.median(optimizer_step[first:start + args.window]))})
    report = {"flush_denormal": not args.no_flush_denormal, "threads": torch.get_num_threads(),
              "windows": windows, "subnormal_fraction_of_optimizer_state": subnormals,
              "last_over_first_wall": windows[-1]["wall_median_s"] / windows[0]["wall_median_s"],
              "last_over_first_cpu": windows[-1]["cpu_median_s"] / windows[0]["cpu_median_s"],
              "last_over_first_optimizer_step": windows[-1]["optimizer_step_median_s"]
              / windows[0]["optimizer_step_median_s"]}
    for window in windows:
        print(f"steps {window['steps']:>10s}: {window['wall_median_s']:.3f} s wall, {window['cpu_median_s']:.3f} s "
              f"CPU (main thread), optimizer step {window['optimizer_step_median_s']:.4f} s", flush=True)
    print(f"subnormal fraction of optimizer state by step: {subnormals}")
    print(f"last window / first window: wall {report['last_over_first_wall']:.2f}, "
          f"CPU {report['last_over_first_cpu']:.2f}, optimizer step {report['last_over_first_optimizer_step']:.2f} "
          f"(flush denormal {report['flush_denormal']}, "
          f"{report['threads']} threads)")
    (args.work / "drift_report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
