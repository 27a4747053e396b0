"""Vectorizing quality and speed: buildings, road centre lines, and time against bare GDAL.

Six parts, each printed as readable lines; the last line is one JSON object with all
figures (a part whose data is absent is reported as skipped, with the reason):

- **buildings**: ``../shared/data/spacenet_atlanta_pan/buildings.geojson`` rasterized onto
  the grid of its ``image.tif`` (0.5 m), vectorized with :func:`geounet.vectorize`, matched
  against the truth polygons at IoU >= 0.5 (:func:`geounet.evaluation.metrics.match_polygons`).
  Targets: object F1 >= 0.95; with ``regularize=True`` median vertices per building <= 8,
  >= 80 % of corners within 10 degrees of a right angle, and >= 85 % of buildings with
  IoU >= 0.85 against their traced (unregularized, unsimplified) outline.
- **roads**: ``../shared/data/spacenet_vegas_roads_rgb/roads_mask_4m.tif`` (EPSG:4326)
  turned into centre lines and compared with ``roads.geojson`` in the local UTM zone
  (:func:`geounet.evaluation.metrics.line_completeness_correctness`, 3 m): completeness and
  correctness >= 0.90; no dangling spur (an edge from a free end to a junction) shorter
  than the pruning threshold.
- **speed**: a generated ``--size`` x ``--size`` building mask (default 10 000, 0.5 m
  pixels, rectangles and L-shapes, some rotated) vectorized with the defaults, against bare
  ``rasterio.features.shapes`` over the same mask, in the same run: ratio <= 2.0 (also
  printed: unregularized, and with one thread; the default uses
  :func:`geounet.core.threads.worker_threads`, ``GEOUNET_NUM_THREADS`` to choose).
- **road_speed**: the road map of a poorly trained model, generated (a street grid broken
  at random, beside thousands of short strokes of confetti), at ``--road-size`` and half
  that side: seconds of :func:`geounet.vectorize`'s road centre lines against bare
  ``skimage.morphology.skeletonize`` of the same mask, and how the time grows with the
  pixels (exponent ``log(t_full / t_half) / log(4)``: 1 is linear; target <= 1.3).
- **split_speed**: one dense block of touching roofs with ragged edges, as a network maps
  an informal settlement (``--roofs`` per side, and half that), vectorized with the
  defaults: seconds, buildings, and the growth exponent over the pixels (target <= 1.3).
- **holes_speed**: a land-cover class over the whole scene with 2 % of its pixels missing at
  random and a lake every 500 px (``--holes-size`` a side, and half that), vectorized with
  the defaults but windows of :data:`HOLES_WINDOW` px, so that both sizes merge the
  scene-wide polygon across seams (4 and 16 windows at the default sizes): seconds, the
  holes kept, and the growth exponent over the pixels (target <= 1.3).

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/vectorize_quality.py
    python benchmarks/vectorize_quality.py --size 2000          # quick smoke test
    python benchmarks/vectorize_quality.py --parts road_speed --road-size 4000
    python benchmarks/vectorize_quality.py --parts split_speed --roofs 40
    python benchmarks/vectorize_quality.py --parts holes_speed --holes-size 4000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import rasterio
import rasterio.features
import shapely
from _common import EPSG, RES, add_scene_args, emit, parser, work_dir
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import ndimage

from geounet.core.threads import worker_threads
from geounet.evaluation.metrics import line_completeness_correctness, match_polygons
from geounet.io.raster import write_raster
from geounet.vectorizing.pipeline import vectorize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = {
    "building_f1": 0.95,
    "median_vertices": 8,
    "right_angle_share": 0.80,
    "iou_traced_share": 0.85,
    "road_completeness": 0.90,
    "road_correctness": 0.90,
    "short_spurs": 0,
    "speed_ratio": 2.0,
    "road_growth": 1.3,
    "split_growth": 1.3,
    "holes_growth": 1.3,
}
#: holes_speed's window side (px): 2 000² is cut into 4 windows, 4 000² into 16.
HOLES_WINDOW = 1000


def corner_angles(polys: np.ndarray) -> np.ndarray:
    """Unsigned angle (degrees, 0-180) at every shell vertex of every polygon."""
    out = []
    for p in polys:
        c = np.asarray(p.exterior.coords)[:-1]
        a, b = np.roll(c, 1, axis=0) - c, np.roll(c, -1, axis=0) - c
        cos = (a * b).sum(axis=1) / np.hypot(*a.T) / np.hypot(*b.T)
        out.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.concatenate(out) if out else np.empty(0)


def best_iou(polys: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each polygon, its largest IoU with any reference polygon."""
    tree = shapely.STRtree(reference)
    i, j = tree.query(polys, predicate="intersects")
    inter = shapely.area(shapely.intersection(polys[i], reference[j]))
    iou = inter / (shapely.area(polys[i]) + shapely.area(reference[j]) - inter)
    best = np.zeros(len(polys))
    np.maximum.at(best, i, iou)
    return best


