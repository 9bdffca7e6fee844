"""Render speed of a trained run on a CPU: the viewer's new views, ns-render and instance-render, fast (baked density
grid, ``render/camera_outputs.py``, the default) vs nerfstudio's full volume render, and novel-view PQ of both.

    .venv/bin/python benchmarks/render_speed.py --load-config outputs/.../config.yml --data /tmp/scenes/demo \
        --out /tmp/bench_render [--full-frames 30] [--full-views 1] [--busy-loop]

Prints: seconds per new 512x384 viewer view (model.get_outputs_for_camera, fast; full_outputs_for_camera, full);
ns-render seconds for 30 frames at 320x240 (the real command on a 30-camera path, fast and with the run's config
switched to ``fast_camera_outputs: false``; ``--full-frames N < 30`` renders N frames in full and scales to 30, and
says so); instance-render seconds per 320x240 frame (render + PNG writes, model load excluded; 1 and 2 render threads,
label top-k 8 and 4) with where one frame's time goes; novel-view (val split) things PQ of the fast and the full camera
outputs (instance_id, pixels with opacity < 0.5 as 0, scored by the project's instance-eval metrics).
The 320x240 timings use the run's val cameras (the demo room's frames are 320x240). ``--busy-loop`` runs every
measurement beside one process spinning on a core (the issue's "beside one busy loop"); without it, run it on an idle
machine and quote the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance_nerfacto.core.files import atomic_write_json, atomic_write_png, write_label_png  # noqa: E402
from instance_nerfacto.core.palette import colorize  # noqa: E402
from instance_nerfacto.eval.metrics import evaluate_dirs  # noqa: E402
from instance_nerfacto.render.run import load_run, split_cameras  # noqa: E402

BIN = Path(sys.executable).parent
NS_RENDER_FRAMES = 30


def busy_loop() -> subprocess.Popen:
    """One process spinning on a core: the "beside one busy loop" condition of the speed targets."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def val_views(run):
    return [cameras[index : index + 1] for _, cameras, index in split_cameras(run.pipeline, "val")]


def viewer_view_seconds(model, views, fast: bool, n: int) -> float:
    """Seconds per new view at 512x384 (a val pose the model has not rendered before)."""
    seconds, cpu = [], []
    for camera in views[:n]:
        camera = camera.to(model.device)
        camera.rescale_output_resolution(384 / int(camera.height[0]))
        assert (int(camera.width[0]), int(camera.height[0])) == (512, 384), camera
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            (model.get_outputs_for_camera if fast else model.full_outputs_for_camera)(camera)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # CPU seconds beside wall seconds: on a shared machine the wall time depends on the neighbours
    print(f"  {'fast' if fast else 'full'} 512x384 view: {np.mean(seconds):.2f} s wall, {np.mean(cpu):.2f} CPU s",
          flush=True)
    return float(np.mean(seconds))


def camera_path(views, n: int, path: Path) -> None:
    """A camera-path JSON (the viewer's export format) of ``n`` val poses at their own 320x240."""
    cams = []
    for i in range(n):
        camera = views[i % len(views)]
        height, width = int(camera.height[0]), int(camera.width[0])
        fov = float(np.degrees(2 * np.arctan(height / 2 / float(camera.fy[0]))))
        c2w = np.vstack([camera.camera_to_worlds[0].numpy()[:3, :4], [0, 0, 0, 1]])
        cams.append({"camera_to_world": c2w.ravel().tolist(), "fov": fov, "aspect": width / height})
    path.write_text(json.dumps({"camera_type": "perspective", "render_height": height, "render_width": width,
                                "seconds": float(n), "camera_path": cams}))


