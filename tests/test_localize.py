"""InstanceLoc core (sampling, voting, denoising) on hand-made arrays."""

from __future__ import annotations

import numpy as np

from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.loc.voting import (
    VoteParams,
    interior_distance,
    paint_regions,
    sample_region_pixels,
    vote,
    vote_on_label_map,
)


def _regions():
    r = np.zeros((30, 40), dtype=np.int32)
    r[2:12, 2:20] = 4
    r[15:28, 5:35] = 9
    r[0:2, 38:40] = 2  # 4 pixels
    return r


def test_sample_region_pixels_stays_inside_and_prefers_interior():
    r = _regions()
    rng = np.random.default_rng(0)
    ids, coords = sample_region_pixels(r, 16, rng)
    assert ids.tolist() == [2, 4, 9]
    assert coords.shape == (3, 16, 2)
    for rid, cs in zip(ids, coords):
        assert np.all(r[cs[:, 0], cs[:, 1]] == rid)
    dist = interior_distance(r)
    # interior sampling: the mean boundary distance of samples beats a uniform draw over region 9
    uniform = dist[r == 9].mean()
    assert dist[coords[2, :, 0], coords[2, :, 1]].mean() > uniform
    ids, _ = sample_region_pixels(r, 8, rng, min_pixels=5)
    assert ids.tolist() == [4, 9]  # the 4-pixel region is skipped


def test_sample_region_pixels_empty_map():
    ids, coords = sample_region_pixels(np.zeros((5, 5), np.int32), 4, np.random.default_rng(0))
    assert ids.shape == (0,) and coords.shape == (0, 4, 2)


def test_vote_majority_weak_and_nothing():
    labels = np.array([
        [3, 3, 3, 5, 0, 3, 3, 5],  # clear majority 3
        [0, 0, 0, 0, 0, 0, 0, 7],  # lands on nothing: one vote only -> 0
        [1, 2, 3, 4, 5, 6, 1, 2],  # scattered: weak -> 0
        [6, 6, 6, 6, 2, 2, 2, 2],  # tie broken by confidence
    ])
    conf = np.ones(labels.shape)
    conf[3, 4:] = 0.1
    out, support = vote(labels, conf, min_votes=2, min_fraction=0.4)
    assert out.tolist() == [3, 0, 0, 6]
    assert support[0] == 5 / 8 and support[3] == 0.5
    # without confidences the tie goes to a single winner with half the votes; still above min_fraction
    out, _ = vote(labels[3:], None, min_votes=2, min_fraction=0.6)
    assert out.tolist() == [0]


def test_paint_regions_and_denoise_vote():
    r = _regions()
    render = np.zeros(r.shape, np.uint16)
    render[r == 4] = 11
    render[2:4, 2:20] = 12  # noise inside region 4
    render[r == 9] = 0  # region 9 renders as nothing
    ids, labels, support = vote_on_label_map(r, render, VoteParams(min_region_pixels=5))
    assert ids.tolist() == [4, 9] and labels.tolist() == [11, 0]
    painted = paint_regions(r, ids, labels)
    assert painted.dtype == np.uint16
    assert np.all(painted[r == 4] == 11) and np.all(painted[r != 4] == 0)


# -------------------------------------------------------------------------------------------------------------
# the query through a model: a fake label field (a floor plane z = 0, label 1 where x < 0, label 2 where x >= 0)


class _PlaneModel:
    """Stands in for a trained model: ray-plane intersection gives the label; rays missing the plane hit nothing."""

    def __call__(self, bundle):
        import torch

        o, d = bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)
        t = -o[:, 2] / d[:, 2]
        hit = t > 0
        x = o[:, 0] + t * d[:, 0]
        ids = torch.where(x < 0, 1, 2) * hit
        return {"instance_id": ids[:, None], "instance_confidence": torch.ones(len(ids), 1),
                "accumulation": hit.float()[:, None]}


