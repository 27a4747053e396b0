"""Deterministic synthetic sample data: two aerial-like scenes with labels and vectors.

The scenes imitate 4-band (blue, green, red, near-infrared) aerial imagery at 0.5 m in UTM
zone 16N: textured ground with vegetation bright in the near-infrared, a connected network of
asphalt roads with sidewalks, markings and cars, rectangular and L-shaped buildings with roof
tones, gabled and flat roofs and cast shadows, trees, blur and sensor noise. Everything is
drawn from geometry made in map coordinates, so labels and vectors agree exactly.

The same seed gives bit-identical pixels and identical features: every random draw comes from
:func:`numpy.random.default_rng` seeded per scene and all coordinates are rounded to the
millimetre before anything is drawn from them.

Example:
    Not run as a doctest: it writes the sample scenes, which takes seconds.

    >>> paths = generate_sample_data("sample_data", overwrite=True)   # doctest: +SKIP
    >>> sorted(paths)                                                  # doctest: +SKIP
    ['quicklook', 'test', 'test_buildings', 'test_labels', 'test_roads', 'train', ...]

From the shell: ``python -m geounet.app.sample sample_data [--overwrite]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from geounet.core.classes import classes_to_json, colormap, make_classes
from geounet.core.errors import OutputExistsError
from geounet.core.paths import user_data_dir
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.io.raster import atomic_output, write_raster
from geounet.viz.bands import rgb_bands

__all__ = [
    "BANDS",
    "DEFAULT_SEED",
    "EPSG",
    "NODATA_STRIP",
    "SAMPLE_FILES",
    "ensure_sample_data",
    "generate_sample_data",
    "main",
]

SIZE = 1024  #: pixels per side
RES = 0.5  #: metres per pixel
EXTENT = SIZE * RES  #: metres per side
EPSG = 32616  #: WGS 84 / UTM zone 16N
#: Bottom-left corner of each scene (easting, northing), whole metres.
ORIGINS = {"train": (500_000.0, 3_800_000.0), "test": (501_000.0, 3_800_000.0)}
NODATA_STRIP = 40  #: width in pixels of the nodata strip along the east edge of test.tif
BANDS = ("blue", "green", "red", "nir")
DEFAULT_SEED = 16118
#: Keys returned by :func:`generate_sample_data` and their file names.
SAMPLE_FILES = {
    "train": "train.tif",
    "train_labels": "train_labels.tif",
    "train_buildings": "train_buildings.gpkg",
    "train_roads": "train_roads.gpkg",
    "test": "test.tif",
    "test_labels": "test_labels.tif",
    "test_buildings": "test_buildings.gpkg",
    "test_roads": "test_roads.gpkg",
}
QUICKLOOK = "quicklook.png"

# Shadow displacement per metre of height (sun at azimuth 155 deg, zenith 35 deg), and the unit
# vector towards the sun; literals so no trigonometry enters the geometry.
SHADOW_PER_M = np.array([-0.296, 0.634])
SUN = np.array([0.4226, -0.9063])
# Reflectance of materials in (blue, green, red, nir).
GRASS = (0.045, 0.09, 0.06, 0.42)
DRY = (0.08, 0.11, 0.11, 0.29)
SOIL = (0.10, 0.12, 0.15, 0.23)
TREE = (0.035, 0.08, 0.045, 0.40)
ASPHALT = (0.085, 0.093, 0.10, 0.115)
CONCRETE = (0.23, 0.25, 0.26, 0.28)
PAINT = (0.55, 0.56, 0.56, 0.55)
SHADE = (0.5, 0.42, 0.38, 0.33)  # fraction of light left in shadow (sky light is blue)
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
CARS = ((0.45, 0.47, 0.48, 0.46), (0.04, 0.04, 0.045, 0.05), (0.25, 0.26, 0.27, 0.27),
        (0.06, 0.05, 0.30, 0.30), (0.14, 0.08, 0.05, 0.12))  # fmt: skip
GAIN = 5000.0  # DN per unit reflectance
OFFSET = (250.0, 170.0, 110.0, 70.0)  # path radiance (haze) in DN
NOISE_READ, NOISE_SHOT = 2.5, 0.025  # sensor noise: sigma**2 = read**2 + shot * DN


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


# ----------------------------------------------------------------------------- noise


def _bspline_rows(low: np.ndarray, scale: int) -> np.ndarray:
    """Upsample the rows of ``low`` by ``scale`` with the cubic B-spline (smooth, separable)."""
    p = np.arange(SIZE) / scale + 1.0
    base = np.floor(p).astype(np.intp)
    t = (p - base)[:, None]
    weights = ((1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3)
    return sum(w / 6 * low[base - 1 + k] for k, w in enumerate(weights))


def _noise(rng: np.random.Generator, scale: int) -> np.ndarray:
    """Smooth noise of about unit variance with features about ``scale`` pixels across."""
    low = rng.standard_normal((SIZE // scale + 4, SIZE // scale + 4))
    return _bspline_rows(_bspline_rows(low, scale).T, scale).T / 0.48


def _fbm(rng: np.random.Generator, scales: Sequence[int], gains: Sequence[float]) -> np.ndarray:
    total = sum(g * _noise(rng, s) for s, g in zip(scales, gains))
    return total / np.sqrt(sum(g * g for g in gains))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _mat(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(4, 1, 1)


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


# ----------------------------------------------------------------------------- rendering


def _pixel_xy(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """Local map coordinates of the pixel centres of a window (x east, y north)."""
    x = (np.arange(c0, c1) + 0.5) * RES
    y = EXTENT - (np.arange(r0, r1) + 0.5) * RES
    return x[None, :], y[:, None]


def _window(lo: np.ndarray, hi: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
    c0, c1 = int(np.floor((lo[0] - pad) / RES)), int(np.ceil((hi[0] + pad) / RES))
    r0, r1 = int(np.floor((EXTENT - hi[1] - pad) / RES)), int(np.ceil((EXTENT - lo[1] + pad) / RES))
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, SIZE), min(c1, SIZE)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


@dataclass
class _RoadFields:
    mask: np.ndarray  # pixel centre within width/2 of a centre line
    alpha: np.ndarray  # area coverage (anti-aliased edge)
    dist: np.ndarray  # distance to the nearest centre line
    along: np.ndarray  # arc length along the nearest road
    index: np.ndarray  # nearest road
    count: np.ndarray  # how many roads cover the pixel (>1 in junctions)


def _road_fields(roads: list[_Road], reach: float = 3.0) -> _RoadFields:
    f = _RoadFields(np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE)),
                    np.full((SIZE, SIZE), np.inf), np.zeros((SIZE, SIZE)),
                    np.full((SIZE, SIZE), -1), np.zeros((SIZE, SIZE), np.int32))  # fmt: skip
    for k, road in enumerate(roads):
        hw, covered, s0 = road.width / 2, np.zeros((SIZE, SIZE), bool), 0.0
        for a, b in itertools.pairwise(road.coords):
            d_ab = b - a
            seg_len2 = max(float(d_ab @ d_ab), 1e-12)
            win = _window(np.minimum(a, b), np.maximum(a, b), hw + reach)
            if win is not None:
                r0, r1, c0, c1 = win
                x, y = _pixel_xy(*win)
                t = np.clip(((x - a[0]) * d_ab[0] + (y - a[1]) * d_ab[1]) / seg_len2, 0, 1)
                d = np.sqrt((x - a[0] - t * d_ab[0]) ** 2 + (y - a[1] - t * d_ab[1]) ** 2)
                sl = np.s_[r0:r1, c0:c1]
                covered[sl] |= d <= hw
                f.alpha[sl] = np.maximum(f.alpha[sl], np.clip((hw - d) / RES + 0.5, 0, 1))
                better = d < f.dist[sl]
                f.dist[sl][better] = d[better]
                f.along[sl][better] = (s0 + t * np.sqrt(seg_len2))[better]
                f.index[sl][better] = k
            s0 += np.sqrt(seg_len2)
        f.count += covered
        f.mask |= covered
    return f


def _ground(rng: np.random.Generator, built: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground reflectance (4, H, W) and the vegetation fraction; lawns gather around houses."""
    small = built.reshape(SIZE // 8, 8, SIZE // 8, 8).mean(axis=(1, 3))
    yards = ndimage.zoom(ndimage.gaussian_filter(small, 3.0), 8, order=1)
    veg = _fbm(rng, (256, 128, 64, 16), (1, 0.6, 0.4, 0.25)) + 6.0 * yards + 0.3
    f_veg = _sigmoid(2.5 * veg)
    soil = _sigmoid(2.0 * _fbm(rng, (128, 64, 16), (1, 0.6, 0.4)) - 1.3)
    bare = soil * _mat(SOIL) + (1 - soil) * _mat(DRY)
    green = _mat(GRASS) * (1 + 0.12 * _noise(rng, 32) * np.array([0, 0.5, 0, 1]).reshape(4, 1, 1))
    tex = 1 + 0.06 * _noise(rng, 16) + 0.035 * _noise(rng, 4)
    return (f_veg * green + (1 - f_veg) * bare) * tex, f_veg


def _paint_roads(
    rng: np.random.Generator, img: np.ndarray, roads: list[_Road], f: _RoadFields
) -> None:
    """Sidewalks, asphalt (a tone per road, patches), centre and edge markings."""
    half = np.array([r.width / 2 for r in roads] + [0.0])[f.index]
    major = np.array([r.kind != "side" for r in roads] + [False])[f.index]
    walk = major & (f.dist > half) & (f.dist <= half + 1.8) & ~f.mask
    img[:, walk] = 0.6 * img[:, walk] + 0.4 * _mat(CONCRETE)[:, 0] * 1.05
    tones = np.array([rng.uniform(0.8, 1.35) for _ in roads] + [1.0])[f.index]
    patches = 1 + 0.05 * _noise(rng, 24) + 0.025 * _noise(rng, 4)
    asphalt = _mat(ASPHALT) * tones * patches
    img[:] = img * (1 - f.alpha) + asphalt * f.alpha
    single = f.count == 1
    dash = major & single & (f.dist < 0.3) & (np.mod(f.along, 9.0) < 4.5)
    edge = major & single & (np.abs(f.dist - (half - 0.6)) < 0.25)
    for m, a in ((dash, 0.55), (edge, 0.35)):
        img[:, m] = (1 - a) * img[:, m] + a * _mat(PAINT)[:, 0]


def _stamp_rect(
    img: np.ndarray,
    center: np.ndarray,
    axis: np.ndarray,
    size: tuple[float, float],
    color: np.ndarray,
) -> None:
    """Paint an oriented rectangle (a car) with a darker windscreen."""
    win = _window(center - 3, center + 3, 0)
    if win is None:
        return
    r0, r1, c0, c1 = win
    x, y = _pixel_xy(*win)
    u = (x - center[0]) * axis[0] + (y - center[1]) * axis[1]
    v = -(x - center[0]) * axis[1] + (y - center[1]) * axis[0]
    body = (np.abs(u) <= size[0] / 2) & (np.abs(v) <= size[1] / 2)
    glass = body & (u > 0.5) & (u < 1.2)
    sl = img[:, r0:r1, c0:c1]
    sl[:, body] = color[:, None]
    sl[:, glass] *= 0.35


def _cars(rng: np.random.Generator, img: np.ndarray, roads: list[_Road], f: _RoadFields) -> None:
    for road in roads:
        length = float(np.sqrt((np.diff(road.coords, axis=0) ** 2).sum(axis=1)).sum())
        for s in np.sort(rng.uniform(8, max(length - 8, 8.5), rng.poisson(length / 70))):
            p, axis = _at(road.coords, float(s))
            lane = rng.choice([-1.0, 1.0])
            c = p + lane * road.width / 4 * np.array([-axis[1], axis[0]])
            row, col = int((EXTENT - c[1]) / RES), int(c[0] / RES)
            if 0 <= row < SIZE and 0 <= col < SIZE and f.count[row, col] == 1:
                color = np.asarray(CARS[rng.integers(len(CARS))]) * rng.uniform(0.9, 1.1)
                _stamp_rect(img, c, axis * lane, (4.4, 1.8), color)


def _local_transform() -> Affine:
    """Pixel grid of a scene in local coordinates (origin at the bottom-left corner)."""
    return Affine(RES, 0.0, 0.0, 0.0, -RES, EXTENT)


def _shadows(buildings: list[_Building]) -> np.ndarray:
    """Cast-shadow mask of the buildings (rasterized swept footprints)."""
    hulls = []
    for b in buildings:
        for part in b.parts:
            pts = np.concatenate([part, np.round(part + SHADOW_PER_M * b.height, 3)])
            hulls.append(shapely.MultiPoint(pts).convex_hull)
    if not hulls:
        return np.zeros((SIZE, SIZE), bool)
    out = rasterize(hulls, (SIZE, SIZE), transform=_local_transform(), dtype="uint8")
    return out.astype(bool)


def _trees(
    rng: np.random.Generator, blocked: np.ndarray, f_veg: np.ndarray
) -> list[tuple[np.ndarray, float, float]]:
    """Tree crowns ``(centre, radius, height)`` in vegetated places clear of roads and roofs."""
    free = ndimage.distance_transform_edt(~blocked) * RES
    trees = []
    for _ in range(int(rng.integers(900, 1500))):
        c = rng.uniform(0, EXTENT, 2)
        r = rng.uniform(1.5, 4.5)
        row, col = int((EXTENT - c[1]) / RES), int(c[0] / RES)
        if free[row, col] > r + 0.5 and rng.random() < 0.9 * f_veg[row, col] ** 2:
            trees.append((c, r, rng.uniform(4, 12)))
    return trees


def _tree_shadows(trees: list[tuple[np.ndarray, float, float]], mask: np.ndarray) -> None:
    for c, r, h in trees:
        t = SHADOW_PER_M * h
        win = _window(np.minimum(c, c + t) - r, np.maximum(c, c + t) + r, 0)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        x, y = _pixel_xy(*win)
        k = np.clip(((x - c[0]) * t[0] + (y - c[1]) * t[1]) / (t @ t), 0, 1)
        d2 = (x - c[0] - k * t[0]) ** 2 + (y - c[1] - k * t[1]) ** 2
        mask[r0:r1, c0:c1] |= d2 <= r * r


def _paint_trees(
    img: np.ndarray, trees: list[tuple[np.ndarray, float, float]], tex: np.ndarray
) -> None:
    for c, r, _ in trees:
        win = _window(c - r, c + r, RES)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        x, y = _pixel_xy(*win)
        dx, dy = x - c[0], y - c[1]
        d = np.sqrt(dx * dx + dy * dy)
        alpha = np.clip((r - d) / RES + 0.5, 0, 1)
        shade = np.clip(0.9 + 0.4 * (dx * SUN[0] + dy * SUN[1]) / r, 0.45, 1.3)
        crown = _mat(TREE) * shade * tex[r0:r1, c0:c1]
        sl = img[:, r0:r1, c0:c1]
        sl[:] = sl * (1 - alpha) + crown * alpha


def _paint_roofs(
    rng: np.random.Generator, img: np.ndarray, scene: _Scene, ids: np.ndarray, tex: np.ndarray
) -> None:
    """Roofs: a material per building, gables lit on the sun side, parapet edges, texture."""
    edge = ids != ndimage.grey_erosion(ids, size=3)
    for i, b in enumerate(scene.buildings, start=1):
        win = _window(b.outline.min(axis=0), b.outline.max(axis=0), RES)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        m = ids[r0:r1, c0:c1] == i
        if not m.any():
            continue
        x, y = _pixel_xy(*win)
        normal = np.array([-b.axis[1], b.axis[0]])
        v = (x - b.center[0]) * normal[0] + (y - b.center[1]) * normal[1]
        shade = np.ones_like(v)
        if b.gabled:
            lit = np.sign(v) == np.sign(normal @ SUN)
            shade = np.where(lit, 1.12, 0.8) * np.where(np.abs(v) < 0.35, 0.85, 1.0)
        else:
            shade = np.where(edge[r0:r1, c0:c1], 0.82, 1.0) * shade
        tone = (
            _mat(ROOFS[b.roof])
            * rng.uniform(0.85, 1.15)
            * (1 + rng.uniform(-0.06, 0.06, (4, 1, 1)))
        )
        sl = img[:, r0:r1, c0:c1]
        sl[:, m] = (tone * shade * tex[r0:r1, c0:c1])[:, m]


def _render(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance image (4, H, W) and the label array."""
    shapes = [(shapely.Polygon(b.outline), i) for i, b in enumerate(scene.buildings, start=1)]
    ids = rasterize(shapes, (SIZE, SIZE), transform=_local_transform(), dtype="int32")
    roads = _road_fields(scene.roads)
    img, f_veg = _ground(rng, (ids > 0).astype(np.float64))
    _paint_roads(rng, img, scene.roads, roads)
    _cars(rng, img, scene.roads, roads)
    trees = _trees(rng, (roads.dist < np.inf) | (ids > 0), f_veg)
    shadow = _shadows(scene.buildings)
    _tree_shadows(trees, shadow)
    soft = ndimage.gaussian_filter(shadow.astype(np.float64), 0.7)
    img *= 1 - soft * (1 - _mat(SHADE))
    fine = _noise(rng, 2)
    _paint_trees(img, trees, 1 + 0.2 * fine)
    _paint_roofs(rng, img, scene, ids, 1 + 0.04 * fine)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[roads.mask] = 2
    labels[ids > 0] = 1
    return img, labels


def _to_dn(rng: np.random.Generator, refl: np.ndarray) -> np.ndarray:
    """Blur (optics), convert to DN, add shot and read noise, quantise to 12-bit uint16."""
    dn = np.empty_like(refl)
    for b in range(4):
        dn[b] = OFFSET[b] + GAIN * ndimage.gaussian_filter(refl[b], 0.6)
    sigma = np.sqrt(NOISE_READ**2 + NOISE_SHOT * dn)
    dn += sigma * rng.standard_normal(dn.shape)
    return np.clip(np.rint(dn), 1, 4095).astype(np.uint16)


# ----------------------------------------------------------------------------- files


def _scene_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if name == "train" else 1])


def _make(seed: int, name: str) -> tuple[np.ndarray, np.ndarray, _Scene]:
    """The uint16 image, the uint8 labels and the geometry of one scene."""
    rng = _scene_rng(seed, name)
    scene = _make_scene(rng)
    refl, labels = _render(rng, scene)
    image = _to_dn(rng, refl)
    if name == "test":
        image[:, :, SIZE - NODATA_STRIP :] = 0
        labels[:, SIZE - NODATA_STRIP :] = IGNORE_INDEX
    return image, labels, scene


def _to_map(coords: np.ndarray, name: str) -> np.ndarray:
    return coords + np.asarray(ORIGINS[name])


def _write_vectors(scene: _Scene, name: str, paths: dict[str, Path], overwrite: bool) -> None:
    import geopandas as gpd

    crs = f"EPSG:{EPSG}"
    buildings = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(scene.buildings) + 1, dtype=np.int32),
            "height_m": [round(b.height, 1) for b in scene.buildings],
            "roof": [b.roof for b in scene.buildings],
            "shape": [b.shape for b in scene.buildings],
        },
        geometry=[shapely.Polygon(_to_map(b.outline, name)) for b in scene.buildings],
        crs=crs,
    )
    roads = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(scene.roads) + 1, dtype=np.int32),
            "width": [r.width for r in scene.roads],
            "kind": [r.kind for r in scene.roads],
        },
        geometry=[shapely.LineString(_to_map(r.coords, name)) for r in scene.roads],
        crs=crs,
    )
    for key, gdf, layer in (
        (f"{name}_buildings", buildings, "buildings"),
        (f"{name}_roads", roads, "roads"),
    ):
        with atomic_output(paths[key], overwrite=overwrite) as tmp:
            gdf.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio")


def _write_rasters(
    image: np.ndarray, labels: np.ndarray, name: str, paths: dict[str, Path], overwrite: bool
) -> None:
    x0, y0 = ORIGINS[name]
    transform = Affine(RES, 0.0, x0, 0.0, -RES, y0 + EXTENT)
    crs = CRS.from_epsg(EPSG)
    classes = make_classes({1: "building", 2: "road"})
    tags = {"SOURCE": "synthetic scene from geounet.app.sample", "SCENE": name}
    class_tags = {**tags, "GEOUNET_CLASSES": json.dumps(classes_to_json(classes))}
    write_raster(paths[name], image, crs, transform, nodata=0, descriptions=BANDS, tags=tags,
                 overwrite=overwrite)  # fmt: skip
    write_raster(
        paths[f"{name}_labels"],
        labels,
        crs,
        transform,
        nodata=IGNORE_INDEX,
        colormap=colormap(classes),
        class_names={i: c.name for i, c in enumerate(classes)},
        tags=class_tags,
        overwrite=overwrite,
    )


def _stretch(image: np.ndarray) -> np.ndarray:
    rgb = image[[b - 1 for b in rgb_bands(BANDS)]].astype(np.float64)
    valid = np.all(image > 0, axis=0)
    out = np.zeros((*rgb.shape[1:], 3))
    for i in range(3):
        lo, hi = np.percentile(rgb[i][valid], [2, 98])
        out[..., i] = np.clip((rgb[i] - lo) / (hi - lo), 0, 1)
    out[~valid] = 0.0
    return out


def _quicklook(
    path: Path, scenes: dict[str, tuple[np.ndarray, np.ndarray]], overwrite: bool
) -> None:
    """Each scene as RGB (2-98 % stretch) beside its labels, as a PNG (own Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    cmap = ListedColormap(["#d9d9d9", "#E6194B", "#FFE119", "#000000"])
    fig = Figure(figsize=(12, 12), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for row, (name, (image, labels)) in zip(axes, scenes.items()):
        row[0].imshow(_stretch(image), interpolation="antialiased")
        lab = np.where(labels == IGNORE_INDEX, 3, labels)
        row[1].imshow(lab, cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        row[0].set_title(f"{name}.tif (RGB, 2-98 % stretch)")
        row[1].set_title(f"{name}_labels.tif: building red, road yellow, nodata black")
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")


def _targets(out: Path, quicklook: bool) -> dict[str, Path]:
    paths = {k: out / v for k, v in SAMPLE_FILES.items()}
    if quicklook:
        paths["quicklook"] = out / QUICKLOOK
    return paths


def generate_sample_data(
    out_dir: PathLike,
    *,
    overwrite: bool = False,
    seed: int = DEFAULT_SEED,
    quicklook: bool = True,
) -> dict[str, Path]:
    """Write the synthetic sample scenes, their labels and vectors into ``out_dir``.

    Files: ``train.tif`` and ``test.tif`` (1024 x 1024, 4 bands uint16 blue/green/red/nir,
    0.5 m, EPSG:32616, nodata 0, a 40-pixel nodata strip along the east edge of the test
    scene), ``*_labels.tif`` (uint8: 0 background, 1 building, 2 road, 255 nodata; colour
    table and class names), ``*_buildings.gpkg`` (polygons) and ``*_roads.gpkg`` (centre
    lines with ``width`` in metres), and ``quicklook.png``.

    Args:
        out_dir: Folder to write into (created if needed).
        overwrite: Replace existing files; without it nothing is written if any exists.
        seed: Seed of the scenes; the same seed gives identical pixels and features.
        quicklook: Also draw ``quicklook.png`` (needs matplotlib).

    Returns:
        ``{key: path}`` with the keys of :data:`SAMPLE_FILES` (and ``"quicklook"``).

    Raises:
        OutputExistsError: A file exists and ``overwrite`` is False.

    Example:
        Not run as a doctest: it writes the sample scenes, which takes seconds.

        >>> paths = generate_sample_data(tmp_dir)                    # doctest: +SKIP
        >>> paths["train"].name                                       # doctest: +SKIP
        'train.tif'
    """
    out = Path(out_dir)
    paths = _targets(out, quicklook)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out}: sample files already exist ({', '.join(existing)}); pass overwrite=True "
            "(--overwrite) to replace them or choose another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in ("train", "test"):
        image, labels, scene = _make(seed, name)
        _write_rasters(image, labels, name, paths, overwrite)
        _write_vectors(scene, name, paths, overwrite)
        arrays[name] = (image, labels)
    if quicklook:
        _quicklook(paths["quicklook"], arrays, overwrite)
    return paths


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in SAMPLE_FILES.values())


def ensure_sample_data(dir: PathLike | None = None) -> Path:
    """The folder holding the sample data, generated there first if any file is missing.

    Args:
        dir: Folder to use. By default the ``sample_data/`` folder of a source checkout if it
            is complete, else ``<user data dir>/sample_data`` (see
            :func:`geounet.core.paths.user_data_dir`).

    Returns:
        The folder, with every file of :data:`SAMPLE_FILES` present.
    """
    if dir is None:
        checkout = Path(__file__).resolve().parents[2] / "sample_data"
        if _complete(checkout):
            return checkout
        dir = user_data_dir() / "sample_data"
    folder = Path(dir)
    if not _complete(folder):
        generate_sample_data(folder, overwrite=True, quicklook=False)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geounet.app.sample OUT_DIR [--overwrite] [--seed N] [--no-quicklook]``."""
    parser = argparse.ArgumentParser(
        prog="python -m geounet.app.sample",
        description="Generate the deterministic synthetic sample scenes, labels and vectors.",
    )
    parser.add_argument("out_dir", help="folder to write into, e.g. sample_data")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="scene seed")
    parser.add_argument("--no-quicklook", action="store_true", help="skip quicklook.png")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = generate_sample_data(
            args.out_dir, overwrite=args.overwrite, seed=args.seed, quicklook=not args.no_quicklook
        )
    except OutputExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths.values():
        print(p)
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
