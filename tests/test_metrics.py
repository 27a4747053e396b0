"""Metrics: confusion matrices, per-class scores, SpaceNet polygon matching, road metrics."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import shared_data
from shapely import LineString, Polygon, box
from shapely.affinity import translate

from geounet.core.errors import CRSMismatchError, InvalidParameterError
from geounet.evaluation.metrics import (
    ConfusionAccumulator,
    cohen_kappa,
    confusion_matrix,
    line_completeness_correctness,
    match_polygons,
    mean_iou,
    per_class_metrics,
    pixel_accuracy,
)

IGNORE = 255

# --- pixel metrics --------------------------------------------------------------------------


def test_confusion_matrix_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 1, 0]])
    cm = confusion_matrix(pred, truth, 3)
    # rows = truth, columns = prediction
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 1, 1]]
    assert cm.dtype == np.int64


def test_confusion_matrix_ignores_nodata_in_truth_and_prediction():
    truth = np.array([0, 1, IGNORE, 1, 0])
    pred = np.array([0, 1, 1, IGNORE, 1])
    assert confusion_matrix(pred, truth, 2).tolist() == [[1, 1], [0, 1]]
    # Another ignore value.
    assert confusion_matrix(np.array([0, 1]), np.array([-1, 1]), 2, ignore_index=-1).tolist() == [
        [0, 0],
        [0, 1],
    ]


def test_confusion_matrix_refuses_bad_input():
    with pytest.raises(InvalidParameterError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(InvalidParameterError, match="value 5"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="truth holds value -2"):
        confusion_matrix(np.array([0, 1]), np.array([-2, 1]), 2)


def test_per_class_metrics_by_hand():
    cm = np.array([[2, 1, 0], [0, 2, 0], [1, 1, 1]])
    df = per_class_metrics(cm, ["background", "building", "road"])
    assert list(df.columns) == ["precision", "recall", "f1", "iou", "support"]
    b = df.loc["building"]
    assert b["precision"] == pytest.approx(2 / 4)
    assert b["recall"] == pytest.approx(2 / 2)
    assert b["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 0))
    assert b["iou"] == pytest.approx(2 / 4)
    assert df.loc["road", "iou"] == pytest.approx(1 / 3)
    assert df.loc["background", "iou"] == pytest.approx(2 / 4)
    assert df["support"].tolist() == [3, 2, 3]
    assert df["support"].dtype == np.int64


def test_per_class_metrics_nan_safe():
    # class 1 absent from truth and prediction; class 2 predicted but absent from truth
    cm = np.array([[5, 0, 1], [0, 0, 0], [0, 0, 0]])
    df = per_class_metrics(cm)
    assert df.index.tolist() == ["0", "1", "2"]
    assert df.loc["1", ["precision", "recall", "f1", "iou"]].isna().all()
    assert df.loc["2", "precision"] == 0.0 and math.isnan(df.loc["2", "recall"])
    assert df.loc["2", "iou"] == 0.0
    assert mean_iou(cm) == pytest.approx((5 / 6 + 0.0) / 2)  # class 1 not averaged
    with pytest.raises(InvalidParameterError):
        per_class_metrics(cm, ["a", "b"])


def test_cohen_kappa_by_hand():
    # 50 pixels: observed agreement 35 / 50 = 0.7; chance (25 * 30 + 25 * 20) / 50² = 0.5
    assert cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)
    assert cohen_kappa(np.array([[7, 0], [0, 3]])) == pytest.approx(1.0)
    assert cohen_kappa(np.array([[0, 5], [5, 0]])) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(np.zeros((2, 2))))  # nothing scored
    assert math.isnan(cohen_kappa(np.array([[9, 0], [0, 0]])))  # one class: chance is total


def test_mean_iou_and_pixel_accuracy():
    cm = np.array([[2, 1, 0], [0, 2, 0], [1, 1, 1]])
    assert mean_iou(cm) == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert mean_iou(cm, ignore_background=True) == pytest.approx((0.5 + 1 / 3) / 2)
    assert pixel_accuracy(cm) == pytest.approx(5 / 8)
    empty = np.zeros((2, 2), np.int64)
    assert math.isnan(mean_iou(empty)) and math.isnan(pixel_accuracy(empty))
    assert isinstance(mean_iou(cm), float) and isinstance(pixel_accuracy(cm), float)


def test_accumulator_equals_one_shot():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (6, 32, 32))
    pred = rng.integers(0, 4, (6, 32, 32))
    truth[rng.random(truth.shape) < 0.1] = IGNORE
    pred[rng.random(pred.shape) < 0.05] = IGNORE
    acc = ConfusionAccumulator(4)
    for p, t in zip(pred, truth):
        acc.update(p, t)
    one_shot = confusion_matrix(pred, truth, 4)
    assert np.array_equal(acc.matrix, one_shot)
    other = ConfusionAccumulator(4)
    other.update(pred[0], truth[0])
    acc.merge(other)
    assert np.array_equal(acc.matrix, one_shot + confusion_matrix(pred[0], truth[0], 4))
    acc.reset()
    assert acc.matrix.sum() == 0
    m = acc.matrix
    m[0, 0] = 7  # a copy: the accumulator is not changed
    assert acc.matrix.sum() == 0


# --- building object F1 ---------------------------------------------------------------------


def _brute_force_match(truth, pred, threshold=0.5):
    """O(n*m) reference: every pair's IoU, then greedy one-to-one by descending IoU."""
    pairs = []
    for i, a in enumerate(truth):
        for j, b in enumerate(pred):
            union = a.union(b).area
            iou = a.intersection(b).area / union if union > 0 else 0.0
            if iou >= threshold:
                pairs.append((-iou, i, j))
    used_t, used_p, matches = set(), set(), []
    for neg_iou, i, j in sorted(pairs):
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            matches.append((i, j, -neg_iou))
    return matches


