"""``evaluate(objects=)`` / ``geounet evaluate --objects``: the scored buildings as layers."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from shapely import box

from geounet.core.errors import OutputExistsError
from geounet.evaluation.evaluate import evaluate
from geounet.evaluation.outcomes import OUTCOME_LAYERS, building_outcomes, explain_missed
from geounet.io.raster import open_raster, write_raster

NAMES = {0: "background", 1: "building"}
UTM = "EPSG:32616"
# 40 x 40 pixels of 0.5 m from (500000, 3700000) down (conftest's make_raster grid)
FOUND = (500003, 3699993, 500008, 3699998)  # rows 4-13, cols 6-15: found whole
PART = (500010, 3699985, 500018, 3699990)  # rows 20-29, cols 20-35: found in part
UNSEEN = (500001, 3699981, 500004, 3699984)  # rows 32-37, cols 2-7: never seen


def _truth(path, boxes=(FOUND, PART, UNSEEN), layer="building"):
    gpd.GeoDataFrame(geometry=[box(*b) for b in boxes], crs=UTM).to_file(path, layer=layer)
    return path


def _prediction(make_raster, tmp_path, with_probabilities=True):
    """A class raster: FOUND whole, 6 of PART's 16 columns, a false building; probabilities."""
    grid = make_raster(np.zeros((40, 40), np.uint8), name="grid.tif")
    with rasterio.open(grid) as src:
        crs, transform = src.crs, src.transform
    classes = np.zeros((40, 40), np.uint8)
    classes[4:14, 6:16] = 1
    classes[20:30, 20:26] = 1
    classes[34:40, 28:38] = 1  # no building there
    p = write_raster(tmp_path / "pred.tif", classes, crs, transform, nodata=255, class_names=NAMES)
    if with_probabilities:
        building = np.where(classes == 1, 252, 3).astype(np.uint8)
        building[20:30, 26:36] = 40  # the rest of PART: 0.16, under what outlines grow to
        building[32:38, 2:8] = 20  # UNSEEN: 0.08 at most
        probs = np.stack([255 - building, building])
        write_raster(tmp_path / "probs.tif", probs, crs, transform)
        with rasterio.open(tmp_path / "probs.tif", "r+") as dst:
            dst.descriptions = ("background", "building")
        with rasterio.open(p, "r+") as dst:
            dst.update_tags(GEOUNET_PROBABILITIES="probs.tif")
    return p


def _layers(path):
    return {name: gpd.read_file(path, layer=name) for name in OUTCOME_LAYERS}


def test_every_scored_building_is_in_one_layer_with_why_it_was_missed(make_raster, tmp_path):
    p = _prediction(make_raster, tmp_path)
    out = tmp_path / "scored.gpkg"
    r = evaluate(p, _truth(tmp_path / "truth.gpkg"), objects=out)
    assert r["objects"] == [str(out)]
    assert [n for n, _ in pyogrio.list_layers(out)] == list(OUTCOME_LAYERS)
    layers = _layers(out)
    b = r["buildings"]
    counts = [len(layers[k]) for k in OUTCOME_LAYERS]
    # PART's polygon matches nothing: it is a false positive as well as PART a miss
    assert counts == [b["tp"], b["fn"], b["fp"]] == [1, 2, 2]
    assert all(g.crs == UTM for g in layers.values())  # the prediction's CRS
    matched = layers["matched"].iloc[0]
    assert matched["iou"] > 0.9 and matched["true_area_m2"] == pytest.approx(25.0)
    missed = layers["missed"].sort_values("area_m2").reset_index(drop=True)
    unseen, part = missed.iloc[0], missed.iloc[1]
    assert unseen["area_m2"] == pytest.approx(9.0) and unseen["best_iou"] == 0.0
    assert unseen["share_classed"] == 0.0 and unseen["peak_probability"] == pytest.approx(20 / 255)
    assert part["area_m2"] == pytest.approx(40.0)
    assert 0.3 < part["best_iou"] < 0.5  # 6 of 16 columns, a little more or less once traced
    assert part["share_classed"] == pytest.approx(6 / 16)
    assert part["peak_probability"] == pytest.approx(252 / 255)
    false = layers["false_positive"].sort_values("best_iou").reset_index(drop=True)
    assert false["best_iou"].iloc[0] == 0.0 and false["area_m2"].iloc[0] == pytest.approx(15.0)
    assert false["best_iou"].iloc[1] == pytest.approx(part["best_iou"])


def test_without_the_probabilities_a_miss_still_says_what_share_was_classed(make_raster, tmp_path):
    p = _prediction(make_raster, tmp_path, with_probabilities=False)
    out = tmp_path / "scored.geojson"  # another format: one file per layer
    r = evaluate(p, _truth(tmp_path / "truth.gpkg"), objects=out)
    missed = gpd.read_file(tmp_path / "scored_missed.geojson")
    files = [str(tmp_path / f"scored_{k}.geojson") for k in OUTCOME_LAYERS]
    assert r["objects"] == files and len(missed) == 2
    assert missed["peak_probability"].isna().all()
    assert sorted(missed["share_classed"].round(4)) == [0.0, 0.375]


