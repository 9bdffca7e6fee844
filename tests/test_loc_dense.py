"""InstanceLoc with a depth map: the measured-surface label query and the dense labelling, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instance_nerfacto.loc.dense import coarse_to_fine_labels, region_majority, relabel_unsure_pixels


def _shapes(height: int = 48, width: int = 64) -> np.ndarray:
    """A label image with blobs at least 4 px wide, edges off the 2-px grid, and a diagonal boundary."""
    image = np.ones((height, width), np.int64)
    image[5:20, 7:30] = 2
    image[25:44, 33:60] = 3
    rows, cols = np.mgrid[0:height, 0:width]
    image[(rows - 30) ** 2 + (cols - 12) ** 2 < 36] = 4
    image[rows > cols + 30] = 5
    return image


def test_coarse_to_fine_labels_reproduce_a_full_read_with_fewer_rays():
    truth = _shapes()
    asked = []

    def query(coords):
        asked.append(len(coords))
        return truth[coords[:, 0], coords[:, 1]], np.full(len(coords), 0.9)

    ids, conf, rays = coarse_to_fine_labels(query, *truth.shape, stride=2)
    np.testing.assert_array_equal(ids, truth)
    assert rays == sum(asked) and rays < 0.6 * truth.size
    assert np.all(conf == np.float32(0.9))
    # a plain stride-2 read (no refinement) gets edges wrong: the refinement is what makes them exact
    plain = np.repeat(np.repeat(truth[::2, ::2], 2, 0), 2, 1)
    assert (plain != truth).sum() > 20
    ids1, _, rays1 = coarse_to_fine_labels(query, *truth.shape, stride=1)
    np.testing.assert_array_equal(ids1, truth)
    assert rays1 == truth.size


def test_boundaries_refined_at_a_coarser_fine_stride_are_exact_on_its_grid_with_fewer_rays():
    """stride 8, boundaries every 4th pixel (the rendered-surface setting): a boundary on the 4-px grid comes out
    exact; one off it is off by less than 4 px, never more; and it costs fewer rays than refining every pixel."""
    truth = np.ones((48, 64), np.int64)
    truth[8:28, 12:40] = 2  # edges on the 4-px grid, off the 8-px one
    truth[30:45, 45:61] = 3

    def query(coords):
        return truth[coords[:, 0], coords[:, 1]], np.full(len(coords), 0.9)

    ids, _, rays = coarse_to_fine_labels(query, *truth.shape, stride=8, fine_stride=4)
    np.testing.assert_array_equal(ids[:30], truth[:30])  # the 4-px aligned blob (above blob 3) is exact
    _, _, rays_full = coarse_to_fine_labels(query, *truth.shape, stride=8, fine_stride=1)
    assert rays < 0.4 * rays_full
    # blob 3's edges (30, 45, 61) are off the 4-px grid: wrong pixels exist, all within 3 px of a true edge
    wrong = np.argwhere(ids != truth)
    assert len(wrong) > 0
    edges_r, edges_c = np.array([30, 45]), np.array([45, 61])
    assert all(min(abs(edges_r - r).min(), abs(edges_c - c).min()) <= 3 for r, c in wrong)
    plain = np.repeat(np.repeat(truth[::8, ::8], 8, 0), 8, 1)  # no refinement: far more pixels wrong
    assert (plain != truth).sum() > 2 * len(wrong)


def test_level_by_level_refinement_reaches_the_finest_grid_with_fewer_rays():
    """strides (8, 4, 2), the rendered-surface default: boundaries on the 2-px grid (off the 4-px one) come out exact,
    as with every 2-px pixel of every 8-px boundary block (8, 2), for fewer rays; stopping at 4 px leaves them wrong.
    Two strides given as a sequence are the two-level refinement itself."""
    truth = np.ones((64, 96), np.int64)
    truth[10:34, 14:50] = 2  # edges on the 2-px grid, off the 4- and 8-px ones
    truth[42:54, 62:90] = 3
    truth[rows_cols_circle(64, 96, centre=(20, 76), radius=7)] = 4

    def query(coords):
        return truth[coords[:, 0], coords[:, 1]], np.full(len(coords), 0.9)

    ids, _, rays = coarse_to_fine_labels(query, *truth.shape, strides=(8, 4, 2))
    ids_two, _, rays_two = coarse_to_fine_labels(query, *truth.shape, stride=8, fine_stride=2)
    on_grid = np.repeat(np.repeat(truth[::2, ::2], 2, 0), 2, 1)  # the best any 2-px read can do
    np.testing.assert_array_equal(ids_two, on_grid)
    np.testing.assert_array_equal(ids, on_grid)
    assert rays < 0.8 * rays_two
    ids_four, _, _ = coarse_to_fine_labels(query, *truth.shape, strides=(8, 4))
    assert (ids_four != truth).sum() > (ids != truth).sum() + 50  # stopping at 4 px misses the 2-px edges
    ids_old, conf_old, rays_old = coarse_to_fine_labels(query, *truth.shape, stride=8, fine_stride=4)
    np.testing.assert_array_equal(ids_four, ids_old)
    assert rays_old == coarse_to_fine_labels(query, *truth.shape, strides=(8, 4))[2]
    with pytest.raises(ValueError, match="multiple of the next"):
        coarse_to_fine_labels(query, *truth.shape, strides=(8, 3))


def rows_cols_circle(height: int, width: int, centre, radius: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2


def test_region_majority_counts_pixels_and_ignores_label_zero():
    labels = np.array([[1, 1, 2, 0], [1, 2, 2, 0], [3, 3, 0, 0]])
    regions = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 9, 9]])
    majority, support = region_majority(labels, regions)
    assert majority == {5: 1} or majority == {5: 2}  # a 3-3 tie between labels 1 and 2
    assert support[5] == 3 / 8
    assert 9 not in majority  # region 9 holds only label 0
    labels[0, 3] = 2
    majority, support = region_majority(labels, regions)
    assert majority == {5: 2} and support[5] == 4 / 8


def test_unsure_pixels_take_their_mask_majority_and_sure_pixels_stay():
    labels = np.array([[4, 4, 4, 7], [4, 4, 7, 7], [8, 8, 8, 8]])
    conf = np.array([[0.9, 0.9, 0.9, 0.3], [0.9, 0.9, 0.95, 0.5], [0.2, 0.2, 0.2, 0.2]])
    regions = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    out = relabel_unsure_pixels(labels, conf, regions, min_confidence=0.7)
    expected = np.array([[4, 4, 4, 4], [4, 4, 7, 4], [8, 8, 8, 8]])  # sure 7 stays; unmasked pixels keep the field
    np.testing.assert_array_equal(out, expected)


class _RecordingField:
    """A label field that remembers the points it was asked for; label 1 above z = 0.5 m, 2 below."""

    def __init__(self):
        self.points = []

    def label_logits_at(self, positions):
        self.points.append(positions.clone())
        high = positions[:, 2] > 0.25  # in the scaled frame (scale 0.5 below): 0.5 m
        return torch.stack([high.float() * 4, (~high).float() * 4], dim=-1)


def test_depth_query_reads_the_field_at_the_back_projected_depth():
    """The label field is read at exactly the 3D point each depth pixel sees (independently back-projected here with
    the OpenGL camera convention, the dataparser transform and scale); rays without a reading go to the fallback."""
    from instance_nerfacto.core.dataset import Frame
    from instance_nerfacto.loc.surface import DepthQuery, ray_distance_map
    from instance_nerfacto.loc.voting import query_rays
    from instance_nerfacto.render.cameras import DatasetToModel, frame_camera

    height, width, fx, fy, cx, cy = 60, 80, 40.0, 42.0, 41.0, 29.0
    c2w = np.eye(4)
    c2w[:3, :3] = [[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]]  # tilted
    c2w[:3, 3] = [0.2, -0.1, 2.0]
    transform = np.array([[0, -1, 0, 0.5], [1, 0, 0, 0], [0, 0, 1, -0.1]], dtype=np.float64)
    scale = 0.5
    frame = Frame(stem="q", image_path=None, c2w=c2w, fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.5, (height, width)).astype(np.float32)  # z-depth, metres
    depth[:, :5] = 0.0  # no reading: fallback
    field = _RecordingField()
    fallback_calls = []

    def fallback(bundle, coords):
        fallback_calls.append(np.asarray(coords).copy())
        n = len(coords)
        return {"instance_id": torch.full((n, 1), 9), "instance_confidence": torch.ones(n, 1),
                "accumulation": torch.ones(n, 1)}

    query = DepthQuery(field, ray_distance_map(depth, frame.camera, scale), fallback)
    coords = np.stack([rng.integers(0, height, 200), rng.integers(0, width, 200)], axis=1)
    camera = frame_camera(frame, DatasetToModel.from_dataparser(transform, scale), "cpu")
    ids, _ = query_rays(None, camera, coords, query)

    measured = depth[coords[:, 0], coords[:, 1]] > 0
    z = depth[coords[:, 0], coords[:, 1]][measured].astype(np.float64)
    u, v = coords[measured, 1] + 0.5, coords[measured, 0] + 0.5
    cam = np.stack([(u - cx) / fx * z, -(v - cy) / fy * z, -z, np.ones_like(z)])  # OpenGL: looks along -z
    world = (c2w @ cam)[:3]
    expected = scale * (transform[:, :3] @ world + transform[:, 3:]).T
    np.testing.assert_allclose(torch.cat(field.points).numpy(), expected, atol=2e-4)
    assert ids[~measured].tolist() == [9] * int((~measured).sum())
    np.testing.assert_array_equal(np.concatenate(fallback_calls), coords[~measured])
    assert set(ids[measured].tolist()) == {1, 2} and np.all((ids[measured] == 1) == (expected[:, 2] > 0.25))
