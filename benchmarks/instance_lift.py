"""InstanceLift benchmarks (issue 5).

(a) seconds per training iteration of instance-nerfacto-small vs nerfacto with the same sampler and ray settings, as
    a ratio from one run (short interleaved blocks A, B, A, B, ... so load from other processes hits both alike:
    by default 31 blocks of 10 iterations; the ratio of the two models' medians, and the median of the block-pair
    ratios; single blocks of 10 iterations on this 2-core VM spread 0.75-1.57, so trust the run, not a block);
(b) scene PQ of instance-render output on the training views after 500 / 1,000 / 2,000 (/ 5,000) iterations, and on
    the novel (val) views at the last step against ground truth;
(c) seconds per label frame of instance-render (baked fast path) vs the full volume render of the same frames, with
    both PQs.

Usage (scene with pseudolabels/ or with gt/ to derive noisy stand-in pseudolabels):

    nice .venv/bin/python benchmarks/instance_lift.py --scene /tmp/scenes/demo --work /tmp/bench_lift \
        --parts a b c --iterations 500 1000 2000 --frames 4

PQ is reported against the pseudolabels the model was trained on (the issue's check) and, when the scene has gt/,
against ground truth (things only when instances.json exists). Seconds are wall clock; CPU seconds are printed beside
them because the shared 2-core machines are often loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from instance_nerfacto.eval.metrics import evaluate_dirs
from instance_nerfacto.eval.noisy_labels import make_noisy_pseudolabels


def prepare_scene(scene: Path, work: Path) -> Path:
    """A copy of the scene with pseudolabels/ (gt with noise when the scene has none)."""
    data = work / "data"
    if not data.exists():
        shutil.copytree(scene, data)
    if not (data / "pseudolabels" / "labels.json").is_file():
        make_noisy_pseudolabels(data / "gt", data / "pseudolabels", seed=0)
    return data


def score(pred_dir: Path, data: Path, stems: List[str]) -> Dict[str, float]:
    things = data / "instances.json" if (data / "instances.json").is_file() else None
    out = {"pq_vs_pseudolabels": evaluate_dirs(pred_dir, data / "pseudolabels", stems=stems)["scene_pq"]}
    if (data / "gt").is_dir():
        out["pq_vs_gt_things"] = evaluate_dirs(pred_dir, data / "gt", things_json=things, stems=stems)["scene_pq"]
    return out


def build_models(data: Path, which=("nerfacto", "instance-nerfacto-small"), rays: int = 512,
                 label_top_k: Optional[int] = None):
    """The two models with the same sampler, grids and rays (instance-nerfacto-small's), their optimizers (the method
    config's, one per nerfstudio param group) and the datamanager that feeds both."""
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from instance_nerfacto.config import instance_nerfacto_small_trainer

    trainer = instance_nerfacto_small_trainer()
    datamanager_config = trainer.pipeline.datamanager
    datamanager_config.dataparser.data = data
    datamanager_config.train_num_rays_per_batch = rays
    datamanager = datamanager_config.setup(device="cpu", test_mode="val")
    instance_config = trainer.pipeline.model
    if label_top_k is not None:
        instance_config.label_top_k = label_top_k
    nerfacto_config = NerfactoModelConfig(
        **{f.name: getattr(instance_config, f.name) for f in fields(NerfactoModelConfig) if f.name != "_target"}
    )
    configs = {"nerfacto": nerfacto_config, "instance-nerfacto-small": instance_config}
    common = dict(scene_box=datamanager.train_dataset.scene_box, num_train_data=len(datamanager.train_dataset),
                  metadata=datamanager.train_dataset.metadata)
    # LPIPS is offline-safe once the plugin is imported (core/compat.py)
    models = {name: configs[name].setup(**common) for name in which}
    # the optimizers ns-train builds from the method config, for both models
    optimizers = {name: [trainer.optimizers[group]["optimizer"].setup(params=params)
                         for group, params in model.get_param_groups().items() if params]
                  for name, model in models.items()}
    return models, optimizers, datamanager


def run_iterations(model, optimizers, batches, step0: int = 0, cpu: Optional[List[float]] = None) -> List[float]:
    """Train on the given batches; seconds of each iteration (forward, losses, backward, optimizer step). With
    ``cpu``, also appends the CPU seconds of this thread per iteration (with one torch thread: all of the work, and far
    less disturbed than wall time by other processes on a shared machine)."""
    model.train()
    seconds = []
    for step, (ray_bundle, batch) in enumerate(batches, start=step0):
        started, started_cpu = time.perf_counter(), time.thread_time()
        model.step = step
        outputs = model(ray_bundle)  # forward applies the near/far collider
        metrics = model.get_metrics_dict(outputs, batch)
        loss = sum(model.get_loss_dict(outputs, batch, metrics).values())
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        seconds.append(time.perf_counter() - started)
        if cpu is not None:
            cpu.append(time.thread_time() - started_cpu)
    return seconds


def part_a(data: Path, iterations: int = 10, blocks: int = 31, label_top_k: Optional[int] = None) -> Dict:
    """Per-iteration time of the two models on the same batches, interleaved in blocks (A, B, A, B, ...) so that load
    from other processes hits both alike; the first block of each is warm-up. Both models train without depth (the
    nerfacto baseline has no depth loss), so the ratio is the cost of the label branch alone."""
    models, optimizers, datamanager = build_models(data, label_top_k=label_top_k)
    batches = []
    for step in range(iterations):
        ray_bundle, batch = datamanager.next_train(step)
        batches.append((ray_bundle, {k: v for k, v in batch.items() if k != "depth_image"}))
    seconds: Dict[str, List[float]] = {name: [] for name in models}
    cpu: Dict[str, List[float]] = {name: [] for name in models}
    for block in range(blocks):
        for name, model in models.items():
            block_cpu: List[float] = []
            times = run_iterations(model, optimizers[name], batches, step0=block * iterations, cpu=block_cpu)
            if block > 0:
                seconds[name] += times
                cpu[name] += block_cpu
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    mean = {name: float(np.mean(s)) for name, s in seconds.items()}
    # per-block ratios: each block pair ran back to back, so their spread shows how much the load moved
    pair = [float(np.median(seconds["instance-nerfacto-small"][i:i + iterations])
                  / np.median(seconds["nerfacto"][i:i + iterations]))
            for i in range(0, len(seconds["nerfacto"]), iterations)]
    cpu_median = {name: float(np.median(s)) for name, s in cpu.items()}
    return {"seconds_per_iteration_median": median, "seconds_per_iteration_mean": mean,
            "ratio": median["instance-nerfacto-small"] / median["nerfacto"], "ratio_per_block": pair,
            "ratio_per_block_median": float(np.median(pair)),
            "cpu_seconds_per_iteration_median": cpu_median,
            "cpu_ratio": cpu_median["instance-nerfacto-small"] / cpu_median["nerfacto"],
            "label_top_k": models["instance-nerfacto-small"].field.label_top_k,
            "threads": torch.get_num_threads(), "load_average": os.getloadavg()}


def train(data: Path, work: Path, max_iterations: int, save_every: int, extra: Optional[List[str]] = None) -> Path:
    out = work / "outputs"
    command = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()",
               "instance-nerfacto-small", "--data", str(data), "--machine.device-type", "cpu",
               "--max-num-iterations", str(max_iterations), "--steps-per-save", str(save_every),
               "--save-only-latest-checkpoint", "False", "--viewer.quit-on-train-completion", "True",
               "--vis", "tensorboard", "--output-dir", str(out), "--timestamp", "bench", *(extra or [])]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"trained {max_iterations} iterations in {time.perf_counter() - started:.0f} s", flush=True)
    return next(out.glob("*/instance-nerfacto-small/bench/config.yml"))


