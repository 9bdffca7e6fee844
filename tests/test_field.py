"""InstanceLift field/model: the label loss never touches geometry or colour; outputs have the promised shapes."""

from __future__ import annotations

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from instance_nerfacto.config import instance_nerfacto_small_trainer
from instance_nerfacto.edit.label_map import MergeTable
from instance_nerfacto.lift.model import PSEUDOLABEL_KEY, InstanceNerfactoModel


def build_model(num_labels: int = 5) -> InstanceNerfactoModel:
    config = instance_nerfacto_small_trainer().pipeline.model
    config.implementation = "torch"
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=scene_box, num_train_data=4, metadata={"num_labels": num_labels})


def random_rays(num_rays: int = 64, seed: int = 0) -> RayBundle:
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(num_rays, 3, generator=generator), dim=-1)
    return RayBundle(
        origins=torch.rand(num_rays, 3, generator=generator) * 0.2,
        directions=directions,
        pixel_area=torch.full((num_rays, 1), 1e-4),
        camera_indices=torch.zeros(num_rays, 1, dtype=torch.long),
        nears=torch.full((num_rays, 1), 0.05),
        fars=torch.full((num_rays, 1), 4.0),
    )


def test_label_loss_moves_only_the_label_branch():
    torch.manual_seed(0)
    model = build_model()
    model.train()
    outputs = model.get_outputs(random_rays())
    batch = {PSEUDOLABEL_KEY: torch.randint(1, 6, (64, 1)), "image": torch.rand(64, 3)}
    loss = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))["instance_loss"]
    model.zero_grad(set_to_none=True)
    loss.backward()

    label_ids = {id(p) for p in model.field.label_parameters()}
    geometry = [(n, p) for n, p in model.named_parameters() if id(p) not in label_ids]
    assert any("proposal_networks" in n for n, _ in geometry) and any("mlp_base" in n for n, _ in geometry)
    assert any("mlp_head" in n for n, _ in geometry)  # colour
    for name, param in geometry:
        assert param.grad is None or torch.count_nonzero(param.grad) == 0, name
    label_grid = model.field.label_encoding
    grid_grads = [p.grad for p in label_grid.parameters()]
    assert grid_grads and all(g is not None for g in grid_grads)
    assert sum(torch.count_nonzero(g).item() for g in grid_grads) > 0
    mlp_grads = [p.grad for p in model.field.label_mlp.parameters()]
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in mlp_grads)


def test_unlabelled_pixels_are_ignored_and_outputs_have_shapes():
    torch.manual_seed(0)
    model = build_model(num_labels=3)
    model.train()
    outputs = model.get_outputs(random_rays(16))
    assert outputs["instance_logits"].shape == (16, 3)
    unlabelled = {PSEUDOLABEL_KEY: torch.zeros(16, 1, dtype=torch.long), "image": torch.rand(16, 3)}
    losses = model.get_loss_dict(outputs, unlabelled, model.get_metrics_dict(outputs, unlabelled))
    assert "instance_loss" not in losses  # nothing labelled: no label loss at all
    model.eval()
    with torch.no_grad():
        outputs = model.get_outputs(random_rays(16))
    ids = outputs["instance_id"]
    assert ids.shape == (16, 1) and int(ids.min()) >= 1 and int(ids.max()) <= 3
    assert outputs["instance"].shape == (16, 3) and float(outputs["instance"].max()) <= 1.0
    confidence = outputs["instance_confidence"]
    assert confidence.shape == (16, 1) and bool(((confidence >= 1 / 3 - 1e-6) & (confidence <= 1)).all())
    model.set_merge_table(MergeTable({2: 1, 3: 1}))  # label merging maps everything onto label 1
    with torch.no_grad():
        merged = model.get_outputs(random_rays(16))["instance_id"]
    assert set(merged.unique().tolist()) == {1}


def test_param_groups_separate_labels_and_cover_everything():
    model = build_model()
    groups = model.get_param_groups()
    label_ids = {id(p) for p in groups["instance_labels"]}
    field_ids = {id(p) for p in groups["fields"]}
    assert label_ids and field_ids and not (label_ids & field_ids)
    all_field = {id(p) for p in model.field.parameters()}
    assert label_ids | field_ids == all_field


