"""One label compositing for training, the full render and the fast renderer: the label field is read only at the
``top_k`` heaviest samples of a ray, and all three paths produce exactly what the shared helper produces."""

from __future__ import annotations

import pytest
import torch

from instance_nerfacto.lift.labels import composite_top_k
from instance_nerfacto.lift.model import PSEUDOLABEL_KEY
from instance_nerfacto.render.bake import (
    bake_density_grid,
    composite_median,
    grid_density,
    render_label_logits,
    sample_distances,
)
from tests.test_field import build_model, random_rays


def reference_composite(label_logits_at, positions, weights, k):
    """Ray by ray, the obvious way: sort the samples by weight, read the k heaviest, average their probabilities."""
    out = []
    for ray_positions, ray_weights in zip(positions, weights):
        order = torch.argsort(ray_weights, descending=True)[:k]
        probs = torch.softmax(label_logits_at(ray_positions[order]), dim=-1)
        mix = (ray_weights[order] + 1e-10) / (ray_weights[order] + 1e-10).sum()
        out.append(torch.log((mix[:, None] * probs).sum(dim=0).clamp_min(1e-8)))
    return torch.stack(out)


class CountingField:
    """Wraps a field's label branch and records how many points it was asked for."""

    def __init__(self, label_logits_at):
        self.label_logits_at, self.calls = label_logits_at, []

    def __call__(self, positions):
        self.calls.append(positions.shape[0])
        return self.label_logits_at(positions)


def build_varied_model(num_labels: int):
    """A model whose untrained label field still varies in space (random hash tables), so the tests can fail."""
    model = build_model(num_labels=num_labels)
    with torch.no_grad():
        for param in model.field.label_encoding.parameters():
            param.normal_(0.0, 1.0)
    return model


def test_top_k_helper_matches_the_per_ray_reference():
    torch.manual_seed(0)
    model = build_varied_model(num_labels=6)
    positions = torch.rand(32, 24, 3) * 2 - 1
    weights = torch.rand(32, 24) ** 4
    with torch.no_grad():
        got, top_weights, _ = composite_top_k(model.field.label_logits_at, positions, weights, 4)
        want = reference_composite(model.field.label_logits_at, positions, weights, 4)
        everything, _, _ = composite_top_k(model.field.label_logits_at, positions, weights, 24)
        want_everything = reference_composite(model.field.label_logits_at, positions, weights, 24)
    assert (want.argmax(-1) != want_everything.argmax(-1)).any() or not torch.allclose(want, want_everything)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(everything, want_everything, atol=1e-5)
    assert torch.allclose(torch.exp(got).sum(dim=-1), torch.ones(32), atol=1e-4)
    assert torch.equal(top_weights, weights.topk(4, dim=1).values)
    zero = torch.zeros(1, 24)  # a ray that hits nothing averages its samples evenly instead of returning zeros
    with torch.no_grad():
        empty, _, _ = composite_top_k(model.field.label_logits_at, positions[:1], zero, 4)
    assert torch.allclose(torch.exp(empty).sum(dim=-1), torch.ones(1), atol=1e-4)


def test_training_reads_the_label_field_at_top_k_samples_only():
    """The model's rendered logits are the shared helper applied to its own samples and weights, and the label branch
    sees num_rays * top_k points, not every sample."""
    torch.manual_seed(0)
    model = build_varied_model(num_labels=5)
    model.train()
    counter = CountingField(model.field.label_logits_at)
    model.field.label_logits_at = counter
    outputs = model.get_outputs(random_rays(64))
    assert counter.calls == [64 * model.field.label_top_k]
    positions = outputs["ray_samples_list"][-1].frustums.get_positions()
    weights = outputs["weights_list"][-1]
    assert positions.shape[1] > model.field.label_top_k  # the test means something: fewer reads than samples
    with torch.no_grad():
        want = reference_composite(counter.label_logits_at, positions, weights[..., 0], model.field.label_top_k)
    assert torch.allclose(outputs["instance_logits"].detach(), want, atol=1e-5)