def test_a_vector_prediction_gives_the_layers_without_raster_columns(tmp_path):
    pred = gpd.GeoDataFrame(geometry=[box(*FOUND), box(500030, 3699990, 500034, 3699994)], crs=UTM)
    pred.to_crs("EPSG:4326").to_file(tmp_path / "pred.gpkg", layer="building")
    out = tmp_path / "scored.gpkg"
    evaluate(tmp_path / "pred.gpkg", _truth(tmp_path / "truth.gpkg"), objects=out)
    layers = _layers(out)
    assert [len(layers[k]) for k in OUTCOME_LAYERS] == [1, 2, 1]
    assert layers["missed"].crs == "EPSG:4326"  # the prediction's CRS
    assert "share_classed" not in layers["missed"].columns


def test_an_existing_output_is_refused_and_nothing_is_written_without_buildings(
    make_raster, tmp_path
):
    p = _prediction(make_raster, tmp_path)
    out = tmp_path / "scored.gpkg"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"scored\.gpkg"):
        evaluate(p, _truth(tmp_path / "truth.gpkg"), objects=out)
    assert out.read_text() == "keep me"
    with rasterio.open(p) as src:  # a land-cover map and its truth: no building class
        crs, transform, classes = src.crs, src.transform, src.read(1)
    fields = {0: "background", 1: "field"}
    pf = write_raster(tmp_path / "f.tif", classes, crs, transform, nodata=255, class_names=fields)
    tf = write_raster(tmp_path / "t.tif", classes, crs, transform, nodata=255, class_names=fields)
    other = tmp_path / "other.gpkg"
    r = evaluate(pf, tf, objects=other)
    assert r["objects"] is None and not other.exists()
    assert any("not written" in n for n in r["notes"])


def test_cli_objects_option_writes_the_layers(make_raster, tmp_path):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    p = _prediction(make_raster, tmp_path)
    out = tmp_path / "scored.gpkg"
    args = ["evaluate", str(p), "--truth", str(_truth(tmp_path / "t.gpkg")), "--objects", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert f"objects: {out}" in res.output
    assert len(gpd.read_file(out, layer="missed")) == 2
    again = CliRunner().invoke(cli, args)  # one line, exit code 2, the file kept
    assert again.exit_code == 2 and "already exists" in again.output
    assert "--overwrite" in again.output
    assert len(gpd.read_file(out, layer="missed")) == 2


def test_building_outcomes_of_empty_inputs():
    empty = gpd.GeoSeries([], crs=UTM)
    truth = gpd.GeoSeries([box(0, 0, 4, 4)], crs=UTM)
    none_found = building_outcomes(truth, empty)
    assert [len(none_found[k]) for k in OUTCOME_LAYERS] == [0, 1, 0]
    assert none_found["missed"]["best_iou"].tolist() == [0.0]
    assert math.isclose(none_found["missed"]["area_m2"].iloc[0], 16.0)
    nothing_true = building_outcomes(empty, truth)
    assert [len(nothing_true[k]) for k in OUTCOME_LAYERS] == [0, 0, 1]


def test_model_evaluate_passes_objects_and_reads_its_own_probabilities(
    labelled_model, tmp_path, one_thread
):
    labels = np.zeros((64, 64), np.uint8)
    labels[8:20, 8:24] = 1
    labels[40:52, 30:50] = 1
    model = labelled_model(labels, 64)  # untrained: whatever it maps, every truth is scored
    out = tmp_path / "scored.gpkg"
    r = model.evaluate(tmp_path / "scene.tif", tmp_path / "labels.tif", objects=out)
    layers = _layers(out)
    b = r["buildings"]
    assert [len(layers[k]) for k in OUTCOME_LAYERS] == [b["tp"], b["fn"], b["fp"]]
    assert b["n_truth"] == 2 and len(layers["missed"]) == b["fn"] >= 1
    # the probabilities lived in a temporary file during the scoring: each miss has its peak
    assert layers["missed"]["peak_probability"].between(0, 1).all()


def test_probabilities_that_do_not_fit_are_not_read(make_raster, tmp_path):
    p = _prediction(make_raster, tmp_path, with_probabilities=False)
    with rasterio.open(p) as src:
        crs, transform = src.crs, src.transform
    one = write_raster(tmp_path / "one.tif", np.full((40, 40), 9, np.uint8), crs, transform)
    other = make_raster(np.zeros((20, 20), np.uint8), name="other_grid.tif")
    truth = gpd.GeoSeries([box(*UNSEEN), box(*PART)], crs=UTM)
    missed = building_outcomes(truth, gpd.GeoSeries([], crs=UTM))["missed"]
    for probs in (one, other):  # one unnamed band; another grid: nothing to read
        got = explain_missed(missed, open_raster(p), 1, "building", probs)
        assert got["peak_probability"].isna().all()
        assert got["share_classed"].round(4).tolist() == [0.0, 0.375]
