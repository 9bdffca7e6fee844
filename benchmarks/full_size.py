"""Benchmark instance-map on full-size photos: a rendered room blown up to phone-photo size (4032x3024 by default),
laid out as ns-process-data writes a capture (images/ as JPEG plus images_2/4/8/, full-size masks and depth maps),
then mapped with and without depth maps. Prints wall time, peak memory and the pseudolabels' PQ against the room's
gt, beside the same room mapped at its rendered size.

    .venv/bin/python benchmarks/full_size.py --scene /tmp/demo --out /tmp/full_size [--size 4032x3024]

The photos are upscaled renders, so they measure time and memory at that size, not what real detail adds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance_nerfacto.core.files import read_depth, read_label_png, write_depth_png, write_label_png  # noqa: E402
from instance_nerfacto.eval.metrics import PanopticAccumulator, load_stuff_ids  # noqa: E402

BIN = Path(sys.executable).parent


def blow_up(scene: Path, out: Path, width: int, height: int, with_depth: bool) -> Path:
    """The train frames of ``scene`` at ``width x height``, as ns-process-data lays out a capture."""
    import cv2

    meta = json.loads((scene / "transforms.json").read_text())
    train = {Path(p).stem for p in meta["train_filenames"]}
    sx, sy = width / meta["w"], height / meta["h"]
    for sub in ("images", "images_2", "images_4", "images_8", "masks") + (("depth",) if with_depth else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    frames = []
    for frame in meta["frames"]:
        stem = Path(frame["file_path"]).stem
        if stem not in train:
            continue
        rgb = cv2.imread(str(scene / frame["file_path"]))
        big = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(out / "images" / f"{stem}.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        for factor in (2, 4, 8):
            small = cv2.resize(big, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / f"images_{factor}" / f"{stem}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 92])
        masks = read_label_png(scene / "masks" / f"{stem}.png")
        write_label_png(out / "masks" / f"{stem}.png", cv2.resize(masks, (width, height),
                                                                   interpolation=cv2.INTER_NEAREST))
        entry = {"file_path": f"images/{stem}.jpg", "transform_matrix": frame["transform_matrix"]}
        if with_depth:
            depth = read_depth(scene / frame["depth_file_path"], size=(height, width))  # nearest, as nerfstudio
            write_depth_png(out / "depth" / f"{stem}.png", depth)  # millimetres again
            entry["depth_file_path"] = f"depth/{stem}.png"
        frames.append(entry)
    transforms = {k: meta[k] for k in ("camera_model", "k1", "k2", "p1", "p2") if k in meta}
    transforms.update(fl_x=meta["fl_x"] * sx, fl_y=meta["fl_y"] * sy, cx=meta["cx"] * sx, cy=meta["cy"] * sy,
                      w=width, h=height, frames=frames)
    (out / "transforms.json").write_text(json.dumps(transforms, indent=1))
    return out


def things_pq(pred: Path, scene: Path, stems: list) -> float:
    """Scene PQ of the pseudolabels (any size) against the room's gt, at the gt's size."""
    import cv2

    accumulator = PanopticAccumulator(load_stuff_ids(scene / "instances.json"))
    for stem in stems:
        gt = read_label_png(scene / "gt" / f"{stem}.png")
        labels = cv2.resize(read_label_png(pred / f"{stem}.png"), gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
        accumulator.add(labels, gt)
    return float(accumulator.result()["scene_pq"])


def run_map(data: Path, output: Path, extra: list) -> dict:
    start = time.perf_counter()
    subprocess.run([str(BIN / "instance-map"), "--data", str(data), "--output", str(output), "--quiet", *extra],
                   check=True)
    wall = time.perf_counter() - start
    labels = json.loads((output / "labels.json").read_text())
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(max(labels["peak_rss_mb"].values())),
            "stems": labels["frames"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True, help="an instance-synth room (gt/, masks/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", default="4032x3024")
    parser.add_argument("--map-args", default="", help="extra instance-map arguments")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    extra = args.map_args.split()
    rows = []
    for with_depth in (True, False):
        name = "depth" if with_depth else "no_depth"
        data = args.out / f"photos_{name}"
        if not (data / "transforms.json").is_file():
            shutil.rmtree(data, ignore_errors=True)
            blow_up(args.scene, data, width, height, with_depth)
        small = args.scene if with_depth else args.out / "small_no_depth"
        if not with_depth and not (small / "transforms.json").is_file():
            small.mkdir(parents=True, exist_ok=True)
            meta = json.loads((args.scene / "transforms.json").read_text())
            for frame in meta["frames"]:
                frame.pop("depth_file_path", None)
            (small / "transforms.json").write_text(json.dumps(meta))
            for sub in ("images", "masks"):
                if not (small / sub).exists():
                    (small / sub).symlink_to((args.scene / sub).resolve())
        full = run_map(data, args.out / f"labels_{name}", extra)
        base = run_map(small, args.out / f"labels_small_{name}", extra)
        rows.append((name, full, base, things_pq(args.out / f"labels_{name}", args.scene, full["stems"]),
                     things_pq(args.out / f"labels_small_{name}", args.scene, base["stems"])))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print(f"instance-map on {len(rows[0][1]['stems'])} photos of {width}x{height} (load average {' '.join(load)}):")
    rendered = json.loads((args.scene / "transforms.json").read_text())["w"]
    print(f"{'':10} {'wall s':>8} {'peak MB':>8} {'PQ':>6} | at {rendered} px: {'wall s':>7} {'PQ':>6}")
    for name, full, base, pq_full, pq_base in rows:
        print(f"{name:10} {full['wall_s']:8.1f} {full['peak_rss_mb']:8d} {pq_full:6.3f} | {'':10}"
              f" {base['wall_s']:7.1f} {pq_base:6.3f}")


if __name__ == "__main__":
    main()