def ns_render_seconds(config: Path, path: Path, out: Path) -> float:
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([str(BIN / "ns-render"), "camera-path", "--load-config", str(config), "--camera-path-filename",
                    str(path), "--output-path", str(out), "--output-format", "images", "--image-format", "png",
                    "--rendered-output-names", "instance"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def full_config(config: Path, out: Path, fast: bool = False) -> Path:
    """A copy of the run's config.yml with the fast camera outputs on or off (it still names the run's
    checkpoints)."""
    import yaml

    trainer = yaml.load(config.read_text(), Loader=yaml.Loader)
    trainer.pipeline.model.fast_camera_outputs = fast
    out.write_text(yaml.dump(trainer))
    return out


def instance_render_seconds(run, workers: int, top_k: int, out: Path, frames: int) -> float:
    """instance-render's loop (render, merge/edit map, two PNGs) per frame, after one warm-up frame, with ``workers``
    render threads (render/bake.render_workers; torch itself on one thread)."""
    from instance_nerfacto.render.labels import LabelRenderer

    os.environ["INSTANCE_NERFACTO_RENDER_THREADS"] = str(workers)
    renderer = LabelRenderer(run.pipeline, run.checkpoint, run.step, top_k=top_k)
    label_map = run.label_map()
    todo = split_cameras(run.pipeline, "val")[:frames]
    renderer.render_labels(todo[0][1], todo[0][2], 1, label_map)
    start, start_cpu = time.perf_counter(), time.process_time()
    for stem, cameras, index in todo:
        ids = renderer.render_labels(cameras, index, 1, label_map)
        write_label_png(out / f"{stem}.png", ids)
        atomic_write_png(out / "color" / f"{stem}.png", colorize(ids))
    print(f"  {(time.process_time() - start_cpu) / len(todo):.2f} CPU s per frame", flush=True)
    return (time.perf_counter() - start) / len(todo)


def profile_frame(run, top_k: int, out: Path) -> dict:
    """Where one 320x240 instance-render frame's time goes (the steps of render_label_logits, then the PNGs)."""
    from instance_nerfacto.lift.labels import composite_top_k
    from instance_nerfacto.render.bake import march_weights
    from instance_nerfacto.render.labels import LabelRenderer

    model, field = run.model, run.model.field
    renderer = LabelRenderer(run.pipeline, run.checkpoint, run.step, top_k=top_k)
    _, cameras, index = split_cameras(run.pipeline, "val")[0]
    steps = {"rays": 0.0, "march (grid lookups + weights + top-k)": 0.0, "label field at top-k": 0.0,
             "merge/edit map": 0.0, "PNG writes": 0.0}
    with torch.no_grad():
        t = time.perf_counter()
        rays = cameras[index : index + 1].generate_rays(camera_indices=0, keep_shape=True)
        o, d = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)
        steps["rays"] = time.perf_counter() - t
        logits, depths, chunk = [], [], 1 << 11  # as render_label_logits
        for start in range(0, o.shape[0], chunk):
            oo, dd = o[start : start + chunk], d[start : start + chunk]
            t = time.perf_counter()
            weights, mids = march_weights(renderer.grid, field, oo, dd, renderer.num_samples,
                                          model.config.near_plane, model.config.far_plane)
            top_weights, top_index = weights.topk(top_k, dim=1)
            steps["march (grid lookups + weights + top-k)"] += time.perf_counter() - t
            t = time.perf_counter()
            top_t = mids[top_index]
            points = oo[:, None, :] + dd[:, None, :] * top_t[..., None]
            logits.append(composite_top_k(field.label_logits_at, points, top_weights, top_k)[0])
            depths.append(mids[weights.argmax(dim=1)])
            steps["label field at top-k"] += time.perf_counter() - t
    t = time.perf_counter()
    height, width = rays.origins.shape[:2]
    points = rays.origins + rays.directions * torch.cat(depths).reshape(height, width, 1)
    ids = run.label_map().apply(torch.cat(logits).argmax(-1).reshape(height, width) + 1, points)
    ids = ids.cpu().numpy().astype(np.uint16)
    steps["merge/edit map"] = time.perf_counter() - t
    t = time.perf_counter()
    write_label_png(out / "profile.png", ids)
    atomic_write_png(out / "color" / "profile.png", colorize(ids))
    steps["PNG writes"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in steps.items()}


def novel_view_pq(model, views, stems, fast: bool, out: Path, things: Path, gt: Path) -> tuple:
    """Things PQ of the camera outputs' instance_id on the val views, and seconds per frame."""
    seconds = []
    for stem, camera in zip(stems, views):
        start = time.perf_counter()
        with torch.no_grad():
            outputs = (model.get_outputs_for_camera if fast else model.full_outputs_for_camera)(camera)
        seconds.append(time.perf_counter() - start)
        ids = torch.where(outputs["accumulation"] < 0.5, 0, outputs["instance_id"])[..., 0].cpu().numpy()
        write_label_png(out / f"{stem}.png", ids)
    return evaluate_dirs(out, gt, things_json=things, stems=stems)["scene_pq"], float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the run's rendered room (gt/, instances.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full-frames", type=int, default=NS_RENDER_FRAMES,
                        help="frames of the full ns-render (~20 s each at 320x240, 2 cores; 0: skip it); scaled to 30")
    parser.add_argument("--full-views", type=int, default=1, help="512x384 viewer views rendered in full")
    parser.add_argument("--fast-views", type=int, default=3, help="512x384 viewer views rendered fast")
    parser.add_argument("--instance-render-frames", type=int, default=20, help="val frames per setting")
    parser.add_argument("--parts", default="viewer,ns-render,instance-render,pq",
                        help="comma-separated subset of viewer,ns-render,instance-render,pq (pq's full render is slow)")
    parser.add_argument("--full-pq-from", type=Path,
                        help="a previous run's pq_full folder: score it instead of volume rendering the views again")
    parser.add_argument("--busy-loop", action="store_true",
                        help="run one busy loop (a second process spinning on one core) beside every measurement")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    busy = busy_loop() if args.busy_loop else None
    result = {"load_average": os.getloadavg(), "torch_threads": torch.get_num_threads()}
    run = load_run(args.load_config)
    run.pipeline.model.viewer_fast_render.value = True  # runs trained while it was opt-in saved false in config.yml
    model = run.model
    views = val_views(run)
    stems = [stem for stem, _, _ in split_cameras(run.pipeline, "val")]
    model.fast_camera.grid(model.field)  # load (or bake) the grid before any timing, as the viewer does once

    if "viewer" in parts:
        viewer_part(result, model, views, args)
    if "ns-render" in parts:
        ns_render_part(result, views, args)
    if "instance-render" in parts:
        instance_render_part(result, run, args)
    if "pq" in parts:
        pq_part(result, model, views, stems, args)
    result["load_average_end"] = os.getloadavg()
    result["busy_loop"] = busy is not None
    if busy is not None:
        busy.kill()
    atomic_write_json(args.out / "render_speed.json", result)
    print(json.dumps({"written": str(args.out / "render_speed.json"), "load_average": result["load_average"],
                      "load_average_end": result["load_average_end"]}))


