"""Which buildings were found, missed or made up: the building match as map layers.

``evaluate(..., objects="scored.gpkg")`` (``geounet evaluate --objects``) writes the
buildings as the one-to-one match of the object F1 scored them, a layer each, so a GIS analyst
can look at every miss over the image:

- ``matched``: predicted buildings matched to a true one (``iou``, ``area_m2``,
  ``true_area_m2``);
- ``missed``: true buildings no prediction matched (``area_m2``; ``best_iou``, the largest
  IoU of any predicted polygon over it, 0 where none touches it);
- ``false_positive``: predicted buildings matched to none (``area_m2``, ``best_iou``).

When the prediction is a class raster, each missed building also says what the map holds
there (:func:`explain_missed`): ``share_classed``, the share of its pixels classed building,
and ``peak_probability``, its most confident building pixel, when the class raster names the
probabilities ``classify`` wrote beside it. A miss with a peak near 0 was never seen (an
outline of something the image does not show, or a kind of roof the training labels lack:
label some); one with a sure pixel and a small share was found in part (a polygon too small
for the match, a shed under the smallest area kept, a roof merged into another).

Example:
    >>> from shapely import box
    >>> truth = gpd.GeoSeries([box(0, 0, 10, 10), box(20, 0, 30, 10)], crs="EPSG:32631")
    >>> pred = gpd.GeoSeries([box(1, 0, 11, 10), box(20, 0, 23, 10)], crs="EPSG:32631")
    >>> layers = building_outcomes(truth, pred)
    >>> [len(layers[k]) for k in ("matched", "missed", "false_positive")]
    [1, 1, 1]
    >>> round(float(layers["missed"]["best_iou"].iloc[0]), 2)
    0.3
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window
from shapely.affinity import affine_transform

from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX
from geounet.evaluation.metrics import best_ious, match_polygons
from geounet.io.raster import RasterInfo
from geounet.vectorizing.confidence import (
    PROBABILITIES_TAG,
    probability_bands,
    tagged_probabilities,
)

__all__ = ["OUTCOME_LAYERS", "building_outcomes", "explain_missed"]

#: The layers :func:`building_outcomes` returns, in order.
OUTCOME_LAYERS = ("matched", "missed", "false_positive")


def building_outcomes(
    truth: gpd.GeoSeries, pred: gpd.GeoSeries, iou_threshold: float = 0.5
) -> dict[str, gpd.GeoDataFrame]:
    """The buildings as the object F1 scores them: matched, missed and false positive.

    Args:
        truth: True building polygons, in a metric CRS (areas are given in m²).
        pred: Predicted building polygons, in the same CRS.
        iou_threshold: Smallest IoU of a match (as :func:`~geounet.evaluation.metrics.
            match_polygons`, whose matching this is).

    Returns:
        ``{"matched", "missed", "false_positive"}`` GeoDataFrames in ``truth``'s CRS (see
        the module docstring for their columns); the counts are the ``tp``, ``fn`` and
        ``fp`` of the match.
    """
    crs = truth.crs if truth.crs is not None else pred.crs
    t = shapely.make_valid(np.asarray(list(truth), dtype=object))
    p = shapely.make_valid(np.asarray(list(pred), dtype=object))
    m = match_polygons(t, p, iou_threshold)
    ti = np.array([i for i, _, _ in m["matches"]], dtype=np.int64)
    pj = np.array([j for _, j, _ in m["matches"]], dtype=np.int64)
    ious = np.array([iou for _, _, iou in m["matches"]], dtype=float)
    best_t, best_p = best_ious(t, p)
    missed = np.setdiff1d(np.arange(len(t)), ti)
    false = np.setdiff1d(np.arange(len(p)), pj)
    return {
        "matched": gpd.GeoDataFrame(
            {"iou": ious, "area_m2": shapely.area(p[pj]), "true_area_m2": shapely.area(t[ti])},
            geometry=list(p[pj]),
            crs=crs,
        ),
        "missed": gpd.GeoDataFrame(
            {"area_m2": shapely.area(t[missed]), "best_iou": best_t[missed]},
            geometry=list(t[missed]),
            crs=crs,
        ),
        "false_positive": gpd.GeoDataFrame(
            {"area_m2": shapely.area(p[false]), "best_iou": best_p[false]},
            geometry=list(p[false]),
            crs=crs,
        ),
    }


def _pixel_window(geom: object, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(row0, col0, rows, cols)`` of the pixels a polygon in pixel coordinates may touch."""
    c0, r0, c1, r1 = shapely.bounds(geom)
    r0, c0 = max(0, math.floor(r0)), max(0, math.floor(c0))
    r1, c1 = min(height, math.ceil(r1)), min(width, math.ceil(c1))
    return (r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _footprint(geom: object, win: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of ``win`` whose centres lie in ``geom`` (all it touches if none)."""
    r0, c0, rows, cols = win
    for touched in (False, True):  # a shed thinner than a pixel has no pixel centre inside
        mask = rasterio.features.rasterize(
            [(geom, 1)],
            out_shape=(rows, cols),
            transform=Affine.translation(c0, r0),
            fill=0,
            all_touched=touched,
            dtype="uint8",
        ).astype(bool)
        if mask.any():
            break
    return mask


def _open_on_grid(
    path: Path | None, like: rasterio.io.DatasetReader
) -> rasterio.io.DatasetReader | None:
    """``path`` opened when it lies on ``like``'s grid, else None (nothing to read there)."""
    if path is None:
        return None
    src = rasterio.open(path)
    if (src.width, src.height) == (like.width, like.height) and src.transform.almost_equals(
        like.transform
    ):
        return src
    src.close()
    return None


def _band(prob: rasterio.io.DatasetReader | None, value: int, name: str) -> int | None:
    """The band of ``prob`` that holds the building probability (None: none to read)."""
    if prob is None:
        return None
    try:
        return probability_bands(prob, {value: name})[value]
    except InvalidParameterError:  # not the probabilities of this class raster
        return None


def explain_missed(
    missed: gpd.GeoDataFrame,
    class_raster: RasterInfo,
    value: int,
    name: str,
    probabilities: Path | None = None,
) -> gpd.GeoDataFrame:
    """Add what the class raster holds under each missed building.

    Args:
        missed: The ``missed`` layer of :func:`building_outcomes`, in any CRS.
        class_raster: The predicted class raster.
        value: Its building value.
        name: The building class name (finds the probability band by its description).
        probabilities: The probability raster ``classify`` wrote with it (one band per
            class); None: the one the class raster's ``GEOUNET_PROBABILITIES`` tag names,
            while it is still there. One on another grid is not read.

    Returns:
        ``missed`` with ``share_classed`` (share of the outline's valid pixels classed
        building; NaN off the raster) and ``peak_probability`` (its highest building
        probability, 0-1; NaN without ``probabilities``).
    """
    geoms = missed.to_crs(class_raster.crs).geometry.to_numpy() if len(missed) else []
    inv = ~class_raster.transform
    share = np.full(len(missed), np.nan)
    peak = np.full(len(missed), np.nan)
    with rasterio.open(class_raster.path) as src:
        if probabilities is None:
            tag = src.tags().get(PROBABILITIES_TAG)
            probabilities = tagged_probabilities(class_raster.path, tag)
        prob = _open_on_grid(probabilities, src)
        try:
            band = _band(prob, value, name)
            for k, geom in enumerate(geoms):
                px = affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
                win = _pixel_window(px, src.height, src.width)
                if win is None:
                    continue
                inside = _footprint(px, win)
                window = Window(win[1], win[0], win[3], win[2])
                classes = src.read(1, window=window)[inside]
                valid = classes != IGNORE_INDEX
                if valid.any():
                    share[k] = float(np.mean(classes[valid] == value))
                if prob is not None and band is not None:
                    peak[k] = float(prob.read(band, window=window)[inside].max()) / 255.0
        finally:
            if prob is not None:
                prob.close()
    out = missed.copy()
    out["share_classed"] = share
    out["peak_probability"] = peak
    return out