def test_shifted_squares_around_the_threshold():
    truth = [box(0, 0, 10, 10)]
    # shift s along x: IoU = (10 - s) / (10 + s); 0.5 at s = 10/3
    assert match_polygons(truth, [translate(truth[0], 3.0)])["tp"] == 1  # IoU 7/13
    assert match_polygons(truth, [translate(truth[0], 3.5)])["tp"] == 0  # IoU 6.5/13.5
    r = match_polygons(truth, [translate(truth[0], 3.0)])
    assert r["matches"][0][:2] == (0, 0)
    assert r["matches"][0][2] == pytest.approx(7 / 13)
    assert match_polygons(truth, [translate(truth[0], 3.0)], iou_threshold=0.6)["tp"] == 0


def test_duplicates_are_matched_once():
    truth = [box(0, 0, 10, 10), box(30, 0, 40, 10)]
    pred = [box(0, 0, 10, 10), box(0.5, 0, 10.5, 10), box(100, 100, 110, 110)]
    r = match_polygons(truth, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["matches"] == [(0, 0, 1.0)]
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["f1"] == pytest.approx(2 * 1 / (2 + 2 + 1))


def test_greedy_prefers_the_best_pair():
    # pred 0 overlaps truth 0 a bit less than pred 1 does; both above the threshold
    truth = [box(0, 0, 10, 10)]
    pred = [box(2, 0, 12, 10), box(1, 0, 11, 10)]
    r = match_polygons(truth, pred)
    assert r["matches"][0][:2] == (0, 1)


def test_empty_inputs_and_missing_geometries():
    r = match_polygons([], [box(0, 0, 1, 1)])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 1, 0)
    assert r["precision"] == 0.0 and math.isnan(r["recall"]) and r["f1"] == 0.0
    r = match_polygons([box(0, 0, 1, 1), None, Polygon()], [])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 1)
    r = match_polygons([], [])
    assert math.isnan(r["f1"])
    # indices refer to the inputs, missing geometries included
    r = match_polygons([None, box(0, 0, 1, 1)], [Polygon(), box(0, 0, 1, 1)])
    assert r["matches"] == [(1, 1, 1.0)]