def buildings(work: Path) -> dict:
    """Rasterize the Atlanta truth, vectorize it, score the polygons."""
    folder = DATA / "spacenet_atlanta_pan"
    if not (folder / "buildings.geojson").exists() or not (folder / "image.tif").exists():
        return {"skipped": f"{folder} is absent"}
    with rasterio.open(folder / "image.tif") as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    truth = gpd.read_file(folder / "buildings.geojson").to_crs(crs)
    mask = rasterio.features.rasterize(
        [(g, 1) for g in truth.geometry], out_shape=shape, transform=transform, dtype="uint8"
    )
    path = write_raster(
        work / "atlanta_buildings.tif",
        mask,
        crs,
        transform,
        nodata=255,
        class_names={0: "background", 1: "building"},
    )
    t0 = time.perf_counter()
    reg = vectorize(path, regularize=True)["building"]
    seconds = time.perf_counter() - t0
    plain = vectorize(path, regularize=False)["building"]
    traced = vectorize(path, regularize=False, simplify_m=0)["building"]
    m_reg = match_polygons(truth.geometry, reg.geometry)
    m_plain = match_polygons(truth.geometry, plain.geometry)
    polys = reg.geometry.to_numpy()
    vertices = shapely.get_num_coordinates(shapely.get_exterior_ring(polys)) - 1
    angles = corner_angles(polys)
    iou_traced = best_iou(polys, traced.geometry.to_numpy())
    out = {
        "truth": len(truth),
        "predicted": len(reg),
        "f1": m_reg["f1"],
        "precision": m_reg["precision"],
        "recall": m_reg["recall"],
        "f1_unregularized": m_plain["f1"],
        "median_vertices": float(np.median(vertices)),
        "median_vertices_unregularized": float(
            np.median(shapely.get_num_coordinates(shapely.get_exterior_ring(plain.geometry)) - 1)
        ),
        "right_angle_share": float(np.mean(np.abs(angles - 90) <= 10)),
        "iou_traced_share": float(np.mean(iou_traced >= 0.85)),
        "iou_traced_min": float(iou_traced.min()) if len(iou_traced) else float("nan"),
        "seconds": seconds,
    }
    print(
        f"buildings: {out['predicted']} polygons for {out['truth']} true; object F1 "
        f"{out['f1']:.3f} (target >= {TARGETS['building_f1']}), unregularized "
        f"{out['f1_unregularized']:.3f}"
    )
    print(
        f"  regularized: median {out['median_vertices']:.0f} vertices (unregularized "
        f"{out['median_vertices_unregularized']:.0f}; target <= {TARGETS['median_vertices']}), "
        f"{100 * out['right_angle_share']:.1f} % of corners within 10 deg of 90 (target >= 80 %)"
    )
    print(
        f"  {100 * out['iou_traced_share']:.1f} % of buildings with IoU >= 0.85 against the "
        f"traced outline (min {out['iou_traced_min']:.3f}); {seconds:.2f} s"
    )
    return out


def short_spurs(lines: gpd.GeoDataFrame, threshold_m: float) -> int:
    """Edges from a free end to a junction (3+ edges) shorter than ``threshold_m``."""
    ends = [
        (tuple(np.round(g.coords[0], 3)), tuple(np.round(g.coords[-1], 3))) for g in lines.geometry
    ]
    degree = Counter(p for pair in ends for p in pair)
    count = 0
    for (a, b), length in zip(ends, lines.length):
        da, db = sorted((degree[a], degree[b]))
        if da == 1 and db >= 3 and length < threshold_m:
            count += 1
    return count


