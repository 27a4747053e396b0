"""Benchmark ``prepare_data`` on a generated 10 000 x 10 000 4-band uint16 scene.

The scene (a tiled GeoTIFF written window by window, smooth fields plus noise, a nodata
corner) and its labels (a GeoPackage of ~10 000 building squares and a road grid as lines,
``class`` field 1/2) are generated once into the work folder, then chipped with
``chip_size=256``. Memory must not grow with the scene: the target is a peak RSS under 1 GB.

Usage::

    python benchmarks/prepare_data.py [--size 10000] [--chip-size 256] \
        [--work bench_out/prepare_data]

The last line printed is a JSON object with ``seconds`` (prepare_data only), ``mpx_per_s``
(scene megapixels per second of ``seconds``), ``peak_rss_mb``
(the whole process, torch import included), ``baseline_rss_mb`` (RSS before chipping), chip
counts and the scene size.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
from _common import (
    EPSG,
    RES,
    add_chip_args,
    add_scene_args,
    cached_scene,
    emit,
    parser,
    peak_rss_mb,
    work_dir,
    write_scene,
)

ORIGIN = (500000.0, 3700000.0)


def make_scene(path: Path, size: int, seed: int = 0) -> None:
    """Write a ``size`` x ``size`` 4-band uint16 tiled GeoTIFF one block at a time."""
    rng = np.random.default_rng(seed)

    def fields(r: int, c: int, h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[r : r + h, c : c + w].astype(np.float32)
        arr = np.empty((4, h, w), np.uint16)
        for b in range(4):
            field = np.sin(xx / (300 + 70 * b)) * np.cos(yy / (450 - 50 * b))
            noise = rng.integers(0, 64, size=(h, w))
            arr[b] = (1500 + 900 * field + noise).astype(np.uint16)
        corner = (yy + xx) < size * 0.15  # a nodata corner, as on real scene edges
        arr[:, corner] = 0
        return arr

    write_scene(path, size, fields, origin=ORIGIN, BIGTIFF="IF_SAFER")


def make_labels(path: Path, size: int, seed: int = 0) -> None:
    """Write building squares (class 1) and a grid of road centre lines (class 2)."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    extent = size * RES
    n = max(1, (size // 100) ** 2)
    x = ORIGIN[0] + rng.uniform(0, extent, n)
    y = ORIGIN[1] - rng.uniform(0, extent, n)
    half = rng.uniform(4, 15, n)
    boxes = shapely.box(x - half, y - half, x + half, y + half)
    ticks = np.arange(150.0, extent, 300.0)
    lines = [
        shapely.LineString([(ORIGIN[0], ORIGIN[1] - t), (ORIGIN[0] + extent, ORIGIN[1] - t)])
        for t in ticks
    ] + [
        shapely.LineString([(ORIGIN[0] + t, ORIGIN[1]), (ORIGIN[0] + t, ORIGIN[1] - extent)])
        for t in ticks
    ]
    geoms = [*boxes, *lines]
    cls = [1] * len(boxes) + [2] * len(lines)
    gpd.GeoDataFrame({"class": cls}, geometry=geoms, crs=f"EPSG:{EPSG}").to_file(
        path, driver="GPKG"
    )


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    add_scene_args(p, size=10_000, work="bench_out/prepare_data")
    add_chip_args(p)
    args = p.parse_args(argv)

    work = work_dir(args.work)
    scene = cached_scene(work / f"scene_{args.size}.tif", partial(make_scene, size=args.size))
    labels = cached_scene(work / f"labels_{args.size}.gpkg", partial(make_labels, size=args.size))

    from geounet.data.prepare import prepare_data

    out = work / "chips"
    shutil.rmtree(out, ignore_errors=True)
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    data = prepare_data(
        scene,
        labels,
        classes={1: "building", 2: "road"},
        label_field="class",
        chip_size=args.chip_size,
        out_dir=out,
    )
    seconds = time.perf_counter() - t0
    result = {
        "benchmark": "prepare_data",
        "size": args.size,
        "bands": 4,
        "dtype": "uint16",
        "chip_size": args.chip_size,
        "train_chips": len(data.train_ds),
        "valid_chips": len(data.valid_ds),
        "dropped_chips": data.manifest["dropped_chips"],
        "seconds": round(seconds, 2),
        "mpx_per_s": round(args.size**2 / 1e6 / seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_rss_mb": round(baseline, 1),
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
