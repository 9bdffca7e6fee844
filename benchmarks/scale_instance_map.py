"""Scale run: ``instance-map`` on 1,000 (or 10,000) frames of 160x120 (~28 masks each); wall time and peak RSS, in one
process and on a local Ray cluster.

Targets: 1,000 frames <= 5 minutes on 2 cores with bounded memory (issue 8); 10,000 frames <= 4 GB on the driver;
with Ray (``--compare``: one process vs ``--ray-address local --workers 2``, back to back, reported as ratios) the
matching stage >= 1.6x faster, pseudolabels byte-identical. Peak RSS is sampled with psutil for the driver alone, for
each Ray worker (``ray::`` processes) and for the whole tree, and cross-checked with the kernel's ``ru_maxrss`` of the
waited driver. The load average is printed too: on a shared 2-core machine a busy neighbour inflates wall times.

    .venv/bin/python benchmarks/scale_instance_map.py /tmp/synth_eng/bench1000
    .venv/bin/python benchmarks/scale_instance_map.py /tmp/synth_eng/bench1000 --compare
    .venv/bin/python benchmarks/scale_instance_map.py            # renders the bench1000 preset first (~6 min)

The dataset is only read: pseudolabels go to a temporary folder (``--keep DIR`` keeps them there instead).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil

MAP_CLI = [sys.executable, "-c", "from data_preprocess.instance_map import entrypoint; entrypoint()"]
SYNTH_CLI = [sys.executable, "-c", "from data_preprocess.synth.cli import entrypoint; entrypoint()"]


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def run_measured(args: List[str], interval_s: float = 0.2) -> Dict:
    """Run a command; wall seconds, CPU seconds, peak RSS of the driver, of each Ray worker and of the whole tree
    (psutil samples), and the kernel's ru_maxrss of the driver."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = {"driver": 0, "tree": 0}
    workers: Dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                children = ps.children(recursive=True)
            except psutil.Error:
                break
            driver = _rss(ps)
            total = driver
            for c in children:
                rss = _rss(c)
                total += rss
                try:
                    if c.cmdline() and c.cmdline()[0].startswith("ray::"):
                        workers[c.pid] = max(workers.get(c.pid, 0), rss)
                except psutil.Error:
                    pass
            peak["driver"] = max(peak["driver"], driver)
            peak["tree"] = max(peak["tree"], total)
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # read the pipes in threads so a chatty child never blocks on a full pipe
    out: Dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
               for k, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    for r in readers:
        r.join()
    mb = 2 ** 20
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "cpu_s_driver": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb_driver": round(peak["driver"] / mb, 1),
        "peak_rss_mb_driver_kernel": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "peak_rss_mb_workers": sorted((round(v / mb, 1) for v in workers.values()), reverse=True),
        "peak_rss_mb_tree": round(peak["tree"] / mb, 1),
        "stderr_tail": out.get("stderr", "")[-2000:],
    }


def run_map(data: Path, output: Path, extra: List[str]) -> Dict:
    cmd = MAP_CLI + ["--data", str(data), "--output", str(output), "--no-cache", "--quiet"] + extra
    load_before = os.getloadavg()
    result = run_measured(cmd)
    result.update(args=" ".join(extra), loadavg_before=[round(x, 2) for x in load_before],
                  loadavg_after=[round(x, 2) for x in os.getloadavg()])
    labels_json = output / "labels.json"
    if labels_json.is_file():
        meta = json.loads(labels_json.read_text())
        result.update(frames=meta["summary"]["frames"], masks=meta["summary"]["nodes"], labels=meta["K"],
                      stage_timings_s=meta.get("timings_s"), stage_peak_rss_mb=meta.get("peak_rss_mb"))
    if result["returncode"] == 0:
        result.pop("stderr_tail")
    return result


def same_pngs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.png"))
    return bool(names) and names == sorted(p.name for p in b.glob("*.png")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, help="bench1000 dataset (rendered into a temp folder if omitted)")
    ap.add_argument("--keep", type=Path, default=None, help="write pseudolabels here instead of a temp folder")
    ap.add_argument("--target-s", type=float, default=300.0, help="wall-time target in seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    ap.add_argument("--map-args", default="", help="extra instance-map arguments, one string (e.g. '--workers 1')")
    ap.add_argument("--compare", action="store_true",
                    help="one process (--workers 1) vs a local Ray cluster (--ray-address local --workers 2), "
                         "back to back; ratios and a byte comparison of the pseudolabels")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="scale_instance_map_"))
    try:
        data = args.data
        if data is None:
            data = work / "bench1000"
            print(f"rendering bench1000 into {data} ...", flush=True)
            subprocess.run(SYNTH_CLI + ["--out", str(data), "--preset", "bench1000"], check=True)
        extra = shlex.split(args.map_args)
        if not args.compare:
            output = args.keep or work / "pseudolabels"
            result = run_map(data, output, extra)
            result.update(cpus=os.cpu_count(), target_s=args.target_s, within_target=result["wall_s"] <= args.target_s)
        else:
            runs = {"single": run_map(data, work / "single", ["--workers", "1"] + extra),
                    "ray": run_map(data, work / "ray", ["--ray-address", "local", "--workers", "2"] + extra)}
            s, r = runs["single"], runs["ray"]
            ok = s["returncode"] == 0 and r["returncode"] == 0

            def ratio(key: str) -> Optional[float]:
                a, b = s["stage_timings_s"][key], r["stage_timings_s"][key]
                return round(a / b, 2) if b else None

            result = {"runs": runs, "cpus": os.cpu_count()}
            if ok:
                result.update(
                    speedup_matching=ratio("matching"), speedup_pairs=ratio("pairs"), speedup_load=ratio("load"),
                    speedup_total=round(s["wall_s"] / r["wall_s"], 2),
                    extra_wall_s_ray=round(r["wall_s"] - s["wall_s"], 1),
                    driver_rss_ratio_ray_vs_single=round(r["peak_rss_mb_driver"] / s["peak_rss_mb_driver"], 2),
                    pseudolabels_identical=same_pngs(work / "single", work / "ray"))
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        codes = [result["returncode"]] if "returncode" in result else [x["returncode"] for x in result["runs"].values()]
        return 0 if all(c == 0 for c in codes) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
