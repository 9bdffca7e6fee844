"""Export selected instances: their labelled points (the PLY format of instance-export) and their masks in the
training frames (uint16 PNGs, the selected ids kept, everything else 0), through the run's label map.

The viewer's edit panel (``edit/viewer.py``) calls it through the exporter the pipeline hands it: exporting renders
through ``render/`` and ``export/``, which sit above the edits."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from instance_nerfacto.core.errors import fail


def export_selection(pipeline, run_dir: Path | str, ids: Sequence[int], out_dir: Path | str | None = None,
                     every: int = 1, downscale: int = 2) -> Path:
    """Write ``<out>/selection.ply`` and ``<out>/masks/<stem>.png`` for the training frames; returns ``<out>``
    (default ``<run dir>/selection/<ids joined by '-'>``)."""
    import torch

    from instance_nerfacto.core.files import atomic_write_json, write_label_png
    from instance_nerfacto.export.points import surface_points, write_ply
    from instance_nerfacto.render.labels import LabelRenderer
    from instance_nerfacto.render.run import TrainedRun, split_cameras

    run_dir = Path(run_dir)
    ids = sorted({int(i) for i in ids})
    if not ids:
        fail("no instance selected", None, "select instances in the viewer first")
    out = Path(out_dir) if out_dir is not None else run_dir / "selection" / "-".join(map(str, ids))
    run = TrainedRun.of_run_folder(pipeline, run_dir)  # the viewer's pipeline, loaded from the run's latest checkpoint
    label_map = run.label_map()
    with torch.no_grad():
        xyz, rgb, point_ids = surface_points(run, every=max(every, 1), downscale=downscale)
        keep = np.isin(point_ids, ids)
        write_ply(out / "selection.ply", xyz[keep], rgb[keep], point_ids[keep])
        renderer = LabelRenderer(pipeline, run.checkpoint, run.step)
        pixels = {}
        for stem, cameras, index in split_cameras(pipeline, "train")[:: max(every, 1)]:
            labels = renderer.render_labels(cameras, index, downscale, label_map)
            mask = np.where(np.isin(labels, ids), labels, 0)
            write_label_png(out / "masks" / f"{stem}.png", mask)
            pixels[stem] = {str(i): int((mask == i).sum()) for i in ids}
    atomic_write_json(out / "selection.json", {"ids": ids, "points": int(keep.sum()),
                                               "names": {str(i): label_map.names.get(i) for i in ids},
                                               "pixels_per_frame": pixels})
    return out
