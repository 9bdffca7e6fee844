"""Communities of the mask graph: Leiden (igraph + leidenalg), cannot-link splitting, size and frame-count filters.

CPM at resolution 0 is plain connected components, so one wrong edge fuses two objects; we run CPM with a positive
resolution (a community must be denser than that) and then enforce the cannot-link rule: two masks of one frame are
one instance only when they touch (an over-segmented object); a community holding two disjoint masks of one frame is
split greedily so that each part keeps the edges that bind it most.
"""

from __future__ import annotations

from itertools import chain
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
from jaxtyping import Float, Int
from scipy.cluster.hierarchy import DisjointSet

from data_preprocess.affinity import covisible_pairs, pair_support
from data_preprocess.local_moving import move_nodes


def leiden(n_nodes: int, edges: Int[np.ndarray, "E 2"], weights: Float[np.ndarray, "E"], resolution: float,
           seed: int) -> Int[np.ndarray, "N"]:
    """Community index per node (Leiden, CPM quality, edge weights), numbered by decreasing size.

    At resolution 0 the CPM optimum is the graph's connected components, which Leiden finds exactly (the same 32,674
    communities on a 10,000-frame capture's 3.2 million edges) in 35 s; scipy finds them in under a second. Equal
    sizes are numbered by their first node here (Leiden's order among them is its own)."""
    if resolution == 0 and n_nodes > 0:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        adjacency = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
        k, component = connected_components(adjacency, directed=False)
        first = np.full(k, n_nodes)
        np.minimum.at(first, component, np.arange(n_nodes))
        number = np.empty(k, dtype=np.int64)
        number[np.lexsort((first, -np.bincount(component, minlength=k)))] = np.arange(k)
        return number[component]
    import igraph as ig
    import leidenalg

    graph = ig.Graph(n=n_nodes, edges=edges.tolist(), directed=False)
    graph.es["weight"] = weights.tolist()
    part = leidenalg.find_partition(graph, leidenalg.CPMVertexPartition, weights="weight",
                                    resolution_parameter=resolution, seed=seed, n_iterations=-1)
    return np.asarray(part.membership, dtype=np.int64)


