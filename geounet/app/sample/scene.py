"""Scene geometry of the sample data: the road network and the buildings along it.

Everything here is in local map coordinates (metres, x east, y north from the bottom-left corner
of a scene) and rounded to the millimetre, so the rendering (:mod:`geounet.app.sample.render`),
the labels and the vectors (:mod:`geounet.app.sample.files`) all agree exactly. Every random draw
comes from the generator passed in, in a fixed order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import shapely

SIZE = 1024  #: pixels per side
RES = 0.5  #: metres per pixel
EXTENT = SIZE * RES  #: metres per side
#: Roof materials: reflectance in (blue, green, red, nir), and how often each is chosen.
ROOFS = {
    "white": (0.33, 0.35, 0.37, 0.40),
    "light_grey": (0.22, 0.235, 0.245, 0.26),
    "grey": (0.12, 0.13, 0.14, 0.16),
    "dark": (0.055, 0.06, 0.065, 0.075),
    "red_tile": (0.07, 0.085, 0.21, 0.29),
    "brown": (0.075, 0.095, 0.13, 0.19),
    "metal": (0.19, 0.205, 0.20, 0.21),
}
ROOF_P = (0.18, 0.17, 0.15, 0.12, 0.18, 0.12, 0.08)


@dataclass
class _Road:
    coords: np.ndarray  # (n, 2) local metres, x east, y north from the bottom-left corner
    width: float
    kind: str


@dataclass
class _Building:
    outline: np.ndarray  # (k, 2) local metres
    parts: list[np.ndarray]  # rectangles (4, 2) whose union is the outline
    center: np.ndarray
    axis: np.ndarray  # unit vector of the long side of the lot (along the road)
    height: float
    roof: str
    gabled: bool
    shape: str


@dataclass
class _Scene:
    roads: list[_Road]
    buildings: list[_Building]


# ----------------------------------------------------------------------------- roads


def _positions(rng: np.random.Generator, half: float, spacing: float) -> np.ndarray:
    start = -half + rng.uniform(0.3, 0.8) * spacing
    pos = np.arange(start, half, spacing)
    return pos + rng.uniform(-0.15, 0.15, pos.size) * spacing


def _wavy(rng: np.random.Generator, pos: float, half: float) -> np.ndarray:
    """A main road across the grid frame: ``(p, q)`` points with q running from -half to half."""
    q = np.linspace(-half, half, 61)
    amp = rng.choice([0.0, rng.uniform(4, 22)], p=[0.4, 0.6])
    p = pos + amp * np.sin(2 * np.pi * q / rng.uniform(500, 1100) + rng.uniform(0, 2 * np.pi))
    return np.column_stack([p, q])


def _side_street(rng: np.random.Generator, pa: np.ndarray, pb: np.ndarray, q: float) -> np.ndarray:
    """A street at about ``q`` from main ``pa`` to main ``pb`` (each ``(p, q)`` points)."""
    q2 = q + rng.uniform(-12, 12)
    a = np.array([np.interp(q, pa[:, 1], pa[:, 0]), q])
    b = np.array([np.interp(q2, pb[:, 1], pb[:, 0]), q2])
    if rng.random() < 0.25:  # dead end
        a, b = (
            (a, a + (b - a) * rng.uniform(0.5, 0.75))
            if rng.random() < 0.5
            else (b, b + (a - b) * 0.6)
        )
    t = np.linspace(0, 1, 12)[:, None]
    bend = rng.uniform(-6, 6) * np.sin(np.pi * t)
    d = b - a
    normal = np.array([-d[1], d[0]]) / np.sqrt(d @ d)
    return a + t * d + bend * normal


def _grid_roads(rng: np.random.Generator) -> list[tuple[np.ndarray, float, str]]:
    """Mains in two directions of a rotated, jittered grid plus side streets in the blocks."""
    half = 380.0
    ps = _positions(rng, half, rng.uniform(165, 200))
    qs = _positions(rng, half, rng.uniform(165, 200))
    along_q = [_wavy(rng, p, half) for p in ps]
    along_p = [_wavy(rng, q, half)[:, ::-1] for q in qs]
    lines = [(c, rng.uniform(7.5, 10), "main") for c in along_q + along_p]
    for i in range(len(ps) - 1):
        for j in range(len(qs) - 1):
            r = rng.random()
            if r < 0.4:
                q = rng.uniform(qs[j] + 55, qs[j + 1] - 55)
                lines.append((_side_street(rng, along_q[i], along_q[i + 1], q), 0.0, "side"))
            elif r < 0.7:
                p = rng.uniform(ps[i] + 55, ps[i + 1] - 55)
                flip = [c[:, ::-1] for c in (along_p[j], along_p[j + 1])]
                lines.append((_side_street(rng, *flip, p)[:, ::-1], 0.0, "side"))
    theta = rng.uniform(-0.5, 0.5)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    center = np.array([EXTENT / 2, EXTENT / 2])
    out = []
    for coords, width, kind in lines:
        w = width if kind == "main" else rng.uniform(5.5, 7.0)
        out.append((coords @ rot.T + center, w, kind))
    return out


def _arterial(rng: np.random.Generator) -> tuple[np.ndarray, float, str]:
    """A long curved road crossing the scene from the west edge to the north or east edge."""
    a = np.array([-20.0, rng.uniform(60, 200)])
    b = np.array([rng.uniform(300, 450), EXTENT + 20]) if rng.random() < 0.5 else None
    b = b if b is not None else np.array([EXTENT + 20, rng.uniform(320, 460)])
    c = (a + b) / 2 + rng.uniform(-90, 90, 2)
    t = np.linspace(0, 1, 48)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b, rng.uniform(10, 12), "arterial"


def _clip_segment(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """Liang-Barsky: the parameter range of segment ``a``-``b`` inside the scene, if any."""
    d, t0, t1 = b - a, 0.0, 1.0
    for p, q in ((-d[0], a[0]), (d[0], EXTENT - a[0]), (-d[1], a[1]), (d[1], EXTENT - a[1])):
        if p == 0:
            if q < 0:
                return None
        elif p < 0:
            t0 = max(t0, q / p)
        else:
            t1 = min(t1, q / p)
    return (t0, t1) if t0 < t1 else None


def _clip(coords: np.ndarray) -> list[np.ndarray]:
    """The pieces of a polyline inside the scene (numpy only, no GEOS, so stable everywhere)."""
    parts: list[list[np.ndarray]] = []
    open_part = False
    for a, b in itertools.pairwise(coords):
        tt = _clip_segment(a, b)
        if tt is None:
            open_part = False
            continue
        if not open_part or tt[0] > 0:
            parts.append([a + tt[0] * (b - a)])
        parts[-1].append(a + tt[1] * (b - a))
        open_part = tt[1] >= 1
    return [np.array(p) for p in parts]


def _make_roads(rng: np.random.Generator) -> list[_Road]:
    lines = _grid_roads(rng)
    if rng.random() < 0.6:
        lines.append(_arterial(rng))
    roads = []
    for coords, width, kind in lines:
        for part in _clip(coords):
            xy = np.round(part, 3)
            if np.sqrt((np.diff(xy, axis=0) ** 2).sum(axis=1)).sum() > 5:
                roads.append(_Road(xy, round(float(width), 1), kind))
    return roads


# ----------------------------------------------------------------------------- buildings


def _at(coords: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and unit tangent at arc length ``s`` along a polyline."""
    seg = np.diff(coords, axis=0)
    lens = np.sqrt((seg**2).sum(axis=1))
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1))
    t = (s - cum[i]) / max(lens[i], 1e-9)
    return coords[i] + t * seg[i], seg[i] / max(lens[i], 1e-9)


