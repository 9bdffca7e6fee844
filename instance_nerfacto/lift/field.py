"""The instance-nerfacto field: nerfacto's density/colour field plus a separate hash grid + MLP for instance logits.

The label branch reads sample positions with gradients stopped and has its own parameters, so the label loss can only
move the label grid and label MLP, never density, colour or the proposal networks (3DIML's InstanceLift). ``forward``
returns nerfacto's outputs only: the model reads the label branch afterwards, at the heaviest samples of each ray
(``lift/labels.py``), once the weights are known.
"""

from __future__ import annotations

from typing import Literal, Tuple

from jaxtyping import Float
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.fields.nerfacto_field import NerfactoField
from torch import Tensor, nn

from instance_nerfacto.lift.labels import DEFAULT_LABEL_TOP_K, composite_top_k


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
        self.label_encoding = HashEncoding(
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
