"""Rendering of the sample scenes: ground, roads, cars, shadows, trees, roofs and radiometry.

Turns the geometry of :mod:`geounet.app.sample.scene` into a reflectance image (4, H, W) and
its labels, then into 12-bit digital numbers with optical blur and sensor noise. Every random
draw comes from the generator passed in, in a fixed order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage

from geounet.app.sample.scene import EXTENT, RES, ROOFS, SIZE, _at, _Building, _Road, _Scene

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
CARS = ((0.45, 0.47, 0.48, 0.46), (0.04, 0.04, 0.045, 0.05), (0.25, 0.26, 0.27, 0.27),
        (0.06, 0.05, 0.30, 0.30), (0.14, 0.08, 0.05, 0.12))  # fmt: skip
GAIN = 5000.0  # DN per unit reflectance
OFFSET = (250.0, 170.0, 110.0, 70.0)  # path radiance (haze) in DN
NOISE_READ, NOISE_SHOT = 2.5, 0.025  # sensor noise: sigma**2 = read**2 + shot * DN


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
