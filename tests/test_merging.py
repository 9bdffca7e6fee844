"""Label merging core, merge table and hand edits, on hand-made arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instance_nerfacto.errors import InputError
from instance_nerfacto.merge_table import (
    apply_edits,
    apply_merge,
    load_merge_table,
    parse_edits,
    resolve,
    save_merge_table,
)
from instance_nerfacto.merging import (
    MergeParams,
    cannot_link_pairs,
    compute_merge_table,
    count_cooccurrence,
    load_cannot_link,
    union_find_merge,
)


def _split_object_renders(n_views: int = 6):
    """Renders of two objects: object A split on purpose into labels 3 (left half) and 5 (right half) in every
    view; object B is label 7 alone. Twins: labels 8 and 9 are two identical boxes that one segmenter region
    covers (the segmenter cannot tell them apart) in every view."""
    labels, regions = [], []
    for v in range(n_views):
        lab = np.zeros((40, 80), dtype=np.uint16)
        reg = np.zeros((40, 80), dtype=np.int32)
        x0 = 2 + v  # the objects move a little between views
        lab[5:20, x0:x0 + 10] = 3
        lab[5:20, x0 + 10:x0 + 20] = 5
        reg[5:20, x0:x0 + 20] = 1  # the segmenter sees object A as one region
        lab[25:35, 40:50] = 7
        reg[25:35, 40:50] = 2
        lab[5:15, 50:60] = 8
        lab[5:15, 60:70] = 9
        reg[5:15, 50:70] = 3
        labels.append(lab)
        regions.append(reg)
    return labels, regions


def test_merging_joins_split_labels_and_keeps_side_by_side_twins_apart():
    labels, regions = _split_object_renders()
    # pseudolabels: 8 and 9 appear in one frame (side by side), 3 and 5 never together (InstanceMap split them)
    pseudo = [np.zeros((10, 10), np.uint16) for _ in range(2)]
    pseudo[0][:5, :5], pseudo[0][5:, 5:] = 8, 9
    pseudo[1][:5, :5], pseudo[1][5:, 5:] = 3, 7
    cannot = cannot_link_pairs(pseudo, min_pixels=5)
    assert cannot == {(8, 9), (3, 7)}
    table, stats = compute_merge_table(labels, regions, cannot, MergeParams(min_region_pixels=10))
    assert table == {5: 3} or table == {3: 5}
    assert 8 not in table and 9 not in table and 7 not in table
    assert [8, 9] in stats["refused_cannot_link"]
    merged = apply_merge(labels[0], table)
    assert len(set(np.unique(merged)) - {0}) == 4  # A, B, and the two twins


def test_cooccurrence_requires_cover_fraction():
    lab = np.zeros((10, 100), np.uint16)
    reg = np.ones((10, 100), np.int32)
    lab[:, :90] = 1
    lab[:, 90:] = 2  # label 2 covers 10 % of the region: below min_cover
    appear, cooc = count_cooccurrence([lab], [reg], min_cover=0.2, min_region_pixels=1)
    assert appear == {1: 1} and cooc == {}
    appear, cooc = count_cooccurrence([lab], [reg], min_cover=0.05, min_region_pixels=1)
    assert cooc == {(1, 2): 1}


def test_rare_cooccurrence_relative_to_frequent_label_does_not_merge():
    # label 1 (a table) appears in 10 regions; a cup (2) shares a region with it once in 2 of its 2 appearances:
    # relative to the table that is 2/10 < threshold, so they stay apart.
    labels, regions = [], []
    for v in range(10):
        lab = np.full((10, 10), 1, np.uint16)
        reg = np.ones((10, 10), np.int32)
        if v < 2:
            lab[:, 6:] = 2
        labels.append(lab)
        regions.append(reg)
    table, _ = compute_merge_table(labels, regions, set(), MergeParams(min_region_pixels=1))
    assert table == {}


def test_union_find_refuses_chain_through_cannot_link():
    # 1-2 and 2-3 are candidates, but 1 and 3 are side by side: only the first union happens
    table = union_find_merge([(1, 2), (2, 3)], {(1, 3)}, {1: 5, 2: 1, 3: 1})
    assert table == {2: 1}


def test_merge_table_roundtrip_and_apply(tmp_path):
    path = tmp_path / "merge_table.json"
    save_merge_table(path, {3: 5, 5: 1}, views=4)
    obj = json.loads(path.read_text())
    assert obj["merge"] == {"3": 1, "5": 1} and obj["views"] == 4
    assert load_merge_table(path) == {3: 1, 5: 1}
    ids = np.array([[0, 3, 5], [1, 2, 9]], dtype=np.uint16)
    out = apply_merge(ids, {3: 1, 5: 1})
    assert out.dtype == np.uint16
    assert out.tolist() == [[0, 1, 1], [1, 2, 9]]
    assert load_merge_table(tmp_path / "absent.json") == {}


def test_resolve_breaks_cycles():
    assert resolve({1: 2, 2: 1}) == {2: 1}
    assert resolve({4: 3, 3: 2}) == {4: 2, 3: 2}


def test_hand_edits_apply_on_top(tmp_path):
    text = "# fix the chair\n12 4   # chair\n\n9 0\n4, 2\n"
    assert parse_edits(text) == [(12, 4), (9, 0), (4, 2)]
    table = apply_edits({5: 12}, parse_edits(text))
    # 5 -> 12 (merge table), then 12 becomes 4, then 4 becomes 2: the whole group ends at 2; 9 is dropped
    assert table == {5: 2, 12: 2, 4: 2, 9: 0}
    (tmp_path / "merge_table.json").write_text(json.dumps({"merge": {"5": 12}}))
    (tmp_path / "merge_edits.txt").write_text(text)
    assert load_merge_table(tmp_path / "merge_table.json") == table  # edits beside the table are picked up


@pytest.mark.parametrize("line", ["12", "12 4 7", "a b", "0 3", "3 70000", "-1 2"])
def test_bad_edit_lines_get_one_line_errors(line, tmp_path):
    path = tmp_path / "edits.txt"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(InputError) as err:
        load_merge_table(tmp_path / "none.json", edits=path)
    msg = err.value.line()
    assert "\n" not in msg and f"{path}:2" in msg and "A B" in msg


def test_missing_edit_file_and_bad_table(tmp_path):
    with pytest.raises(InputError, match="edit file does not exist"):
        load_merge_table(tmp_path / "none.json", edits=tmp_path / "missing.txt")
    bad = tmp_path / "merge_table.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_merge_table(bad)
    bad.write_text(json.dumps({"merge": {"x": 1}}))
    with pytest.raises(InputError, match="not an integer"):
        load_merge_table(bad)


def test_load_cannot_link_from_pseudolabel_pngs(tmp_path):
    from instance_nerfacto.dataset_io import atomic_write_png

    a = np.zeros((20, 20), np.uint16)
    a[:10] = 1
    a[10:] = 2
    b = np.zeros((20, 20), np.uint16)
    b[:10] = 3
    b[10:, :1] = 2  # 10 pixels only: below min_pixels, not side by side
    atomic_write_png(tmp_path / "f0.png", a)
    atomic_write_png(tmp_path / "f1.png", b)
    assert load_cannot_link(tmp_path, min_pixels=20) == {(1, 2)}


def test_label_statistics_for_the_viewer_report():
    from instance_nerfacto.merging import label_statistics

    a = np.zeros((4, 4), np.uint16)
    a[:2] = 5
    b = np.zeros((4, 4), np.uint16)
    b[:1] = 5
    b[3, 3] = 2
    stats = label_statistics({"f0": a, "f1": b})
    assert stats[5]["frames"] == ["f0", "f1"] and stats[5]["area"] == {"f0": 8, "f1": 4}
    assert stats[5]["mean_area"] == 6.0 and stats[2]["frames"] == ["f1"] and 0 not in stats


def test_merge_callback_runs_once_after_training():
    from types import SimpleNamespace

    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from instance_nerfacto.merge_cli import merge_callback

    callback = merge_callback(SimpleNamespace(trainer=None, pipeline=None))
    assert callback.where_to_run == [TrainingCallbackLocation.AFTER_TRAIN]
    callback.run_callback_at_location(10, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)  # not here
    callback.run_callback_at_location(10, TrainingCallbackLocation.AFTER_TRAIN)  # no trainer: nothing to do