def test_localize_regions_through_camera_rays_left_right():
    from instance_nerfacto.core.dataset import Frame
    from instance_nerfacto.loc.voting import localize_regions
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    # camera 2 m above the origin looking straight down (OpenGL: looks along -z), image x along world x
    c2w = np.eye(4)
    c2w[2, 3] = 2.0
    frame = Frame(stem="q", image_path=None, c2w=c2w, fx=50.0, fy=50.0, cx=40.0, cy=30.0, width=80, height=60)
    camera = frame_camera(frame, DatasetToModel.from_dataparser(np.eye(4)[:3], 1.0), "cpu")
    regions = np.zeros((60, 80), np.int32)
    regions[:, :35] = 7  # left of the image = world x < 0
    regions[:, 45:] = 3
    regions[:, 35:45] = 5  # straddles x = 0: a split vote, too weak at min_fraction 0.8
    result = localize_regions(_PlaneModel(), camera, regions, VoteParams(16, 2, 0.8, 1), np.random.default_rng(0))
    got = dict(zip(result["region_ids"].tolist(), result["labels"].tolist()))
    assert got[7] == 1 and got[3] == 2
    # region 5's samples see both sides of x = 0, and it gets the majority only when that holds min_fraction (0.8) of
    # the samples, else 0
    votes = np.asarray(result["votes"][result["region_ids"].tolist().index(5)])
    assert len(votes) == 16 and set(votes.tolist()) == {1, 2}, votes
    labels, counts = np.unique(votes, return_counts=True)
    assert got[5] == (int(labels[counts.argmax()]) if counts.max() >= 0.8 * len(votes) else 0), votes
    # a merge table maps the votes before voting: 2 -> 1 makes both sides one label
    result = localize_regions(_PlaneModel(), camera, regions, VoteParams(16, 2, 0.8, 1), np.random.default_rng(0),
                              merge_table=MergeTable({2: 1}))
    got = dict(zip(result["region_ids"].tolist(), result["labels"].tolist()))
    assert got == {3: 1, 5: 1, 7: 1}


def test_dataparser_transform_and_scale_are_applied():
    from instance_nerfacto.core.dataset import Frame
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    frame = Frame(stem="q", image_path=None, c2w=c2w, fx=50.0, fy=50.0, cx=40.0, cy=30.0, width=80, height=60)
    transform = np.array([[0, -1, 0, 0.5], [1, 0, 0, 0], [0, 0, 1, -1.0]], dtype=np.float64)
    cam = frame_camera(frame, DatasetToModel.from_dataparser(transform, 0.5), "cpu")
    got = cam.camera_to_worlds[0].numpy()
    np.testing.assert_allclose(got[:, 3], 0.5 * np.array([-2 + 0.5, 1.0, 2.0]), atol=1e-6)
    np.testing.assert_allclose(got[:3, :3], transform[:, :3], atol=1e-6)


def test_split_regions_repaints_a_mask_covering_two_objects():
    from instance_nerfacto.loc.voting import split_regions

    regions = np.zeros((10, 20), np.int32)
    regions[:, :] = 1  # one mask covers two objects: left half label 4, right half label 8
    coords = np.array([[[5, 2], [5, 4], [2, 3], [7, 6], [5, 13], [5, 15], [2, 17], [8, 18]]])
    samples = np.array([[4, 4, 4, 4, 8, 8, 8, 8]])
    image = np.full((10, 20), 4, np.uint16)
    split = split_regions(image, regions, np.array([1]), coords, samples, min_votes=2, fraction=0.3)
    assert split == [1]
    assert np.all(image[:, :9] == 4) and np.all(image[:, 11:] == 8)
    # one stray vote is not a second object
    samples = np.array([[4, 4, 4, 4, 4, 4, 4, 8]])
    image = np.full((10, 20), 4, np.uint16)
    assert split_regions(image, regions, np.array([1]), coords, samples, 2, 0.3) == []
    assert np.all(image == 4)


def test_fill_unlabelled_gives_unmasked_pixels_the_field_label():
    from instance_nerfacto.core.dataset import Frame
    from instance_nerfacto.loc.voting import fill_unlabelled, localize_regions
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    c2w = np.eye(4)
    c2w[2, 3] = 2.0
    frame = Frame(stem="q", image_path=None, c2w=c2w, fx=50.0, fy=50.0, cx=40.0, cy=30.0, width=80, height=60)
    camera = frame_camera(frame, DatasetToModel.from_dataparser(np.eye(4)[:3], 1.0), "cpu")
    regions = np.zeros((60, 80), np.int32)
    regions[:, :30] = 7  # masked, left (world x < 0 -> label 1); pixels 30.. have no mask (a missed object)
    image = localize_regions(_PlaneModel(), camera, regions, VoteParams(16, 2, 0.5, 1), np.random.default_rng(0))[
        "image"]
    assert (image[:, :30] == 1).all() and (image[:, 30:] == 0).all()  # pure mask voting leaves the hole empty
    filled = image.copy()
    rays = fill_unlabelled(filled, _PlaneModel(), camera, stride=2)
    assert rays == 30 * 25  # one ray per 2x2 block of the 60x50 hole
    assert (filled[:, :30] == 1).all()  # labelled pixels untouched
    assert (filled[:, 30:40] == 1).all() and (filled[:, 42:] == 2).all()  # the plane's left/right halves
    # through localize_regions, with a merge table applied to the filled ids too
    out = localize_regions(_PlaneModel(), camera, regions, VoteParams(16, 2, 0.5, 1, 0.0, 1), np.random.default_rng(0),
                           merge_table=MergeTable({2: 1}))["image"]
    assert (out == 1).all()
