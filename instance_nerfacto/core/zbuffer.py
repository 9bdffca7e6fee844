"""Z-buffering of points into a depth image: the one splatting rule of the project, used where a view's depth comes
from other views' depth (InstanceLoc's map depth for a new photo, InstanceMap's stereo depth of a frame between
keyframes)."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float


def zbuffer_depth(u: Float[np.ndarray, "N"] | torch.Tensor, v: Float[np.ndarray, "N"] | torch.Tensor,
                  z: Float[np.ndarray, "N"] | torch.Tensor, height: int, width: int) -> Float[np.ndarray, "H W"]:
    """z of the nearest point at every pixel (0 where none lands). ``u, v`` are in pixel-index coordinates (pixel
    (row, col) centred at (col, row)); each point covers the 2x2 pixels around it, so points back-projected at a
    stride of a few pixels, or seen from a slightly different pose, still close up."""
    u, v, z = (torch.as_tensor(a) for a in (u, v, z))
    u0, v0 = torch.floor(u).long(), torch.floor(v).long()
    # points whose 2x2 footprint touches the image, then the four footprint pixels in one scatter
    near_image = (u0 >= -1) & (u0 < width) & (v0 >= -1) & (v0 < height)
    u0, v0, z = u0[near_image], v0[near_image], z[near_image].to(torch.float32)
    col = torch.cat([u0, u0 + 1, u0, u0 + 1])
    row = torch.cat([v0, v0, v0 + 1, v0 + 1])
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    zbuffer = torch.full((height * width,), float("inf"))
    zbuffer.scatter_reduce_(0, row[inside] * width + col[inside], z.repeat(4)[inside], reduce="amin")
    depth = zbuffer.reshape(height, width).numpy()
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
