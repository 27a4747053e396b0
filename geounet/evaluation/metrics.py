"""Evaluation metrics: pixel confusion matrices, per-class scores, building F1, road metrics.

Pure functions: numpy arrays and shapely geometries in, numbers and tables out. No torch, no
file IO, so the training loop, ``geounet evaluate`` and the benchmarks share them.

Conventions: confusion matrices have rows = truth and columns = prediction; a ratio whose
denominator is zero is NaN (undefined), never 0.

Example:
    >>> import numpy as np
    >>> from geounet.evaluation.metrics import confusion_matrix, mean_iou
    >>> truth = np.array([[0, 0], [1, 255]])
    >>> pred = np.array([[0, 1], [1, 1]])
    >>> confusion_matrix(pred, truth, 2).tolist()
    [[1, 1], [0, 1]]
    >>> round(mean_iou(confusion_matrix(pred, truth, 2)), 3)
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely

from geounet.core.errors import CRSMismatchError, InvalidParameterError
from geounet.core.types import IGNORE_INDEX

__all__ = [
    "ConfusionAccumulator",
    "best_ious",
    "cohen_kappa",
    "confusion_matrix",
    "line_completeness_correctness",
    "match_polygons",
    "mean_iou",
    "per_class_metrics",
    "pixel_accuracy",
]


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Pixel confusion matrix, rows = truth class, columns = predicted class.

    Pixels where ``truth`` *or* ``pred`` equals ``ignore_index`` are left out: no label means
    nothing to score, and a prediction of nodata (outside the scene) is not a class.

    Args:
        pred: Predicted class indices, any shape.
        truth: True class indices, the same shape.
        n_classes: Number of classes ``K``; values must lie in ``[0, K)`` or be ``ignore_index``.
        ignore_index: The "no label / nodata" value.

    Returns:
        An ``int64`` ``(K, K)`` array.

    Raises:
        InvalidParameterError: If the shapes differ or a value is not a class.

    Example:
        >>> confusion_matrix(np.array([1, 1, 0]), np.array([1, 0, 0]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise InvalidParameterError(
            f"prediction shape {pred.shape} differs from truth shape {truth.shape}."
        )
    if n_classes < 1:
        raise InvalidParameterError(f"n_classes={n_classes} must be >= 1.")
    pred = pred.ravel()
    truth = truth.ravel()
    keep = truth != ignore_index
    keep &= pred != ignore_index
    if not keep.all():
        pred, truth = pred[keep], truth[keep]
    _check_classes(truth, n_classes, ignore_index, "truth")
    _check_classes(pred, n_classes, ignore_index, "prediction")
    index = truth.astype(np.intp)
    index *= n_classes
    index += pred if pred.dtype.kind in "biu" else pred.astype(np.intp)
    counts = np.bincount(index, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64, copy=False)


def _check_classes(arr: np.ndarray, n_classes: int, ignore_index: int, name: str) -> None:
    if arr.size == 0:
        return
    if arr.dtype.kind not in "biu" and not np.all(np.mod(arr, 1) == 0):
        raise InvalidParameterError(f"{name} must hold integer class indices; got {arr.dtype}.")
    low, high = arr.min(), arr.max()
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise InvalidParameterError(
            f"{name} holds value {int(bad)}, which is not a class in [0, {n_classes}) "
            f"nor the ignore value {ignore_index}."
        )


class ConfusionAccumulator:
    """Sum confusion matrices over many batches or tiles.

    Example:
        >>> acc = ConfusionAccumulator(2)
        >>> acc.update(np.array([0, 1]), np.array([0, 0]))
        >>> acc.update(np.array([1]), np.array([1]))
        >>> acc.matrix.tolist()
        [[1, 1], [0, 1]]
    """

    def __init__(self, n_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if n_classes < 1:
            raise InvalidParameterError(f"n_classes={n_classes} must be >= 1.")
        self.n_classes = int(n_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = np.zeros((self.n_classes, self.n_classes), np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add the pixels of one prediction/truth pair (see :func:`confusion_matrix`)."""
        self._matrix += confusion_matrix(pred, truth, self.n_classes, self.ignore_index)

    def merge(self, other: ConfusionAccumulator | np.ndarray) -> None:
        """Add another accumulator's (or a plain ``(K, K)``) matrix, e.g. from another worker."""
        m = other.matrix if isinstance(other, ConfusionAccumulator) else np.asarray(other)
        if m.shape != self._matrix.shape:
            raise InvalidParameterError(f"cannot add a {m.shape} matrix to {self._matrix.shape}.")
        self._matrix += m.astype(np.int64)

    @property
    def matrix(self) -> np.ndarray:
        """The summed ``int64`` ``(K, K)`` matrix (a copy)."""
        return self._matrix.copy()

    def reset(self) -> None:
        """Start again from zeros."""
        self._matrix[:] = 0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_square(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise InvalidParameterError(f"a confusion matrix must be square (K, K); got {cm.shape}.")
    return cm.astype(np.float64)


def per_class_metrics(cm: np.ndarray, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Precision, recall, F1, IoU and support for each class of a confusion matrix.

    A score whose denominator is zero is NaN: a class absent from both truth and prediction
    gets NaN everywhere, a class predicted but absent from truth gets precision 0, recall NaN.

    Args:
        cm: ``(K, K)`` matrix, rows = truth, columns = prediction.
        class_names: ``K`` names for the index; default ``"0"``, ``"1"``, ...

    Returns:
        A DataFrame indexed by class name with columns ``precision``, ``recall``, ``f1``,
        ``iou`` (floats) and ``support`` (true pixels, int).

    Example:
        >>> cm = np.array([[3, 1], [0, 2]])
        >>> df = per_class_metrics(cm, ["background", "building"])
        >>> round(float(df.loc["building", "iou"]), 3), int(df.loc["building", "support"])
        (0.667, 2)
    """
    m = _check_square(cm)
    names = [str(i) for i in range(m.shape[0])] if class_names is None else list(class_names)
    if len(names) != m.shape[0]:
        raise InvalidParameterError(f"{len(names)} class names for a {m.shape[0]}-class matrix.")
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    df = pd.DataFrame(
        {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
            "support": (tp + fn).astype(np.int64),
        },
        index=pd.Index(names, name="class"),
    )
    return df


def mean_iou(cm: np.ndarray, ignore_background: bool = False) -> float:
    """Mean IoU over the classes present in truth or prediction (NaN if there are none).

    Args:
        cm: ``(K, K)`` matrix, rows = truth, columns = prediction.
        ignore_background: Leave class 0 out of the mean.

    Example:
        >>> mean_iou(np.array([[3, 1], [0, 2]]), ignore_background=True)
        0.6666666666666666
    """
    iou = per_class_metrics(cm)["iou"].to_numpy()
    if ignore_background:
        iou = iou[1:]
    iou = iou[~np.isnan(iou)]
    return float(iou.mean()) if iou.size else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Share of scored pixels classified correctly (NaN for an empty matrix).

    Example:
        >>> pixel_accuracy(np.array([[3, 1], [0, 2]]))
        0.8333333333333334
    """
    m = _check_square(cm)
    return float(_ratio(np.trace(m), m.sum()))


def cohen_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``.

    ``p_o`` is the overall accuracy and ``p_e`` the agreement expected from the row and
    column totals alone. NaN for an empty matrix or when chance agreement is already total
    (``p_e == 1``, e.g. truth and prediction both hold one single class).

    Example:
        >>> round(cohen_kappa(np.array([[3, 1], [0, 2]])), 4)
        0.6667
    """
    m = _check_square(cm)
    total = m.sum()
    if total <= 0:
        return float("nan")
    p_o = np.trace(m) / total
    p_e = float((m.sum(axis=0) * m.sum(axis=1)).sum()) / total**2
    return float((p_o - p_e) / (1.0 - p_e)) if p_e < 1.0 else float("nan")


def _geometry_array(geoms: Any, name: str) -> np.ndarray:
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    bad = [g for g in arr if g is not None and not isinstance(g, shapely.Geometry)]
    if bad:
        raise InvalidParameterError(f"{name} must hold shapely geometries; got {type(bad[0])}.")
    return arr


def _check_same_crs(a: Any, b: Any) -> None:
    crs_a, crs_b = getattr(a, "crs", None), getattr(b, "crs", None)
    if crs_a is not None and crs_b is not None and crs_a != crs_b:
        raise CRSMismatchError(
            f"truth is in {crs_a} but prediction in {crs_b}; reproject one with .to_crs()."
        )


def _object_scores(tp: int, n_truth: int, n_pred: int) -> dict[str, float]:
    fp, fn = n_pred - tp, n_truth - tp
    return {
        "precision": float(_ratio(tp, n_pred)),
        "recall": float(_ratio(tp, n_truth)),
        "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
    }


def match_polygons(truth: Any, pred: Any, iou_threshold: float = 0.5) -> dict[str, Any]:
    """One-to-one matching of predicted to true polygons, the SpaceNet building metric.

    Candidate pairs are the intersecting (truth, prediction) pairs found with an STRtree;
    pairs with IoU ``>= iou_threshold`` are accepted greedily by descending IoU (ties by
    index), each truth and each prediction used at most once. Matched pairs are true
    positives, unmatched predictions false positives, unmatched truths false negatives.
    Missing or empty geometries are not counted. Invalid polygons are repaired with
    ``shapely.make_valid`` first.

    Args:
        truth: True polygons (a sequence of shapely geometries or a GeoSeries).
        pred: Predicted polygons, in the same coordinate system.
        iou_threshold: Smallest IoU of a match, in ``(0, 1]``.

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f1", "matches"}`` where ``matches`` lists
        ``(i_truth, j_pred, iou)`` with positions in the inputs, by descending IoU. A ratio
        with a zero denominator is NaN.

    Raises:
        CRSMismatchError: If both inputs carry different ``.crs``.

    Example:
        >>> from shapely import box
        >>> r = match_polygons([box(0, 0, 10, 10), box(20, 0, 30, 10)], [box(1, 0, 11, 10)])
        >>> r["tp"], r["fp"], r["fn"], round(r["f1"], 3)
        (1, 0, 1, 0.667)
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InvalidParameterError(f"iou_threshold={iou_threshold} must lie in (0, 1].")
    _check_same_crs(truth, pred)
    t = _polygon_array(_geometry_array(truth, "truth"))
    p = _polygon_array(_geometry_array(pred, "pred"))
    t_ok = np.flatnonzero(~shapely.is_missing(t) & ~shapely.is_empty(t))
    p_ok = np.flatnonzero(~shapely.is_missing(p) & ~shapely.is_empty(p))
    matches = _greedy_matches(t, p, t_ok, p_ok, iou_threshold)
    tp = len(matches)
    n_truth, n_pred = t_ok.size, p_ok.size
    return {
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_truth - tp,
        **_object_scores(tp, n_truth, n_pred),
        "matches": matches,
    }


def best_ious(truth: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """The largest IoU of each true polygon with any prediction, and of each prediction.

    The pairs :func:`match_polygons` considers (intersecting, invalid polygons repaired);
    0 where nothing touches a polygon.

    Example:
        >>> from shapely import box
        >>> t, p = best_ious([box(0, 0, 10, 10), box(20, 0, 30, 10)], [box(1, 0, 11, 10)])
        >>> [round(float(x), 3) for x in t], [round(float(x), 3) for x in p]
        ([0.818, 0.0], [0.818])
    """
    t = _polygon_array(_geometry_array(truth, "truth"))
    p = _polygon_array(_geometry_array(pred, "pred"))
    best_t, best_p = np.zeros(len(t)), np.zeros(len(p))
    t_ok = np.flatnonzero(~shapely.is_missing(t) & ~shapely.is_empty(t))
    p_ok = np.flatnonzero(~shapely.is_missing(p) & ~shapely.is_empty(p))
    if t_ok.size and p_ok.size:
        i, j, iou = _pair_ious(t, p, t_ok, p_ok)
        np.maximum.at(best_t, i, iou)
        np.maximum.at(best_p, j, iou)
    return best_t, best_p


def _polygon_array(geoms: np.ndarray) -> np.ndarray:
    present = ~shapely.is_missing(geoms)
    invalid = present & ~shapely.is_valid(np.where(present, geoms, None))
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    return geoms


def _pair_ious(t: np.ndarray, p: np.ndarray, t_ok: np.ndarray, p_ok: np.ndarray) -> tuple:
    tree = shapely.STRtree(t[t_ok])
    pj, ti = tree.query(p[p_ok], predicate="intersects")
    i, j = t_ok[ti], p_ok[pj]
    inter = shapely.area(shapely.intersection(t[i], p[j]))
    union = shapely.area(t[i]) + shapely.area(p[j]) - inter
    iou = _ratio(inter, union)
    return i, j, np.nan_to_num(iou, nan=0.0)


def _greedy_matches(
    t: np.ndarray, p: np.ndarray, t_ok: np.ndarray, p_ok: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    if t_ok.size == 0 or p_ok.size == 0:
        return []
    i, j, iou = _pair_ious(t, p, t_ok, p_ok)
    keep = iou >= threshold
    i, j, iou = i[keep], j[keep], iou[keep]
    order = np.lexsort((j, i, -iou))
    used_t: set[int] = set()
    used_p: set[int] = set()
    matches = []
    for k in order:
        a, b = int(i[k]), int(j[k])
        if a in used_t or b in used_p:
            continue
        used_t.add(a)
        used_p.add(b)
        matches.append((a, b, float(iou[k])))
    return matches


def line_completeness_correctness(
    truth_lines: Any, pred_lines: Any, buffer_m: float
) -> dict[str, float]:
    """Length-based completeness, correctness and quality of extracted lines (roads).

    ``completeness`` = length of truth within ``buffer_m`` of the prediction / truth length;
    ``correctness`` = length of prediction within ``buffer_m`` of the truth / prediction length;
    ``quality`` = matched prediction length / (prediction length + unmatched truth length),
    i.e. TP / (TP + FP + FN) in lengths (Wiedemann et al., 1998). Lengths are summed per
    geometry (overlapping duplicates count twice). Geometries must be in a projected, metric
    CRS (reproject lon/lat data to its UTM zone first); a ratio with a zero denominator is NaN.

    Args:
        truth_lines: True lines (shapely geometries or a GeoSeries).
        pred_lines: Predicted lines in the same CRS.
        buffer_m: Tolerance in metres (SpaceNet roads: about 3 m).

    Returns:
        ``{"completeness", "correctness", "quality", "truth_length", "pred_length",
        "matched_truth_length", "matched_pred_length"}``.

    Raises:
        InvalidParameterError: If ``buffer_m <= 0`` or an input has a geographic ``.crs``.
        CRSMismatchError: If both inputs carry different ``.crs``.

    Example:
        >>> from shapely import LineString
        >>> r = line_completeness_correctness(
        ...     [LineString([(0, 0), (100, 0)])], [LineString([(0, 1), (50, 1)])], 3.0)
        >>> round(r["completeness"], 2), r["correctness"]   # 50 m + the round buffer end
        (0.53, 1.0)
    """
    if not buffer_m > 0:
        raise InvalidParameterError(f"buffer_m={buffer_m} must be > 0 (metres).")
    _check_same_crs(truth_lines, pred_lines)
    for name, data in (("truth_lines", truth_lines), ("pred_lines", pred_lines)):
        crs = getattr(data, "crs", None)
        if crs is not None and getattr(crs, "is_geographic", False):
            raise InvalidParameterError(
                f"{name} is in geographic {crs}; reproject to a metric CRS first, e.g. "
                "gdf.to_crs(gdf.estimate_utm_crs())."
            )
    t = _present(_geometry_array(truth_lines, "truth_lines"))
    p = _present(_geometry_array(pred_lines, "pred_lines"))
    t_len, p_len = float(shapely.length(t).sum()), float(shapely.length(p).sum())
    t_hit = _length_within(t, p, buffer_m)
    p_hit = _length_within(p, t, buffer_m)
    return {
        "completeness": float(_ratio(t_hit, t_len)),
        "correctness": float(_ratio(p_hit, p_len)),
        "quality": float(_ratio(p_hit, p_len + t_len - t_hit)),
        "truth_length": t_len,
        "pred_length": p_len,
        "matched_truth_length": t_hit,
        "matched_pred_length": p_hit,
    }


def _present(geoms: np.ndarray) -> np.ndarray:
    return geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]


def _length_within(lines: np.ndarray, reference: np.ndarray, distance: float) -> float:
    """Total length of ``lines`` lying within ``distance`` of any ``reference`` geometry.

    A line wholly inside one reference buffer counts in full; any other line loses, one
    candidate at a time, its part inside the buffer of each nearby reference geometry
    (vectorised over lines), and the matched length is what was removed.
    """
    if lines.size == 0 or reference.size == 0:
        return 0.0
    li, ri = shapely.STRtree(reference).query(lines, predicate="dwithin", distance=distance)
    if li.size == 0:
        return 0.0
    used = np.unique(ri)
    zones = np.empty(reference.size, dtype=object)
    zones[used] = shapely.buffer(reference[used], distance)
    shapely.prepare(zones[used])
    inside = np.unique(li[shapely.covers(zones[ri], lines[li])])  # wholly within one zone
    matched = float(shapely.length(lines[inside]).sum())
    partial = ~np.isin(li, inside)
    li, ri = li[partial], ri[partial]
    if li.size == 0:
        return matched
    order = np.argsort(li, kind="stable")
    li, ri = li[order], ri[order]
    rank = np.arange(li.size) - np.searchsorted(li, li)
    rest = lines.copy()
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        rest[li[sel]] = shapely.difference(rest[li[sel]], zones[ri[sel]])
    touched = np.unique(li)
    removed = shapely.length(lines[touched]).sum() - shapely.length(rest[touched]).sum()
    return matched + float(removed)
