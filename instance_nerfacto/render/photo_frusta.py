"""Registered photos as camera frusta in the viewer: where ``instance-loc --images`` placed each photo.

``instance-viewer --photos OUT/poses.json`` draws every camera of a pose file in transforms.json's format (the poses
``instance-loc --images`` writes, or any dataset's transforms.json) beside nerfstudio's training cameras, in another
colour, with the photo as its picture. The poses are in the training dataset's frame; they go to the model's frame
through :class:`instance_nerfacto.render.cameras.DatasetToModel` (the one place that maps between them), then to the
viewer's scene as nerfstudio draws its own training cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from jaxtyping import Float, UInt8

from instance_nerfacto.core.dataset import load_dataset
from instance_nerfacto.render.cameras import DatasetToModel

PHOTO_COLOUR = (255, 140, 0)
"""Orange: nerfstudio draws its training cameras in its own colour; these stand apart from them."""
THUMBNAIL_HEIGHT = 100
"""Height of a frustum's picture, as nerfstudio's training cameras (``init_scene``)."""


@dataclass
class PhotoFrustum:
    """One photo's frustum in the viewer's scene coordinates."""

    name: str
    fov: float
    """Vertical field of view in radians."""
    aspect: float
    """Width / height."""
    wxyz: Float[np.ndarray, "4"]
    """Orientation (viser's quaternion of the camera looking down its -z as nerfstudio's cameras do)."""
    position: Float[np.ndarray, "3"]
    image: Optional[UInt8[np.ndarray, "h w 3"]] = None


def photo_frusta(poses: Path, to_model: DatasetToModel, scene_scale: float) -> List[PhotoFrustum]:
    """The frusta of every frame of ``poses`` (transforms.json format, the training data's frame): the model's pose of
    each, scaled by ``scene_scale`` (nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO``), with its photo when the file is
    there (a pose without its photo is still drawn)."""
    import viser.transforms as vtf

    out = []
    for frame in load_dataset(poses, check_files=False).frames:
        c2w = to_model.c2w(frame.c2w)
        rotation = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
        out.append(PhotoFrustum(name=f"/registered_photos/{frame.stem}",
                                fov=float(2 * np.arctan(frame.height / 2 / frame.fy)),
                                aspect=float(frame.width / frame.height), wxyz=np.asarray(rotation.wxyz),
                                position=c2w[:3, 3] * scene_scale, image=_thumbnail(frame.image_path)))
    return out


def _thumbnail(path: Path) -> Optional[np.ndarray]:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if bgr is None:
        return None
    width = max(1, round(bgr.shape[1] * THUMBNAIL_HEIGHT / bgr.shape[0]))
    return cv2.resize(bgr, (width, THUMBNAIL_HEIGHT), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()


def draw_photo_frusta(server, frusta: List[PhotoFrustum], scale: float) -> List[Tuple[str, object]]:
    """Add the frusta to a viser server's scene; clicking one moves the view to the photo's pose."""
    handles = []
    for f in frusta:
        handle = server.scene.add_camera_frustum(name=f.name, fov=f.fov, aspect=f.aspect, scale=scale, image=f.image,
                                                 wxyz=tuple(f.wxyz), position=tuple(f.position), color=PHOTO_COLOUR)

        def to_photo(event, wxyz=tuple(f.wxyz), position=tuple(f.position)) -> None:
            with event.client.atomic():
                event.client.camera.position = position
                event.client.camera.wxyz = wxyz

        handle.on_click(to_photo)
        handles.append((f.name, handle))
    return handles


def viewer_state_with_photos(base, poses: Path):
    """nerfstudio's ``ViewerState`` class, drawing ``poses``' photos once its own scene (training cameras) is up."""

    class ViewerStateWithPhotos(base):
        def init_scene(self, *args, **kwargs) -> None:
            super().init_scene(*args, **kwargs)
            from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

            frusta = photo_frusta(poses, DatasetToModel.from_pipeline(self.pipeline), VISER_NERFSTUDIO_SCALE_RATIO)
            draw_photo_frusta(self.viser_server, frusta, self.config.camera_frustum_scale)

    return ViewerStateWithPhotos