def test_invalid_polygons_are_repaired():
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    r = match_polygons([bowtie], [box(0, 0, 10, 10)], iou_threshold=0.4)
    # repaired: two triangles of 25 m² each inside the 100 m² box -> IoU 0.5
    assert r["tp"] == 1 and r["matches"][0][2] == pytest.approx(0.5)
    r = match_polygons([bowtie], [bowtie])
    assert r["tp"] == 1


def test_crs_mismatch_is_refused():
    a = gpd.GeoSeries([box(0, 0, 1, 1)], crs="EPSG:32616")
    b = gpd.GeoSeries([box(0, 0, 1, 1)], crs="EPSG:32617")
    with pytest.raises(CRSMismatchError):
        match_polygons(a, b)
    with pytest.raises(InvalidParameterError):
        match_polygons([box(0, 0, 1, 1)], [box(0, 0, 1, 1)], iou_threshold=0.0)


def test_random_boxes_agree_with_brute_force():
    rng = np.random.default_rng(11)
    truth = [
        box(x, y, x + w, y + h) for x, y, w, h in rng.uniform([0, 0, 2, 2], [60, 60, 9, 9], (60, 4))
    ]
    pred = [translate(g, *rng.normal(0, 1.5, 2)) for g in truth[:45]]
    pred += [box(x, y, x + 5, y + 5) for x, y in rng.uniform(0, 60, (15, 2))]
    r = match_polygons(truth, pred, iou_threshold=0.3)
    expected = _brute_force_match(truth, pred, 0.3)
    assert [(i, j) for i, j, _ in r["matches"]] == [(i, j) for i, j, _ in expected]
    assert np.allclose([m[2] for m in r["matches"]], [m[2] for m in expected])


@pytest.mark.realdata
def test_spacenet_building_f1():
    folder = shared_data("spacenet_vector")
    truth = gpd.read_file(folder / "buildings_truth.geojson")
    pred = gpd.read_file(folder / "buildings_pred.geojson")
    if truth.crs.is_geographic:
        utm = truth.estimate_utm_crs()
        truth, pred = truth.to_crs(utm), pred.to_crs(utm)
    r = match_polygons(truth.geometry, pred.geometry)
    expected = _brute_force_match(list(truth.geometry), list(pred.geometry))
    assert sorted((i, j) for i, j, _ in r["matches"]) == sorted((i, j) for i, j, _ in expected)
    tp = len(expected)
    f1 = 2 * tp / (len(truth) + len(pred))
    assert r["f1"] == pytest.approx(f1)
    # The SpaceNet evaluator (CosmiQ solaris) reports TP 8, FP 20, FN 20 on this pair.
    assert (r["tp"], r["fp"], r["fn"]) == (8, 20, 20)
    assert r["f1"] == pytest.approx(2 * 8 / (2 * 8 + 20 + 20))


# --- road completeness / correctness --------------------------------------------------------


def test_line_offsets_within_and_beyond_the_buffer():
    truth = [LineString([(0, 0), (100, 0)]), LineString([(100, 0), (100, 80)])]
    near = [translate(g, 0.7, 0.7) for g in truth]  # about 1 m off
    r = line_completeness_correctness(truth, near, buffer_m=3.0)
    assert r["completeness"] == pytest.approx(1.0)
    assert r["correctness"] == pytest.approx(1.0)
    assert r["quality"] == pytest.approx(1.0)
    r = line_completeness_correctness(truth[:1], [translate(truth[0], 0.0, 1.0)], buffer_m=3.0)
    assert r["completeness"] == pytest.approx(1.0) and r["correctness"] == pytest.approx(1.0)
    far = [LineString([(0, 5), (100, 5)])]
    r = line_completeness_correctness(truth[:1], far, buffer_m=3.0)
    assert r["completeness"] == 0.0 and r["correctness"] == 0.0 and r["quality"] == 0.0
    assert r["truth_length"] == pytest.approx(100.0) and r["pred_length"] == pytest.approx(100.0)