def _footprint(
    rng: np.random.Generator, width: float, depth: float, shape: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Outline and parts in the building frame (u along the axis, v across), centred at 0."""
    w, d = width / 2, depth / 2
    rect = np.array([[-w, -d], [w, -d], [w, d], [-w, d]])
    if shape == "rectangle":
        return rect, [rect]
    cw, cd = width * rng.uniform(0.35, 0.6), depth * rng.uniform(0.35, 0.6)
    outline = np.array([[-w, -d], [w, -d], [w, d - cd], [w - cw, d - cd], [w - cw, d], [-w, d]])
    parts = [np.array([[-w, -d], [w, -d], [w, d - cd], [-w, d - cd]]),
             np.array([[-w, d - cd], [w - cw, d - cd], [w - cw, d], [-w, d]])]  # fmt: skip
    flip = np.array([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0])])
    return outline * flip, [p * flip for p in parts]


def _building(
    rng: np.random.Generator,
    center: np.ndarray,
    axis: np.ndarray,
    size: tuple[float, float],
    shape: str,
) -> _Building:
    outline, parts = _footprint(rng, size[0], size[1], shape)
    normal = np.array([-axis[1], axis[0]])
    frame = np.stack([axis, normal])

    def world(p: np.ndarray) -> np.ndarray:
        return np.round(center + p @ frame, 3)

    area = size[0] * size[1]
    height = float(rng.uniform(3, 7) + (rng.uniform(0, 6) if area > 300 else 0.0))
    roof = str(rng.choice(list(ROOFS), p=ROOF_P))
    gabled = shape == "rectangle" and area < 450 and rng.random() < 0.55
    return _Building(world(outline), [world(p) for p in parts], center, axis, height, roof,
                     gabled, shape)  # fmt: skip


class _Placer:
    """Accepts buildings that keep clear of roads and of each other."""

    def __init__(self, roads: list[_Road]) -> None:
        self.lines = np.array([shapely.LineString(r.coords) for r in roads])
        self.half = np.array([r.width / 2 for r in roads])
        self.polys: list[shapely.Polygon] = []
        self.buildings: list[_Building] = []
        self.area = 0.0
        self.box = shapely.box(0, 0, EXTENT, EXTENT)

    def fits(self, b: _Building, road_gap: float, gap: float, ignore: int = 0) -> bool:
        poly = shapely.Polygon(b.outline)
        if np.any(shapely.distance(poly, self.lines) < self.half + road_gap):
            return False
        if not shapely.intersects(poly, self.box):
            return False
        others = self.polys[: len(self.polys) - ignore]
        return not others or float(np.min(shapely.distance(poly, others))) >= gap

    def add(self, b: _Building) -> None:
        poly = shapely.Polygon(b.outline)
        self.polys.append(poly)
        self.buildings.append(b)
        self.area += shapely.intersection(poly, self.box).area

    def nearest_axis(self, p: np.ndarray) -> np.ndarray:
        point = shapely.Point(p)
        i = int(np.argmin(shapely.distance(point, self.lines)))
        s = float(shapely.line_locate_point(self.lines[i], point))
        return _at(shapely.get_coordinates(self.lines[i]), s)[1]


def _rotate(rng: np.random.Generator, axis: np.ndarray) -> np.ndarray:
    a = rng.uniform(0.3, 0.8) * rng.choice([-1.0, 1.0])
    c, s = np.cos(a), np.sin(a)
    return np.array([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1]])


def _frontage(rng: np.random.Generator, placer: _Placer, road: _Road, side: float) -> None:
    """Walk along one side of a road placing lots: single houses, L-shapes and terraces."""
    length = float(np.sqrt((np.diff(road.coords, axis=0) ** 2).sum(axis=1)).sum())
    s = rng.uniform(0, 10)
    while s < length - 8:
        if rng.random() < 0.15:  # vacant lot
            s += rng.uniform(10, 30)
            continue
        p, axis = _at(road.coords, s)
        normal = side * np.array([-axis[1], axis[0]])
        setback = road.width / 2 + rng.uniform(3.5, 9)
        n_terrace = int(rng.choice([1, 2, 3, 4], p=[0.7, 0.12, 0.1, 0.08]))
        shape = "L" if n_terrace == 1 and rng.random() < 0.3 else "rectangle"
        if n_terrace == 1 and rng.random() < 0.1:
            axis = _rotate(rng, axis)
        u = 0.0
        for k in range(n_terrace):
            w, d = rng.uniform(9, 22), rng.uniform(9, 18)
            u += w / 2
            b = _building(rng, p + axis * u + normal * (setback + d / 2), axis, (w, d), shape)
            u += w / 2
            if not placer.fits(b, 2.5, 2.0, ignore=k):
                break
            placer.add(b)
        s += max(u, 6.0) + rng.uniform(2.5, 12)


def _infill(rng: np.random.Generator, placer: _Placer, target: float) -> None:
    """Scatter larger buildings inside the blocks until ``target`` of the area is built."""
    for _ in range(1500):
        if placer.area >= target * EXTENT**2:
            return
        c = rng.uniform(-10, EXTENT + 10, 2)
        axis = placer.nearest_axis(c)
        if rng.random() < 0.15:
            axis = _rotate(rng, axis)
        shape = "L" if rng.random() < 0.35 else "rectangle"
        b = _building(rng, c, axis, (rng.uniform(10, 30), rng.uniform(10, 24)), shape)
        if placer.fits(b, 4.0, 3.0):
            placer.add(b)


def _make_scene(rng: np.random.Generator) -> _Scene:
    roads = _make_roads(rng)
    placer = _Placer(roads)
    for i in rng.permutation(len(roads)):
        for side in (1.0, -1.0):
            _frontage(rng, placer, roads[i], side)
    _infill(rng, placer, rng.uniform(0.13, 0.16))
    return _Scene(roads, placer.buildings)
