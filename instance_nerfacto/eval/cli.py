"""``instance-eval``: scene PQ and matched mIoU of a folder of predicted label PNGs against ground truth.

    instance-eval --pred outputs/render --gt data/room/gt --things data/room/instances.json --json eval.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import tyro

from instance_nerfacto.core.console import CONSOLE
from instance_nerfacto.core.errors import run_cli
from instance_nerfacto.core.files import atomic_write_json
from instance_nerfacto.eval.metrics import evaluate_dirs


@dataclass
class EvalConfig:
    """Evaluate predicted instance label PNGs against ground-truth label PNGs (scene-level PQ, matched mIoU)."""

    pred: Path
    """Folder of predicted uint16 label PNGs (0 = unlabelled), one per frame, named by image stem."""
    gt: Path
    """Folder of ground-truth uint16 label PNGs (0 = void) with the same stems and sizes."""
    prefix: str = ""
    """Evaluate only prediction PNGs whose stem starts with this (e.g. 'frame_'); empty = all PNGs in --pred."""
    things: Optional[Path] = None
    """instances.json {"<gt id>": {"name": ..., "is_thing": bool}}: stuff gt ids become void; absent ids are things."""
    json: Optional[Path] = None
    """Write the metrics here as JSON (atomically); nothing is written when omitted."""


def format_table(result: Dict, title: str = "instance-eval"):
    """A small rich table of the headline numbers."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("scene PQ", f"{result['scene_pq']:.4f}")
    table.add_row("scene SQ", f"{result['scene_sq']:.4f}")
    table.add_row("scene RQ", f"{result['scene_rq']:.4f}")
    table.add_row("TP / FP / FN", f"{result['tp']} / {result['fp']} / {result['fn']}")
    table.add_row("matched mIoU", f"{result['matched_miou']:.4f}")
    table.add_row("matched / gt instances", f"{result['n_matched']} / {result['n_gt']}")
    table.add_row("frames", str(result["n_frames"]))
    return table


def main(cfg: EvalConfig) -> Dict:
    start = time.perf_counter()
    result = evaluate_dirs(cfg.pred, cfg.gt, prefix=cfg.prefix, things_json=cfg.things)
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["pred"] = str(cfg.pred)
    result["gt"] = str(cfg.gt)
    result["prefix"] = cfg.prefix
    result["things"] = str(cfg.things) if cfg.things is not None else None
    CONSOLE.print(format_table(result, title=f"instance-eval: {cfg.pred}"), soft_wrap=False)  # a table: fit it
    if cfg.json is not None:
        atomic_write_json(cfg.json, result)
    return result


def entrypoint() -> None:
    run_cli(lambda: main(tyro.cli(EvalConfig)))


if __name__ == "__main__":
    entrypoint()
