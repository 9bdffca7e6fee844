"""The instance-nerfacto field: nerfacto's density/colour field plus a separate hash grid + MLP for instance logits.

The label branch reads sample positions with gradients stopped and has its own parameters, so the label loss can only
move the label grid and label MLP, never density, colour or the proposal networks (3DIML's InstanceLift). ``forward``
returns nerfacto's outputs only: the model reads the label branch afterwards, at the heaviest samples of each ray
(``lift/labels.py``), once the weights are known.
"""

from __future__ import annotations

from typing import Literal, Optional, Tuple

import torch
from jaxtyping import Float, Int
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.fields.nerfacto_field import NerfactoField
from torch import Tensor, nn

from instance_nerfacto.lift.labels import DEFAULT_LABEL_TOP_K, composite_top_k

_ROW_AS_ONE_ELEMENT = {4: torch.int32, 8: torch.int64, 16: torch.complex128}
"""A table row of this many bytes is read as one element of this dtype (a row of 2 float32 features: one int64)."""


def _table_rows(table: Float[Tensor, "T F"], index: Int[Tensor, "M"]) -> Float[Tensor, "M F"]:
    """``table[index]`` read as one wide element per row: on CPU, indexing a [T, F] table copies each row separately,
    ~5x slower than a 1-D ``index_select`` of the table viewed as one element per row."""
    wide = _ROW_AS_ONE_ELEMENT.get(table.shape[1] * table.element_size())
    if wide is None or not table.is_contiguous():
        return table.index_select(0, index)
    return table.view(wide).view(-1).index_select(0, index).view(table.dtype).view(-1, table.shape[1])


