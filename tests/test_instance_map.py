"""instance-map (InstanceMap): quality on a rendered tiny room, invariants of the association, bad input, weights.

The tiny scene (conftest ``tiny_scene``) has SAM-like noisy per-frame masks whose ids are random per frame, so the raw
masks score a scene PQ of ~0; consistent pseudolabels must score far above that.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from data_preprocess import communities as comm
from data_preprocess import revisits
from data_preprocess import touching as touch
from data_preprocess.affinity import covisible_pairs, pair_support
from data_preprocess.instance_map import MapConfig, main
from data_preprocess.local_moving import move_nodes
from instance_nerfacto.core.files import read_label_png
from instance_nerfacto.eval.metrics import evaluate_dirs

CLI = [sys.executable, "-c", "from data_preprocess.instance_map import entrypoint; entrypoint()"]


def run_map(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=300)


def tree_digest(root: Path) -> str:
    """Hash of every file (path + bytes) under root, to prove inputs were not touched."""
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def mapped(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pseudolabels of the tiny scene from the CLI with default settings (depth matcher, pose pairs)."""
    out = tmp_path_factory.mktemp("map") / "pseudolabels"
    before = tree_digest(tiny_scene)
    proc = run_map("--data", str(tiny_scene), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "depth (dataset has depth maps)" in proc.stderr  # the summary says which matcher was chosen
    assert tree_digest(tiny_scene) == before
    return out


def test_pseudolabels_score_far_above_raw_masks(mapped: Path, tiny_scene: Path) -> None:
    meta = json.loads((mapped / "labels.json").read_text())
    stems = meta["frames"]
    assert len(stems) == 30 and all(s.startswith("frame_") for s in stems)  # train split only: val stays unseen
    assert not any(p.stem.startswith("val_") for p in mapped.glob("*.png"))
    things = tiny_scene / "instances.json"
    ours = evaluate_dirs(mapped, tiny_scene / "gt", things_json=things)
    raw = evaluate_dirs(tiny_scene / "masks", tiny_scene / "gt", things_json=things, stems=stems)
    assert raw["scene_pq"] < 0.1
    assert ours["scene_pq"] > 0.35, ours
    assert ours["matched_miou"] > 0.6, ours
    # labels.json: K labels 1..K in rasterization order (mean area decreasing), each seen in >= 2 frames
    labels = meta["labels"]
    assert meta["K"] == len(labels) > 0
    assert sorted(lab["id"] for lab in labels) == list(range(1, meta["K"] + 1))
    areas = [lab["mean_area"] for lab in labels]
    assert areas == sorted(areas, reverse=True)
    assert all(lab["frames"] >= 2 for lab in labels)
    seen = set()
    for stem in stems:
        img = read_label_png(mapped / f"{stem}.png")
        assert img.dtype == np.uint16 and img.shape == (120, 160)
        seen |= set(np.unique(img).tolist())
    assert seen - {0} == set(range(1, meta["K"] + 1))


def test_no_label_on_two_disjoint_masks_of_a_frame(mapped: Path, tiny_scene: Path) -> None:
    """Masks of one frame that share a label must be connected through touching masks (over-segmented parts)."""
    meta = json.loads((mapped / "labels.json").read_text())
    checked = 0
    for stem in meta["frames"]:
        masks = read_label_png(tiny_scene / "masks" / f"{stem}.png").astype(np.int64)
        pred = read_label_png(mapped / f"{stem}.png")
        ids = np.unique(masks[masks > 0])
        owner = np.searchsorted(ids, masks).astype(np.int16)
        owner[masks == 0] = -1
        touching = touch.touching_pairs(owner, 0)
        by_label = defaultdict(list)
        for k, mid in enumerate(ids):
            lab = np.unique(pred[masks == mid])
            assert len(lab) == 1  # every input mask gets exactly one label (or 0)
            if lab[0]:
                by_label[int(lab[0])].append(k)
        for members in by_label.values():
            if len(members) < 2:
                continue
            checked += 1
            reach, todo = {members[0]}, [members[0]]
            while todo:
                a = todo.pop()
                for b in members:
                    if b not in reach and (min(a, b), max(a, b)) in touching:
                        reach.add(b)
                        todo.append(b)
            assert reach == set(members), f"{stem}: one label on disjoint masks {members}"
    assert checked > 0  # some frame has a label on two or more masks: the check above ran


def test_duplicates_keep_two_labels(mapped: Path, tiny_scene: Path) -> None:
    """Identical objects (same name in instances.json) must not share their label."""
    names = json.loads((tiny_scene / "instances.json").read_text())
    meta = json.loads((mapped / "labels.json").read_text())
    overlap: dict = defaultdict(lambda: defaultdict(int))
    size: dict = defaultdict(int)
    for stem in meta["frames"]:
        gt = read_label_png(tiny_scene / "gt" / f"{stem}.png")
        pred = read_label_png(mapped / f"{stem}.png")
        pairs_gp, counts = np.unique(np.stack([gt.ravel(), pred.ravel()]), axis=1, return_counts=True)
        for g, p, c in zip(*pairs_gp, counts):
            overlap[int(g)][int(p)] += int(c)
            size[int(g)] += int(c)
    best = {}
    for g, row in overlap.items():
        p, c = max(((p, c) for p, c in row.items() if p), key=lambda pc: pc[1], default=(0, 0))
        if p and c >= 0.3 * size[g]:
            best[g] = p
    by_name = defaultdict(list)
    for g, entry in names.items():
        if entry["is_thing"] and int(g) in best:
            by_name[entry["name"]].append(int(g))
    pairs = [ids for ids in by_name.values() if len(ids) >= 2]
    assert pairs, "the tiny scene should contain at least one recovered duplicate pair"
    for ids in pairs:
        labels = [best[g] for g in ids]
        assert len(set(labels)) == len(labels), f"duplicates {ids} share labels {labels}"


def test_deterministic_and_cached(tiny_scene: Path, tmp_path: Path, mapped: Path) -> None:
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    cfg = dict(data=tiny_scene, quiet=True, seed=0)
    main(MapConfig(output=out_a, **cfg))
    assert sorted(p.name for p in (out_a / ".cache").glob("*.npz"))  # pairs + matches cached
    main(MapConfig(output=out_b, cache=False, **cfg))
    main(MapConfig(output=out_a, **cfg))  # rerun from the cache
    for p in sorted(out_a.glob("*.png")):
        assert p.read_bytes() == (out_b / p.name).read_bytes() == (mapped / p.name).read_bytes()


def test_depth_in_other_units_is_read_with_the_dataparsers_factor(tiny_scene: Path, tmp_path: Path,
                                                                   mapped: Path) -> None:
    """Depth maps stored in tenths of a millimetre, read with --depth-unit-scale-factor 1e-4 (as ns-train would be
    told), give the pseudolabels of the millimetre maps; read at the default 1e-3 (ten times too far) they do not,
    and the cached stages are not reused across the two factors."""
    from instance_nerfacto.core.files import read_depth, write_depth_png

    scene = _copy(tiny_scene, tmp_path)
    for png in (scene / "depth").glob("*.png"):
        write_depth_png(png, read_depth(png), scale=1e-4)
    out = tmp_path / "out"
    main(MapConfig(data=scene, output=out, quiet=True, depth_unit_scale_factor=1e-4))
    pngs = sorted(mapped.glob("*.png"))
    assert pngs and all(p.read_bytes() == (out / p.name).read_bytes() for p in pngs)
    main(MapConfig(data=scene, output=out, quiet=True))  # the same output folder and its cache, default factor
    assert any(p.read_bytes() != (out / p.name).read_bytes() for p in pngs)


def test_sift_matcher_runs_and_helps(tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "sift"
    result = main(MapConfig(data=tiny_scene, output=out, matcher="sift", quiet=True))
    assert result["matcher"] == "sift"
    m = evaluate_dirs(out, tiny_scene / "gt", things_json=tiny_scene / "instances.json")
    assert m["scene_pq"] > 0.2, m


def test_leiden_at_resolution_zero_gives_leidens_communities_as_connected_components() -> None:
    """At resolution 0 the communities come from connected components: the same partition Leiden (leidenalg) finds,
    numbered by decreasing size. A positive resolution still runs Leiden, which splits a component (control)."""
    import igraph as ig
    import leidenalg

    rng = np.random.default_rng(0)
    n = 400
    edges = rng.integers(0, n, size=(300, 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    weights = rng.uniform(0.3, 1.0, len(edges))
    graph = ig.Graph(n=n, edges=edges.tolist())
    graph.es["weight"] = weights.tolist()
    ref = np.asarray(leidenalg.find_partition(graph, leidenalg.CPMVertexPartition, weights="weight",
                                              resolution_parameter=0.0, seed=0, n_iterations=-1).membership)
    got = comm.leiden(n, edges, weights, 0.0, seed=0)
    assert len(np.unique(ref)) == len(np.unique(got)) == len(np.unique(np.stack([ref, got], 1), axis=0))
    sizes = np.bincount(got)
    assert sizes.max() > 10 and np.all(np.diff(sizes) <= 0)  # numbered by decreasing size
    chain = np.array([[k, k + 1] for k in range(9)])
    assert len(np.unique(comm.leiden(10, chain, np.full(9, 0.5), 0.0, 0))) == 1
    assert len(np.unique(comm.leiden(10, chain, np.full(9, 0.5), 0.3, 0))) > 1


def test_split_cannot_link_cuts_the_wrong_edge() -> None:
    """Two objects seen in frames 0..2 joined by one wrong edge end as two labels; touching pieces stay together."""
    # nodes: object A in frames 0,1,2 -> 0,1,2; object B -> 3,4,5; node 6 = a touching piece of A in frame 0
    frame_of = np.array([0, 1, 2, 0, 1, 2, 0])
    edges = np.array([[0, 1], [1, 2], [3, 4], [4, 5], [2, 3], [6, 1]])
    weights = np.array([0.9, 0.9, 0.9, 0.9, 0.4, 0.5])
    membership = np.zeros(7, dtype=np.int64)  # connected components put everything in one community
    touching = {(0, 6)}
    out = comm.split_cannot_link(membership, frame_of, edges, weights, touching)
    assert out[0] == out[1] == out[2] == out[6]
    assert out[3] == out[4] == out[5]
    assert out[0] != out[3]


def test_touching_masks_lose_the_exemption_where_other_views_show_two_objects() -> None:
    """A touching pair stays exempt from cannot-link when the other frames mostly see one mask where both land
    (an over-segmented object), and loses it when they mostly see two (two objects that touch)."""
    # frame: 0 -> nodes 0, 1 (pair A); 1 -> 2; 2 -> 3; 3 -> 4, 5; 4 -> 6, 7 (pair B); 5 -> 8, 9; 6 -> 10, 11;
    # 7 -> 12; 8 -> 13; 9 -> 14, 15 (pair C, no record)
    frame_of = np.array([0, 0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9, 9])
    rec = [  # (node_a, node_b, shared, total_a, total_b)
        (0, 2, 8, 10, 20), (1, 2, 9, 10, 20),  # frame 1 sees A whole
        (3, 0, 7, 20, 10), (3, 1, 8, 20, 10),  # frame 2 too (records the other way round)
        (0, 4, 9, 10, 10), (1, 5, 9, 10, 10), (0, 5, 1, 10, 10),  # frame 3 splits it the same way: once
        (6, 8, 9, 10, 10), (7, 9, 9, 10, 10),  # B: two masks in frames 5 and 6, one in frame 7
        (6, 10, 9, 10, 10), (7, 11, 8, 10, 10), (12, 6, 9, 15, 10), (12, 7, 6, 15, 10),
        (6, 13, 3, 10, 20), (7, 13, 3, 10, 20),  # 30% of each into one mask: not most, decides nothing
    ]
    a, b, shared, ta, tb = (np.array(c) for c in zip(*rec))
    touching = {(0, 1), (6, 7), (14, 15)}
    kept = touch.oversegmented_pairs(touching, frame_of, a, b, shared.astype(float), ta.astype(float),
                                    tb.astype(float))
    assert kept == {(0, 1), (14, 15)}
    for block in (1, 2, 3):  # pairs processed in blocks of at most this many entries (memory): the same answer
        assert touch.oversegmented_pairs(touching, frame_of, a, b, shared.astype(float), ta.astype(float),
                                         tb.astype(float), max_entries=block) == kept
    # negative control: without frame 7's one mask and with frame 8 at 60%, B is two masks twice, one mask once
    rec_b = [r for r in rec if 12 not in r[:2] and 13 not in r[:2]] + [(6, 13, 6, 10, 20), (7, 13, 6, 10, 20)]
    a, b, shared, ta, tb = (np.array(c, dtype=float) for c in zip(*rec_b))
    kept = touch.oversegmented_pairs(touching, frame_of, a.astype(int), b.astype(int), shared, ta, tb)
    assert kept == {(0, 1), (14, 15)}
    rec_c = rec_b + [(6, 14, 9, 10, 10), (7, 14, 9, 10, 10)]  # one more one-mask frame: a tie keeps the exemption
    a, b, shared, ta, tb = (np.array(c, dtype=float) for c in zip(*rec_c))
    kept = touch.oversegmented_pairs(touching, frame_of, a.astype(int), b.astype(int), shared, ta, tb)
    assert kept == {(0, 1), (6, 7), (14, 15)}


def test_split_refine_moves_a_mask_stranded_by_one_wrong_edge() -> None:
    """Kruskal takes the wrong strongest edge first and strands A's frame-3 mask with B (and B's frame-3 mask
    alone); moving each mask to the part holding most of its edge weight restores both objects."""
    # A: nodes 0..3 in frames 0..3; B: nodes 4..7 in frames 0..3; nothing touches
    frame_of = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    edges = np.array([[3, 6], [0, 1], [1, 2], [4, 5], [5, 6], [7, 6], [2, 3], [1, 3]])
    weights = np.array([0.95, 0.9, 0.9, 0.9, 0.9, 0.8, 0.5, 0.5])
    membership = np.zeros(8, dtype=np.int64)
    greedy = comm.split_cannot_link(membership, frame_of, edges, weights, set())
    assert greedy[3] == greedy[6] and greedy[7] not in (greedy[0], greedy[4])  # the failure being fixed
    out = comm.split_cannot_link(membership, frame_of, edges, weights, set(), refine=True)
    assert len(set(out[:4].tolist())) == 1 and len(set(out[4:].tolist())) == 1 and out[0] != out[4]


def test_local_moving_sees_each_move_within_the_sweep_and_keeps_the_cannot_link_rule() -> None:
    """One sweep, masks in id order. Mask 1 leaves part 10 for part 20 (pulled by 10 against 1); mask 2 holds to part
    10 at the start of the sweep (3 against 2) but, once mask 1 has moved, part 20 pulls it with 5: it follows in the
    same sweep, as in a plain loop over the masks. Mask 5 is pulled to part 20 too, where mask 6 of its frame is: it
    moves only when the two touch."""
    # frames: masks 0-4 one each; 5 and 6 share frame 9
    frame_of = np.array([0, 1, 2, 3, 4, 9, 9])
    edges = np.array([[0, 1], [1, 4], [2, 1], [2, 3], [5, 4], [5, 0]])
    weights = np.array([1.0, 10.0, 3.0, 2.0, 4.0, 1.0])
    start = {0: 10, 1: 10, 2: 10, 3: 20, 4: 20, 5: 10, 6: 20}
    part = dict(start)
    move_nodes(part, edges, weights, frame_of, set(), sweeps=1)
    assert part == {**start, 1: 20, 2: 20}
    part = dict(start)
    move_nodes(part, edges, weights, frame_of, {(5, 6)}, sweeps=1)
    assert part == {**start, 1: 20, 2: 20, 5: 20}


def test_merge_fragments_tolerates_a_few_conflicting_frames() -> None:
    """Two halves of one object (frames 0-19 and 20-49) overlapping at their border are joined although a stray
    mask of the first sits beside the second's in frame 30: with a 5% tolerance the stray mask is unlabelled."""
    n_frames = 50
    # X: nodes 0..19 in frames 0..19 and stray node 20 in frame 30; Y: nodes 21..50 in frames 20..49
    frame_of = np.r_[np.arange(20), 30, np.arange(20, 50)]
    membership = np.r_[np.zeros(21, dtype=np.int64), np.ones(30, dtype=np.int64)]
    pairs = np.array([(i, j) for i in range(n_frames) for j in range(i + 1, min(i + 3, n_frames))])
    na = np.r_[np.arange(19), np.arange(21, 50), [18, 19, 19]]
    nb = np.r_[np.arange(1, 20), np.arange(22, 51), [21, 21, 22]]
    score = np.r_[np.full(19 + 29, 0.9), [0.8, 0.8, 0.8]]

    def merged(tol: float) -> np.ndarray:
        return comm.merge_fragments(membership, frame_of, na, nb, score, pairs, set(), 0.2, 0.3, max_conflicts=tol)

    out = merged(0.05)  # 1 conflicting frame of X's 21
    assert out[20] == -1 and len(set(np.delete(out, 20).tolist())) == 1
    for tol in (0.0, 0.04):  # negative controls: no tolerance, or less than one frame in 21
        np.testing.assert_array_equal(merged(tol), membership)


def test_merge_fragments_keeps_apart_communities_seen_side_by_side() -> None:
    """Two objects that touch in every frame (X and Y, one mask each in frames 0-19) with correspondences between
    them in every matched pair: the affinity passes and the cannot-link rule exempts touching masks, but they share
    all their frames, which fragments of one object along a capture do not: kept apart. Negative control: allowing
    shared frames (``max_shared=1``) fuses them; halves that share no frame are joined under the default."""
    n_frames = 20
    frame_of = np.r_[np.arange(n_frames), np.arange(n_frames)]
    membership = np.r_[np.zeros(n_frames, dtype=np.int64), np.ones(n_frames, dtype=np.int64)]
    touching = {(i, i + n_frames) for i in range(n_frames)}
    pairs = np.array([(i, i + 1) for i in range(n_frames - 1)])
    na, nb = np.arange(n_frames - 1), np.arange(n_frames + 1, 2 * n_frames)  # X in frame i <-> Y in frame i + 1
    score = np.full(len(na), 0.9)

    def merged(**kw) -> np.ndarray:
        return comm.merge_fragments(membership, frame_of, na, nb, score, pairs, touching, 0.2, 0.3, **kw)

    np.testing.assert_array_equal(merged(), membership)
    assert len(set(merged(max_shared=1.0).tolist())) == 1
    # the same correspondences between halves seen in frames 0-19 and 20-39: one object, joined
    halves = comm.merge_fragments(membership, np.arange(2 * n_frames), na, nb, score,
                                  np.array([(i, i + n_frames + 1) for i in range(n_frames - 1)]), set(), 0.2, 0.3)
    assert len(set(halves.tolist())) == 1


def test_covisible_pairs_counts_each_pair_once() -> None:
    """The sparse co-visibility count equals the definition: distinct pairs (i, j) with x in i and y in j or the other
    way round (a pair holding both ways, or listed twice, counts once)."""
    rng = np.random.default_rng(3)
    n_frames, n_comm = 40, 12
    frame = rng.integers(0, n_frames, 300)
    community = rng.integers(0, n_comm, 300)
    pairs = rng.integers(0, n_frames, (200, 2))
    pairs = np.concatenate([pairs, pairs[:20]])  # duplicates must not count twice
    cand = np.array([(x, y) for x in range(n_comm) for y in range(x + 1, n_comm)])
    frames_of = {c: set(frame[community == c].tolist()) for c in range(n_comm)}
    pair_set = {(int(i), int(j)) for i, j in pairs.tolist()}
    want = [sum(1 for i, j in pair_set if (i in frames_of[x] and j in frames_of[y]) or
                (i in frames_of[y] and j in frames_of[x])) for x, y in cand.tolist()]
    got = covisible_pairs(community, frame, pairs, cand, n_frames)
    assert got.tolist() == want and max(want) > 0
    # hand-made: x in frames 0 and 1, y in frames 0 and 1; pairs (0, 1) and (1, 2): one pair, held both ways
    one = covisible_pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([[0, 1], [1, 2]]),
                          np.array([[0, 1]]), 3)
    assert one.tolist() == [1]


def test_filter_communities_drops_rare_labels() -> None:
    frame_of = np.array([0, 1, 2, 0, 0])
    membership = np.array([0, 0, 0, 1, 2])
    out = comm.filter_communities(membership, frame_of, min_size=2, min_frames=2)
    assert out.tolist() == [0, 0, 0, -1, -1]


# ------------------------------------------------------------------------------------------------- bad input


def _copy(tiny_scene: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_scene, tmp_path / "scene"))


def _edit_transforms(root: Path, fn) -> None:
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _remove(p: Path) -> None:
    p.unlink()


def _two_frames_back_to_back(meta: dict) -> None:
    meta["frames"] = meta["frames"][:2]
    meta["train_filenames"] = [f["file_path"] for f in meta["frames"]]
    meta["val_filenames"] = []
    m = np.array(meta["frames"][0]["transform_matrix"])
    flip = m.copy()
    flip[:3, :3] = m[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # same place, looking the opposite way
    meta["frames"][1]["transform_matrix"] = flip.tolist()


BAD_INPUTS = {
    "missing mask": (lambda r: _remove(r / "masks" / "frame_00003.png"), "has no mask file"),
    "extra mask": (lambda r: shutil.copy(r / "masks" / "frame_00000.png", r / "masks" / "stray.png"),
                   "match no frame"),
    "size mismatch": (lambda r: __import__("cv2").imwrite(str(r / "masks" / "frame_00001.png"),
                                                         np.ones((60, 60), np.uint16)), "but image"),
    "corrupt png": (lambda r: (r / "masks" / "frame_00002.png").write_bytes(b"\x89PNG garbage"), "cannot decode"),
    "empty frame": (lambda r: __import__("cv2").imwrite(str(r / "masks" / "frame_00004.png"),
                                                       np.zeros((120, 160), np.uint16)), "has no masks"),
    "single frame": (lambda r: _edit_transforms(r, lambda m: m.update(
        frames=m["frames"][:1], train_filenames=[m["frames"][0]["file_path"]], val_filenames=[])), "only 1 frame"),
    "no overlap": (lambda r: _edit_transforms(r, _two_frames_back_to_back), "overlap"),
    "nan pose": (lambda r: _edit_transforms(r, lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(
        0, float("nan"))), "NaN"),
    "no transforms": (lambda r: _remove(r / "transforms.json"), "missing transforms.json"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_and_untouched(case: str, tiny_scene: Path, tmp_path: Path) -> None:
    root = _copy(tiny_scene, tmp_path)
    break_it, expected = BAD_INPUTS[case]
    break_it(root)
    if case in ("no overlap", "single frame"):  # the other frames' mask files would be reported as extra
        for p in (root / "masks").glob("*.png"):
            if p.stem not in ("frame_00000", "frame_00001")[: 1 if case == "single frame" else 2]:
                p.unlink()
    before = tree_digest(root)
    proc = run_map("--data", str(root), "--output", str(tmp_path / "out"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and expected in lines[0], proc.stderr
    assert tree_digest(root) == before
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_missing_weights_are_one_line_errors(tiny_scene: Path, tmp_path: Path) -> None:
    for args, expected in ((["--matcher", "loftr", "--weights", str(tmp_path / "nope.ckpt")], "LoFTR weights"),
                           (["--pairs", "netvlad", "--netvlad-weights", str(tmp_path / "nope.pth")], "NetVLAD")):
        proc = run_map("--data", str(tiny_scene), "--output", str(tmp_path / "out"), *args)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------ learned components


def test_loftr_and_netvlad_with_random_local_weights(tiny_scene: Path, tmp_path: Path) -> None:
    """Real loading code paths with random weights saved to a temp file: right shapes, no crash, no network."""
    import torch
    from kornia.feature import LoFTR

    from data_preprocess.matching import LoFTRMatcher
    from data_preprocess.netvlad import _build, netvlad_descriptors
    from data_preprocess.pairs import similarity_pairs

    torch.manual_seed(0)
    nv_path = tmp_path / "netvlad.pth"
    torch.save(_build().state_dict(), nv_path)
    images = sorted((tiny_scene / "images").glob("frame_*.png"))[:3]
    desc = netvlad_descriptors(images, nv_path, size=64)
    assert desc.shape == (3, 64 * 512) and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    assert similarity_pairs(desc, -1.0, 2).shape[1] == 2

    loftr_path = tmp_path / "loftr.pth"
    torch.save(LoFTR(pretrained=None).state_dict(), loftr_path)
    cfg = MapConfig(data=tiny_scene)
    from data_preprocess.frames import cached_view
    from data_preprocess.instance_map import load_frames

    _, _, specs = load_frames(cfg, tiny_scene / "masks")
    corr = LoFTRMatcher(loftr_path, size=160)(cached_view(specs[0]), cached_view(specs[1]))
    for a in (corr.fwd_src, corr.fwd_dst, corr.bwd_src, corr.bwd_dst):
        assert a.ndim == 1 and a.dtype == np.int64 and (a.size == 0 or (a.min() >= 0 and a.max() < 160 * 120))
    assert len(corr.fwd_src) == len(corr.fwd_dst)


def test_depth_reprojections_batched_by_frame_equal_the_pair_by_pair_ones(tiny_scene: Path) -> None:
    """The matching stage reprojects all of a task's pairs into each frame at once: every pair gets exactly the
    correspondences of its own depth (and stereo) reprojection, in both directions, whatever the order of the pairs.
    Negative control: the pair read the other way round has other correspondences."""
    from data_preprocess.frames import cached_view
    from data_preprocess.instance_map import load_frames
    from data_preprocess.matching import depth_correspondences, depth_correspondences_many, stereo_correspondences

    _, _, specs = load_frames(MapConfig(data=tiny_scene), tiny_scene / "masks")
    views = {k: cached_view(s) for k, s in enumerate(specs)}
    pairs = [(i, j) for i in range(len(specs)) for j in range(i + 1, min(len(specs), i + 6))]
    keys = ("fwd_src", "fwd_dst", "bwd_src", "bwd_dst")
    for name, one in (("depth", depth_correspondences), ("stereo", stereo_correspondences)):
        order = np.random.default_rng(0).permutation(len(pairs))
        batched = depth_correspondences_many(views, [pairs[k] for k in order], name)
        for k, got in zip(order, batched):
            want = one(views[pairs[k][0]], views[pairs[k][1]])
            assert len(want.fwd_src) > 100 and all(np.array_equal(getattr(got, a), getattr(want, a)) for a in keys)
    i, j = pairs[0]
    forward, backward = depth_correspondences_many(views, [(i, j), (j, i)])
    assert not np.array_equal(forward.fwd_src, backward.fwd_src)
    assert np.array_equal(forward.fwd_src, backward.bwd_src) and np.array_equal(forward.bwd_dst, backward.fwd_dst)


def test_pose_pairs_keep_a_bounded_number_of_partners_and_the_same_selection() -> None:
    """Sparse pose overlaps equal the dense definition; keeping each frame's best few directed overlaps bounds the
    entries per frame and, on a sweep where each frame overlaps ~20 others, still selects the same pairs."""
    from data_preprocess.pairs import View, overlap_matrix, overlap_rows, select_pairs, select_sparse_pairs

    n, h, w, f = 24, 48, 64, 50.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(0.0, 6.0, n)  # a sideways sweep along one wall: each frame overlaps ~20 others
    c2w[:, 1, 3] = 0.05 * np.sin(np.arange(n))  # uneven spacing: no ties between neighbours
    depth = np.full((h, w), 3.0)
    views = [View(f"f{k}", K, c2w[k], np.zeros((h, w), np.int16), Path("unused"), depth) for k in range(n)]
    dense = overlap_matrix(views)
    args = (np.arange(n), np.tile(K, (n, 1, 1)), c2w, np.tile([h, w], (n, 1)),
            np.tile(np.round(depth * 1000).astype(np.uint16), (n, 1, 1)), None, 0.3)
    i, j, s = overlap_rows(*args)
    assert np.allclose(dense[i, j], s) and len(i) == int((dense >= 0.3).sum())  # every entry, exactly
    i5, j5, s5 = overlap_rows(*args, max_partners=5)
    assert np.bincount(i5, minlength=n).max() == 5 < np.bincount(i, minlength=n).min()
    for row in range(n):  # each row keeps its five best entries
        assert sorted(s5[i5 == row].tolist()) == sorted(np.sort(s[i == row])[-5:].tolist())
    full = select_sparse_pairs(i, j, s, n, 0.3, top_k=2)
    assert np.array_equal(full, select_pairs(dense, 0.3, top_k=2))
    assert np.array_equal(select_sparse_pairs(i5, j5, s5, n, 0.3, top_k=2), full)


def test_pose_pairs_of_a_long_capture_rank_candidates_on_a_subsample(monkeypatch) -> None:
    """A frame with more than COARSE_ABOVE x max_partners candidates ranks them on every 16th sample and scores only
    the best max_partners on all samples: kept entries carry the exact score, each row keeps its true best ones
    on a sweep, and the pair selection is the dense one."""
    from data_preprocess import pairs

    n, h, w, f = 40, 96, 128, 100.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(0.0, 12.0, n)  # each frame overlaps ~24 others, far more than 4 x 2 partners
    c2w[:, 1, 3] = 0.03 * np.sin(np.arange(n))
    depth = np.full((h, w), 3.0)
    views = [pairs.View(f"f{k}", K, c2w[k], np.zeros((h, w), np.int16), Path("unused"), depth) for k in range(n)]
    dense = pairs.overlap_matrix(views)
    calls = []
    exact_counts = pairs.visible_counts

    def counting(world, js, **kw):
        calls.append((len(world), len(js)))
        return exact_counts(world, js, **kw)

    monkeypatch.setattr(pairs, "visible_counts", counting)
    args = (np.arange(n), np.tile(K, (n, 1, 1)), c2w, np.tile([h, w], (n, 1)),
            np.tile(np.round(depth * 1000).astype(np.uint16), (n, 1, 1)), None, 0.3)
    i, j, s = pairs.overlap_rows(*args, max_partners=2)
    samples = (h // 8) * (w // 8)
    coarse = [c for c in calls if c[0] == (h // 8 // pairs.COARSE_STEP) * (w // 8 // pairs.COARSE_STEP)]
    assert len(coarse) >= n // 2 and all(c[1] > pairs.COARSE_ABOVE * 2 for c in coarse)
    assert all(c[1] <= 2 for c in calls if c[0] == samples)  # all samples only for the ranking's best 2
    assert np.allclose(dense[i, j], s) and np.bincount(i, minlength=n).max() == 2
    for row in range(n):
        assert sorted(s[i == row].tolist()) == pytest.approx(sorted(np.sort(dense[row])[-2:].tolist()))
    assert np.array_equal(pairs.select_sparse_pairs(i, j, s, n, 0.3, top_k=1), pairs.select_pairs(dense, 0.3, 1))


def test_pose_pairs_of_a_long_capture_look_only_among_frames_near_in_pose(monkeypatch) -> None:
    """A sweep along a wall walked there and back (each place seen twice, far apart in the capture): with a pose index
    each frame bounds and ranks only its NEAREST_PER_PARTNER x max_partners nearest frames, and the pairs are those of
    all frames, revisits included. Negative control: an index whose features belong to other frames loses pairs."""
    from data_preprocess import pairs

    n, h, w, f = 60, 48, 64, 50.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.r_[np.linspace(0.0, 12.0, n // 2), np.linspace(12.0, 0.0, n // 2) + 0.07]  # there and back
    c2w[:, 1, 3] = 0.05 * np.sin(np.arange(n))
    depth = np.full((h, w), 3.0)
    views = [pairs.View(f"f{k}", K, c2w[k], np.zeros((h, w), np.int16), Path("unused"), depth) for k in range(n)]
    expected = pairs.select_pairs(pairs.overlap_matrix(views), 0.3, 1)
    assert any(b - a > n // 2 for a, b in expected.tolist())  # revisits are among the pairs
    depth_mm = np.tile(np.round(depth * 1000).astype(np.uint16), (n, 1, 1))
    args = (np.arange(n), np.tile(K, (n, 1, 1)), c2w, np.tile([h, w], (n, 1)), depth_mm, None, 0.3)
    calls = []
    exact_counts = pairs.visible_counts
    monkeypatch.setattr(pairs, "visible_counts", lambda world, js, **kw: calls.append(len(js)) or exact_counts(
        world, js, **kw))
    monkeypatch.setattr(pairs, "NEAREST_PER_PARTNER", 8)  # 16 of the 60 frames at max_partners 2
    near = pairs.PoseIndex.build(c2w, pairs.median_depths(depth_mm, None))
    assert np.allclose(near.features[:, 3:] - near.features[:, :3], [0, 0, 3.0])  # the axis reaches the wall
    i, j, s = pairs.overlap_rows(*args, max_partners=2, near=near)
    assert calls and max(calls) <= 16
    assert np.array_equal(pairs.select_sparse_pairs(i, j, s, n, 0.3, top_k=1), expected)
    wrong = pairs.PoseIndex.build(c2w[np.random.default_rng(0).permutation(n)], pairs.median_depths(depth_mm, None))
    i, j, s = pairs.overlap_rows(*args, max_partners=2, near=wrong)
    assert not np.array_equal(pairs.select_sparse_pairs(i, j, s, n, 0.3, top_k=1), expected)


def test_revisit_points_are_thinned_as_a_stream_whatever_the_chunking() -> None:
    """merge_revisits keeps at most max_points of a community's points, fed frame by frame: every 2^j-th point of the
    stream, the same points however the stream is cut, all of them while under the limit."""
    rows = np.arange(30, dtype=np.float64).reshape(10, 3)
    for cuts in ([10], [3, 3, 4], [1] * 10, [5, 0, 5]):
        thin = revisits.ThinnedPoints(4)
        start = 0
        for n in cuts:
            thin.add(rows[start:start + n])
            start += n
        # 10 points, limit 4: step 1 -> 2 at the 5th point (0 2 4) -> 4 at the 9th (0 4 8)
        assert thin.points()[:, 0].tolist() == [0.0, 12.0, 24.0] and thin.step == 4
    under = revisits.ThinnedPoints(10)
    under.add(rows[:6])
    under.add(rows[6:])
    assert np.array_equal(under.points(), rows) and under.step == 1


def _look_at(eye, target) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) at eye looking at target, world y up."""
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def test_revisit_merge_joins_the_two_sides_of_an_object_from_communities_of_enough_masks() -> None:
    """A 0.4 m cube seen from its front (frames 0-2) and its back (frames 3-5, 6-7) as three communities that share
    no frame, a second cube beside it in the front frames: the front and back communities of the first cube are
    joined (each one's surface points fall inside the other's silhouettes), the second cube is not, and the 2-mask
    back community takes part only when min_masks allows it."""
    import cv2

    from data_preprocess.pairs import View

    h, w, f = 120, 160, 120.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    centres = [np.zeros(3), np.array([0.9, 0.0, 0.0])]
    eyes = [(-0.3, 1.2, 3.0), (0.0, 1.2, 3.0), (0.3, 1.2, 3.0), (-0.3, 1.2, -3.0), (0.0, 1.2, -3.0),
            (0.3, 1.2, -3.0), (-0.5, 1.0, -2.8), (0.5, 1.0, -2.8)]
    objects_in = [[0, 1]] * 3 + [[0]] * 5
    corners = np.array([[x, y, z] for x in (-0.2, 0.2) for y in (-0.2, 0.2) for z in (-0.2, 0.2)])
    grid = np.linspace(-0.2, 0.2, 6)
    views, points = [], []
    for eye, objs in zip(eyes, objects_in):
        c2w = _look_at(np.array(eye), [0.45, 0.0, 0.0] if len(objs) == 2 else [0.0, 0.0, 0.0])
        w2c = np.linalg.inv(c2w)
        owner = np.full((h, w), -1, np.int16)
        frame_points = []
        for m, o in enumerate(objs):
            cam = (corners + centres[o]) @ w2c[:3, :3].T + w2c[:3, 3]
            uv = (cam[:, :2] / cam[:, 2:]) * f + [w / 2, h / 2]
            cv2.fillConvexPoly(owner, cv2.convexHull(np.round(uv).astype(np.int32)), m)
            faces = []  # sampled points of the faces the camera sees
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    normal = np.zeros(3)
                    normal[axis] = sign
                    if normal @ (np.array(eye) - centres[o]) > 0.2:
                        a, b = np.meshgrid(grid, grid)
                        face = np.insert(np.stack([a.ravel(), b.ravel()], 1), axis, 0.2 * sign, axis=1)
                        faces.append(face + centres[o])
            frame_points.append(np.concatenate(faces))
        views.append(View(f"f{len(views)}", K, c2w, owner, Path("unused")))
        points.append(frame_points)
    offsets = np.cumsum([0] + [len(p) for p in points])
    frame_of = np.repeat(np.arange(len(views)), [len(p) for p in points])
    # nodes: frames 0-2 hold (cube 0 front, cube 1 front), frames 3-5 cube 0 back, frames 6-7 cube 0 back again
    membership = np.array([0, 1, 0, 1, 0, 1, 2, 2, 2, 3, 3])
    assert len(membership) == offsets[-1]

    def mask_points(frames):
        for fr in frames:
            yield points[fr]

    joined = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views[fr], 0.5)
    assert joined[0] == joined[6] != joined[1]  # the cube's two sides joined; the other cube kept apart
    assert joined[9] == joined[10] == 3  # two masks: below min_masks=3, left alone
    every = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views[fr], 0.5,
                                    min_masks=2)
    assert every[0] == every[6] == every[9] != every[1]
    strict = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views[fr], 1.01)
    assert np.array_equal(strict, membership)  # an agreement no pair can reach joins nothing


def test_revisit_votes_leave_out_points_hidden_behind_another_surface() -> None:
    """Points of one community projected into a frame of community 5: those on 5's masks are inside wherever they lie
    (its far side included); a point on another mask counts against 5 unless it lies behind the surface there (more
    than 5% + 2 cm deeper: hidden, that view cannot tell); an unknown depth (0) hides nothing."""
    labels = np.array([5, 5, 3, 3, -1, 3])
    surface = np.array([1.0, 1.0, 1.0, 2.0, 0.0, 1.0])
    z = np.array([1.5, 1.0, 1.0, 1.5, 3.0, 2.0])  # 5's far side, 5, at 3's surface, in front of 3, unknown, hidden
    assert revisits.silhouette_votes(labels, surface, z, 5, 0.05) == (2, 5)
    # negative controls: without a tolerance or a depth map every point counts, as before
    assert revisits.silhouette_votes(labels, surface, z, 5, None) == (2, 6)
    assert revisits.silhouette_votes(labels, None, z, 5, 0.05) == (2, 6)
    # seen from 3: the point behind 5's surface is hidden, the one at it and the unknown one count against 3
    assert revisits.silhouette_votes(labels, surface, z, 3, 0.05) == (3, 5)


def test_revisit_merge_with_depth_maps_sees_past_an_occluder() -> None:
    """A 0.4 m cube seen from its front (frames 0-2, community 0) and from its back (frames 3-5, community 1) where a
    wide board in front of it (community 2) hides its lower part: without the depth maps most of the front's points
    land on the board in the back frames and the two sides stay apart; with them (occlusion_tol) those points are
    hidden, the cube's sides are joined, and the board, whose points mostly miss the cube, stays apart."""
    import cv2

    from data_preprocess.pairs import View

    h, w, f = 120, 160, 120.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    grid = np.linspace(-0.2, 0.2, 9)
    cube = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            a, b = np.meshgrid(grid, grid)
            cube.append(np.insert(np.stack([a.ravel(), b.ravel()], 1), axis, 0.2 * sign, axis=1))
    cube = np.concatenate(cube)
    bx, by = np.meshgrid(np.linspace(-0.7, 0.7, 29), np.linspace(-0.35, 0.08, 9))
    board = np.stack([bx.ravel(), by.ravel(), np.full(bx.size, -1.2)], 1)  # between the back cameras and the cube
    eyes = [(-0.3, 0.2, 3.0), (0.0, 0.2, 3.0), (0.3, 0.2, 3.0), (-0.3, 0.2, -3.0), (0.0, 0.2, -3.0), (0.3, 0.2, -3.0)]
    views, points, views_no_depth = [], [], []
    for k, eye in enumerate(eyes):
        c2w = _look_at(np.array(eye), [0.0, 0.0, 0.0])
        w2c = np.linalg.inv(c2w)
        objects = [cube] if k < 3 else [cube, board]
        owner = np.full((h, w), -1, np.int16)
        depth = np.full((h, w), np.inf)
        for m, obj in enumerate(objects):  # later objects are drawn on top: the board is in front
            cam = obj @ w2c[:3, :3].T + w2c[:3, 3]
            uv = np.round((cam[:, :2] / cam[:, 2:]) * f + [w / 2, h / 2]).astype(np.int32)
            cv2.fillConvexPoly(owner, cv2.convexHull(uv), m)
            filled = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(filled, cv2.convexHull(uv), 1)
            depth[filled > 0] = np.minimum(depth[filled > 0], cam[:, 2].min()) if m == 0 else cam[:, 2].mean()
        depth[~np.isfinite(depth)] = 0.0
        views.append(View(f"f{k}", K, c2w, owner, Path("unused"), depth))
        views_no_depth.append(View(f"f{k}", K, c2w, owner, Path("unused")))
        points.append([(cube - eye)[np.linalg.norm(cube - eye, axis=1) < 3.05] + eye] + ([board] if k >= 3 else []))
    offsets = np.cumsum([0] + [len(p) for p in points])
    frame_of = np.repeat(np.arange(len(views)), [len(p) for p in points])
    membership = np.array([0, 0, 0, 1, 2, 1, 2, 1, 2])

    def mask_points(frames):
        for fr in frames:
            yield points[fr]

    blind = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views_no_depth[fr], 0.5)
    assert np.array_equal(blind, membership)  # negative control: occlusion ignored, the sides stay apart
    ignored = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views[fr], 0.5)
    assert np.array_equal(ignored, membership)  # depth maps present but no tolerance given: as before
    seen = revisits.merge_revisits(membership, frame_of, offsets, mask_points, lambda fr: views[fr], 0.5,
                                   occlusion_tol=0.05)
    assert seen[0] == seen[3] != seen[4]


def test_absorb_fragments_votes_by_correspondences_into_the_frames_of_the_larger_community() -> None:
    """Hand-made votes: fragment x (1 mask, frame 3) sends 17 of its 20 correspondences into the frames of community A
    (3 masks) into A's masks (0.85) and 2 of 20 into B's (0.1): x joins A. An unlabelled mask u sends 4 of 10 into
    B's (0.4) and 1 of 10 into A's: u joins B. Mask v sends 9 of 10 into A's, but A already has a mask in v's frame
    that does not touch it: v stays alone, unless the two touch (an over-segmented object)."""
    #                     A  A  A  x   u  B  B   v
    membership = np.array([0, 0, 0, 1, -1, 2, 2, -1])
    frame_of = np.array([0, 1, 2, 3, 3, 0, 1, 0])
    # records (node_a, node_b, shared, total_a, total_b): totals are per (mask, other frame)
    rec = np.array([[3, 0, 8, 10, 20], [3, 5, 2, 10, 20], [3, 1, 9, 10, 20],
                    [4, 5, 4, 10, 20], [4, 0, 1, 10, 20], [7, 1, 9, 10, 20]], dtype=float)
    args = (rec[:, 0].astype(np.int64), rec[:, 1].astype(np.int64), rec[:, 2], rec[:, 3], rec[:, 4])

    def partition(out):
        return sorted(sorted(np.flatnonzero(out == c).tolist()) for c in np.unique(out))

    out = comm.absorb_fragments(membership, frame_of, *args, set(), 0.3)
    assert partition(out) == [[0, 1, 2, 3], [4, 5, 6], [7]]
    assert out[0] == 0 and out[5] == 2  # the larger communities keep their ids
    assert partition(comm.absorb_fragments(membership, frame_of, *args, {(0, 7)}, 0.3)) == [[0, 1, 2, 3, 7], [4, 5, 6]]
    assert partition(comm.absorb_fragments(membership, frame_of, *args, set(), 0.5))[1] == [4]  # u's 0.4 < 0.5


def test_absorb_needs_evidence_in_the_frames_of_the_larger_community() -> None:
    """x votes 17 of 20 correspondences into A's masks in A's frames (0.85), but those 20 are a sixth of its 120: the
    other 100 go to frame 4, where A is not seen (an object of another stretch of the capture meeting A in a few frame
    pairs). x joins A when the cover test asks for at most that sixth, not when it asks for half."""
    #                     A  A  A  x  w (unlabelled, frame 4)
    membership = np.array([0, 0, 0, 1, -1])
    frame_of = np.array([0, 1, 2, 3, 4])
    rec = np.array([[3, 0, 8, 10, 20], [3, 1, 9, 10, 20], [3, 4, 80, 100, 100]], dtype=float)
    args = (rec[:, 0].astype(np.int64), rec[:, 1].astype(np.int64), rec[:, 2], rec[:, 3], rec[:, 4])
    joined = [0, 0, 0, 0, -1]
    assert comm.absorb_fragments(membership, frame_of, *args, set(), 0.3).tolist()[:4] == joined[:4]
    assert comm.absorb_fragments(membership, frame_of, *args, set(), 0.3, 0.16).tolist()[:4] == joined[:4]
    kept = comm.absorb_fragments(membership, frame_of, *args, set(), 0.3, 0.5)
    assert kept[:4].tolist() == [0, 0, 0, 1] and kept[4] not in (0, 1)
    assert comm.absorb_fragments(membership, frame_of, *args, set(), 0.3, 0.17)[3] == 1  # 20 / 120 < 0.17


def test_split_gate_refuses_a_bridge_that_few_of_the_matched_frame_pairs_support() -> None:
    """A (frames 0-4) and B (frames 10-14) are joined by one wrong correspondence (frames 4 and 10); all 25 frame
    pairs between the two stretches were matched, and 24 hold no correspondence between them. D, a third mask in
    frame 0, links to B, so the community holds two masks of frame 0 and is split. Without the gate the wrong edge
    fuses A and B (D alone); with it A and B stay apart (and D, one correspondence in 5 frame pairs, alone). Each
    object's own track passes (its parts agree in every matched pair). Negative control: when only the bridging frame
    pair was matched, the evidence agrees and the gate lets the union through."""
    from data_preprocess.affinity import AffinityGate

    frame_of = np.array([0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 0])  # A: 0-4, B: 5-9, D: 10
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [7, 8], [8, 9], [4, 5], [10, 5]])
    weights = np.array([0.9] * 8 + [0.85, 0.5])
    membership = np.zeros(11, dtype=np.int64)
    na, nb, score = edges[:, 0], edges[:, 1], weights.copy()
    chain = [(i, i + 1) for i in range(4)] + [(i, i + 1) for i in range(10, 14)] + [(0, 10)]
    cross = [(i, j) for i in range(5) for j in range(10, 15)]

    def split(pairs, gated=True):
        gate = AffinityGate(frame_of, na, nb, score, np.array(pairs), 0.2, 0.3) if gated else None
        out = comm.split_cannot_link(membership, frame_of, edges, weights, set(), gate=gate)
        return sorted(sorted(np.flatnonzero(out == c).tolist()) for c in np.unique(out))

    assert split(chain + cross, gated=False) == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10]]
    assert split(chain + cross) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10]]
    assert split(chain + [(4, 10)]) == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [10]]


def test_pair_support_counts_distinct_frame_pairs_per_community_pair() -> None:
    """Communities (1, 3) meet in frames (0, 2) through two records, either way round, and in frames (1, 2): two
    distinct frame pairs; (0, 2) in one. The row path, taken when packed keys could overflow int64, agrees."""
    ca, cb = np.array([3, 1, 1, 0]), np.array([1, 3, 3, 2])
    fa, fb = np.array([0, 2, 1, 4]), np.array([2, 0, 2, 5])
    cand, support = pair_support(ca, cb, fa, fb, 6)
    assert cand.tolist() == [[0, 2], [1, 3]] and support.tolist() == [1, 2]
    cand_rows, support_rows = pair_support(ca, cb, fa, fb, 1 << 30)  # 4 * 4 * 2**60 >= 2**62: rows
    assert cand_rows.tolist() == cand.tolist() and support_rows.tolist() == support.tolist()
