"""The mask-overlap records held compact, and the split gate's affinity counted exactly."""

from __future__ import annotations

import numpy as np
import pytest

from data_preprocess.affinity import AffinityGate
from data_preprocess.graph import OverlapRecords, mutual_best_edges


def test_records_are_held_compact_and_exact() -> None:
    """int32 ids and float32 counts (half-integers) hold the values exactly; the score is computed in float64 and
    equals the float64 formula bit for bit."""
    shared = np.array([0.5, 3.0, 1234.5, 7.0])
    total_a, total_b = np.array([1.0, 10.0, 4000.0, 7.0]), np.array([2.0, 9.0, 3999.0, 0.0])
    rec = OverlapRecords(np.array([0, 5, 300_000, 7]), np.array([1, 6, 300_001, 8]), shared, total_a, total_b)
    assert rec.node_a.dtype == np.int32 and rec.shared.dtype == np.float32 and rec.total_b.dtype == np.float32
    assert rec.node_a.tolist() == [0, 5, 300_000, 7] and rec.shared.tolist() == shared.tolist()
    assert rec.score.dtype == np.float64
    assert rec.score.tolist() == (shared / np.maximum(total_a + total_b - shared, 1e-9)).tolist()
    with pytest.raises(ValueError, match="int32"):
        OverlapRecords(np.array([2**31]), np.array([0]), np.ones(1), np.ones(1), np.ones(1))


def test_mutual_best_edges_widen_ids_before_keying_them_by_frame() -> None:
    """Key = node * (frames) + other frame. With 65,536 frames, nodes 0 and 65,536 give the same key modulo 2^32: in
    int32 the two masks would share one "best partner in frame 5" and one of the two edges would be lost."""
    frame_of = np.repeat(np.arange(65_536), 2)  # node n in frame n // 2
    a = np.array([0, 65_536])
    b = np.array([10, 11])  # both in frame 5
    rec = OverlapRecords(a, b, np.array([9.0, 9.0]), np.array([10.0, 10.0]), np.array([10.0, 10.0]))
    edges, _ = mutual_best_edges(rec, frame_of, min_score=0.3, min_shared=3.0)
    assert sorted(map(tuple, edges.tolist())) == [(0, 10), (65_536, 11)]
    wrapped = (a.astype(np.int32) * np.int32(65_536) + np.int32(5))  # the negative control: int32 keys collide
    assert wrapped[0] == wrapped[1]


def test_gate_counts_distinct_supporting_and_covisible_frame_pairs() -> None:
    """Part A: masks 0 (frame 0), 1 (frame 1); part B: masks 2 (frame 2), 3 (frame 3); mask 4 (frame 2) is in neither.
    Records 0-2 (twice: one frame pair) and 1-3 support A-B; 0-4 leads out of B and does not count. Matched frame pairs
    (0, 2), (1, 3), (0, 3), (1, 2), (1, 4): four see one part in each frame. Affinity 2 / 4: passes at 0.5, not at
    0.51; a record below the score threshold is no support."""
    frame_of = np.array([0, 1, 2, 3, 2])
    na, nb = np.array([0, 2, 1, 0, 1]), np.array([2, 0, 3, 4, 3])
    score = np.array([0.5, 0.5, 0.5, 0.9, 0.1])
    pairs = np.array([[0, 2], [1, 3], [0, 3], [1, 2], [1, 4]])
    part_a, part_b = {0: [0], 1: [1]}, {2: [2], 3: [3]}
    part_of = np.array([0, 0, 2, 2, -1])  # parts by root; mask 4 in none
    assert AffinityGate(frame_of, na, nb, score, pairs, 0.2, 0.5).allows(part_a, part_b, part_of, 2)
    assert not AffinityGate(frame_of, na, nb, score, pairs, 0.2, 0.51).allows(part_a, part_b, part_of, 2)
    assert AffinityGate(frame_of, na, nb, score, pairs, 0.2, 0.5).allows(part_b, part_a, part_of, 0)  # symmetric
    # record 1-3 below the score threshold: 1 of 4
    low = AffinityGate(frame_of, na[:3], nb[:3], np.array([0.5, 0.5, 0.1]), pairs, 0.2, 0.5)
    assert not low.allows(part_a, part_b, part_of, 2)
