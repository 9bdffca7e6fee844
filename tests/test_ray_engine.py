"""instance-map on a local Ray cluster (``ray.init(num_cpus=2)``, once per module): the same pseudolabels as the
single-process run byte for byte, also when a worker process is killed mid-run (Ray re-runs its task) and when the
driver is killed and restarted (the stage cache resumes); a cluster that cannot be reached, or Ray missing, is one
clear line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # `make install` installs the ray extra: a broken install fails here instead of skipping every test

from tests.badinput import MAP, cli_env, run_cli

REPO = Path(__file__).resolve().parents[1]
KILL_MARKER = "INSTANCE_MAP_TEST_KILL_MARKER"


def dying_match_pairs(*args, **kwargs):
    """match_pairs whose first call (over all workers) kills its own worker process, as an OOM kill or a lost node
    would; Ray must re-run the task and the output must not change."""
    from data_preprocess.graph import match_pairs

    marker = Path(os.environ[KILL_MARKER])
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return match_pairs(*args, **kwargs)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    marker = tmp_path_factory.mktemp("kill") / "killed"
    os.environ[KILL_MARKER] = str(marker)  # workers inherit the driver's environment
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    for attempt in range(3):  # Ray's own start-up timeouts (15 s / 30 s) can trip on a heavily loaded machine
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield marker
    ray.shutdown()


def _map(data: Path, out: Path, **kw):
    from data_preprocess.instance_map import MapConfig, main

    return main(MapConfig(data=data, output=out, quiet=True, cache=False, **kw))


def _same_output(a: Path, b: Path) -> None:
    pngs = sorted(p.name for p in a.glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in b.glob("*.png"))
    differing = [n for n in pngs if (a / n).read_bytes() != (b / n).read_bytes()]
    assert not differing, f"pseudolabels differ: {differing[:5]}"
    meta = [json.loads((d / "labels.json").read_text()) for d in (a, b)]
    for m in meta:
        for key in ("timings_s", "peak_rss_mb"):
            m.pop(key, None)
        for key in ("output", "ray_address", "cache"):
            m["parameters"].pop(key, None)
    assert meta[0] == meta[1]


@pytest.fixture(scope="module")
def reference(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "single"
    _map(tiny_scene, out)
    return out


def test_auto_without_a_cluster_is_one_line(tiny_scene: Path, tmp_path: Path) -> None:
    """Runs before the module's cluster starts (tests run in file order): `auto` would join that cluster."""
    env = cli_env()
    env["RAY_TMPDIR"] = str(tmp_path / "no_cluster")  # where `auto` looks for a running cluster: none there
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-c", f"from {MAP} import entrypoint; entrypoint()", "--data", str(tiny_scene),
           "--output", str(tmp_path / "out"), "--ray-address", "auto"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "cannot reach the Ray cluster at 'auto'" in lines[0], \
        proc.stderr[-2000:]


def test_ray_run_is_byte_identical_to_one_process(cluster, reference: Path, tiny_scene: Path, tmp_path: Path) -> None:
    meta = _map(tiny_scene, tmp_path / "ray", ray_address="local")  # joins the module's cluster
    assert meta["parameters"]["ray_address"] == "local"
    _same_output(reference, tmp_path / "ray")


def test_killed_worker_is_retried_and_output_unchanged(cluster, reference: Path, tiny_scene: Path, tmp_path: Path,
                                                       monkeypatch) -> None:
    import data_preprocess.graph as graph

    monkeypatch.setattr(graph, "match_pairs", dying_match_pairs)
    _map(tiny_scene, tmp_path / "ray", ray_address="local")
    assert cluster.is_file(), "no worker was killed: the test did not test a retry"
    _same_output(reference, tmp_path / "ray")


def test_engine_keeps_submission_order(cluster) -> None:
    from data_preprocess.engine import RayEngine

    engine = RayEngine("local")
    out = list(engine.map(_slow_identity, [(k,) for k in range(12)], chunk=1))
    assert out == list(range(12))


def _slow_identity(k: int) -> int:
    time.sleep(0.05 * ((7 * k) % 5))  # later tasks often finish first
    return k


def test_unreachable_cluster_is_one_line(tiny_scene: Path, tmp_path: Path) -> None:
    proc = run_cli(MAP, "--data", tiny_scene, "--output", tmp_path / "out", "--ray-address", "ray://127.0.0.1:9")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "cannot reach the Ray cluster" in lines[0] and "ray start --head" in lines[0]
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_flag_is_one_line(tiny_scene: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from data_preprocess.instance_map import MapConfig, main
    from instance_nerfacto.core.errors import run_cli as run_in_process

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    cfg = MapConfig(data=tiny_scene, output=tmp_path / "out", ray_address="local", quiet=True)
    with pytest.raises(SystemExit) as info:
        run_in_process(lambda: main(cfg), argv=[], prog="instance-map")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert info.value.code == 2 and len(lines) == 1, lines
    assert "needs Ray" in lines[0] and "instance-nerfacto[ray]" in lines[0]


@pytest.mark.slow
def test_killed_driver_resumes_from_the_cache(tiny_scene: Path, tmp_path: Path) -> None:
    """SIGKILL the driver of a --ray-address local run once it has cached its pairs; the rerun (a fresh cluster)
    loads them and writes the single-process output."""
    reference = tmp_path / "reference"
    assert run_cli(MAP, "--data", tiny_scene, "--output", reference, "--quiet").returncode == 0
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", f"from {MAP} import entrypoint; entrypoint()", "--data", str(tiny_scene),
           "--output", str(out), "--quiet", "--ray-address", "local"]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(),
                              start_new_session=True)
    deadline = time.monotonic() + 300
    pairs_file = None
    try:
        while time.monotonic() < deadline and victim.poll() is None and pairs_file is None:
            found = list((out / ".cache").glob("pairs-*.npz")) if (out / ".cache").is_dir() else []
            pairs_file = found[0] if found else None
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(timeout=60)
    assert pairs_file is not None and victim.returncode == -signal.SIGKILL
    assert not (out / "labels.json").exists()
    stamp = pairs_file.stat().st_mtime_ns
    proc = run_cli(MAP, "--data", tiny_scene, "--output", out, "--quiet", "--ray-address", "local", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pairs_file.stat().st_mtime_ns == stamp, "the restarted run recomputed the cached pairs"
    _same_output(reference, out)


def test_ray_processes_do_not_import_the_slow_grammar_package() -> None:
    """Every Ray process imports ray; with rfc3987-syntax installed, jsonschema (imported by ray) builds its grammar at
    import, 2.8 s per process on 2 cores (seven processes per local cluster). `make install` removes it, and the
    engine's note names it for an environment that has it."""
    from data_preprocess.engine import SLOW_RAY_IMPORTS

    code = "import sys, ray; print(','.join(sorted(set(sys.modules) & set(%r))))" % sorted(SLOW_RAY_IMPORTS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "", f"import ray loaded {out.stdout.strip()} (see the Makefile's install step)"
    assert "jsonschema" in subprocess.run([sys.executable, "-c", "import sys, ray; print(' '.join(sys.modules))"],
                                          capture_output=True, text=True, check=True, cwd=REPO).stdout