def viewer_part(result, model, views, args) -> None:
    result["viewer_512x384_fast_s"] = viewer_view_seconds(model, views, True, args.fast_views)
    result["viewer_512x384_full_s"] = (viewer_view_seconds(model, views, False, args.full_views)
                                       if args.full_views > 0 else float("nan"))
    print(f"viewer, new 512x384 view: fast {result['viewer_512x384_fast_s']:.2f} s, "
          f"full {result['viewer_512x384_full_s']:.2f} s ({args.full_views} full view(s))", flush=True)


def ns_render_part(result, views, args) -> None:
    camera_path(views, NS_RENDER_FRAMES, args.out / "path30.json")
    result["ns_render_30_fast_s"] = ns_render_seconds(full_config(args.load_config, args.out / "config_fast.yml", True),
                                                      args.out / "path30.json", args.out / "ns_fast")
    if args.full_frames <= 0:
        print(f"ns-render, 30 frames at 320x240 (load included): fast {result['ns_render_30_fast_s']:.1f} s",
              flush=True)
        return
    n_full = min(args.full_frames, NS_RENDER_FRAMES)
    camera_path(views, n_full, args.out / "path_full.json")
    full = ns_render_seconds(full_config(args.load_config, args.out / "config_full.yml"), args.out / "path_full.json",
                             args.out / "ns_full")
    result["ns_render_full_frames"] = n_full
    result["ns_render_full_measured_s"] = full
    result["ns_render_30_full_s"] = full * NS_RENDER_FRAMES / n_full
    scaled = "" if n_full == NS_RENDER_FRAMES else f" (measured {full:.1f} s for {n_full} frames, scaled)"
    print(f"ns-render, 30 frames at 320x240 (load included): fast {result['ns_render_30_fast_s']:.1f} s, "
          f"full {result['ns_render_30_full_s']:.1f} s{scaled}", flush=True)