class _TrilinearRows(torch.autograd.Function):
    """``sum_c weights[c] * table[index[c]]`` over the 8 corners c of each cell: one read of the table for all corners
    and one ``index_add_`` for its gradient (autograd of an indexed read accumulates with ``index_put_`` and of the
    nested lerps keeps 14 intermediate products)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        corners, points = index.shape
        rows = _table_rows(table, index.reshape(-1)).view(corners, points, -1)
        ctx.save_for_backward(table, index, weights)
        return (rows * weights[..., None]).sum(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], None, Optional[Tensor]]:
        table, index, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_rows = (weights[..., None] * grad[None]).reshape(-1, grad.shape[-1])
            grad_table = grad.new_zeros(table.shape).index_add_(0, index.reshape(-1), grad_rows)
        if ctx.needs_input_grad[2]:
            rows = _table_rows(table, index.reshape(-1)).view(*index.shape, -1)
            grad_weights = (rows * grad[None]).sum(-1)
        return grad_table, None, grad_weights


class OneGatherHashEncoding(HashEncoding):
    """nerfstudio's HashEncoding whose pure-torch path reads the table once for the 8 corners of every cell.

    nerfstudio's torch path indexes the table 8 times; the backward of each index op allocates a zero gradient the
    size of the whole table and autograd sums the eight (8 fills + 7 adds of the table per step, the largest part of
    the label branch's cost on CPU). Here one read gives all corners (:class:`_TrilinearRows`, blended with the
    8 trilinear weights at once) and one ``index_add_`` the table's gradient, and the hash is built from per-axis
    terms instead of 8 full hashes. Same values and gradients as the parent up to float summation order
    (tests/test_field.py); the tcnn path is untouched.
    """

    def pytorch_fwd(self, in_tensor: Float[Tensor, "*bs input_dim"]) -> Float[Tensor, "*bs output_dim"]:
        assert in_tensor.shape[-1] == 3
        scaled = in_tensor[..., None, :] * self.scalings.view(-1, 1).to(in_tensor.device)  # [..., L, 3]
        scaled_c = torch.ceil(scaled).type(torch.int32)
        scaled_f = torch.floor(scaled).type(torch.int32)
        offset = scaled - scaled_f
        # Instant-NGP's hash (x * 1) ^ (y * p1) ^ (z * p2) mod T, as nerfstudio's hash_fn computes it, with each axis
        # term computed once for floor and ceil and the 8 corners combined by broadcasting: [x, y, z] (0 floor, 1 ceil)
        primes = torch.tensor([1, 2654435761, 805459861], device=in_tensor.device)
        terms = torch.stack([scaled_f * primes, scaled_c * primes])  # [2, ..., L, 3], int64, >= 0
        hashed = (terms[..., 0].view(2, 1, 1, *terms.shape[1:-1]) ^ terms[..., 1].view(1, 2, 1, *terms.shape[1:-1])
                  ^ terms[..., 2].view(1, 1, 2, *terms.shape[1:-1]))  # [2, 2, 2, ..., L]
        size = int(self.hash_table_size)
        # x mod T is x & (T - 1) for the non-negative x and power-of-two T here; & is far cheaper than a division
        hashed = hashed & (size - 1) if size & (size - 1) == 0 else hashed % size
        rows = (hashed + self.hash_offset.to(in_tensor.device)).reshape(8, -1)  # [2 * 2 * 2, ... * L]
        # trilinear weight of each corner: the offset on an axis where the corner is the ceiling, 1 - offset elsewhere
        axis_weights = torch.stack([1 - offset, offset])  # [2, ..., L, 3]
        corner_weights = (axis_weights[..., 0].view(2, 1, 1, *offset.shape[:-1])
                          * axis_weights[..., 1].view(1, 2, 1, *offset.shape[:-1])
                          * axis_weights[..., 2].view(1, 1, 2, *offset.shape[:-1]))
        encoded = _TrilinearRows.apply(self.hash_table, rows, corner_weights.reshape(8, -1))  # [... * L, F]
        encoded = encoded.view(*offset.shape[:-1], -1)  # [..., L, F]
        return torch.flatten(encoded, start_dim=-2, end_dim=-1)


class InstanceNerfactoField(NerfactoField):
    """NerfactoField plus an instance-label branch: hash grid over contracted positions -> MLP -> K logits."""

    def __init__(
        self,
        aabb: Tensor,
        num_images: int,
        num_labels: int,
        label_num_levels: int = 16,
        label_base_res: int = 16,
        label_max_res: int = 1024,
        label_log2_hashmap_size: int = 19,
        label_features_per_level: int = 2,
        label_hidden_dim: int = 64,
        label_num_layers: int = 2,
        label_top_k: int = DEFAULT_LABEL_TOP_K,
        implementation: Literal["tcnn", "torch"] = "tcnn",
        **nerfacto_kwargs,
    ) -> None:
        super().__init__(aabb, num_images, implementation=implementation, **nerfacto_kwargs)
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.num_labels = num_labels
        self.label_top_k = int(label_top_k)
        """Samples per ray at which the label branch is read (training, full render and fast renderer alike)."""
        # "tcnn" falls back to nerfstudio's pure-torch hash grid when tinycudann is not installed.
        self.label_encoding = OneGatherHashEncoding(
            num_levels=label_num_levels,
            min_res=label_base_res,
            max_res=label_max_res,
            log2_hashmap_size=label_log2_hashmap_size,
            features_per_level=label_features_per_level,
            implementation=implementation,
        )
        self.label_mlp = MLP(
            in_dim=self.label_encoding.get_out_dim(),
            num_layers=label_num_layers,
            layer_width=label_hidden_dim,
            out_dim=num_labels,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )

    def normalize_positions(self, positions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
        """World positions -> [0, 1]^3 the way nerfacto's density grid sees them (scene contraction or aabb)."""
        if self.spatial_distortion is not None:
            return (self.spatial_distortion(positions) + 2.0) / 4.0
        return SceneBox.get_normalized_positions(positions, self.aabb)

    def label_logits_at(self, positions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs K"]:
        """Instance logits at world positions; gradients never flow back into the positions."""
        normalized = self.normalize_positions(positions.detach()).clamp(0.0, 1.0)
        flat = normalized.reshape(-1, 3)
        logits = self.label_mlp(self.label_encoding(flat))
        return logits.reshape(*positions.shape[:-1], self.num_labels).to(positions.dtype)

    def composite_labels(
        self, positions: Float[Tensor, "N S 3"], weights: Float[Tensor, "N S"]
    ) -> Tuple[Float[Tensor, "N K"], Float[Tensor, "N k"], Tensor]:
        """Label log-probabilities of rays from their samples' positions and weights (see ``lift/labels.py``)."""
        return composite_top_k(self.label_logits_at, positions, weights, self.label_top_k)

    def label_parameters(self):
        """Parameters of the label branch only (its own optimizer group)."""
        return list(self.label_encoding.parameters()) + list(self.label_mlp.parameters())

    def geometry_parameters(self):
        """Every parameter that is not the label branch (density, colour, appearance)."""
        label_ids = {id(p) for p in self.label_parameters()}
        return [p for p in self.parameters() if id(p) not in label_ids]
