"""Dataset poses <-> the trained model's frame: the one place that maps between them.

nerfstudio's dataparser re-orients, re-centres and re-scales the poses of transforms.json. When ns-process-data wrote
the dataset, transforms.json also carries ``applied_transform`` (and possibly ``applied_scale``): the frames' matrices
are already in that transformed frame, and nerfstudio folds the same transform into ``dataparser_transform``::

    dataparser_transform = orient @ applied_transform        dataparser_scale = scale * applied_scale
    model c2w             = orient @ c2w_json, translation * scale

So a pose read from the dataset goes through ``orient`` only; applying ``dataparser_transform`` to it again (the
mistake this module exists to prevent) moves every COLMAP query camera to the wrong part of the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from jaxtyping import Float

from instance_nerfacto.core.files import try_read_json


@dataclass
class DatasetToModel:
    """The similarity transform from a dataset's transforms.json frame to the model's normalised frame."""

    orient: Float[np.ndarray, "4 4"]
    """Rotation + translation applied to transforms.json's camera-to-world matrices."""
    scale: float
    """Then the translations (and every length) are multiplied by this."""

    @classmethod
    def from_dataparser(cls, dataparser_transform: np.ndarray, dataparser_scale: float,
                        meta: Optional[dict] = None) -> "DatasetToModel":
        """From nerfstudio's dataparser outputs and the dataset's transforms.json (its ``applied_*`` entries)."""
        full = np.vstack([np.asarray(dataparser_transform, dtype=np.float64)[:3, :4], [0, 0, 0, 1]])
        scale = float(dataparser_scale)
        meta = meta or {}
        if "applied_transform" in meta:
            applied = np.vstack([np.asarray(meta["applied_transform"], dtype=np.float64)[:3, :4], [0, 0, 0, 1]])
            full = full @ np.linalg.inv(applied)
        if "applied_scale" in meta:
            scale /= float(meta["applied_scale"])
        return cls(full, scale)

    @classmethod
    def from_pipeline(cls, pipeline) -> "DatasetToModel":
        """From a loaded pipeline: its dataparser outputs and the training transforms.json it was parsed from."""
        outputs = pipeline.datamanager.train_dataparser_outputs
        return cls.from_dataparser(outputs.dataparser_transform.cpu().numpy(), float(outputs.dataparser_scale),
                                   training_meta(pipeline))

    def c2w(self, c2w_dataset: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "4 4"]:
        """A camera-to-world matrix of transforms.json (OpenGL convention) in the model's frame."""
        c2w = np.vstack([np.asarray(c2w_dataset, dtype=np.float64)[:3, :4], [0, 0, 0, 1]])
        out = self.orient @ c2w
        out[:3, 3] *= self.scale
        return out

    def points_to_dataset(self, points: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        """Model-frame points back in transforms.json's frame (where the user's poses live)."""
        rot, trans = self.orient[:3, :3], self.orient[:3, 3]
        return (np.asarray(points, dtype=np.float64) / self.scale - trans) @ rot


def training_meta(pipeline) -> dict:
    """The training dataset's transforms.json as a dict (empty when it cannot be found, e.g. another dataparser)."""
    data = getattr(pipeline.datamanager.dataparser.config, "data", None)
    if data is None:
        return {}
    path = Path(data)
    path = path if path.suffix == ".json" else path / "transforms.json"
    meta = try_read_json(path)
    return meta if isinstance(meta, dict) else {}


def frame_camera(frame, to_model: DatasetToModel, device):
    """A one-camera nerfstudio ``Cameras`` for a dataset frame (:class:`instance_nerfacto.core.dataset.Frame`), in
    the model's frame, with the frame's camera type and distortion."""
    import torch
    from nerfstudio.cameras.cameras import Cameras

    c2w = to_model.c2w(frame.c2w)
    return Cameras(camera_to_worlds=torch.from_numpy(c2w[None, :3, :4].astype(np.float32)),
                   **frame.camera.nerfstudio()).to(device)
