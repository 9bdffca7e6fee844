"""A seeded, furnished room rendered with pybullet's CPU tiny renderer: RGB, z-depth and per-pixel instance ids.

The room has "stuff" (floor, four walls) and "things": furniture built from textured boxes (tables, shelves, a
sideboard, cardboard boxes) and 15-30 small objects from ``pybullet_data`` or coloured primitives, standing on the
furniture and on the floor, with a few identical duplicates (same model, scale and colour). One pybullet body is one
instance; the segmentation buffer (body unique id) maps to instance ids 1..N that are the same in every frame.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from jaxtyping import Float, UInt8, UInt16

from data_preprocess.synth import textures
from instance_nerfacto.core.third_party import native_stderr_silenced

WALL_HEIGHT = 2.6
WALL_THICKNESS = 0.1
NEAR, FAR = 0.05, 30.0
LIGHT_DIRECTION = (0.6, 0.35, 1.0)  # towards the light, world frame; mostly overhead so shadows fall near objects


@dataclass
class Instance:
    """One physical object: its gt id (1..N), name shared by duplicates, and the pybullet body that draws it."""

    gt_id: int
    name: str
    is_thing: bool
    body: int
    support: Optional[int] = None
    """gt id of the instance it stands on (floor or furniture), for the frontend's merges."""