def roads() -> dict:
    """Centre lines of the Las Vegas road mask against the true centre lines."""
    folder = DATA / "spacenet_vegas_roads_rgb"
    if not (folder / "roads_mask_4m.tif").exists() or not (folder / "roads.geojson").exists():
        return {"skipped": f"{folder} is absent"}
    with rasterio.open(folder / "roads_mask_4m.tif") as src:
        road_value = int(src.read(1).max())  # the mask holds 0 / 1 (or 0 / 255)
    t0 = time.perf_counter()
    lines = vectorize(folder / "roads_mask_4m.tif", classes={road_value: "road"})["road"]
    seconds = time.perf_counter() - t0
    truth = gpd.read_file(folder / "roads.geojson")
    utm = truth.estimate_utm_crs()
    pred_m, truth_m = lines.to_crs(utm), truth.to_crs(utm)
    scores = line_completeness_correctness(truth_m.geometry, pred_m.geometry, 3.0)
    spur_m = float(lines.attrs["spur_length_m"])
    out = {
        "lines": len(lines),
        "truth_length_m": scores["truth_length"],
        "pred_length_m": scores["pred_length"],
        "completeness": scores["completeness"],
        "correctness": scores["correctness"],
        "road_width_m": float(lines.attrs["road_width_m"]),
        "spur_threshold_m": spur_m,
        "short_spurs": short_spurs(pred_m, spur_m),
        "components": _components(pred_m),
        "seconds": seconds,
    }
    print(
        f"roads: {out['lines']} lines, {out['pred_length_m']:.0f} m for "
        f"{out['truth_length_m']:.0f} m of truth; completeness {out['completeness']:.3f}, "
        f"correctness {out['correctness']:.3f} within 3 m (targets >= 0.90)"
    )
    print(
        f"  road width {out['road_width_m']:.2f} m, spur threshold {spur_m:.2f} m: "
        f"{out['short_spurs']} dangling spurs shorter (target 0); {out['components']} "
        f"connected parts; {seconds:.2f} s"
    )
    return out


def _components(lines: gpd.GeoDataFrame) -> int:
    """Connected parts of the line network (lines joined where their ends meet)."""
    g = nx.Graph()
    for line in lines.geometry:
        g.add_edge(tuple(np.round(line.coords[0], 3)), tuple(np.round(line.coords[-1], 3)))
    return nx.number_connected_components(g)


