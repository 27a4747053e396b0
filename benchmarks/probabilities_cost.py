"""What the probabilities ``classify`` writes by default cost, and what they change downstream.

``classify`` writes the class probabilities beside the class raster by default
(``<stem>_probabilities.tif``, uint8, one band per class) so that ``vectorize`` of the class
raster alone drops the buildings the network was never sure of. This measures, with a trained
model on a real scene, side by side in one process:

1. ``--rounds`` times, alternately (so a change of machine load weighs on both): the scene
   classified with ``probabilities=False`` and with the default; best and median seconds, and
   the ratio;
2. the files: class raster and probabilities in bytes per pixel;
3. the scene itself (not laid out) classified each way, then ``vectorize(class raster)`` (the
   analyst's ``classify`` then ``vectorize``): buildings kept, its seconds, and, with
   ``--truth`` (a label raster of the scene, building > 0, or building polygons), the object
   F1 at IoU >= 0.5.

``--repeat N`` lays the image N x N times (mirrored, so no seam) into the work folder first,
to time a larger scene with the same content. The last line is one JSON object.

Usage::

    python benchmarks/probabilities_cost.py --model bench_out/s24/base1/inria_austin/model \\
        --image bench_out/s24/base1/inria_austin/test.tif \\
        --truth bench_out/s24/base1/inria_austin/test_mask.tif --repeat 4
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from _common import add_tiling_args, add_work_arg, emit, parser, work_dir


def mirrored(image: Path, repeat: int, out: Path) -> Path:
    """``image`` laid ``repeat`` x ``repeat`` times, every other copy mirrored (no seams)."""
    if repeat == 1:
        return image
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    rows = []
    for i in range(repeat):
        row = [data[:, ::-1] if i % 2 else data for _ in range(repeat)]
        row = [r[:, :, ::-1] if j % 2 else r for j, r in enumerate(row)]
        rows.append(np.concatenate(row, axis=2))
    big = np.concatenate(rows, axis=1)
    profile.update(height=big.shape[1], width=big.shape[2], tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate")  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(big)
    return out


def classify_once(model: Any, image: Path, out: Path, args: Any, probabilities: bool) -> float:
    """Seconds of one ``model.classify(image, out)``, outputs replaced."""
    t0 = time.perf_counter()
    model.classify(image, out, tile_size=args.tile, overlap=args.overlap, batch_size=args.batch,
                   probabilities=probabilities, overwrite=True, progress=False,
                   engine=args.engine)  # fmt: skip
    return time.perf_counter() - t0


def object_f1(buildings: Any, truth: Path | None, classified: Path) -> float | None:
    """Object F1 (one-to-one matching at IoU >= 0.5) of ``buildings`` against ``truth``.

    A label raster's true buildings are its 4-connected regions of value > 0 (as
    ``recipe.py`` takes them), a vector file's its polygons; pieces under 2 m² are dropped.
    """
    if truth is None or buildings is None:
        return None
    import geopandas as gpd
    import shapely
    from rasterio import features

    from geounet.evaluation.metrics import match_polygons

    with rasterio.open(classified) as src:
        crs = src.crs
    if truth.suffix.lower() in (".tif", ".tiff"):
        with rasterio.open(truth) as src:
            mask = (src.read(1) > 0).astype(np.uint8)
            shapes = features.shapes(mask, mask, 4, src.transform)
            true = [shapely.geometry.shape(g) for g, v in shapes if v]
    else:
        true = list(gpd.read_file(truth).to_crs(crs).geometry)
    true = [g for g in true if g.area >= 2.0]
    return round(float(match_polygons(true, list(buildings.to_crs(crs).geometry))["f1"]), 4)


def vectorized(classified: Path, truth: Path | None) -> dict[str, Any]:
    """``vectorize(classified)`` as an analyst calls it: seconds, buildings, object F1."""
    from geounet.vectorizing.pipeline import vectorize

    t0 = time.perf_counter()
    buildings = vectorize(classified).get("building")
    return {
        "vectorize_s": round(time.perf_counter() - t0, 3),
        "buildings": None if buildings is None else len(buildings),
        "object_f1": object_f1(buildings, truth, classified),
    }


def run(args: Any) -> dict[str, Any]:
    """Time, size and vectorize both ways; the figures."""
    from geounet.app.classifier import UnetClassifier
    from geounet.inference.options import probabilities_path

    work = work_dir(Path(args.work))
    image = mirrored(Path(args.image), args.repeat, work / f"scene_x{args.repeat}.tif")
    model = UnetClassifier.from_model(args.model, device="cpu")
    outs = {False: work / "plain_classified.tif", True: work / "default_classified.tif"}
    times: dict[bool, list[float]] = {False: [], True: []}
    classify_once(model, image, outs[True], args, True)  # warm-up: engine choice, caches
    for _ in range(args.rounds):
        for probs in (False, True):
            times[probs].append(classify_once(model, image, outs[probs], args, probs))
    with rasterio.open(image) as src:
        pixels = src.width * src.height
    result: dict[str, Any] = {"pixels": pixels, "rounds": args.rounds, "engine": args.engine}
    truth = Path(args.truth) if args.truth else None
    for probs, name in ((False, "no_probabilities"), (True, "default")):
        files = [outs[probs]] + ([probabilities_path(outs[probs])] if probs else [])
        result[name] = {
            "classify_s_best": round(min(times[probs]), 3),
            "classify_s_median": round(statistics.median(times[probs]), 3),
            "bytes_per_pixel": [round(f.stat().st_size / pixels, 4) for f in files],
        }
        # the scene itself (not the laid-out copy), for the truth
        original = work / f"original_{name}.tif"
        classify_once(model, Path(args.image), original, args, probs)
        result[name].update(vectorized(original, truth))
    plain, default = result["no_probabilities"], result["default"]
    result["classify_ratio_best"] = round(default["classify_s_best"] / plain["classify_s_best"], 3)
    result["classify_ratio_median"] = round(
        default["classify_s_median"] / plain["classify_s_median"], 3
    )
    return result


def main() -> None:
    """Parse the arguments, measure, print a table and the JSON line."""
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="a trained model folder")
    p.add_argument("--image", required=True, help="the scene to classify")
    p.add_argument("--truth", default=None, help="label raster (building > 0) or polygons")
    p.add_argument("--repeat", type=int, default=1, help="lay the image N x N times")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--engine", default="torch")
    add_tiling_args(p)
    add_work_arg(p, "bench_out/probabilities_cost")
    args = p.parse_args()
    result = run(args)
    for name in ("no_probabilities", "default"):
        r = result[name]
        print(f"{name:17s} classify {r['classify_s_best']:.2f} s (median "
              f"{r['classify_s_median']:.2f}), bytes/pixel {r['bytes_per_pixel']}, "
              f"vectorize {r['vectorize_s']:.2f} s, {r['buildings']} buildings, "
              f"object F1 {r['object_f1']}")  # fmt: skip
    print(f"classify with the probabilities / without: x{result['classify_ratio_best']} (best), "
          f"x{result['classify_ratio_median']} (median)")  # fmt: skip
    emit(result)


if __name__ == "__main__":
    sys.exit(main())