def instance_render_part(result, run, args) -> None:
    workers0 = os.environ.get("INSTANCE_NERFACTO_RENDER_THREADS")
    for workers in (1, 2):
        for top_k in (8, 4):
            key = f"instance_render_s_per_frame_threads{workers}_topk{top_k}"
            result[key] = instance_render_seconds(run, workers, top_k, args.out / f"ir_t{workers}_k{top_k}",
                                                  args.instance_render_frames)
            print(f"instance-render, 320x240 frame (render + PNGs, load excluded), {workers} render thread(s), top-k "
                  f"{top_k}: {result[key]:.2f} s", flush=True)
    if workers0 is None:
        os.environ.pop("INSTANCE_NERFACTO_RENDER_THREADS")
    else:
        os.environ["INSTANCE_NERFACTO_RENDER_THREADS"] = workers0
    for top_k in (8, 4):
        result[f"instance_render_profile_topk{top_k}"] = profile = profile_frame(run, top_k, args.out / "profile")
        print(f"one 320x240 frame, top-k {top_k}, one thread, seconds: {profile}", flush=True)
    things, gt = args.data / "instances.json", args.data / "gt"
    for top_k in (8, 4):
        folder = args.out / f"ir_t1_k{top_k}"
        result[f"instance_render_pq_topk{top_k}"] = evaluate_dirs(folder, gt, things_json=things)["scene_pq"]
    print(f"instance-render things PQ on the first {args.instance_render_frames} val frames: top-k 8 "
          f"{result['instance_render_pq_topk8']:.3f}, top-k 4 {result['instance_render_pq_topk4']:.3f}", flush=True)


def pq_part(result, model, views, stems, args) -> None:
    things, gt = args.data / "instances.json", args.data / "gt"
    cams = [v.to(model.device) for v in views]
    for name, fast in (("fast", True), ("full", False)):
        if not fast and args.full_pq_from is not None:  # the full render does not change with the fast path's settings
            result["novel_view_pq_full"] = evaluate_dirs(args.full_pq_from, gt, things_json=things, stems=stems)[
                "scene_pq"]
            result["camera_320x240_full_s"] = float("nan")
            continue
        pq, seconds = novel_view_pq(model, cams, stems, fast, args.out / f"pq_{name}", things, gt)
        result[f"novel_view_pq_{name}"], result[f"camera_320x240_{name}_s"] = pq, seconds
    print(f"novel-view things PQ ({len(stems)} val views): fast {result['novel_view_pq_fast']:.3f}, full "
          f"{result['novel_view_pq_full']:.3f}; in-process s/frame fast {result['camera_320x240_fast_s']:.2f}, "
          f"full {result['camera_320x240_full_s']:.2f}", flush=True)


if __name__ == "__main__":
    main()
