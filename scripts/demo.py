"""Run the whole pipeline on the built-in rendered room; print a table (stage, scene PQ, matched mIoU, wall time) and
write a visual report (`report.md` + `report.png`).

Each stage is the same console command a user runs; the demo only chains them, times them and scores them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402  (sibling module of this script)

BIN = Path(sys.executable).parent
console = Console()


def run_stage(name: str, cmd: list, timings: dict) -> None:
    console.rule(f"[bold]{name}")
    console.print(" ".join(str(c) for c in cmd), style="dim")
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd])
    timings[name] = time.perf_counter() - start
    if proc.returncode != 0:
        console.print(f"[red]demo: stage '{name}' failed with exit code {proc.returncode}; its output is above")
        sys.exit(proc.returncode)


class BackgroundStages:
    """Stages run one after another beside the main chain: with one torch thread per process (the Makefile's
    OMP_NUM_THREADS=1) two trainings share the 2 cores of a laptop without slowing each other much. A stage is a
    command or a Python callable taking the log file. Their output goes to a log file, not the console."""

    def __init__(self, stages: list, log: Path, timings: dict) -> None:
        self.stages, self.log, self.timings = stages, log, timings
        self.failed: Optional[str] = None
        console.print(f"[dim]in the background: {', '.join(n for n, _ in stages)} (output in {log})")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with open(self.log, "w") as log:
            for name, cmd in self.stages:
                log.write(f"=== {name}: {cmd.__name__ if callable(cmd) else ' '.join(str(c) for c in cmd)}\n")
                log.flush()
                start = time.perf_counter()
                if callable(cmd):  # a Python step (it runs its own commands)
                    try:
                        cmd(log)
                        code = 0
                    except Exception as err:
                        log.write(f"{type(err).__name__}: {err}\n")
                        code = 1
                else:
                    code = subprocess.run([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT).returncode
                self.timings[name] = time.perf_counter() - start
                if code != 0:
                    self.failed = f"stage '{name}' failed with exit code {code}"
                    return

    def wait(self) -> None:
        self.thread.join()
        if self.failed:
            console.print(f"[red]demo: {self.failed}; its output is in {self.log}")
            sys.exit(1)


def linked_together(dest: Path, *folders: Path) -> Path:
    """One folder holding (hard links to) the label PNGs of several, for one contact-sheet column."""
    dest.mkdir(exist_ok=True)
    for folder in folders:
        for p in folder.glob("*.png"):
            if not (dest / p.name).exists():
                os.link(p, dest / p.name)
    return dest


def rgb_only_copy(scene: Path, dest: Path) -> Path:
    """The same room as a user with photos and no depth has it: images, masks and poses, no depth maps listed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("images", "masks", "gt", "instances.json"):
        if not (dest / name).exists():
            (dest / name).symlink_to(scene / name)
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"] = [{k: v for k, v in f.items() if k != "depth_file_path"} for f in meta["frames"]]
    (dest / "transforms.json").write_text(json.dumps(meta, indent=1))
    return dest


def train_cmd(scene: Path, runs: Path, name: str, iterations: int, save_every: int) -> list:
    return [BIN / "ns-train", "instance-nerfacto-small", "--data", scene, "--output-dir", runs,
            "--experiment-name", name, "--timestamp", name, "--machine.device-type", "cpu",
            "--max-num-iterations", iterations, "--steps-per-save", save_every,
            "--save-only-latest-checkpoint", "False", "--viewer.quit-on-train-completion", "True",
            "--pipeline.model.camera-optimizer.mode", "off", "--vis", "tensorboard"]


def evaluate(pred: Path, scene: Path, out_json: Path, prefix: str = "") -> dict:
    cmd = [BIN / "instance-eval", "--pred", pred, "--gt", scene / "gt", "--things", scene / "instances.json",
           "--json", out_json]
    if prefix:
        cmd += ["--prefix", prefix]
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out_json.read_text())


