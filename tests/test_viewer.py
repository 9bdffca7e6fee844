"""Viewer smoke test: a trained run opens in nerfstudio's web viewer, a headless Chromium connects to it and the page
offers the ``instance`` output; a busy port is one clear error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _other_addresses() -> list:
    """Addresses of this machine other than 127.0.0.1: 127.0.0.2 (loopback, but a server bound to 127.0.0.1 alone does
    not answer there, one bound to 0.0.0.0 does) and the address of the default route and the host name, when any."""
    found = {"127.0.0.2"}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("192.0.2.1", 9))  # a UDP connect sends nothing; it only picks the outgoing address
            found.add(sock.getsockname()[0])
    except OSError:
        pass
    try:
        found.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return sorted(a for a in found if a != "127.0.0.1" and a != "0.0.0.0")


def _viewer_cmd(config: Path, port: int) -> list:
    return [sys.executable, "-c", "from instance_nerfacto.render.viewer_cli import entrypoint; entrypoint()",
            "--load-config", str(config), "--port", str(port)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_scene: Path) -> Path:
    """instance-nerfacto-small trained for a few iterations on the tiny scene's ground truth as pseudolabels."""
    root = tmp_path_factory.mktemp("viewer")
    scene = Path(shutil.copytree(tiny_scene, root / "scene"))
    shutil.copytree(scene / "gt", scene / "pseudolabels")
    num_labels = max(int(k) for k in json.loads((scene / "instances.json").read_text()))
    (scene / "pseudolabels" / "labels.json").write_text(json.dumps({"num_labels": num_labels}))
    subprocess.run([str(Path(sys.executable).parent / "ns-train"), "instance-nerfacto-small", "--data", str(scene),
                    "--machine.device-type", "cpu", "--max-num-iterations", "20", "--vis", "tensorboard",
                    "--viewer.quit-on-train-completion", "True", "--output-dir", str(root / "runs")],
                   check=True, capture_output=True, timeout=600)
    return next((root / "runs").rglob("config.yml"))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian chromium (make test installs it)")
def test_viewer_page_connects_and_offers_instance_output(tiny_run: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = open(tmp_path / "viewer.log", "w")
    server = subprocess.Popen(_viewer_cmd(tiny_run, port), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert server.poll() is None, (tmp_path / "viewer.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("viewer did not start: " + (tmp_path / "viewer.log").read_text()[-3000:])
        # it listens on 127.0.0.1 only: the machine's other addresses do not answer
        others = _other_addresses()
        assert others
        for address in others:
            with socket.socket() as sock:
                sock.settimeout(3)
                assert sock.connect_ex((address, port)) != 0, f"the viewer answers on {address}:{port}"
        browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,800",
                   "--virtual-time-budget=15000"]
        dom = subprocess.run(browser + ["--dump-dom", f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                             timeout=180).stdout
        shot = tmp_path / "viewer.png"
        subprocess.run(browser + [f"--screenshot={shot}", f"http://127.0.0.1:{port}"], capture_output=True,
                       timeout=180)
        server_log = (tmp_path / "viewer.log").read_text()
        assert "Connection opened" in server_log, server_log[-3000:]
        assert "instance" in dom and "instance_id" in dom, "output dropdown lacks the instance outputs"
        assert shot.exists() and shot.stat().st_size > 10_000  # a real page, not a blank error tab
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("not loaded: the port is checked first\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = subprocess.run(_viewer_cmd(config, port), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], proc.stderr
    assert config.read_text() == "not loaded: the port is checked first\n"


def test_training_viewer_binds_localhost_by_default() -> None:
    """ns-train instance-nerfacto* starts its viewer on 127.0.0.1 (nerfstudio's default is 0.0.0.0)."""
    from instance_nerfacto.config import instance_nerfacto, instance_nerfacto_small
    from instance_nerfacto.render.viewer_cli import ViewerCliConfig

    for spec in (instance_nerfacto, instance_nerfacto_small):
        assert spec.config.viewer.websocket_host == "127.0.0.1"
    assert ViewerCliConfig(load_config=Path("x")).host == "127.0.0.1"