def building_mask(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 mask of buildings (1) on 80-pixel plots, some rotated."""
    rng = np.random.default_rng(seed)
    cell = 80
    n = size // cell
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cx = (jj.ravel() + 0.5) * cell + rng.uniform(-8, 8, n * n)
    cy = (ii.ravel() + 0.5) * cell + rng.uniform(-8, 8, n * n)
    w, h = rng.uniform(14, 50, n * n), rng.uniform(14, 50, n * n)
    angle = np.where(rng.random(n * n) < 0.3, rng.uniform(0, 90, n * n), 0.0)
    ell = rng.random(n * n) < 0.3
    polys = []
    for k in range(n * n):
        p = shapely.box(-w[k] / 2, -h[k] / 2, w[k] / 2, h[k] / 2)
        if ell[k]:  # cut a corner quarter: an L
            p = p.difference(shapely.box(0, 0, w[k], h[k]))
        p = shapely.affinity.rotate(p, angle[k], origin=(0, 0))
        polys.append(shapely.affinity.translate(p, cx[k], cy[k]))
    return rasterio.features.rasterize(
        [(p, 1) for p in polys], out_shape=(size, size), dtype="uint8"
    )


def mask_file(path: Path, mask: np.ndarray, name: str, res: float = RES) -> Path:
    """``mask`` (0 background, 1 ``name``) written as a class raster in UTM at ``res`` m."""
    return write_raster(
        path,
        mask,
        CRS.from_epsg(EPSG),
        from_origin(500000, 3800000, res, res),
        nodata=255,
        class_names={0: "background", 1: name},
    )


def bare_shapes(path: Path) -> tuple[int, float]:
    """Polygons and seconds of plain ``rasterio.features.shapes`` over the building mask."""
    t0 = time.perf_counter()
    with rasterio.open(path) as src:
        data = src.read(1)
        transform = src.transform
    n = 0
    for _ in rasterio.features.shapes(data, mask=data == 1, transform=transform):
        n += 1
    return n, time.perf_counter() - t0


def _timed_vectorize(path: Path, threads: int | None = None, **kw) -> tuple[int, float]:
    """Buildings and seconds of :func:`vectorize` (``threads``: ``GEOUNET_NUM_THREADS``)."""
    before = os.environ.get("GEOUNET_NUM_THREADS")
    if threads is not None:
        os.environ["GEOUNET_NUM_THREADS"] = str(threads)
    try:
        t0 = time.perf_counter()
        n = len(vectorize(path, **kw)["building"])
        return n, time.perf_counter() - t0
    finally:
        if before is None:
            os.environ.pop("GEOUNET_NUM_THREADS", None)
        else:
            os.environ["GEOUNET_NUM_THREADS"] = before


def speed(work: Path, size: int) -> dict:
    """Time vectorize against bare shapes on a generated building mask.

    Bare shapes is timed before and after the vectorize runs (the ratio uses their mean, on
    a shared machine); vectorize runs with its default thread count (:func:`worker_threads`),
    then with one thread, so both ratios come from the same run.
    """
    t0 = time.perf_counter()
    mask = building_mask(size)
    path = mask_file(work / f"buildings_{size}.tif", mask, "building")
    del mask
    print(f"speed: generated a {size} x {size} building mask in {time.perf_counter() - t0:.1f} s")
    n_bare, bare_first = bare_shapes(path)
    polygons, ours = _timed_vectorize(path)
    unregularized, plain = _timed_vectorize(path, regularize=False)
    _, one = _timed_vectorize(path, threads=1)
    _, bare_last = bare_shapes(path)
    bare = (bare_first + bare_last) / 2
    out = {
        "size": size,
        "threads": worker_threads(),
        "bare_polygons": n_bare,
        "polygons": polygons,
        "polygons_unregularized": unregularized,
        "bare_seconds": bare,
        "bare_seconds_runs": [bare_first, bare_last],
        "vectorize_seconds": ours,
        "vectorize_unregularized_seconds": plain,
        "vectorize_one_thread_seconds": one,
        "ratio": ours / bare,
        "ratio_unregularized": plain / bare,
        "ratio_one_thread": one / bare,
    }
    print(
        f"  rasterio.features.shapes: {n_bare} polygons in {bare_first:.2f} s, {bare_last:.2f} s;"
        f" vectorize ({out['threads']} threads): {polygons} regularized buildings in "
        f"{ours:.2f} s -> ratio {out['ratio']:.2f} (target <= {TARGETS['speed_ratio']}); "
        f"unregularized {plain:.2f} s (ratio {out['ratio_unregularized']:.2f}); one thread "
        f"{one:.2f} s (ratio {out['ratio_one_thread']:.2f})"
    )
    return out


def road_mask(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 road map (1) as a poorly trained model draws one.

    Streets 6 px wide every 100 px, each block-long piece broken at random (gaps of 6-20
    px) with a chance of one in two, and one short stroke (3 px wide, 5-30 px long, any
    angle) per 4 000 pixels: thousands of fragments, dead ends and gaps to bridge.
    """
    rng = np.random.default_rng(seed)
    shapes = []
    for c in range(50, size, 100):
        for start in range(0, size, 100):
            pieces = [(start, min(start + 100, size))]
            if rng.random() < 0.5:
                cut, gap = start + rng.uniform(20, 80), rng.uniform(6, 20)
                pieces = [(start, cut), (cut + gap, min(start + 100, size))]
            for a, b in pieces:
                shapes += [shapely.box(a, c - 3, b, c + 3), shapely.box(c - 3, a, c + 3, b)]
    n = size * size // 4000
    x, y = rng.uniform(0, size, n), rng.uniform(0, size, n)
    length, angle = rng.uniform(5, 30, n), rng.uniform(0, np.pi, n)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    ends = [np.stack([x - dx, y - dy], axis=-1), np.stack([x + dx, y + dy], axis=-1)]
    strokes = shapely.linestrings(np.stack(ends, axis=1))
    shapes += list(shapely.buffer(strokes, 1.5))
    return rasterio.features.rasterize([(g, 1) for g in shapes], (size, size), dtype="uint8")


def road_seconds(work: Path, size: int) -> dict:
    """Seconds of vectorize's road lines and of bare skeletonize on a ``road_mask``."""
    from skimage.morphology import skeletonize

    mask = road_mask(size)
    path = mask_file(work / f"roads_{size}.tif", mask, "road")
    t0 = time.perf_counter()
    skeletonize(mask == 1)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    lines = vectorize(path)["road"]
    ours = time.perf_counter() - t0
    print(
        f"  {size} x {size}: vectorize {len(lines)} road lines in {ours:.2f} s, "
        f"skeletonize {bare:.2f} s (ratio {ours / bare:.1f})"
    )
    return {"size": size, "lines": len(lines), "vectorize_seconds": ours, "bare_seconds": bare}


def road_speed(work: Path, size: int) -> dict:
    """``road_seconds`` at half the side and at the side; the growth exponent."""
    print("road_speed: a broken street grid with confetti, vectorized at two sizes")
    return _two_sizes(road_seconds, work, size, "vectorize_seconds", "road_growth")


def _two_sizes(seconds_of: Callable, work: Path, size: int, key: str, target: str) -> dict:
    """``seconds_of(work, side)`` at half ``size`` and at ``size``; time's growth exponent.

    ``key`` names the seconds in what ``seconds_of`` returns, ``target`` the growth target.
    """
    half, full = seconds_of(work, size // 2), seconds_of(work, size)
    growth = float(np.log(full[key] / half[key]) / np.log(4))
    print(f"  time grows as pixels^{growth:.2f} (target <= {TARGETS[target]})")
    return {"half": half, "full": full, "growth": growth}


def roof_block(n: int, seed: int = 0) -> np.ndarray:
    """``n`` x ``n`` roofs of 24-34 px, each joined to its neighbours by a 6 px neck, edges ragged.

    At 0.3 m, roofs of 7-10 m touching through short walls; four in ten edge pixels are
    dropped, so each roof has several distance peaks to merge, as a network's mask has.
    """
    rng = np.random.default_rng(seed)
    size = n * 36 + 2
    m = np.zeros((size, size), bool)
    for i in range(n):
        for j in range(n):
            h, w = rng.integers(24, 34, 2)
            r, c = 1 + i * 36, 1 + j * 36
            m[r : r + h, c : c + w] = True
            m[r + h // 2 - 3 : r + h // 2 + 3, c + w : c + 37] = j < n - 1
            m[r + h : r + 37, c + w // 2 - 3 : c + w // 2 + 3] = i < n - 1
    edge = m & ~ndimage.binary_erosion(m)
    m &= ~(edge & (rng.random(m.shape) < 0.4))
    m[-1] = m[:, -1] = False
    return m.astype(np.uint8)


def split_seconds(work: Path, n: int) -> dict:
    """Seconds of vectorize's buildings on a ``roof_block`` of ``n`` x ``n`` roofs (0.3 m)."""
    mask = roof_block(n)
    path = mask_file(work / f"roofs_{n}.tif", mask, "building", res=0.3)
    t0 = time.perf_counter()
    found = len(vectorize(path)["building"])
    seconds = time.perf_counter() - t0
    print(f"  {n * n} roofs ({mask.shape[0]} px a side): {found} buildings in {seconds:.2f} s")
    return {"roofs": n * n, "side_px": int(mask.shape[0]), "buildings": found, "seconds": seconds}


def split_speed(work: Path, n: int) -> dict:
    """``split_seconds`` at half the roofs a side and at ``n``; the growth exponent."""
    print("split_speed: one block of touching roofs with ragged edges, at two sizes")
    half, full = split_seconds(work, n // 2), split_seconds(work, n)
    pixels = (full["side_px"] / half["side_px"]) ** 2
    growth = float(np.log(full["seconds"] / half["seconds"]) / np.log(pixels))
    print(f"  time grows as pixels^{growth:.2f} (target <= {TARGETS['split_growth']})")
    return {"half": half, "full": full, "growth": growth}


def pepper_mask(size: int, seed: int = 0) -> np.ndarray:
    """``size``² pixels of one class, 2 % of them missing at random, a 40 px lake every 500 px.

    What a land-cover network's scene-wide class looks like: one polygon with a hole at every
    stray pixel (filled, being under the smallest area) and lakes (kept).
    """
    rng = np.random.default_rng(seed)
    m = rng.random((size, size)) >= 0.02
    for r in range(230, size - 40, 500):
        for c in range(230, size - 40, 500):
            m[r : r + 40, c : c + 40] = False
    return m.astype(np.uint8)


def holes_seconds(work: Path, size: int) -> dict:
    """Seconds of vectorize on a ``pepper_mask`` of ``size``² pixels (0.5 m).

    Windows of :data:`HOLES_WINDOW` px, or half the side on a smaller scene (seams there too).
    """
    path = mask_file(work / f"pepper_{size}.tif", pepper_mask(size), "land")
    window = max(16, min(HOLES_WINDOW, size // 2))
    t0 = time.perf_counter()
    land = vectorize(path, window_size=window)["land"]
    seconds = time.perf_counter() - t0
    holes = int(shapely.get_num_interior_rings(land.geometry.values).sum())
    print(
        f"  {size}² px, windows of {window} px: {len(land)} polygons, {holes} holes kept, "
        f"in {seconds:.2f} s"
    )
    return {
        "size": size,
        "window": window,
        "polygons": len(land),
        "holes": holes,
        "seconds": seconds,
    }


def holes_speed(work: Path, size: int) -> dict:
    """``holes_seconds`` at half ``size`` and at ``size``; the growth exponent."""
    print("holes_speed: one land-cover class over the scene, full of holes, at two sizes")
    return _two_sizes(holes_seconds, work, size, "seconds", "holes_growth")


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and print the JSON line last."""
    p = parser(__doc__)
    add_scene_args(p, size=10000, work=None, size_help="speed mask side (pixels)")
    p.add_argument(
        "--parts",
        default="buildings,roads,speed,road_speed,split_speed,holes_speed",
        help="comma-separated parts to run",
    )
    p.add_argument("--roofs", type=int, default=40, help="split_speed roofs per block side")
    p.add_argument("--road-size", type=int, default=4000, help="road_speed mask side (pixels)")
    p.add_argument("--holes-size", type=int, default=4000, help="holes_speed side (pixels)")
    args = p.parse_args(argv)
    parts = {part.strip() for part in args.parts.split(",")}
    result: dict = {"targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="geounet_vq_") as tmp:
        work = work_dir(args.work or Path(tmp))
        if "buildings" in parts:
            result["buildings"] = buildings(work)
        if "roads" in parts:
            result["roads"] = roads()
        if "speed" in parts:
            result["speed"] = speed(work, args.size)
        if "road_speed" in parts:
            result["road_speed"] = road_speed(work, args.road_size)
        if "split_speed" in parts:
            result["split_speed"] = split_speed(work, args.roofs)
        if "holes_speed" in parts:
            result["holes_speed"] = holes_speed(work, args.holes_size)
    for name in ("buildings", "roads"):
        if "skipped" in result.get(name, {}):
            print(f"{name}: SKIPPED ({result[name]['skipped']})")
    result["met"] = _targets_met(result)
    print(f"targets met: {result['met']}")
    emit(result, default=float)
    return 0


def _targets_met(r: dict) -> dict:
    met = {}
    b, rd, s = r.get("buildings", {}), r.get("roads", {}), r.get("speed", {})
    if "f1" in b:
        met["building_f1"] = b["f1"] >= TARGETS["building_f1"]
        met["median_vertices"] = b["median_vertices"] <= TARGETS["median_vertices"]
        met["right_angle_share"] = b["right_angle_share"] >= TARGETS["right_angle_share"]
        met["iou_traced_share"] = b["iou_traced_share"] >= TARGETS["iou_traced_share"]
    if "completeness" in rd:
        met["road_completeness"] = rd["completeness"] >= TARGETS["road_completeness"]
        met["road_correctness"] = rd["correctness"] >= TARGETS["road_correctness"]
        met["short_spurs"] = rd["short_spurs"] == TARGETS["short_spurs"]
    if "ratio" in s:
        met["speed_ratio"] = s["ratio"] <= TARGETS["speed_ratio"]
    for part in ("road", "split", "holes"):
        if "growth" in r.get(f"{part}_speed", {}):
            met[f"{part}_growth"] = r[f"{part}_speed"]["growth"] <= TARGETS[f"{part}_growth"]
    return met


if __name__ == "__main__":
    sys.exit(main())