def render(config: Path, out: Path, step: Optional[int] = None, full: bool = False, every: int = 1,
           split: str = "train") -> Dict:
    from instance_nerfacto.core.runs import RunOptions
    from instance_nerfacto.render.cli import RenderConfig, main

    cpu_started = time.process_time()
    result = main(RenderConfig(run=RunOptions(load_config=config, load_step=step), output=out, split=split, every=every,
                               full_render=full))
    result["cpu_seconds_per_frame"] = (time.process_time() - cpu_started) / result["frames"]
    return result


def part_b(config: Path, data: Path, work: Path, steps: List[int]) -> Dict:
    results = {}
    for step in steps:
        out = work / f"render_step{step}"
        shutil.rmtree(out, ignore_errors=True)
        timing = render(config, out, step=step)
        stems = sorted(p.stem for p in out.glob("*.png"))
        results[step] = {**score(out, data, stems), "seconds_per_frame": timing["seconds_per_frame"]}
        print(f"(b) step {step}: {results[step]}", flush=True)
    noisy = score(data / "pseudolabels", data, stems)
    novel = {}
    if (data / "gt").is_dir():  # novel views (the val split) at the last step, against ground truth
        out = work / "render_val"
        shutil.rmtree(out, ignore_errors=True)
        render(config, out, step=steps[-1], split="val")
        things = data / "instances.json" if (data / "instances.json").is_file() else None
        val_stems = sorted(p.stem for p in out.glob("*.png"))
        novel = {"pq_vs_gt_things": evaluate_dirs(out, data / "gt", things_json=things, stems=val_stems)["scene_pq"],
                 "frames": len(val_stems)}
        print(f"(b) novel views, step {steps[-1]}: {novel}", flush=True)
    return {"per_step": results, "pseudolabels_themselves": noisy, "novel_views": novel}