@dataclass
class Surface:
    """An axis-aligned horizontal rectangle objects can stand on."""

    x0: float
    x1: float
    y0: float
    y1: float
    z: float
    max_height: float
    support: int
    taken: List[Tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class ObjectModel:
    """A small object type: a pybullet_data URDF or a primitive, with its scale and colour (None keeps the model's)."""

    name: str
    urdf: Optional[str] = None
    scale: float = 1.0
    primitive: Optional[str] = None  # "sphere" | "cylinder" | "box"
    size: Tuple[float, ...] = ()
    rgba: Optional[Tuple[float, float, float, float]] = None
    texture: Optional[str] = None  # name of a textures.* generator


# Objects sized for a room seen from 1-3 m (pybullet's models are ~10 cm; scaled up so they span enough pixels).
CATALOG: List[ObjectModel] = [
    ObjectModel("duck", urdf="duck_vhacd.urdf", scale=3.6),
    ObjectModel("teddy", urdf="teddy_vhacd.urdf", scale=3.6),
    ObjectModel("mug", urdf="objects/mug.urdf", scale=2.3),
    ObjectModel("lego", urdf="lego/lego.urdf", scale=6.0),
    ObjectModel("jenga", urdf="jenga/jenga.urdf", scale=3.2),
    ObjectModel("soccerball", urdf="soccerball.urdf", scale=0.26),
    ObjectModel("tray", urdf="tray/traybox.urdf", scale=0.55),
    ObjectModel("cube", urdf="cube_small.urdf", scale=3.6),
    ObjectModel("toy", urdf="random_urdfs/{idx:03d}/{idx:03d}.urdf", scale=3.2),
    ObjectModel("ball", primitive="sphere", size=(0.1,)),  # weakly textured: flat colour
    ObjectModel("can", primitive="cylinder", size=(0.06, 0.2)),  # weakly textured: flat colour
    ObjectModel("vase", primitive="cylinder", size=(0.07, 0.3)),
    ObjectModel("book", primitive="box", size=(0.15, 0.11, 0.035), texture="book_cover"),
    ObjectModel("cushion", primitive="box", size=(0.13, 0.13, 0.04), texture="fabric"),
    ObjectModel("block", primitive="box", size=(0.08, 0.08, 0.08)),  # weakly textured: flat colour
]


class RoomScene:
    """Builds the room in its own pybullet DIRECT client; ``render`` gives RGB, depth and gt ids for one camera."""

    def __init__(self, seed: int, object_range: Tuple[int, int] = (18, 26)) -> None:
        with native_stderr_silenced():  # pybullet prints its build time when imported
            import pybullet
            import pybullet_data

        self.pb = pybullet
        self.rng = np.random.default_rng(seed)
        self.client = pybullet.connect(pybullet.DIRECT)
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.instances: List[Instance] = []
        self.surfaces: List[Surface] = []
        self.furniture_rects: List[Tuple[float, float, float, float]] = []
        self._texdir = tempfile.TemporaryDirectory(prefix="instance-synth-tex-")
        self._texture_count = 0
        self.width = float(self.rng.uniform(4.8, 5.8))
        self.depth = float(self.rng.uniform(4.2, 5.0))
        self._build_stuff()
        self._build_furniture()
        self._place_objects(int(self.rng.integers(object_range[0], object_range[1] + 1)))
        self.body_to_gt = np.zeros(max(i.body for i in self.instances) + 2, dtype=np.uint16)
        for inst in self.instances:
            self.body_to_gt[inst.body] = inst.gt_id

    def close(self) -> None:
        self.pb.disconnect(physicsClientId=self.client)
        self._texdir.cleanup()

    # ----------------------------------------------------------------------------------------------------------
    # building blocks

    def _texture(self, generator: Callable[..., np.ndarray], **kwargs) -> int:
        import cv2

        image = generator(self.rng, **kwargs)
        path = Path(self._texdir.name) / f"tex_{self._texture_count:03d}.png"
        self._texture_count += 1
        cv2.imwrite(str(path), image[..., ::-1])
        return self.pb.loadTexture(str(path), physicsClientId=self.client)

    def _add(self, name: str, is_thing: bool, body: int, support: Optional[int] = None) -> Instance:
        inst = Instance(gt_id=len(self.instances) + 1, name=name, is_thing=is_thing, body=body, support=support)
        self.instances.append(inst)
        return inst

    def _boxes_body(self, boxes: List[Tuple[Tuple[float, float, float], Tuple[float, float, float]]],
                    position: Tuple[float, float, float], texture: Optional[int],
                    rgba: Tuple[float, float, float, float] = (1, 1, 1, 1)) -> int:
        """One visual-only body from boxes given as (half extents, centre offset)."""
        pb = self.pb
        shape = pb.createVisualShapeArray(
            shapeTypes=[pb.GEOM_BOX] * len(boxes),
            halfExtents=[list(h) for h, _ in boxes],
            visualFramePositions=[list(c) for _, c in boxes],
            rgbaColors=[list(rgba)] * len(boxes),
            physicsClientId=self.client,
        )
        body = pb.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=list(position),
                                  physicsClientId=self.client)
        if texture is not None:
            pb.changeVisualShape(body, -1, textureUniqueId=texture, physicsClientId=self.client)
        return body

    def _build_stuff(self) -> None:
        hx, hy, t = self.width / 2, self.depth / 2, WALL_THICKNESS
        floor_tex = self._texture(textures.tiles if self.rng.random() < 0.5 else textures.wood, size=512)
        floor = self._boxes_body([((hx + t, hy + t, 0.02), (0, 0, -0.02))], (0, 0, 0), floor_tex)
        self.floor_id = self._add("floor", False, floor).gt_id
        walls = {
            "wall_north": ((hx + t, t / 2, WALL_HEIGHT / 2), (0, hy + t / 2, WALL_HEIGHT / 2)),
            "wall_south": ((hx + t, t / 2, WALL_HEIGHT / 2), (0, -hy - t / 2, WALL_HEIGHT / 2)),
            "wall_east": ((t / 2, hy, WALL_HEIGHT / 2), (hx + t / 2, 0, WALL_HEIGHT / 2)),
            "wall_west": ((t / 2, hy, WALL_HEIGHT / 2), (-hx - t / 2, 0, WALL_HEIGHT / 2)),
        }
        for name, (half, centre) in walls.items():
            body = self._boxes_body([(half, (0, 0, 0))], centre, self._texture(textures.plaster, size=512))
            self._add(name, False, body)
        margin = 0.15
        self.surfaces.append(Surface(-hx + margin, hx - margin, -hy + margin, hy - margin, 0.0, 0.5, self.floor_id))

    def _wall_slot(self, wall: str, length: float, deep: float) -> Tuple[float, float, float, bool]:
        """Centre (x, y) and yaw-free orientation flag for furniture of ``length`` x ``deep`` against ``wall``."""
        hx, hy = self.width / 2, self.depth / 2
        along_x = wall in ("wall_north", "wall_south")
        span = (hx if along_x else hy) - length / 2 - 0.3
        offset = float(self.rng.uniform(-span, span))
        if wall == "wall_north":
            return offset, hy - deep / 2 - 0.02, length, True
        if wall == "wall_south":
            return offset, -hy + deep / 2 + 0.02, length, True
        if wall == "wall_east":
            return hx - deep / 2 - 0.02, offset, length, False
        return -hx + deep / 2 + 0.02, offset, length, False

    def _free(self, rect: Tuple[float, float, float, float], rects, gap: float = 0.05) -> bool:
        x0, x1, y0, y1 = rect
        return all(x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0 for a0, a1, b0, b1 in rects)

    def _furniture(self, name: str, cx: float, cy: float, sx: float, sy: float,
                   boxes, tops: List[Tuple[float, float]], texture: int) -> None:
        """Add a furniture body (boxes relative to its centre); ``tops`` = (surface z, free height above)."""
        body = self._boxes_body(boxes, (cx, cy, 0), texture)
        inst = self._add(name, True, body, support=self.floor_id)
        rect = (cx - sx / 2, cx + sx / 2, cy - sy / 2, cy + sy / 2)
        self.furniture_rects.append(rect)
        self.surfaces[0].taken.append(rect)
        for z, free in tops:
            self.surfaces.append(Surface(rect[0] + 0.04, rect[1] - 0.04, rect[2] + 0.04, rect[3] - 0.04, z, free,
                                         inst.gt_id))

    def _table_boxes(self, sx: float, sy: float, height: float, top: float = 0.04, leg: float = 0.05):
        boxes = [((sx / 2, sy / 2, top / 2), (0, 0, height - top / 2))]
        for ix in (-1, 1):
            for iy in (-1, 1):
                boxes.append(((leg / 2, leg / 2, (height - top) / 2),
                              (ix * (sx / 2 - leg), iy * (sy / 2 - leg), (height - top) / 2)))
        return boxes

    def _build_furniture(self) -> None:
        rng = self.rng
        # a dining table near the centre and sometimes a low coffee table
        sx, sy = rng.uniform(1.0, 1.3), rng.uniform(0.65, 0.8)
        cx, cy = rng.uniform(-0.3, 0.3), rng.uniform(-0.25, 0.25)
        height = rng.uniform(0.7, 0.78)
        self._furniture("table", cx, cy, sx, sy, self._table_boxes(sx, sy, height), [(height, 0.6)],
                        self._texture(textures.wood, size=256))
        if rng.random() < 0.6:
            sx2, sy2, h2 = rng.uniform(0.6, 0.8), rng.uniform(0.45, 0.6), rng.uniform(0.4, 0.5)
            side = 1 if rng.random() < 0.5 else -1
            cx2 = cx + side * (sx / 2 + sx2 / 2 + rng.uniform(0.25, 0.4))
            if abs(cx2) + sx2 / 2 < self.width / 2 - 1.0:
                self._furniture("coffee_table", cx2, cy, sx2, sy2, self._table_boxes(sx2, sy2, h2), [(h2, 0.5)],
                                self._texture(textures.wood, size=256))
        walls = list(rng.permutation(["wall_north", "wall_south", "wall_east", "wall_west"]))
        # shelves against one or two walls
        for wall in walls[: int(rng.integers(1, 3))]:
            length, deep, height = rng.uniform(0.9, 1.3), 0.36, rng.uniform(1.5, 1.9)
            levels = int(rng.integers(3, 5))
            cx, cy, _, along_x = self._wall_slot(wall, length, deep)
            sx, sy = (length, deep) if along_x else (deep, length)
            board = 0.025
            boxes = []
            zs = np.linspace(0.12, height - board, levels)
            for z in zs:
                boxes.append(((sx / 2, sy / 2, board / 2), (0, 0, z - board / 2)))
            side_half = (board / 2, sy / 2, height / 2) if along_x else (sx / 2, board / 2, height / 2)
            for s in (-1, 1):
                offset = (s * (sx / 2 - board / 2), 0, height / 2) if along_x else (0, s * (sy / 2 - board / 2),
                                                                                    height / 2)
                boxes.append((side_half, offset))
            back = (sx / 2, board / 2, height / 2) if along_x else (board / 2, sy / 2, height / 2)
            back_sign = 1 if wall in ("wall_north", "wall_east") else -1
            back_off = (0, back_sign * (sy / 2 - board / 2), height / 2) if along_x else (
                back_sign * (sx / 2 - board / 2), 0, height / 2)
            boxes.append((back, back_off))
            gaps = np.diff(np.append(zs, height + 0.3)) - 0.04
            self._furniture("shelf", cx, cy, sx, sy, boxes, [(float(z), float(g)) for z, g in zip(zs, gaps)],
                            self._texture(textures.wood, size=256))
        # a sideboard against another wall
        wall = walls[2]
        length, deep, height = rng.uniform(1.0, 1.4), 0.45, rng.uniform(0.75, 0.9)
        cx, cy, _, along_x = self._wall_slot(wall, length, deep)
        sx, sy = (length, deep) if along_x else (deep, length)
        self._furniture("sideboard", cx, cy, sx, sy, [((sx / 2, sy / 2, height / 2), (0, 0, height / 2))],
                        [(height, 0.8)], self._texture(textures.wood, size=256))
        # cardboard boxes in the corners (identical pairs happen: same size and print)
        box_tex = self._texture(textures.cardboard)
        size = rng.uniform(0.3, 0.45)
        hx, hy = self.width / 2, self.depth / 2
        corners = rng.permutation([(1, 1), (1, -1), (-1, 1), (-1, -1)])
        for sxn, syn in corners[: int(rng.integers(2, 4))]:
            cx, cy = sxn * (hx - size / 2 - 0.1), syn * (hy - size / 2 - 0.1)
            rect = (cx - size / 2, cx + size / 2, cy - size / 2, cy + size / 2)
            if not self._free(rect, self.furniture_rects):
                continue
            self._furniture("cardboard_box", cx, cy, size, size, [((size / 2, size / 2, size / 2), (0, 0, size / 2))],
                            [(size, 0.4)], box_tex)

    # ----------------------------------------------------------------------------------------------------------
    # small objects

    def _spawn(self, model: ObjectModel, rgba, texture: Optional[int], yaw: float, toy_index: int) -> int:
        pb = self.pb
        orientation = pb.getQuaternionFromEuler([0, 0, yaw])
        if model.urdf is not None:
            urdf = model.urdf.format(idx=toy_index)
            body = pb.loadURDF(urdf, [0, 0, 0], orientation, globalScaling=model.scale, useFixedBase=True,
                               physicsClientId=self.client)
        else:
            kind = {"sphere": pb.GEOM_SPHERE, "cylinder": pb.GEOM_CYLINDER, "box": pb.GEOM_BOX}[model.primitive]
            kwargs = {"radius": model.size[0]} if kind == pb.GEOM_SPHERE else (
                {"radius": model.size[0], "length": model.size[1]} if kind == pb.GEOM_CYLINDER
                else {"halfExtents": list(model.size)})
            shape = pb.createVisualShape(kind, rgbaColor=list(rgba or (1, 1, 1, 1)), physicsClientId=self.client,
                                         **kwargs)
            # a collision shape too, only so getAABB knows the extent
            coll_kwargs = dict(kwargs)
            if "length" in coll_kwargs:  # createCollisionShape names it "height"
                coll_kwargs["height"] = coll_kwargs.pop("length")
            coll = pb.createCollisionShape(kind, physicsClientId=self.client, **coll_kwargs)
            body = pb.createMultiBody(0, coll, shape, [0, 0, 0], orientation, physicsClientId=self.client)
        if rgba is not None:
            pb.changeVisualShape(body, -1, rgbaColor=list(rgba), physicsClientId=self.client)
        if texture is not None:
            pb.changeVisualShape(body, -1, textureUniqueId=texture, physicsClientId=self.client)
        return body

    def _place_objects(self, count: int) -> None:
        rng = self.rng
        # a few models appear two or three times, identical (same scale, colour, texture, toy index)
        plan: List[Tuple[ObjectModel, Optional[tuple], Optional[int], int]] = []
        duplicated = rng.choice(len(CATALOG), size=int(rng.integers(2, 4)), replace=False)
        for idx in duplicated:
            variant = self._variant(CATALOG[idx])
            plan += [variant] * int(rng.integers(2, 4))
        while len(plan) < count:
            plan.append(self._variant(CATALOG[int(rng.integers(len(CATALOG)))]))
        for model, rgba, texture, toy in plan[:count]:
            self._place_one(model, rgba, texture, toy)

    def _variant(self, model: ObjectModel):
        rgba = None
        if model.urdf is None or model.name in ("mug", "cube"):
            rgba = tuple(float(c) for c in np.append(self.rng.uniform(0.15, 0.95, 3), 1.0))
        texture = None
        if model.texture is not None:
            texture = self._texture(getattr(textures, model.texture))
            rgba = (1.0, 1.0, 1.0, 1.0)
        return model, rgba, texture, int(self.rng.integers(0, 1000))

    def _place_one(self, model: ObjectModel, rgba, texture, toy: int) -> None:
        pb, rng = self.pb, self.rng
        yaw = float(rng.uniform(0, 2 * np.pi))
        body = self._spawn(model, rgba, texture, yaw, toy)
        lo, hi = (np.array(v) for v in pb.getAABB(body, physicsClientId=self.client))
        ext = hi - lo
        weights = np.array([2.0 if s.support != self.floor_id else 1.5 for s in self.surfaces])
        for _ in range(200):
            surf = self.surfaces[int(rng.choice(len(self.surfaces), p=weights / weights.sum()))]
            if ext[2] > surf.max_height or surf.x1 - surf.x0 < ext[0] or surf.y1 - surf.y0 < ext[1]:
                continue
            x = rng.uniform(surf.x0 + ext[0] / 2, surf.x1 - ext[0] / 2)
            y = rng.uniform(surf.y0 + ext[1] / 2, surf.y1 - ext[1] / 2)
            rect = (x - ext[0] / 2, x + ext[0] / 2, y - ext[1] / 2, y + ext[1] / 2)
            if not self._free(rect, surf.taken, gap=0.04):
                continue
            surf.taken.append(rect)
            pos, orn = pb.getBasePositionAndOrientation(body, physicsClientId=self.client)
            shift = np.array([x, y, surf.z + 0.001]) - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
            pb.resetBasePositionAndOrientation(body, list(np.array(pos) + shift), orn, physicsClientId=self.client)
            self._add(model.name, True, body, support=surf.support)
            return
        pb.removeBody(body, physicsClientId=self.client)  # no room left anywhere: skip this object

    # ----------------------------------------------------------------------------------------------------------
    # rendering

    def render(self, eye, target, width: int, height: int, fov_y_deg: float
               ) -> Tuple[UInt8[np.ndarray, "H W 3"], Float[np.ndarray, "H W"], UInt16[np.ndarray, "H W"],
                          Float[np.ndarray, "4 4"]]:
        """RGB, z-depth in metres (0 = nothing), gt ids (0 = void) and camera-to-world (OpenGL) for one view."""
        pb = self.pb
        view = pb.computeViewMatrix(list(eye), list(target), [0, 0, 1], physicsClientId=self.client)
        proj = pb.computeProjectionMatrixFOV(fov_y_deg, width / height, NEAR, FAR, physicsClientId=self.client)
        _, _, rgba, zbuf, seg = pb.getCameraImage(
            width, height, view, proj, renderer=pb.ER_TINY_RENDERER, shadow=1, lightDirection=list(LIGHT_DIRECTION),
            lightAmbientCoeff=0.55, lightDiffuseCoeff=0.5, lightSpecularCoeff=0.05, physicsClientId=self.client)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3].copy()
        zbuf = np.asarray(zbuf, dtype=np.float64).reshape(height, width)
        seg = np.asarray(seg, dtype=np.int64).reshape(height, width)
        valid = seg >= 0
        depth = np.where(valid, FAR * NEAR / (FAR - (FAR - NEAR) * zbuf), 0.0)
        gt = np.where(valid, self.body_to_gt[np.clip(seg, 0, len(self.body_to_gt) - 1)], 0).astype(np.uint16)
        view_w2c = np.asarray(view, dtype=np.float64).reshape(4, 4).T  # pybullet matrices are column-major
        return rgb, depth, gt, np.linalg.inv(view_w2c)

    def instances_json(self) -> Dict[str, Dict]:
        return {str(i.gt_id): {"name": i.name, "is_thing": i.is_thing} for i in self.instances}
