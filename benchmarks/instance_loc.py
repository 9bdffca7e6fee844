"""Benchmark InstanceLoc: per-image latency of the query part (sampling + rendering the sampled rays + voting), the
time a full-frame label render of the same frame takes, their ratio, and scene PQ / matched mIoU of InstanceLoc vs
the plain full-frame render on the novel-view split of a rendered room.

    .venv/bin/python benchmarks/instance_loc.py --load-config outputs/.../config.yml --data /tmp/scenes/demo \
        --out /tmp/bench_loc [--plain volume|instance-render]

The plain render is either the project's ``instance-render`` fast renderer (default) or nerfstudio's full volume
render of every pixel (``volume``); both are timed per frame around the render call in process, like InstanceLoc's
query time (model load and grid bake excluded for both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.core.files import atomic_write_json, write_label_png  # noqa: E402
from instance_nerfacto.core.runs import RunOptions  # noqa: E402
from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402
from instance_nerfacto.loc.cli import LocConfig
from instance_nerfacto.loc.cli import main as loc_main  # noqa: E402
from instance_nerfacto.render.cameras import frame_camera
from instance_nerfacto.render.run import load_run  # noqa: E402


def plain_volume_render(cfg_path: Path, data: Path, split: str, out: Path) -> dict:
    """Full-frame volume render of the label field for every frame of ``split``; seconds per frame."""
    import torch

    run = load_run(cfg_path)
    model = run.model
    device = next(model.parameters()).device
    seconds = {}
    for frame in load_dataset(data, check_files=False).split(split):
        camera = frame_camera(frame, run.to_model, device)
        start = time.perf_counter()
        with torch.no_grad():
            outputs = model.full_outputs_for_camera(camera)
        ids = outputs["instance_id"].reshape(frame.height, frame.width).cpu().numpy()
        acc = outputs["accumulation"].reshape(frame.height, frame.width).cpu().numpy()
        ids = np.where(acc < 0.5, 0, ids)
        seconds[frame.stem] = time.perf_counter() - start
        write_label_png(out / f"{frame.stem}.png", ids)  # instance_id is merged already
    return seconds


def plain_instance_render(cfg_path: Path, split: str, out: Path) -> dict:
    """instance-render's fast label renderer (baked density + surface label query) on every frame of ``split``,
    timed per frame around ``render_ids`` after one warm-up frame (model load and grid bake excluded, as for
    instance-loc's query time)."""
    from instance_nerfacto.render.labels import LabelRenderer
    from instance_nerfacto.render.run import split_cameras

    run = load_run(cfg_path)
    renderer = LabelRenderer(run.pipeline, run.checkpoint, run.step)
    table = run.merge_table()
    frames = split_cameras(run.pipeline, split)
    renderer.render_ids(frames[0][1], frames[0][2])
    seconds = {}
    for stem, cameras, index in frames:
        start = time.perf_counter()
        ids = renderer.render_ids(cameras, index)
        seconds[stem] = time.perf_counter() - start
        write_label_png(out / f"{stem}.png", table.apply(ids.astype(np.uint16)))
    return seconds


def summarize(metrics: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()
            if k in ("scene_pq", "matched_miou", "n_matched", "n_gt", "tp", "fp", "fn")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="rendered room (transforms.json, masks/, gt/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--masks", type=Path, help="default: <data>/masks (the noisy SAM-like masks)")
    parser.add_argument("--samples-per-region", type=int, default=12)
    parser.add_argument("--renderer", choices=["surface", "volume"], default="surface",
                        help="instance-loc's ray renderer (baked-density surface query or full volume rendering)")
    parser.add_argument("--plain", choices=["volume", "instance-render", "none"], default="instance-render")
    parser.add_argument("--query-depth", choices=["auto", "on", "off"], default="auto",
                        help="instance-loc reads the label field at the query frames' depth maps when they have them")
    parser.add_argument("--mode", choices=["auto", "regions", "dense"], default="auto",
                        help="instance-loc's --mode: mask voting, a dense read, or dense where it pays (the default)")
    parser.add_argument("--surface-strides", type=int, nargs="+", default=None,
                        help="instance-loc's --surface-strides (default: its own)")
    args = parser.parse_args()
    masks = args.masks or args.data / "masks"
    loc_dir, plain_dir = args.out / "loc", args.out / f"plain_{args.plain}"

    loc_cfg = LocConfig(data=args.data, output=loc_dir, run=RunOptions(load_config=args.load_config),
                        split=args.split, masks=masks, renderer=args.renderer, query_depth=args.query_depth,
                        mode=args.mode)
    loc_cfg.vote.samples_per_region = args.samples_per_region
    if args.surface_strides:
        loc_cfg.surface_strides = tuple(args.surface_strides)
    report = loc_main(loc_cfg)
    query_s = {stem: r["query_s"] for stem, r in report.items()}
    if args.plain == "none":
        plain_s = {}
    elif args.plain == "volume":
        plain_s = plain_volume_render(args.load_config, args.data, args.split, plain_dir)
    else:
        plain_s = plain_instance_render(args.load_config, args.split, plain_dir)
    things = args.data / "instances.json"
    stems = sorted(query_s)
    result = {
        "frames": len(stems),
        "query_s_mean": float(np.mean(list(query_s.values()))),
        "query_s_median": float(np.median(list(query_s.values()))),
        "query_s_max": float(np.max(list(query_s.values()))),
        "plain": args.plain,
        "plain_s_per_frame": float(np.mean([plain_s[s] for s in stems if s in plain_s])) if plain_s else float("nan"),
        "samples_per_region": args.samples_per_region,
        "renderer": args.renderer,
        "query_depth": args.query_depth,
        "mode": args.mode,
        "modes_used": sorted({f"{r['mode']} at {r['depth']} depth" for r in report.values()}),
        "regions_per_image": float(np.mean([len(r["regions"]) for r in report.values()])),
    }
    result["speedup"] = result["plain_s_per_frame"] / result["query_s_mean"]
    scored = (("loc", loc_dir),) + ((("plain", plain_dir),) if args.plain != "none" else ())  # none: no plain render
    for name, folder in scored:
        result[f"{name}_things"] = summarize(evaluate_dirs(folder, args.data / "gt", things_json=things, stems=stems))
        result[f"{name}_all"] = summarize(evaluate_dirs(folder, args.data / "gt", stems=stems))
    atomic_write_json(args.out / "benchmark.json", result)
    print(f"frames {result['frames']}, {result['regions_per_image']:.1f} regions/image, "
          f"{args.samples_per_region} samples/region; instance-loc modes used: {', '.join(result['modes_used'])}")
    print(f"InstanceLoc query: {result['query_s_mean']:.3f} s/image mean ({result['query_s_median']:.3f} median, "
          f"{result['query_s_max']:.3f} max)")
    print(f"plain {args.plain}: {result['plain_s_per_frame']:.3f} s/frame; speedup {result['speedup']:.1f}x")
    for kind in ("things", "all"):
        lo = result[f"loc_{kind}"]
        line = (f"{kind:6s} PQ  loc {lo['scene_pq']:.3f} | matched mIoU loc {lo['matched_miou']:.3f} "
                f"({lo['n_matched']}/{lo['n_gt']})")
        if args.plain != "none":
            pl = result[f"plain_{kind}"]
            line += f" | plain PQ {pl['scene_pq']:.3f}, mIoU {pl['matched_miou']:.3f} ({pl['n_matched']}/{pl['n_gt']})"
        print(line)
    print(json.dumps({"written": str(args.out / "benchmark.json")}))


if __name__ == "__main__":
    main()