def part_c(config: Path, data: Path, work: Path, every: int) -> Dict:
    results = {}
    for name, full in (("fast", False), ("full", True)):
        out = work / f"render_{name}"
        shutil.rmtree(out, ignore_errors=True)
        timing = render(config, out, full=full, every=every)
        stems = sorted(p.stem for p in out.glob("*.png"))
        results[name] = {**timing, **score(out, data, stems)}
        print(f"(c) {name}: {results[name]}", flush=True)
    results["speedup"] = results["full"]["seconds_per_frame"] / results["fast"]["seconds_per_frame"]
    from instance_nerfacto.core.files import read_label_png

    agree = [float((read_label_png(work / "render_fast" / f"{s}.png") == read_label_png(path)).mean())
             for s, path in ((p.stem, p) for p in sorted((work / "render_full").glob("*.png")))]
    results["pixel_agreement_fast_vs_full"] = sum(agree) / len(agree)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--label-top-k", type=int, default=None,
                        help="samples per ray read by the label branch, in (a) and in the training of (b) and (c)")
    parser.add_argument("--iterations", nargs="+", type=int, default=[500, 1000, 2000])
    parser.add_argument("--block-iterations", type=int, default=10, help="(a): iterations per interleaved block")
    parser.add_argument("--blocks", type=int, default=31, help="(a): blocks per model (the first is warm-up)")
    parser.add_argument("--every", type=int, default=25, help="(c): render every K-th training frame")
    parser.add_argument("--config", type=Path, default=None, help="reuse a trained run instead of training")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare_scene(args.scene, args.work)
    report: Dict = {"scene": str(args.scene)}
    if "a" in args.parts:
        report["a"] = part_a(data, iterations=args.block_iterations, blocks=args.blocks, label_top_k=args.label_top_k)
        print(f"(a) {report['a']}", flush=True)
    config = args.config
    if config is None and ({"b", "c"} & set(args.parts)):
        extra = [] if args.label_top_k is None else ["--pipeline.model.label-top-k", str(args.label_top_k)]
        config = train(data, args.work, max(args.iterations) + 1, save_every=min(args.iterations), extra=extra)
    if "b" in args.parts:
        report["b"] = part_b(config, data, args.work, args.iterations)
    if "c" in args.parts:
        report["c"] = part_c(config, data, args.work, args.every)
    (args.work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