class _Groups:
    """Union-find (scipy's DisjointSet) over nodes that refuses a union putting two non-touching masks of one frame
    in one group. ``part_of`` (optional, over all nodes): kept equal to each node's root, for array code that asks
    which part a node is in (the split gate); nodes outside the groups keep what they hold."""

    def __init__(self, nodes: List[int], frame_of: np.ndarray, touching: Set[Tuple[int, int]],
                 part_of: Optional[np.ndarray] = None) -> None:
        self.sets = DisjointSet(nodes)
        self.frames: Dict[int, Dict[int, List[int]]] = {n: {int(frame_of[n]): [n]} for n in nodes}
        self.touching = touching
        self.refused: Set[Tuple[int, int, int, int]] = set()
        self.part_of = part_of
        if part_of is not None:
            part_of[nodes] = nodes

    def find(self, n: int) -> int:
        return self.sets[n]

    def compatible(self, ra: int, rb: int) -> bool:
        fa, fb = self.frames[ra], self.frames[rb]
        if len(fa) > len(fb):
            fa, fb = fb, fa
        for f, nodes in fa.items():
            for m in fb.get(f, ()):
                if any((min(m, n), max(m, n)) not in self.touching for n in nodes):
                    return False
        return True

    def gated(self, a: int, b: int, gate) -> bool:
        """``gate.allows`` for the parts of a and b (smaller first); True when they are one part already, False when
        the cannot-link rule forbids the union anyway. A refusal is remembered until one of the parts grows: many
        edges run between the same two parts."""
        ra, rb = self.sets[a], self.sets[b]
        if ra == rb:
            return True
        if not self.compatible(ra, rb):
            return False
        fa, fb = self.frames[ra], self.frames[rb]
        na, nb = self.sets.subset_size(ra), self.sets.subset_size(rb)
        if na > nb:
            fa, fb, ra, rb, na, nb = fb, fa, rb, ra, nb, na
        key = (ra, na, rb, nb)
        if key in self.refused:
            return False
        if gate.allows(fa, fb, self.part_of, rb):
            return True
        self.refused.add(key)
        return False

    def shared_frames(self, a: int, b: int) -> float:
        """The fraction of the smaller group's frames in which the other group has a mask too."""
        fa, fb = self.frames[self.sets[a]], self.frames[self.sets[b]]
        if len(fa) > len(fb):
            fa, fb = fb, fa
        return sum(f in fb for f in fa) / max(len(fa), 1)

    def union_dropping(self, a: int, b: int, max_conflicts: float) -> List[int]:
        """Join two groups that break the cannot-link rule in at most ``max_conflicts`` of the smaller one's frames:
        the smaller one's masks of those frames leave it (returned, to be unlabelled); else join nothing, []."""
        ra, rb = self.sets[a], self.sets[b]
        small, big = (self.frames[ra], self.frames[rb])
        if len(small) > len(big):
            small, big = big, small
        bad = sorted({f for f, nodes in small.items() for m in big.get(f, ())
                      if any((min(m, n), max(m, n)) not in self.touching for n in nodes)})
        if not bad or len(bad) > max_conflicts * len(small):
            return []
        dropped = [n for f in bad for n in small.pop(f)]  # out of the group's frames: the rule no longer sees them
        self.union(a, b)
        return dropped

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.sets[a], self.sets[b]
        if ra == rb:
            return True
        if not self.compatible(ra, rb):
            return False
        self.sets.merge(ra, rb)
        root = self.sets[ra]
        other = rb if root == ra else ra
        moved = self.frames.pop(other)
        for f, nodes in moved.items():
            self.frames[root].setdefault(f, []).extend(nodes)
        if self.part_of is not None:
            self.part_of[np.fromiter(chain.from_iterable(moved.values()), dtype=np.int64)] = root
        return True


def split_cannot_link(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"],
                      edges: Int[np.ndarray, "E 2"], weights: Float[np.ndarray, "E"],
                      touching: Set[Tuple[int, int]], refine: bool = False, gate=None) -> Int[np.ndarray, "N"]:
    """Split every community that holds two non-touching masks of one frame; returns new community ids.

    Inside such a community the edges are replayed strongest first (Kruskal), joining two parts only when the result
    still holds no two disjoint masks of one frame; so each wrong edge costs a split, not a fused object. ``refine``:
    then move masks to the part that holds most of their edge weight (:func:`local_moving.move_nodes`). ``gate``
    (:class:`affinity.AffinityGate`): two parts join only when it allows it.
    """
    out = membership.copy()
    next_id = int(membership.max()) + 1 if len(membership) else 0
    same = membership[edges[:, 0]] == membership[edges[:, 1]] if len(edges) else np.zeros(0, dtype=bool)
    order = np.argsort(membership, kind="stable")
    bounds = np.flatnonzero(np.diff(membership[order])) + 1
    edge_order = np.lexsort((edges[:, 1], edges[:, 0], -weights)) if len(edges) else np.zeros(0, dtype=np.int64)
    # each community's inside edges, strongest first, as slices of one array (a dict of lists of Python ints held
    # ~180 MB at 10,000 frames)
    inside_edges = edge_order[same[edge_order]]
    edge_comm = membership[edges[inside_edges, 0]]
    by_comm = np.argsort(edge_comm, kind="stable")  # grouped by community, strength order kept
    inside_edges, edge_comm = inside_edges[by_comm], edge_comm[by_comm]
    del edge_order, by_comm
    part_of = np.full(len(membership), -1, dtype=np.int64)  # each node's part, for the gate and the loop below
    for nodes in np.split(order, bounds):
        if len(nodes) == 0 or len(np.unique(frame_of[nodes])) == len(nodes):
            continue  # at most one mask per frame: nothing to split
        groups = _Groups(nodes.tolist(), frame_of, touching, part_of)
        lo, hi = np.searchsorted(edge_comm, [membership[nodes[0]], membership[nodes[0]] + 1])
        inside = inside_edges[lo:hi]
        for a, b in edges[inside].tolist():  # millions at 10,000 frames, most inside one part already
            if part_of[a] == part_of[b] or (gate is not None and not groups.gated(a, b, gate)):
                continue
            groups.union(a, b)
        part = {int(n): groups.find(int(n)) for n in nodes}
        if refine and len(set(part.values())) > 1:
            move_nodes(part, edges[inside], weights[inside], frame_of, touching)
        # the part of the smallest root keeps the community's id, the others take new ids in order of their roots
        _, rank = np.unique(np.fromiter((part[n] for n in nodes.tolist()), dtype=np.int64, count=len(nodes)),
                            return_inverse=True)
        moved = rank > 0
        out[nodes[moved]] = next_id + rank[moved] - 1
        next_id += int(rank.max())
    return out


