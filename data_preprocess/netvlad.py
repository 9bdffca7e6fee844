"""NetVLAD global descriptors (the paper's pair retrieval) on a torchvision VGG16 backbone, from a local weights file.

The weights file is a state dict of :class:`NetVLAD` (``backbone.*`` = VGG16 conv layers up to conv5_3, ``pool.*`` =
the NetVLAD layer: ``centroids`` [K, 512] and ``conv.weight`` / ``conv.bias``), as saved by ``torch.save(model.
state_dict())``. Nothing is ever downloaded: a missing file is an InputError.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
from jaxtyping import Float

from instance_nerfacto.core.errors import fail


def _build(n_clusters: int = 64):
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchvision.models import vgg16

    class NetVLADLayer(nn.Module):
        """Soft-assignment of local descriptors to K centroids; residuals summed per centroid (Arandjelovic 2016)."""

        def __init__(self, dim: int = 512, clusters: int = n_clusters) -> None:
            super().__init__()
            self.conv = nn.Conv2d(dim, clusters, kernel_size=1, bias=True)
            self.centroids = nn.Parameter(torch.rand(clusters, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c = x.shape[:2]
            x = F.normalize(x, p=2, dim=1)
            soft = F.softmax(self.conv(x).view(n, -1, x.shape[2] * x.shape[3]), dim=1)  # N K P
            flat = x.view(n, c, -1)  # N C P
            vlad = torch.einsum("nkp,ncp->nkc", soft, flat) - soft.sum(-1)[..., None] * self.centroids[None]
            vlad = F.normalize(vlad, p=2, dim=2).reshape(n, -1)
            return F.normalize(vlad, p=2, dim=1)

    class NetVLAD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # VGG16 conv layers up to conv5_3 + ReLU (the last max-pool is dropped, as in NetVLAD)
            self.backbone = nn.Sequential(*list(vgg16(weights=None).features.children())[:-1])
            self.pool = NetVLADLayer()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(self.backbone(x))

    return NetVLAD()


def load_netvlad(weights: Path):
    weights = Path(weights)
    if not weights.is_file():
        fail("NetVLAD weights file does not exist", weights, "pass --netvlad-weights a local VGG16-NetVLAD state dict")
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        fail(f"cannot load NetVLAD weights ({type(err).__name__})", weights, "pass a torch state dict file")
    model = _build(n_clusters=int(state["pool.centroids"].shape[0]) if "pool.centroids" in state else 64)
    try:
        model.load_state_dict(state)
    except Exception as err:
        fail(f"NetVLAD weights do not fit the model ({str(err).splitlines()[0]})", weights,
             "save the state dict of data_preprocess.netvlad's model (backbone.*, pool.*)")
    return model.eval()


def netvlad_descriptors(image_paths: List[Path], weights: Path, size: int = 240) -> Float[np.ndarray, "F D"]:
    """One L2-normalised NetVLAD descriptor per image (images resized so the long side is ``size``)."""
    import cv2

    model = load_netvlad(weights)
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = []
    with torch.inference_mode():
        for path in image_paths:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                fail("cannot decode image", path, "replace the file")
            scale = size / max(img.shape[:2])
            img = cv2.resize(img, (max(16, int(img.shape[1] * scale)), max(16, int(img.shape[0] * scale))))
            x = (torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 255 - mean) / std
            out.append(model(x[None])[0].numpy())
    return np.stack(out).astype(np.float32)
