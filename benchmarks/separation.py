"""Touching buildings: object F1 of ``vectorize`` with and without instance separation.

Two measurements on the real orthomosaics of ``../shared/data`` (OpenStreetMap buildings):

- ``truth``: the true polygons of ``oam_kampala`` (108, a dense settlement of touching roofs)
  and ``oam_zanzibar`` (121) are rasterized onto the image grid as one building class
  (touching roofs merge, as in any class raster), then vectorized with ``separate=False`` and
  ``separate=True``; the polygons are matched one-to-one to the true ones (IoU >= 0.5,
  :func:`geounet.evaluation.metrics.match_polygons`). This isolates the vectorizer: a
  perfect class raster, and how many buildings come back out of it.
- ``model``: the predictions of the small model trained by ``benchmarks/separation_model.py``
  on the top half of Kampala, on the bottom half (the true polygons are clipped to it):
  separation off / on / on with the blended probability, test-time augmentation off and
  ``"flips"``, and a range of ``min_area_m2``.

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/separation_model.py --out bench_out/kampala
    python benchmarks/separation.py truth
    python benchmarks/separation.py model --run bench_out/kampala

Each line printed is a JSON object (one per variant).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features

from geounet.evaluation.metrics import match_polygons
from geounet.io.write import write_raster
from geounet.vectorizing.pipeline import vectorize

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def truth_polygons(scene: Path, bounds: tuple[float, ...] | None = None) -> gpd.GeoSeries:
    """True buildings in the image CRS, clipped to ``bounds`` (parts under 2 m² dropped)."""
    with rasterio.open(scene / "image.tif") as src:
        crs, full = src.crs, tuple(src.bounds)
    g = gpd.read_file(scene / "buildings.geojson").to_crs(crs).geometry
    g = g.clip_by_rect(*(bounds or full))
    g = g[~g.is_empty]
    metric = g.to_crs(g.estimate_utm_crs())
    return g[metric.area.to_numpy() >= 2.0].reset_index(drop=True)


def truth_raster(scene: Path, out: Path) -> Path:
    """The true buildings burnt onto the image grid as class 1 (touching roofs merge)."""
    with rasterio.open(scene / "image.tif") as src:
        shape, crs, transform = (src.height, src.width), src.crs, src.transform
    geoms = truth_polygons(scene)
    data = rasterio.features.rasterize(
        [(g, 1) for g in geoms], out_shape=shape, transform=transform, fill=0, dtype="uint8"
    )
    return write_raster(
        out, data, crs, transform, nodata=255, class_names={0: "background", 1: "building"},
        overwrite=True,
    )  # fmt: skip


def score(truth: gpd.GeoSeries, layers: dict[str, gpd.GeoDataFrame]) -> dict[str, Any]:
    """Object precision, recall, F1 and counts of the building layer against ``truth``."""
    pred = layers["building"].geometry
    r = match_polygons(truth, pred)
    return {
        "f1": round(r["f1"], 3),
        "precision": round(r["precision"], 3),
        "recall": round(r["recall"], 3),
        "n_pred": len(pred),
        "n_true": len(truth),
    }


def run_truth(out: Path, scenes: list[str]) -> None:
    """Vectorize the rasterized truth with and without separation."""
    for name in scenes:
        scene = DATA / name
        raster = truth_raster(scene, out / f"{name}_truth.tif")
        truth = truth_polygons(scene)
        with rasterio.open(raster) as src:
            comps = _components(src.read(1) == 1)
        for separate in (False, True):
            t0 = time.perf_counter()
            layers = vectorize(raster, min_area_m2=1.0, separate=separate)
            row = {"scene": name, "input": "truth raster", "separate": separate}
            row |= score(truth, layers)
            row |= {"raster_components": comps, "seconds": round(time.perf_counter() - t0, 2)}
            print(json.dumps(row), flush=True)


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def pixel_iou(scene: Path, classified: Path) -> float:
    """Building pixel IoU of a class raster against the rasterized truth on its grid."""
    with rasterio.open(classified) as src:
        pred, shape, transform = src.read(1) == 1, (src.height, src.width), src.transform
    truth = rasterio.features.rasterize(
        [(g, 1) for g in truth_polygons(scene)], out_shape=shape, transform=transform
    ).astype(bool)
    return float((pred & truth).sum() / max((pred | truth).sum(), 1))


def run_model(run: Path, scene: Path, min_areas: list[float | None]) -> None:
    """Vectorize the model's predictions on the held-out part in every variant."""
    with rasterio.open(run / "bottom.tif") as src:
        bounds = tuple(src.bounds)
    truth = truth_polygons(scene, bounds)
    for tta in ("plain", "flips"):
        classified, prob = run / f"classified_{tta}.tif", run / f"prob_{tta}.tif"
        iou = round(pixel_iou(scene, classified), 3)
        for mode in ("off", "distance", "probability"):
            for min_area in min_areas:
                kw: dict[str, Any] = {"separate": mode != "off"}
                if mode == "probability":
                    kw["probabilities"] = prob
                if min_area is not None:
                    kw["min_area_m2"] = min_area
                t0 = time.perf_counter()
                layers = vectorize(classified, **kw)
                row = {"scene": scene.name, "tta": tta, "pixel_iou": iou}
                row |= {"separation": mode, "min_area_m2": min_area}
                row |= score(truth, layers) | {"seconds": round(time.perf_counter() - t0, 2)}
                print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the measurement named on the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["truth", "model"])
    p.add_argument("--out", type=Path, default=Path("bench_out/separation"))
    p.add_argument("--run", type=Path, default=Path("bench_out/kampala"))
    p.add_argument("--scene", type=Path, default=DATA / "oam_kampala", help="model: truth")
    p.add_argument("--scenes", nargs="+", default=["oam_kampala", "oam_zanzibar"])
    p.add_argument("--min-areas", nargs="+", type=float, default=[2.0, 5.0, 10.0, 20.0])
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "truth":
        run_truth(args.out, args.scenes)
    else:
        run_model(args.run, args.scene, list(args.min_areas))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