def merge_fragments(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"],
                    node_a: Int[np.ndarray, "R"], node_b: Int[np.ndarray, "R"], score: Float[np.ndarray, "R"],
                    pairs: Int[np.ndarray, "P 2"], touching: Set[Tuple[int, int]], min_score: float,
                    min_affinity: float = 0.5, min_support: int = 2,
                    max_conflicts: float = 0.0, max_shared: float = 0.3) -> Int[np.ndarray, "N"]:
    """Join communities that are fragments of one object (ids -1 are ignored).

    Affinity of two communities = the fraction of matched frame pairs seeing both in which some mask of one overlaps
    some mask of the other with correspondence IoU >= ``min_score`` (mutual best or not). Evidence summed over many
    frames is far harder to fool than one edge, so this recovers what mutual-best pruning cut without reopening the
    door to chains of wrong edges; the cannot-link rule still applies, except in up to ``max_conflicts`` of the
    smaller community's frames, whose masks are then unlabelled (-1): a stretch of poorly matched frames leaves
    stray masks of an object in a second community, which would otherwise keep its two halves apart for good. Two
    communities with masks in more than ``max_shared`` of the smaller one's frames are not fragments but objects side
    by side (touching masks are exempt from the rule): never joined.
    """
    out = membership.copy()
    ca, cb = membership[node_a], membership[node_b]
    ok = (ca >= 0) & (cb >= 0) & (ca != cb) & (score >= min_score)
    if not ok.any():
        return out
    n_frames = int(frame_of.max()) + 1
    cand, support = pair_support(ca[ok], cb[ok], frame_of[node_a[ok]], frame_of[node_b[ok]], n_frames)
    del ca, cb, ok
    keep = support >= min_support
    cand, support = cand[keep], support[keep]
    kept = membership >= 0
    covis = covisible_pairs(membership[kept], frame_of[kept], pairs, cand, n_frames)
    affinity = support / np.maximum(covis, 1)
    scored = [(-a, -s, x, y) for a, s, (x, y) in zip(affinity.tolist(), support.tolist(), cand.tolist())
              if a >= min_affinity]
    if not scored:
        return out
    nodes = np.flatnonzero(kept).tolist()
    groups = _Groups(nodes, frame_of, touching)
    first = {}
    for n in nodes:
        c = int(membership[n])
        if c in first:
            groups.union(first[c], n)  # members of one community are compatible by construction
        else:
            first[c] = n
    ejected: List[int] = []
    for _, _, x, y in sorted(scored):
        if groups.shared_frames(first[x], first[y]) > max_shared:
            continue
        if not groups.union(first[x], first[y]) and max_conflicts > 0:
            ejected += groups.union_dropping(first[x], first[y], max_conflicts)
    for c, n in first.items():
        out[membership == c] = membership[groups.find(n)]
    out[ejected] = -1
    return out


