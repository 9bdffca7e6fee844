"""``instance-merge``: merge the labels of a trained run that are one object, and apply hand edits.

    instance-merge --load-config outputs/.../config.yml                       # render, segment, merge
    instance-merge --load-config outputs/.../config.yml --edits fixes.txt     # + hand edits ('A B' per line)

The table is stored in the run's latest checkpoint (``merge_lut``), which ``ns-render``, the viewer,
``instance-render``, ``instance-loc`` and ``instance-export`` all read, and recorded in ``<run dir>/merge_table.json``.
The run folder is the one nerfstudio loads the checkpoints from (the config's ``output_dir/experiment_name/
method_name/timestamp``), which is the folder of config.yml unless the run was moved or copied.
With ``--edits``, the automatic merges of that record are kept (``--remerge`` computes them again). The edit file
may also split labels and name them (see :mod:`instance_nerfacto.edit.edits`); it is copied beside the run as
``label_edits.txt``, the file the viewer saves its edits to. Without ``--edits`` the run's ``label_edits.txt`` (when
there is one) is applied on top of the new automatic merges, so re-merging keeps the hand edits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import tyro

from instance_nerfacto.core.console import say
from instance_nerfacto.core.errors import fail, run_cli
from instance_nerfacto.core.runs import RunChoice
from instance_nerfacto.edit.edits import read_label_edits
from instance_nerfacto.edit.label_map import LabelMap
from instance_nerfacto.edit.store import MERGE_TABLE_NAME, read_record, read_run_edits, store_label_edits
from instance_nerfacto.merge.views import MergeViews


@dataclass(kw_only=True)
class MergeConfig(MergeViews):
    """Merge labels of a trained instance-nerfacto run that are one object (stored in its checkpoint)."""

    run: Annotated[RunChoice, tyro.conf.OmitArgPrefixes] = field(default_factory=RunChoice)
    """The training run (--load-config)."""
    edits: Optional[Path] = None
    """Hand-edit file ('A B' per line: label A becomes label B; 'split ...', 'name ...' lines as the viewer saves
    them), applied on top of the automatic merges; default: the run's label_edits.txt when it has one."""
    remerge: bool = False
    """With --edits: compute the automatic merges again instead of keeping those of merge_table.json."""
    pseudolabels: Optional[Path] = None
    """Pseudolabel folder for the cannot-link set (default: the one the run was trained on)."""


def main(cfg: MergeConfig) -> LabelMap:
    from instance_nerfacto.render.run import load_run

    config_path = cfg.run.require_config()
    if cfg.views < 1:
        fail("--views must be at least 1", None, "pass e.g. --views 8")
    if cfg.segmenter == "fastsam" and (cfg.weights is None or not cfg.weights.is_file()):
        fail("FastSAM weights file does not exist", cfg.weights,
             "pass --weights a local FastSAM .pt file, or use --segmenter felzenszwalb")
    if cfg.pseudolabels is not None and not cfg.pseudolabels.is_dir():
        fail("pseudolabel folder does not exist", cfg.pseudolabels, "pass the folder the run was trained on")
    edits = read_label_edits(cfg.edits) if cfg.edits is not None else []  # a bad edit file fails before the model
    # the folder nerfstudio loads the checkpoints from: the one ns-render and the viewer read, so the one to write
    run_dir = cfg.run.run_dir("instance-merge")
    if cfg.edits is None:
        edits = read_run_edits(run_dir)
    record = read_record(run_dir)
    if cfg.edits is not None and record and not cfg.remerge:
        automatic, stats = record["merge"], {}
    else:
        from instance_nerfacto.merge.views import merge_labels

        run = load_run(config_path)
        automatic, stats = merge_labels(run.pipeline, cfg, run.checkpoint, run.step, cfg.pseudolabels)
        del run
    final = store_label_edits(run_dir, edits, automatic, **stats)
    say(f"instance-merge: {len(automatic)} labels merged automatically, {len(edits)} hand edits, "
        f"{len(final.merge)} labels mapped, {len(final.program)} edit stages after splits -> checkpoint and "
        f"{run_dir / MERGE_TABLE_NAME}")
    return final


def entrypoint(argv: Optional[list] = None) -> None:
    run_cli(lambda: main(tyro.cli(MergeConfig, args=argv)))


if __name__ == "__main__":
    entrypoint()
