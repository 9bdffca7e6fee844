"""Z-buffering of points into a depth image: the one splatting rule of the project, used where a view's depth comes
from other views' depth (InstanceLoc's map depth for a new photo, InstanceMap's stereo depth of a frame between
keyframes)."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float


def zbuffer_depth(u: Float[np.ndarray, "N"] | torch.Tensor, v: Float[np.ndarray, "N"] | torch.Tensor,
                  z: Float[np.ndarray, "N"] | torch.Tensor, height: int, width: int,
                  footprint: int = 2) -> Float[np.ndarray, "H W"]:
    """z of the nearest point at every pixel (0 where none lands). ``u, v`` are in pixel-index coordinates (pixel
    (row, col) centred at (col, row)). ``footprint`` 2: each point covers the 2x2 pixels around it, so points from
    every pixel of a nearby view, or from a stride of a few pixels over many views, close up; 3: the 3x3 pixels
    centred on its nearest pixel, gap-free for points from every 2nd pixel of one nearby view (two points 2 px
    apart each covering 2 px leave a row between them whenever they straddle pixel centres)."""
    u, v, z = (torch.as_tensor(a) for a in (u, v, z))
    if footprint == 2:
        u0, v0, offsets = torch.floor(u).long(), torch.floor(v).long(), (0, 1)
    elif footprint == 3:
        u0, v0, offsets = torch.round(u).long(), torch.round(v).long(), (-1, 0, 1)
    else:
        raise ValueError(f"footprint must be 2 or 3, got {footprint}")
    # points whose footprint touches the image, then all footprint pixels in one scatter
    near_image = (u0 >= -1) & (u0 <= width) & (v0 >= -1) & (v0 <= height)
    u0, v0, z = u0[near_image], v0[near_image], z[near_image].to(torch.float32)
    col = torch.cat([u0 + du for dv in offsets for du in offsets])
    row = torch.cat([v0 + dv for dv in offsets for du in offsets])
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    zbuffer = torch.full((height * width,), float("inf"))
    zbuffer.scatter_reduce_(0, row[inside] * width + col[inside], z.repeat(len(offsets) ** 2)[inside], reduce="amin")
    depth = zbuffer.reshape(height, width).numpy()
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
