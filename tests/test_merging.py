"""Label merging core, merge table and hand edits, on hand-made arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instance_nerfacto.core.errors import InputError
from instance_nerfacto.edit.edits import Merge, parse_label_edits, read_label_edits
from instance_nerfacto.edit.label_map import MergeTable, apply_edits, resolve
from instance_nerfacto.edit.store import read_record, store_merge_table
from instance_nerfacto.merge.cooccurrence import (
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
    merged = MergeTable(table).apply(labels[0])
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


def fake_run(tmp_path, num_labels: int = 12) -> Path:
    """A run folder whose checkpoint holds an identity merge_lut, as a trained model saves it."""
    import torch

    models = tmp_path / "run" / "nerfstudio_models"
    models.mkdir(parents=True)
    state = {"step": 100, "pipeline": {"_model.merge_lut": torch.arange(num_labels + 1), "_model.w": torch.ones(2)}}
    torch.save(state, models / "step-000000100.ckpt")
    return tmp_path / "run"


def stored_lut(run: Path) -> list:
    import torch

    state = torch.load(run / "nerfstudio_models" / "step-000000100.ckpt", weights_only=False)
    return state["pipeline"]["_model.merge_lut"].tolist()


def test_merge_table_stored_in_checkpoint_and_record(tmp_path):
    run = fake_run(tmp_path)
    final = store_merge_table(run, {3: 5, 5: 1}, [(7, 3)], views=4)
    assert final == MergeTable({3: 1, 5: 1, 7: 1})
    lut = stored_lut(run)
    assert lut[3] == lut[5] == lut[7] == 1 and lut[2] == 2 and lut[0] == 0 and len(lut) == 13
    assert MergeTable.from_lut(np.array(lut)) == final  # what every consumer reads back
    record = read_record(run)
    assert record["merge"] == {3: 1, 5: 1} and record["edits"] == [[7, 3]] and record["views"] == 4
    assert record["final"] == {"3": 1, "5": 1, "7": 1}
    ids = np.array([[0, 3, 5], [1, 2, 9]], dtype=np.uint16)
    out = final.apply(ids)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 1, 1], [1, 2, 9]]
    assert read_record(tmp_path / "absent") == {}
    assert not list((run / "nerfstudio_models").glob(".*tmp"))  # written through a temporary name


def test_merge_table_applies_to_torch_ids_like_numpy():
    import torch

    table = MergeTable({4: 2, 6: 2})
    ids = torch.tensor([[0, 4], [6, 9]], dtype=torch.int64)
    assert table.apply(ids).tolist() == [[0, 2], [2, 9]]
    assert table.apply(ids.numpy()).tolist() == [[0, 2], [2, 9]]
    assert MergeTable().apply(ids).tolist() == ids.tolist()


def test_resolve_breaks_cycles():
    assert resolve({1: 2, 2: 1}) == {2: 1}
    assert resolve({4: 3, 3: 2}) == {4: 2, 3: 2}


def test_hand_edits_apply_on_top(tmp_path):
    text = "# fix the chair\n12 4   # chair\n\n9 0\n4, 2\n"
    assert parse_label_edits(text) == [Merge(12, 4), Merge(9, 0), Merge(4, 2)]
    pairs = [(edit.source, edit.target) for edit in parse_label_edits(text)]
    table = apply_edits({5: 12}, pairs)
    # 5 -> 12 (merge table), then 12 becomes 4, then 4 becomes 2: the whole group ends at 2; 9 is dropped
    assert table == {5: 2, 12: 2, 4: 2, 9: 0}
    assert MergeTable({5: 12}).with_edits(pairs) == MergeTable(table)


@pytest.mark.parametrize("line", ["12", "12 4 7", "a b", "0 3", "3 70000", "-1 2"])
def test_bad_edit_lines_get_one_line_errors(line, tmp_path):
    path = tmp_path / "edits.txt"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(InputError) as err:
        read_label_edits(path)
    msg = err.value.line()
    assert "\n" not in msg and f"{path}:2" in msg and "A B" in msg


def test_missing_edit_file_bad_record_and_old_checkpoint(tmp_path):
    with pytest.raises(InputError, match="edit file does not exist"):
        read_label_edits(tmp_path / "missing.txt")
    bad = tmp_path / "merge_table.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not a valid record"):
        read_record(tmp_path)
    bad.write_text(json.dumps({"merge": {"x": 1}}))
    with pytest.raises(InputError, match="not a valid record"):
        read_record(tmp_path)
    import torch

    old = tmp_path / "old" / "nerfstudio_models"
    old.mkdir(parents=True)
    torch.save({"pipeline": {"_model.w": torch.ones(1)}}, old / "step-000000001.ckpt")
    with pytest.raises(InputError, match="no merge table buffer"):
        store_merge_table(old.parent, {2: 1}, [])


def test_load_cannot_link_from_pseudolabel_pngs(tmp_path):
    from instance_nerfacto.core.files import atomic_write_png

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
    from instance_nerfacto.merge.cooccurrence import label_statistics

    a = np.zeros((4, 4), np.uint16)
    a[:2] = 5
    b = np.zeros((4, 4), np.uint16)
    b[:1] = 5
    b[3, 3] = 2
    stats = label_statistics({"f0": a, "f1": b})
    assert stats[5]["frames"] == ["f0", "f1"] and stats[5]["area"] == {"f0": 8, "f1": 4}
    assert stats[5]["mean_area"] == 6.0 and stats[2]["frames"] == ["f1"] and 0 not in stats


def test_merge_callback_runs_once_after_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """After the last iteration, and only then: merge on the final checkpoint, hand the table to the model, save the
    checkpoint again and write the record beside config.yml; a merge that cannot run leaves the run as it is."""
    from types import SimpleNamespace

    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from instance_nerfacto.merge import views
    from instance_nerfacto.merge.views import MergeViews, merge_callback

    merges, tables, saved = [], [], []

    def merge_labels(pipeline, how, checkpoint, step):
        merges.append((checkpoint, step))
        return {3: 1, 4: 1}, {"views": how.views}

    monkeypatch.setattr(views, "merge_labels", merge_labels)
    trainer = SimpleNamespace(base_dir=tmp_path, checkpoint_dir=tmp_path / "nerfstudio_models",
                              save_checkpoint=saved.append)
    pipeline = SimpleNamespace(model=SimpleNamespace(set_merge_table=tables.append))
    callback = merge_callback(SimpleNamespace(trainer=trainer, pipeline=pipeline), MergeViews(views=3))
    assert callback.where_to_run == [TrainingCallbackLocation.AFTER_TRAIN]
    callback.run_callback_at_location(10, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)  # not during training
    assert merges == [] and saved == [] and read_record(tmp_path) == {}
    callback.run_callback_at_location(10, TrainingCallbackLocation.AFTER_TRAIN)
    assert merges == [(tmp_path / "nerfstudio_models" / "step-000000010.ckpt", 10)]
    assert tables == [MergeTable({3: 1, 4: 1})] and saved == [10]
    record = read_record(tmp_path)
    assert record["merge"] == {3: 1, 4: 1} and record["checkpoint"] == "step-000000010.ckpt"
    assert "2 labels merged at step 10" in capsys.readouterr().out

    def no_merge(pipeline, how, checkpoint, step):
        raise InputError("no pseudolabels", tmp_path / "pseudolabels")

    monkeypatch.setattr(views, "merge_labels", no_merge)
    (tmp_path / "merge_table.json").unlink()
    callback.run_callback_at_location(20, TrainingCallbackLocation.AFTER_TRAIN)
    assert saved == [10] and len(tables) == 1 and read_record(tmp_path) == {}  # the saved checkpoint stands
    assert "instance-merge: skipped: no pseudolabels" in capsys.readouterr().out
    # no trainer (a pipeline built outside ns-train): nothing to merge into
    merge_callback(SimpleNamespace(trainer=None, pipeline=None), MergeViews()).run_callback_at_location(
        10, TrainingCallbackLocation.AFTER_TRAIN)


def trained_run_folder(tmp_path: Path) -> Path:
    """:func:`fake_run` where ns-train puts a run, with the config.yml it writes there (output_dir, experiment,
    method, timestamp naming that folder); returns the config.yml."""
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig

    outputs = tmp_path / "outputs"
    run = fake_run(outputs / "tiny" / "instance-nerfacto-small")
    config = TrainerConfig(method_name="instance-nerfacto-small", experiment_name="tiny", timestamp="run",
                           output_dir=outputs)
    (run / "config.yml").write_text(yaml.dump(config))
    return run / "config.yml"


def test_merge_of_a_copied_run_folder_writes_the_checkpoint_nerfstudio_loads(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """A copy of a run folder keeps a config.yml naming the original, and nerfstudio (ns-render, the viewer,
    every loader here) loads the original's checkpoint: instance-merge edits that one, not the copy's."""
    import shutil

    from instance_nerfacto.core.runs import RunChoice, run_folder
    from instance_nerfacto.merge.cli import MergeConfig, main

    config = trained_run_folder(tmp_path)
    original = config.parent
    store_merge_table(original, {3: 1}, [])  # an earlier automatic merge, kept with --edits
    copy = Path(shutil.copytree(original, tmp_path / "backup" / "run"))
    assert run_folder(copy / "config.yml") == original
    edits = tmp_path / "fixes.txt"
    edits.write_text("5 2\n")
    main(MergeConfig(run=RunChoice(load_config=copy / "config.yml"), edits=edits))
    lut = stored_lut(original)
    assert lut[3] == 1 and lut[5] == 2
    assert stored_lut(copy)[5] == 5 and not (copy / "label_edits.txt").exists()  # the copy is left as it was
    assert (original / "label_edits.txt").is_file() and read_record(original)["final"] == {"3": 1, "5": 2}
    assert f"names the run folder {original}" in capsys.readouterr().out


def test_a_moved_run_folder_is_one_line_error(tmp_path: Path) -> None:
    """Moved away from the folder its config.yml names, a run cannot be loaded by nerfstudio: say so before
    loading anything, and nothing is written."""
    import shutil

    from instance_nerfacto.core.runs import RunChoice, check_run_files
    from instance_nerfacto.merge.cli import MergeConfig, main

    config = trained_run_folder(tmp_path)
    assert check_run_files(config) == config.parent
    moved = Path(shutil.move(str(config.parent), str(tmp_path / "moved")))
    with pytest.raises(InputError, match="run folder was moved") as err:
        check_run_files(moved / "config.yml")
    assert "output_dir" in err.value.line() and "\n" not in err.value.line()
    with pytest.raises(InputError, match="run folder was moved"):
        main(MergeConfig(run=RunChoice(load_config=moved / "config.yml")))
    assert sorted(p.name for p in moved.iterdir()) == ["config.yml", "nerfstudio_models"]
