"""The demo's visual report: a contact sheet of a few frames, the metric table and a PQ-vs-iteration plot.

Columns of the contact sheet: RGB | frontend masks | InstanceMap | InstanceLift | InstanceLoc | ground truth.
Every id image is drawn with the project's one palette. So that the eye can compare columns whose id spaces differ
(each stage numbers its labels its own way), a predicted id that matches a ground-truth object over the whole
sequence (IoU > 0.5, the scene-PQ matching) is drawn in that object's colour; unmatched ids keep a colour of their own,
and frontend masks keep their raw per-frame ids (they are not consistent across frames; that is the point).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from instance_nerfacto.core.files import read_label_png
from instance_nerfacto.core.palette import colorize

UNMATCHED_OFFSET = 40_000  # colour slot for ids that match no ground-truth object (far from gt ids)


def match_to_gt(pred_dir: Path, gt_dir: Path, stems: Sequence[str]) -> Dict[int, int]:
    """pred id -> gt id for pairs with sequence-level IoU > 0.5 (unique by construction)."""
    inter: Dict[tuple, int] = {}
    pred_area: Dict[int, int] = {}
    gt_area: Dict[int, int] = {}
    for stem in stems:
        p_path, g_path = pred_dir / f"{stem}.png", gt_dir / f"{stem}.png"
        if not p_path.exists() or not g_path.exists():
            continue
        pred, gt = read_label_png(p_path).astype(np.int64), read_label_png(g_path).astype(np.int64)
        if pred.shape != gt.shape:
            continue
        keys, counts = np.unique(pred * 65536 + gt, return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist()):
            inter[divmod(key, 65536)] = inter.get(divmod(key, 65536), 0) + count
        for ids, area in ((pred, pred_area), (gt, gt_area)):
            u, c = np.unique(ids, return_counts=True)
            for i, n in zip(u.tolist(), c.tolist()):
                area[i] = area.get(i, 0) + n
    table = {}
    for (p, g), n in inter.items():
        if p == 0 or g == 0:
            continue
        iou = n / (pred_area[p] + gt_area[g] - n)
        if iou > 0.5:
            table[p] = g
    return table


def _tile(image: Optional[np.ndarray], size: tuple[int, int]) -> Image.Image:
    if image is None:  # stage does not apply to this frame: grey tile
        return Image.new("RGB", size, (60, 60, 60))
    return Image.fromarray(image).resize(size, Image.NEAREST)


def recolor(ids: np.ndarray, mapping: Optional[Dict[int, int]]) -> np.ndarray:
    if mapping is None:
        return colorize(ids)
    lut_keys = np.unique(ids)
    out = np.zeros(ids.shape, dtype=np.int64)
    for k in lut_keys.tolist():
        if k == 0:
            continue
        out[ids == k] = mapping.get(k, UNMATCHED_OFFSET + k)
    return colorize(out)


def contact_sheet(
    scene: Path, stems: Sequence[str], columns: List[tuple[str, Optional[Path]]], out_png: Path, tile_w: int = 240
) -> None:
    """Write a grid: one row per stem, one column per (title, label folder); folder None = the RGB image."""
    gt_dir = scene / "gt"
    mappings = {}
    for title, folder in columns:
        if folder is None or folder == gt_dir or title.startswith("frontend"):
            mappings[title] = None
        else:
            all_stems = sorted(p.stem for p in folder.glob("*.png"))
            mappings[title] = match_to_gt(folder, gt_dir, all_stems)
    first = np.asarray(Image.open(scene / "images" / f"{stems[0]}.png"))
    tile_h = int(round(tile_w * first.shape[0] / first.shape[1]))
    header = 22
    sheet = Image.new("RGB", (tile_w * len(columns), header + (tile_h + 16) * len(stems)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, (title, _) in enumerate(columns):
        draw.text((c * tile_w + 4, 4), title, fill=(0, 0, 0))
    for r, stem in enumerate(stems):
        y = header + r * (tile_h + 16)
        draw.text((4, y), stem, fill=(0, 0, 0))
        for c, (title, folder) in enumerate(columns):
            if folder is None:
                img = np.asarray(Image.open(scene / "images" / f"{stem}.png").convert("RGB"))
            elif (folder / f"{stem}.png").exists():
                img = recolor(read_label_png(folder / f"{stem}.png"), mappings[title])
            else:
                img = None
            sheet.paste(_tile(img, (tile_w, tile_h)), (c * tile_w, y + 14))
    tmp = out_png.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(out_png)


def pq_curve(points: List[tuple[int, float]], out_png: Path, reference: Optional[float] = None) -> None:
    """Plot scene PQ of the rendered training views against training iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.0), dpi=120)
    if points:
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "o-", label="InstanceLift (rendered train views)")
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", label="InstanceMap pseudolabels")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("scene PQ")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)


def write_markdown(out_md: Path, rows: List[dict], sheet: str, curve: Optional[str], notes: List[str]) -> None:
    lines = ["# instance-nerfacto demo report", "", f"![contact sheet]({sheet})", ""]
    lines += ["| stage | frames | scene PQ | matched mIoU (n/N) | wall time |", "|---|---|---|---|---|"]
    for row in rows:
        res = row.get("metrics")
        pq = f"{res['scene_pq']:.3f}" if res else "-"
        miou = f"{res['matched_miou']:.3f} ({res['n_matched']}/{res['n_gt']})" if res else "-"
        t = f"{row['seconds']:.1f} s" if row.get("seconds") is not None else "-"
        lines.append(f"| {row['stage']} | {row.get('frames', '-')} | {pq} | {miou} | {t} |")
    if curve:
        lines += ["", f"![PQ against training iteration]({curve})"]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    tmp = out_md.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out_md)


def stack_report_png(sheet_png: Path, curve_png: Optional[Path], out_png: Path) -> None:
    """report.png = the contact sheet with the PQ curve underneath (one picture to look at)."""
    sheet = Image.open(sheet_png).convert("RGB")
    parts = [sheet]
    if curve_png is not None and curve_png.exists():
        parts.append(Image.open(curve_png).convert("RGB"))
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts)), (255, 255, 255))
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    tmp = out_png.with_suffix(".tmp.png")
    out.save(tmp)
    tmp.replace(out_png)


def load_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None
