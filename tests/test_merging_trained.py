"""Label merging end to end: ns-train's end-of-training merge on a label field trained with one object split in two."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.files import atomic_write_json, atomic_write_png, read_label_png
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.edit.store import read_record
from instance_nerfacto.eval.noisy_labels import make_noisy_pseudolabels
from tests.test_lift import train


def split_most_seen_thing(scene: Path, min_pixels: int = 150) -> tuple[int, int, list[int]]:
    """Give the thing seen in most training frames a new label in the later half of those frames, as InstanceMap
    does when it cuts one object's masks into two communities (the two labels never share a frame). Returns
    (original label, new label, ids of the other things)."""
    pseudo = scene / "pseudolabels"
    meta = json.loads((scene / "transforms.json").read_text())
    stems = sorted(Path(f).stem for f in meta["train_filenames"])
    instances = json.loads((scene / "instances.json").read_text())
    things = [int(k) for k, v in instances.items() if v["is_thing"]]
    seen: dict[int, list[str]] = {}
    for stem in stems:
        ids, counts = np.unique(read_label_png(pseudo / f"{stem}.png"), return_counts=True)
        for label, count in zip(ids.tolist(), counts.tolist()):
            if label in things and count >= min_pixels:
                seen.setdefault(label, []).append(stem)
    target = max(seen, key=lambda k: len(seen[k]))
    labels_json = json.loads((pseudo / "labels.json").read_text())
    new = int(labels_json["num_labels"]) + 1
    frames = seen[target]
    assert len(frames) >= 10, seen
    for stem in frames[len(frames) // 2:]:
        labels = read_label_png(pseudo / f"{stem}.png")
        atomic_write_png(pseudo / f"{stem}.png", np.where(labels == target, new, labels).astype(np.uint16))
    atomic_write_json(pseudo / "labels.json", {**labels_json, "num_labels": new})
    return target, new, [t for t in things if t != target]


@pytest.mark.slow
def test_merge_after_training_joins_a_split_object_and_keeps_twins_apart(tiny_scene: Path, tmp_path: Path):
    """Trained on pseudolabels where one object carries label A in half of its frames and B in the other half, the
    merge that runs at the end of ns-train joins A and B, and joins no two other objects: the tiny room holds
    identical twins (two cardboard boxes, three books, three cushions, five vases) that must keep their own ids."""
    scene = Path(shutil.copytree(tiny_scene, tmp_path / "tiny"))
    make_noisy_pseudolabels(scene / "gt", scene / "pseudolabels", seed=0)
    target, new, others = split_most_seen_thing(scene)
    config = train(scene, tmp_path / "outputs", 600)

    table = read_record(config.parent)
    merged = MergeTable(table["merge"]).apply(np.array([target, new] + others))
    import torch

    checkpoint = sorted((config.parent / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    lut = torch.load(checkpoint, weights_only=False)["pipeline"]["_model.merge_lut"].numpy()
    assert MergeTable.from_lut(lut) == MergeTable(table["merge"])  # what ns-render and the viewer will show
    assert merged[0] == merged[1], table  # the split object is one label again
    assert len(set(merged[2:].tolist())) == len(others), table  # every other object keeps its own id
    assert merged[0] not in merged[2:], table
    names = [v["name"] for v in json.loads((scene / "instances.json").read_text()).values() if v["is_thing"]]
    assert len(names) > len(set(names))  # the scene really holds identical objects