def filter_communities(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"], min_size: int,
                       min_frames: int) -> Int[np.ndarray, "N"]:
    """Community ids with too few masks or frames replaced by -1."""
    out = membership.copy()
    ids, inverse, size = np.unique(membership, return_inverse=True, return_counts=True)
    key = np.unique(inverse * (int(frame_of.max()) + 1) + frame_of)
    n_frames = np.bincount(key // (int(frame_of.max()) + 1), minlength=len(ids))
    drop = (size < min_size) | (n_frames < min_frames)
    out[drop[inverse]] = -1
    return out


def absorb_fragments(membership: Int[np.ndarray, "N"], frame_of: Int[np.ndarray, "N"],
                     node_a: Int[np.ndarray, "R"], node_b: Int[np.ndarray, "R"], shared: Float[np.ndarray, "R"],
                     total_a: Float[np.ndarray, "R"], total_b: Float[np.ndarray, "R"],
                     touching: Set[Tuple[int, int]], min_vote: float = 0.5,
                     min_cover: float = 0.0) -> Int[np.ndarray, "N"]:
    """Let larger communities absorb the small ones (and unlabelled masks, -1) that lie inside them in other views.

    Over-segmented pieces of an object (a piece split off the same way in a few frames) form small communities, or
    no community at all, because their IoU with the whole object is low; yet their pixels land inside that object
    in the other views. The vote of community c for a smaller unit x is the sum of correspondences from x into c's
    masks over the sum of x's correspondences into the frames where c appears. x joins c when that vote passes
    ``min_vote`` and the cannot-link rule holds (c's masks in x's frames touch x's). Smallest units go first.
    ``min_cover``: the frames where c appears must also hold at least this fraction of all of x's correspondences
    (the vote's denominator over x's total). A piece of c's object is seen from frames that see c; an object seen in
    another stretch of the capture meets c only in the few frame pairs that join the two stretches, and a vote over so
    little evidence (32 of 1.8 million correspondences) absorbed a 264-mask object into its 322-mask neighbour.

    Array code over the records (both directions of each): a long capture has millions of them, and per-record
    Python dicts held ~3 GB at 10,000 frames.
    """
    unit = membership.copy()
    next_id = int(unit.max()) + 1 if len(unit) else 0
    free = np.flatnonzero(unit < 0)
    unit[free] = np.arange(next_id, next_id + len(free))
    ids, size = np.unique(unit, return_counts=True)
    n_frames, n_units = int(frame_of.max()) + 1 if len(frame_of) else 1, int(unit.max()) + 1 if len(unit) else 1
    unit_size = np.zeros(n_units, dtype=np.int64)
    unit_size[ids] = size
    # Records are read half by half and temporaries dropped as soon as used: at 10,000 frames (12.8 M records) the
    # two directions of every column, kept together, raised the driver's peak from 2.3 to 3.6 GB here.
    unit64 = unit.astype(np.int64)
    ua, ub = unit64[node_a], unit64[node_b]
    keys, weights = [], []
    for ux, uy in ((ua, ub), (ub, ua)):  # each record seen from both of its masks: x's unit votes into y's
        votes = (ux != uy) & (unit_size[uy] > unit_size[ux])
        keys.append(ux[votes] * n_units + uy[votes])
        weights.append(shared[votes])
    del ua, ub, ux, uy, votes
    keys = np.concatenate(keys)
    if not len(keys):
        return membership.copy()
    # numerator: x's correspondences into the masks of the larger unit, per (x's unit, larger unit)
    pair_key, inverse = np.unique(keys, return_inverse=True)
    del keys
    num = np.bincount(inverse.ravel(), weights=np.concatenate(weights).astype(np.float64, copy=False))
    del inverse, weights
    pair_x, pair_y = pair_key // n_units, pair_key % n_units
    # denominator: a mask's correspondences into a whole other frame (the record's total, the same in every record
    # of that frame pair: runs of one mask within a pair are collapsed before the sort). No copies of columns that
    # already are int64 / float64, and a stable sort instead of np.unique (which copies its input once more): at
    # 10,000 frames without depth maps (21 M records) this step set the run's peak
    key_a = node_a.astype(np.int64, copy=False) * n_frames + frame_of[node_b]
    run = np.r_[True, key_a[1:] != key_a[:-1]] if len(key_a) else np.zeros(0, dtype=bool)
    node_frame = np.concatenate([key_a[run], node_b.astype(np.int64, copy=False) * n_frames + frame_of[node_a]])
    tot = np.concatenate([total_a[run], total_b]).astype(np.float32)  # counts: exact in float32, half the bytes
    del key_a, run
    order = np.argsort(node_frame, kind="stable")
    node_frame = node_frame[order]
    last = np.r_[node_frame[1:] != node_frame[:-1], True] if len(node_frame) else np.zeros(0, dtype=bool)
    den_key, den_t = node_frame[last], tot[order[last]].astype(np.float64)  # each key's last record: its total
    del node_frame, tot, order, last
    den_unit, den_frame = unit[den_key // n_frames].astype(np.int64), den_key % n_frames
    by_unit = np.argsort(den_unit, kind="stable")
    den_unit, den_frame, den_t = den_unit[by_unit], den_frame[by_unit], den_t[by_unit]
    unit_frames = np.unique(unit.astype(np.int64) * n_frames + frame_of)  # (unit, frame) where the unit appears
    den = np.zeros(len(pair_key))
    starts = np.searchsorted(pair_x, np.unique(pair_x))
    for s, e in zip(starts.tolist(), np.r_[starts[1:], len(pair_x)].tolist()):
        lo, hi = np.searchsorted(den_unit, [pair_x[s], pair_x[s] + 1])
        frames_x, t_x = den_frame[lo:hi], den_t[lo:hi]
        step = max(1, 4_000_000 // max(1, hi - lo))  # bounded (larger units x entries) blocks
        for k in range(s, e, step):
            probe = pair_y[k:min(e, k + step), None] * n_frames + frames_x[None, :]
            pos = np.searchsorted(unit_frames, probe).clip(0, len(unit_frames) - 1)
            den[k:min(e, k + step)] = ((unit_frames[pos] == probe) * t_x[None, :]).sum(1)
    vote = num / np.maximum(den, 1e-9)
    tot_unit = np.bincount(den_unit, weights=den_t, minlength=n_units)
    cover = den / np.maximum(tot_unit[pair_x], 1e-9)
    passing = np.flatnonzero((vote >= min_vote) & (cover >= min_cover))
    # per unit: the highest vote, ties to the smaller larger-unit id (pairs are sorted by (unit, larger unit))
    order = passing[np.lexsort((pair_y[passing], -vote[passing], pair_x[passing]))]
    first = np.r_[True, pair_x[order][1:] != pair_x[order][:-1]] if len(order) else np.zeros(0, dtype=bool)
    best = dict(zip(pair_x[order][first].tolist(), pair_y[order][first].tolist()))
    nodes_of_unit: Dict[int, List[int]] = {}
    for n, u in enumerate(unit.tolist()):
        nodes_of_unit.setdefault(u, []).append(n)
    groups = _Groups(list(range(len(unit))), frame_of, touching)
    for nodes in nodes_of_unit.values():
        for n in nodes[1:]:
            groups.union(nodes[0], n)  # members of one community are compatible by construction
    for ux_ in sorted(best, key=lambda u: (int(unit_size[u]), u)):
        groups.union(nodes_of_unit[ux_][0], nodes_of_unit[best[ux_]][0])
    out = np.empty_like(membership)
    root_id: Dict[int, int] = {}
    for n in range(len(unit)):
        r = groups.find(n)
        out[n] = root_id.setdefault(r, int(unit[r]))
    return out
