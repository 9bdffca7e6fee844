"""Scale run: ``instance-map`` on 1,000 frames of 160x120 (~28 masks each); wall time and peak RSS.

Target (issue 8): <= 5 minutes on 2 cores with bounded memory. Peak RSS is sampled with psutil over the whole process
tree (children included) and cross-checked with the kernel's ``ru_maxrss`` of the waited child. The load average is
printed too: on a shared 2-core machine a busy neighbour inflates the wall time, not the CPU time.

    .venv/bin/python benchmarks/scale_instance_map.py /tmp/synth_eng/bench1000
    .venv/bin/python benchmarks/scale_instance_map.py            # renders the bench1000 preset first (~4 min)

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


def tree_rss_bytes(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (a child that exits between calls counts as 0)."""
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(args: List[str], interval_s: float = 0.2) -> Dict:
    """Run a command; wall seconds, CPU seconds, peak tree RSS (psutil samples) and the kernel's ru_maxrss."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss_bytes(ps))
            except psutil.Error:
                break
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
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb_psutil": round(peak / 2**20, 1),
        "peak_rss_mb_kernel": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "stderr_tail": out.get("stderr", "")[-2000:],
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, help="bench1000 dataset (rendered into a temp folder if omitted)")
    ap.add_argument("--keep", type=Path, default=None, help="write pseudolabels here instead of a temp folder")
    ap.add_argument("--target-s", type=float, default=300.0, help="wall-time target in seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    ap.add_argument("--map-args", default="", help="extra instance-map arguments, one string (e.g. '--workers 1')")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="scale_instance_map_"))
    try:
        data = args.data
        if data is None:
            data = work / "bench1000"
            print(f"rendering bench1000 into {data} ...", flush=True)
            subprocess.run(SYNTH_CLI + ["--out", str(data), "--preset", "bench1000"], check=True)
        output = args.keep or work / "pseudolabels"
        extra = shlex.split(args.map_args)
        cmd = MAP_CLI + ["--data", str(data), "--output", str(output), "--no-cache", "--quiet"] + extra
        load_before = os.getloadavg()
        result = run_measured(cmd)
        load_after = os.getloadavg()
        n_frames = masks = None
        labels_json = output / "labels.json"
        if labels_json.is_file():
            meta = json.loads(labels_json.read_text())
            n_frames = meta["summary"]["frames"]
            masks = meta["summary"]["nodes"]
            result.update(labels=meta["K"], stage_timings_s=meta.get("timings_s"),
                          stage_peak_rss_mb=meta.get("peak_rss_mb"))
        result.update(frames=n_frames, masks=masks, loadavg_before=[round(x, 2) for x in load_before],
                      loadavg_after=[round(x, 2) for x in load_after], cpus=os.cpu_count(),
                      target_s=args.target_s, within_target=result["wall_s"] <= args.target_s)
        if result["returncode"] == 0:
            result.pop("stderr_tail")
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0 if result["returncode"] == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
