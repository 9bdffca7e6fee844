"""`instance-viewer`: nerfstudio's viewer for a trained instance-nerfacto run, safe by default.

The same viewer as ``ns-viewer --load-config CFG`` (choose the ``instance`` output; the "merged labels" checkbox
toggles the merge table), with two differences that matter on shared machines: it binds 127.0.0.1 unless ``--host``
says otherwise (``ns-viewer`` binds 0.0.0.0), and a port that is already in use is one clear error instead of a silent
switch to another port. Reach it from another machine with an SSH tunnel: ``ssh -L 7007:127.0.0.1:7007 host``.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import tyro

from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.runs import RunChoice


@dataclass
class ViewerCliConfig:
    """Open a trained instance-nerfacto run in nerfstudio's web viewer."""

    run: Annotated[RunChoice, tyro.conf.OmitArgPrefixes] = field(default_factory=RunChoice)
    """The training run (--load-config)."""
    port: int = 7007
    """Port of the viewer's web server."""
    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 exposes the viewer to the network."""
    photos: Optional[Path] = None
    """A pose file in transforms.json's format, e.g. the poses.json of ``instance-loc --images``: its photos are drawn
    as orange camera frusta where they were registered (click one to look through it)."""


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
    config_path = cfg.run.require_config()
    if cfg.photos is not None:
        from instance_nerfacto.core.dataset import load_dataset

        load_dataset(cfg.photos, check_files=False)  # a bad pose file is one line now, not after the model loads
    check_port_free(cfg.host, cfg.port)
    from nerfstudio.scripts.viewer import run_viewer
    from nerfstudio.scripts.viewer.run_viewer import RunViewer, ViewerConfigWithoutNumRays

    from instance_nerfacto.core import compat

    compat.apply()
    from instance_nerfacto.edit import viewer as edit_viewer

    # the edit panel saves label_edits.txt and the checkpoint into the folder the viewer loads the checkpoint from
    # (instance-merge's, found the same way: a moved run is one line here, a copied one names the original)
    edit_viewer.RUN_DIR = cfg.run.run_dir("instance-viewer")
    if cfg.photos is not None:  # nerfstudio's viewer draws its scene in ViewerState.init_scene: draw ours after it
        from instance_nerfacto.render.photo_frusta import viewer_state_with_photos

        run_viewer.ViewerState = viewer_state_with_photos(run_viewer.ViewerState, cfg.photos)
    viewer = ViewerConfigWithoutNumRays(websocket_host=cfg.host, websocket_port=cfg.port)
    RunViewer(load_config=config_path, viewer=viewer).main()


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(ViewerCliConfig)))


if __name__ == "__main__":
    entrypoint()