def count_png(folder: Path, prefix: str = "") -> int:
    return sum(1 for p in folder.glob(f"{prefix}*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1000, help="instance-nerfacto-small training iterations")
    parser.add_argument("--render-every", type=int, default=8, help="render every k-th training view")
    parser.add_argument("--rgb-only", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the room without its depth maps (stereo InstanceMap, RGB-only field), "
                             "trained beside the depth run")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = out / "scene"
    runs = out / "runs"
    timings: dict[str, float] = {}
    rows: list[dict] = []
    t_start = time.perf_counter()

    # 1. the scene: rendered room, noisy SAM-like masks, ground truth
    if not (scene / "transforms.json").exists():
        run_stage("instance-synth", [BIN / "instance-synth", "--out", scene, "--preset", "demo", "--seed",
                                     str(args.seed)], timings)
    rows.append({"stage": "frontend masks (per-frame ids)", "frames": count_png(scene / "masks", "frame_"),
                 "metrics": evaluate(scene / "masks", scene, out / "eval_masks.json", "frame_"),
                 "seconds": timings.get("instance-synth")})

    # 2. InstanceMap
    pseudo = scene / "pseudolabels"
    if pseudo.exists():
        shutil.rmtree(pseudo)
    run_stage("instance-map", [BIN / "instance-map", "--data", scene], timings)
    rows.append({"stage": "InstanceMap pseudolabels", "frames": count_png(pseudo),
                 "metrics": evaluate(pseudo, scene, out / "eval_map.json"), "seconds": timings["instance-map"]})

    # PQ against training iteration: a few training views rendered from each saved checkpoint of the depth run (in the
    # background after the no-depth run's stages, so it overlaps the main chain's renders)
    curve: list = []
    depth_trained = threading.Event()

    def pq_curve(log) -> None:
        depth_trained.wait()
        ckpt_dir = config.parent / "nerfstudio_models"
        steps = sorted(int(p.stem.split("-")[-1]) for p in ckpt_dir.glob("step-*.ckpt"))
        for step in steps:
            folder = out / f"curve_{step:06d}"
            subprocess.run([str(c) for c in [BIN / "instance-render", "--load-config", config, "--output", folder,
                                              "--split", "train", "--every", 20, "--load-step", step, "--no-merge"]],
                           check=True, stdout=log, stderr=subprocess.STDOUT)
            curve.append((step, evaluate(folder, scene, folder / "eval.json")["scene_pq"]))

    # 3. InstanceLift (+ label merging at the end of training); the RGB-only room's InstanceMap and training run
    # beside it in a second process
    if runs.exists():
        shutil.rmtree(runs)
    save_every = max(args.iterations // 2, 1)  # two checkpoints for the PQ curve (each costs a density bake)
    config = runs / "demo" / "instance-nerfacto-small" / "demo" / "config.yml"
    rgb_scene = out / "scene_rgb_only"
    background = None
    if args.rgb_only:
        if (rgb_scene / "pseudolabels").exists():
            shutil.rmtree(rgb_scene / "pseudolabels")
        rgb_only_copy(scene, rgb_scene)
        rgb_config = runs / "rgb_only" / "instance-nerfacto-small" / "rgb_only" / "config.yml"
        rgb_train, rgb_loc = out / "rgb_render_train", out / "rgb_loc"
        background = BackgroundStages([
            ("instance-map (no depth)", [BIN / "instance-map", "--data", rgb_scene]),
            ("ns-train (no depth)", train_cmd(rgb_scene, runs, "rgb_only", args.iterations, args.iterations)),
            ("instance-render (no depth)", [BIN / "instance-render", "--load-config", rgb_config, "--output",
                                            rgb_train, "--split", "train", "--every", args.render_every]),
            ("instance-loc (no depth)", [BIN / "instance-loc", "--load-config", rgb_config, "--data", rgb_scene,
                                         "--split", "val", "--masks", scene / "masks", "--output", rgb_loc]),
            ("PQ curve", pq_curve),
        ], out / "rgb_only.log", timings)
    run_stage("ns-train", train_cmd(scene, runs, "demo", args.iterations, save_every), timings)
    depth_trained.set()

    # 4. rendering the training views with the fast label renderer
    render_train = out / "render_train"
    run_stage("instance-render", [BIN / "instance-render", "--load-config", config, "--output", render_train,
                                  "--split", "train", "--every", args.render_every], timings)
    rows.append({"stage": "InstanceLift (train views, merged)", "frames": count_png(render_train),
                 "metrics": evaluate(render_train, scene, out / "eval_lift.json"),
                 "seconds": timings["ns-train"] + timings["instance-render"]})

    # 5. novel views: plain render vs InstanceLoc with the given noisy masks
    render_val = out / "render_val"
    run_stage("instance-render (val)", [BIN / "instance-render", "--load-config", config, "--output", render_val,
                                        "--split", "val"], timings)
    rows.append({"stage": "InstanceLift (novel views)", "frames": count_png(render_val),
                 "metrics": evaluate(render_val, scene, out / "eval_lift_val.json"),
                 "seconds": timings["instance-render (val)"]})
    loc = out / "loc"
    run_stage("instance-loc", [BIN / "instance-loc", "--load-config", config, "--data", scene, "--split", "val",
                               "--masks", scene / "masks", "--output", loc], timings)
    rows.append({"stage": "InstanceLoc (novel views, read at their depth maps)", "frames": count_png(loc),
                 "metrics": evaluate(loc, scene, out / "eval_loc.json"), "seconds": timings["instance-loc"]})
    # the same novel views as photos without depth maps (a pose file of new images): read at the map's depth
    meta = json.loads((scene / "transforms.json").read_text())
    novel = {Path(f).stem for f in meta["val_filenames"]}
    photos = {k: v for k, v in meta.items() if k not in ("frames", "train_filenames", "val_filenames")}
    photos["frames"] = [{k: v for k, v in f.items() if k != "depth_file_path"} for f in meta["frames"]
                        if Path(f["file_path"]).stem in novel]
    (scene / "photos.json").write_text(json.dumps(photos, indent=1))  # paths relative to the scene folder
    loc_map = out / "loc_photos"
    run_stage("instance-loc (photos)", [BIN / "instance-loc", "--load-config", config, "--data", scene / "photos.json",
                                        "--masks", scene / "masks", "--output", loc_map], timings)
    rows.append({"stage": "InstanceLoc (novel views as photos without depth: map depth)", "frames": count_png(loc_map),
                 "metrics": evaluate(loc_map, scene, out / "eval_loc_photos.json"),
                 "seconds": timings["instance-loc (photos)"]})
    loc_rgb = out / "loc_rgb_only"
    run_stage("instance-loc (mask voting)", [BIN / "instance-loc", "--load-config", config, "--data", scene,
                                                "--split", "val", "--masks", scene / "masks", "--output", loc_rgb,
                                                "--query-depth", "off"], timings)
    rows.append({"stage": "InstanceLoc (novel views, no depth: mask voting)", "frames": count_png(loc_rgb),
                 "metrics": evaluate(loc_rgb, scene, out / "eval_loc_rgb_only.json"),
                 "seconds": timings["instance-loc (mask voting)"]})

    # 6. labelled point cloud
    run_stage("instance-export", [BIN / "instance-export", "--load-config", config, "--output", out / "scene.ply"],
              timings)

    # 7. the room without depth maps: stereo InstanceMap, a field trained without depth, InstanceLoc at its surface
    if background is not None:
        background.wait()
        rows.append({"stage": "no depth: InstanceMap pseudolabels (stereo)", "frames": count_png(rgb_scene /
                     "pseudolabels"), "metrics": evaluate(rgb_scene / "pseudolabels", scene, out / "eval_rgb_map.json"),
                     "seconds": timings["instance-map (no depth)"]})
        rows.append({"stage": "no depth: InstanceLift (train views, merged)", "frames": count_png(rgb_train),
                     "metrics": evaluate(rgb_train, scene, out / "eval_rgb_lift.json"),
                     "seconds": timings["ns-train (no depth)"] + timings["instance-render (no depth)"]})
        rows.append({"stage": "no depth: InstanceLoc (novel views)", "frames": count_png(rgb_loc),
                     "metrics": evaluate(rgb_loc, scene, out / "eval_rgb_loc.json"),
                     "seconds": timings["instance-loc (no depth)"]})
    else:
        depth_trained.set()
        pq_curve(subprocess.DEVNULL)

    # 8. report
    total = time.perf_counter() - t_start
    k = args.render_every  # rows must be frames that instance-render rendered
    train_stems = [f"frame_{i:05d}" for i in (0, (33 // k) * k, (66 // k) * k)]
    val_stems = ["val_00000", "val_00010"]
    columns = [("RGB", None), ("frontend masks", scene / "masks"), ("InstanceMap", pseudo),
               ("InstanceLift", None), ("InstanceLoc", loc), ("ground truth", scene / "gt")]
    columns[3] = ("InstanceLift", linked_together(out / "render_all", render_train, render_val))
    if background is not None:  # the no-depth run: its field on training views, InstanceLoc on the novel ones
        columns.insert(5, ("no depth: Lift / Loc", linked_together(out / "rgb_render_all", rgb_train, rgb_loc)))
    stems = [s for s in train_stems + val_stems if (scene / "images" / f"{s}.png").exists()]
    report.contact_sheet(scene, stems, columns, out / "contact_sheet.png")
    report.pq_curve(curve, out / "pq_curve.png", reference=rows[1]["metrics"]["scene_pq"])
    report.stack_report_png(out / "contact_sheet.png", out / "pq_curve.png", out / "report.png")
    notes = [f"total wall time {total:.0f} s (2 CPU cores, install excluded)",
             f"training: {args.iterations} iterations of instance-nerfacto-small, camera optimizer off (exact poses)",
             "rows 'no depth': the same room without its depth maps (instance-map's stereo matcher, a field trained "
             "without depth supervision, InstanceLoc at the rendered surface), trained beside the depth run",
             "scene PQ and matched mIoU: things only (walls and floor are stuff = void), scored by instance-eval",
             f"labelled point cloud: {out / 'scene.ply'}"]
    report.write_markdown(out / "report.md", rows, "contact_sheet.png", "pq_curve.png", notes)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "timings": timings, "curve": curve}, indent=2))

    table = Table(title="instance-nerfacto demo (things only, scene-level)")
    for col in ("stage", "frames", "scene PQ", "matched mIoU (n/N)", "wall time"):
        table.add_column(col)
    for row in rows:
        res = row["metrics"]
        t = row.get("seconds")
        table.add_row(row["stage"], str(row["frames"]), f"{res['scene_pq']:.3f}",
                      f"{res['matched_miou']:.3f} ({res['n_matched']}/{res['n_gt']})",
                      f"{t:.1f} s" if t is not None else "-")
    console.print(table)
    console.print(f"report: {out / 'report.md'} and {out / 'report.png'} (total {total:.0f} s)")


if __name__ == "__main__":
    main()
