"""Object-level scores: buildings (SpaceNet F1, by size) and roads (length metrics and APLS).

Both take geometries in one metric CRS (:func:`to_metric` reprojects a GeoSeries to the
local UTM zone when it is geographic).

Example:
    >>> from shapely import box
    >>> r = building_scores([box(0, 0, 10, 10), box(50, 0, 60, 10)], [box(1, 0, 11, 10)])
    >>> r["tp"], r["fn"], round(r["f1"], 3), [b["tp"] for b in r["by_size"]]
    (1, 1, 0.667, [0, 1, 0, 0])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from geounet.evaluation.apls import APLS_SNAP_M, apls
from geounet.evaluation.metrics import line_completeness_correctness, match_polygons
from geounet.io.raster import local_metric_crs

__all__ = ["SIZE_BUCKETS_M2", "building_scores", "road_scores", "to_metric"]

#: Edges (m²) of the building size buckets: < 50, 50-200, 200-1000, >= 1000 m² (sheds and
#: garages, houses, large houses and blocks, large buildings).
SIZE_BUCKETS_M2: tuple[float, ...] = (0.0, 50.0, 200.0, 1000.0, float("inf"))


def to_metric(gs: gpd.GeoSeries, crs: Any = None) -> gpd.GeoSeries:
    """``gs`` in ``crs`` if given, else in metres.

    Metres are its own units when it is projected and true to scale there, else its UTM zone
    (:func:`geounet.io.raster.local_metric_crs`).
    """
    if crs is not None:
        return gs.to_crs(crs)
    if gs.crs is None or gs.empty:
        return gs
    own = CRS.from_user_input(gs.crs)
    metric = local_metric_crs(own, tuple(gs.total_bounds))  # type: ignore[arg-type]
    return gs if metric == own else gs.to_crs(metric)


def _bucket_names(edges: Sequence[float]) -> list[str]:
    names = []
    for lo, hi in itertools.pairwise(edges):
        names.append(
            f"< {hi:g} m²" if lo <= 0 else f">= {lo:g} m²" if np.isinf(hi) else f"{lo:g}-{hi:g} m²"
        )
    return names


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def building_scores(
    truth: Any,
    pred: Any,
    iou_threshold: float = 0.5,
    buckets: Sequence[float] = SIZE_BUCKETS_M2,
) -> dict[str, Any]:
    """SpaceNet building metric with counts and F1 by building size.

    Predicted and true polygons are matched one-to-one, greedily by IoU, at IoU >=
    ``iou_threshold`` (:func:`geounet.evaluation.metrics.match_polygons`). For the size
    buckets a true positive and a false negative count in the bucket of the true building's
    area, a false positive in the bucket of its own area.

    Args:
        truth: True polygons (shapely geometries or a GeoSeries) in a metric CRS.
        pred: Predicted polygons in the same CRS.
        iou_threshold: Smallest IoU of a match.
        buckets: Increasing bucket edges in m².

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f1", "n_truth", "n_pred", "mean_iou",
        "iou_threshold", "by_size": [{"bucket", "n_truth", "n_pred", "tp", "fp", "fn",
        "precision", "recall", "f1"}, ...]}``.
    """
    t = np.asarray(list(truth), dtype=object)
    p = np.asarray(list(pred), dtype=object)
    m = match_polygons(t, p, iou_threshold)
    ti = np.array([a for a, _, _ in m["matches"]], dtype=np.int64)
    pj = np.array([b for _, b, _ in m["matches"]], dtype=np.int64)
    edges = np.asarray(buckets, dtype=float)
    t_ok = _present(t)
    p_ok = _present(p)
    t_bin = np.digitize(shapely.area(np.where(t_ok, t, None)), edges[1:-1])
    p_bin = np.digitize(shapely.area(np.where(p_ok, p, None)), edges[1:-1])
    by_size = []
    for k, name in enumerate(_bucket_names(edges)):
        tp = int(np.sum(t_bin[ti] == k)) if ti.size else 0
        n_t = int(np.sum(t_ok & (t_bin == k)))
        n_p = int(np.sum(p_ok & (p_bin == k)))
        fp = n_p - (int(np.sum(p_bin[pj] == k)) if pj.size else 0)
        fn = n_t - tp
        by_size.append(
            {"bucket": name, "n_truth": n_t, "n_pred": n_p, "tp": tp, "fp": fp, "fn": fn}
            | {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
            | {"f1": _ratio(2 * tp, 2 * tp + fp + fn)}
        )
    ious = [iou for _, _, iou in m["matches"]]
    return {
        **{k: m[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")},
        "n_truth": int(t_ok.sum()),
        "n_pred": int(p_ok.sum()),
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "iou_threshold": float(iou_threshold),
        "by_size": by_size,
    }


def _present(geoms: np.ndarray) -> np.ndarray:
    if geoms.size == 0:
        return np.zeros(0, dtype=bool)
    return ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)


def road_scores(
    truth_lines: Any, pred_lines: Any, buffer_m: float = 3.0, snap_m: float | None = None
) -> dict[str, Any]:
    """Length-weighted completeness, correctness, quality and APLS of road centre lines.

    Args:
        truth_lines: True centre lines in a metric CRS.
        pred_lines: Predicted centre lines in the same CRS.
        buffer_m: Tolerance of the length metrics.
        snap_m: APLS node snapping distance; default ``buffer_m``
            (SpaceNet-3 used :data:`geounet.evaluation.apls.APLS_SNAP_M`, 4 m).

    Returns:
        The keys of :func:`~geounet.evaluation.metrics.line_completeness_correctness` and of
        :func:`~geounet.evaluation.apls.apls`, plus ``buffer_m`` and ``snap_m``.
    """
    t = np.asarray(list(truth_lines), dtype=object)
    p = np.asarray(list(pred_lines), dtype=object)
    snap = float(buffer_m if snap_m is None else snap_m)
    out: dict[str, Any] = dict(line_completeness_correctness(t, p, buffer_m))
    out.update(apls(t, p, snap_m=snap))
    out.update(buffer_m=float(buffer_m), snap_m=snap, spacenet_snap_m=APLS_SNAP_M)
    return out