def test_line_metrics_partial_by_hand():
    truth = [LineString([(0, 0), (100, 0)])]
    # 40 m along the truth 1 m off, and a 60 m line far away (a false positive)
    pred = [LineString([(10, 1), (50, 1)]), LineString([(200, 0), (200, 60)])]
    r = line_completeness_correctness(truth, pred, buffer_m=3.0)
    # round buffer ends around the predicted line (GEOS approximates arcs: 1e-3 tolerance)
    cap = math.sqrt(3**2 - 1**2)
    assert r["matched_truth_length"] == pytest.approx(40 + 2 * cap, rel=1e-3)
    assert r["completeness"] == pytest.approx((40 + 2 * cap) / 100, rel=1e-3)
    assert r["correctness"] == pytest.approx(40 / 100)
    assert r["quality"] == pytest.approx(40 / (100 + 100 - (40 + 2 * cap)), rel=1e-3)


@pytest.mark.realdata
def test_line_metrics_on_real_roads():
    folder = shared_data("spacenet_vector")
    roads = gpd.read_file(folder / "roads.geojson")
    with pytest.raises(InvalidParameterError, match="metric CRS"):
        line_completeness_correctness(roads.geometry, roads.geometry, 3.0)
    roads = roads.to_crs(roads.estimate_utm_crs())
    shifted = roads.geometry.translate(1.0, 0.0)
    r = line_completeness_correctness(roads.geometry, shifted, 3.0)
    assert r["completeness"] == pytest.approx(1.0) and r["correctness"] == pytest.approx(1.0)
    r = line_completeness_correctness(roads.geometry, roads.geometry.iloc[:10], 3.0)
    assert r["correctness"] == pytest.approx(1.0)
    assert 0.0 < r["completeness"] < 1.0
    assert r["truth_length"] > 1000


def test_line_metrics_edge_cases():
    r = line_completeness_correctness([], [LineString([(0, 0), (1, 0)])], 3.0)
    assert math.isnan(r["completeness"]) and r["correctness"] == 0.0
    with pytest.raises(InvalidParameterError):
        line_completeness_correctness([], [], 0.0)
    a = gpd.GeoSeries([LineString([(0, 0), (1, 0)])], crs="EPSG:32616")
    b = gpd.GeoSeries([LineString([(0, 0), (1, 0)])], crs="EPSG:32611")
    with pytest.raises(CRSMismatchError):
        line_completeness_correctness(a, b, 3.0)


def test_metrics_module_is_pure():
    import geounet.evaluation.metrics as m

    source = Path(m.__file__).read_text()
    assert "import torch" not in source and "rasterio" not in source and "open(" not in source
    perfect = per_class_metrics(np.eye(2, dtype=int))
    assert isinstance(perfect, pd.DataFrame)
    assert (perfect[["precision", "recall", "f1", "iou"]].to_numpy() == 1.0).all()
    assert perfect["support"].tolist() == [1, 1]


def test_line_metrics_agree_with_a_single_union_buffer():
    rng = np.random.default_rng(5)
    starts = rng.uniform(0, 200, (40, 2))
    ends = starts + rng.normal(0, 30, (40, 2))
    truth = [LineString([a, b]) for a, b in zip(starts, ends)]
    pred = [translate(g, *rng.normal(0, 2, 2)) for g in truth[:30]]
    pred += [LineString([a, a + rng.normal(0, 20, 2)]) for a in rng.uniform(0, 200, (10, 2))]
    r = line_completeness_correctness(truth, pred, 3.0)
    zone_t = shapely.union_all(shapely.buffer(truth, 3.0))
    zone_p = shapely.union_all(shapely.buffer(pred, 3.0))
    expected_t = sum(g.intersection(zone_p).length for g in truth)
    expected_p = sum(g.intersection(zone_t).length for g in pred)
    assert r["matched_truth_length"] == pytest.approx(expected_t, rel=1e-6)
    assert r["matched_pred_length"] == pytest.approx(expected_p, rel=1e-6)