def test_click_report_names_the_label_under_the_cursor_and_its_merge():
    """The viewer's click report: the label the field gives that ray, its merged id, and the pseudolabel statistics."""
    torch.manual_seed(0)
    config = instance_nerfacto_small_trainer().pipeline.model
    config.implementation = "torch"
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    stats = {1: {"frames": 12, "mean_area": 345.0}, 2: {"frames": 3, "mean_area": 50.0},
             3: {"frames": 7, "mean_area": 99.0}}
    model = config.setup(scene_box=scene_box, num_train_data=4, metadata={"num_labels": 3, "label_stats": stats})
    model.train()
    origin, direction = (0.0, 0.0, -0.5), (0.0, 0.0, 1.0)
    text = model.describe_label_at(origin, direction)
    raw = int(text.split()[1].rstrip(","))
    assert 1 <= raw <= 3
    assert f"in {stats[raw]['frames']} pseudolabel frames, mean area {stats[raw]['mean_area']:.0f} px" in text
    assert "merged" not in text
    other = 1 if raw != 1 else 2
    model.set_merge_table(MergeTable({raw: other}))
    assert f"label {raw} (merged into {other})" in model.describe_label_at(origin, direction)
    assert model.training  # the report leaves the training mode as it was


def test_one_gather_hash_encoding_equals_nerfstudios_values_and_gradients():
    """The label grid's one-gather torch path gives nerfstudio's HashEncoding values, table gradients and point
    gradients (same table, same points; equal up to float summation order); each corner's trilinear weight is the
    product of the offsets where it is the ceiling (a flipped convention must show)."""
    from nerfstudio.field_components.encodings import HashEncoding

    from instance_nerfacto.lift.field import OneGatherHashEncoding

    kwargs = dict(num_levels=4, min_res=4, max_res=64, log2_hashmap_size=10, features_per_level=2,
                  implementation="torch")
    torch.manual_seed(0)
    ours, theirs = OneGatherHashEncoding(**kwargs), HashEncoding(**kwargs)
    theirs.hash_table.data.copy_(ours.hash_table.data)
    points = torch.rand(500, 3)
    p_ours, p_theirs = points.clone().requires_grad_(True), points.clone().requires_grad_(True)
    out_ours, out_theirs = ours(p_ours), theirs(p_theirs)
    assert torch.allclose(out_ours, out_theirs, atol=1e-6, rtol=0)
    weights = torch.randn_like(out_ours)
    (out_ours * weights).sum().backward()
    (out_theirs * weights).sum().backward()
    assert torch.allclose(ours.hash_table.grad, theirs.hash_table.grad, atol=1e-6)
    assert ours.hash_table.grad.abs().sum() > 0
    assert torch.allclose(p_ours.grad, p_theirs.grad, atol=1e-4, rtol=1e-4) and p_ours.grad.abs().sum() > 0
    # exact corner weights: one point, coarsest level; +1 on the row of its all-ceiling corner raises that level's
    # features by ox * oy * oz (a flipped convention would give (1 - ox)(1 - oy)(1 - oz))
    point = torch.tensor([[0.225, 0.45, 0.675]])  # offsets ~0.9, 0.8, 0.7 at the coarsest level (x4)
    scaled = point[0] * ours.scalings[0]
    o = scaled - torch.floor(scaled)
    c = torch.ceil(scaled).long()
    row = int((c[0] * 1 ^ c[1] * 2654435761 ^ c[2] * 805459861) % ours.hash_table_size + ours.hash_offset[0])
    with torch.no_grad():
        before = ours(point)[0, :2].clone()
        ours.hash_table[row] += 1.0
        after = ours(point)[0, :2]
    expected = float(o[0] * o[1] * o[2])
    assert torch.allclose(after - before, torch.full((2,), expected), atol=1e-5)
    assert expected > 0.4 and abs(expected - float((1 - o[0]) * (1 - o[1]) * (1 - o[2]))) > 0.3