@pytest.mark.parametrize("read", ["default", "training k"])
def test_fast_renderer_composites_like_training_on_the_same_rays(read: str):
    """instance-render's fast path: the baked grid's weights at its samples, then the same helper, at the render-time
    k (RENDER_LABEL_TOP_K, fewer than training's) by default or at the training k when asked."""
    from instance_nerfacto.core.settings import RENDER_LABEL_TOP_K

    torch.manual_seed(0)
    model = build_varied_model(num_labels=5)
    model.eval()
    field = model.field
    grid = bake_density_grid(field, resolution=16)
    rays = random_rays(48)
    num_samples = 32
    with torch.no_grad():
        k = RENDER_LABEL_TOP_K if read == "default" else field.label_top_k
        assert read == "training k" or RENDER_LABEL_TOP_K < field.label_top_k  # the two cases differ
        logits, _, _ = render_label_logits(grid, field, rays.origins, rays.directions, num_samples=num_samples,
                                           near=0.05, far=1000.0, top_k=None if read == "default" else k)
        edges = sample_distances(0.05, 1000.0, num_samples, "cpu")[None].expand(48, -1)
        mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
        points = rays.origins[:, None] + rays.directions[:, None] * mids[..., None]
        weights, _, _ = composite_median(grid_density(grid, points, True), edges)
        want = reference_composite(field.label_logits_at, points, weights, k)
        other = reference_composite(field.label_logits_at, points, weights, 12 - k)
    assert torch.allclose(logits, want, atol=1e-5)
    assert not torch.allclose(logits, other, atol=1e-5)  # negative control: another k composites differently


def test_top_k_label_loss_still_moves_only_the_label_branch():
    """The loss through top-k selection (indices chosen from the weights) leaves geometry without gradient."""
    torch.manual_seed(1)
    model = build_model(num_labels=5)
    model.train()
    outputs = model.get_outputs(random_rays(64))
    batch = {PSEUDOLABEL_KEY: torch.randint(1, 6, (64, 1)), "image": torch.rand(64, 3)}
    loss = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))["instance_loss"]
    model.zero_grad(set_to_none=True)
    loss.backward()
    label_ids = {id(p) for p in model.field.label_parameters()}
    for name, param in model.named_parameters():
        if id(param) not in label_ids:
            assert param.grad is None or torch.count_nonzero(param.grad) == 0, name
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.field.label_mlp.parameters())


def test_rays_split_into_balanced_chunks_and_render_the_same_in_any_split(monkeypatch):
    """A sparse query's rays are split evenly over the render threads (1,200 rays: two chunks of 600 on two threads,
    not one of 1,200), every ray exactly once; the labels, depths and opacities do not depend on the split."""
    from instance_nerfacto.render.bake import balanced_chunks

    assert balanced_chunks(1200, 2048, 2) == [(0, 600), (600, 1200)]
    assert balanced_chunks(1200, 2048, 1) == [(0, 1200)]
    assert balanced_chunks(5000, 2048, 2) == [(0, 1250), (1250, 2500), (2500, 3750), (3750, 5000)]
    assert balanced_chunks(3, 2048, 4) == [(0, 1), (1, 2), (2, 3)]
    assert balanced_chunks(0, 2048, 2) == []
    for n, chunk, workers in ((76800, 2048, 2), (4097, 2048, 3), (10, 3, 2)):
        spans = balanced_chunks(n, chunk, workers)
        assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(0 < stop - start <= chunk for start, stop in spans) and len(spans) % workers == 0

    torch.manual_seed(0)
    model = build_varied_model(num_labels=5)
    model.eval()
    grid = bake_density_grid(model.field, resolution=16)
    rays = random_rays(48)
    outputs = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("INSTANCE_NERFACTO_RENDER_THREADS", threads)
        with torch.no_grad():
            outputs[threads] = render_label_logits(grid, model.field, rays.origins, rays.directions, num_samples=32,
                                                   chunk=7)
    for one, three in zip(outputs["1"], outputs["3"]):
        assert torch.allclose(one, three, atol=1e-6)
