"""`instance-viewer`: nerfstudio's viewer for a trained instance-nerfacto run, safe by default.

The same viewer as ``ns-viewer --load-config CFG`` (choose the ``instance`` output; the "merged labels" checkbox
toggles the merge table), with two differences that matter on shared machines: it binds 127.0.0.1 unless ``--host``
says otherwise (``ns-viewer`` binds 0.0.0.0), and a port that is already in use is one clear error instead of a silent
switch to another port. Reach it from another machine with an SSH tunnel: ``ssh -L 7007:127.0.0.1:7007 host``.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

import tyro

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail, run_cli


@dataclass
class ViewerCliConfig:
    """Open a trained instance-nerfacto run in nerfstudio's web viewer."""

    load_config: Path
    """config.yml of the training run."""
    port: int = 7007
    """Port of the viewer's web server."""
    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 exposes the viewer to the network."""


def check_port_free(host: str, port: int) -> None:
    """InputError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the viewer's server binds: a port whose last connections are still in TIME_WAIT (a viewer just closed)
        # is free to listen on again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is already in use", None,
                     f"stop the program using it or pass --port {port + 1}")
            fail(f"cannot bind {host}:{port} ({err.strerror})", None, "pass --host 127.0.0.1 or another --port")


def main(cfg: ViewerCliConfig) -> None:
    if not cfg.load_config.is_file():
        fail("training config not found", cfg.load_config, "pass the config.yml written by ns-train")
    check_port_free(cfg.host, cfg.port)
    from nerfstudio.scripts.viewer.run_viewer import RunViewer, ViewerConfigWithoutNumRays

    from instance_nerfacto.core import compat

    compat.apply()
    from instance_nerfacto.core.runs import moved_run_note, run_folder
    from instance_nerfacto.edit import viewer as edit_viewer

    # the edit panel saves label_edits.txt and the checkpoint into the folder the viewer loads the checkpoint from
    edit_viewer.RUN_DIR = run_folder(cfg.load_config)
    note = moved_run_note(edit_viewer.RUN_DIR, cfg.load_config)
    if note is not None:
        say(f"instance-viewer: {note}")
    viewer = ViewerConfigWithoutNumRays(websocket_host=cfg.host, websocket_port=cfg.port)
    RunViewer(load_config=cfg.load_config, viewer=viewer).main()


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(ViewerCliConfig)))


if __name__ == "__main__":
    entrypoint()
