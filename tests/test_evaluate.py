"""evaluate / evaluate_rasters: pixel metrics against numpy, nodata, CRSs, outputs, real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from conftest import shared_data
from rasterio.crs import CRS
from shapely import LineString, box
from shapely.affinity import translate

from geounet.core.errors import CRSMismatchError, LabelError, OutputExistsError
from geounet.evaluation import pixels as pixels_module
from geounet.evaluation.apls import apls
from geounet.evaluation.evaluate import evaluate
from geounet.evaluation.metrics import ConfusionAccumulator
from geounet.evaluation.objects import road_scores
from geounet.evaluation.scores import evaluate_rasters
from geounet.io.raster import write_raster

NAMES = {0: "background", 1: "building", 2: "road"}


def _class_raster(tmp_path, name, array, like, nodata=255, names=NAMES):
    """A class raster on the grid of the raster ``like`` (CRS and transform)."""
    with rasterio.open(like) as src:
        crs, transform = src.crs, src.transform
    return write_raster(tmp_path / name, array, crs, transform, nodata=nodata, class_names=names)


def _numpy_confusion(pred, truth, n):
    """Independent reference: count (truth, pred) pairs with np.add.at, skipping 255."""
    cm = np.zeros((n, n), np.int64)
    keep = (pred != 255) & (truth != 255)
    np.add.at(cm, (truth[keep], pred[keep]), 1)
    return cm


# --- pixel metrics against plain numpy ------------------------------------------------------


def test_pixel_metrics_equal_a_numpy_confusion_matrix(make_raster, tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (70, 90)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 3, truth.shape))
    pred = pred.astype(np.uint8)
    truth[rng.random(truth.shape) < 0.1] = 255  # truth nodata
    pred[rng.random(pred.shape) < 0.05] = 255  # prediction nodata
    t = make_raster(truth, name="truth.tif", nodata=255)
    p = _class_raster(tmp_path, "pred.tif", pred, t)
    r = evaluate_rasters(p, t, block=32)  # several windows, ragged edges
    cm = _numpy_confusion(pred.astype(np.int64), truth.astype(np.int64), 3)
    assert r["confusion_matrix"] == cm.tolist()
    tp = np.diag(cm)
    for i, name in NAMES.items():
        fp, fn = cm[:, i].sum() - tp[i], cm[i].sum() - tp[i]
        assert r["per_class"]["precision"][name] == pytest.approx(tp[i] / (tp[i] + fp))
        assert r["per_class"]["recall"][name] == pytest.approx(tp[i] / (tp[i] + fn))
        assert r["per_class"]["f1"][name] == pytest.approx(2 * tp[i] / (2 * tp[i] + fp + fn))
        assert r["per_class"]["iou"][name] == pytest.approx(tp[i] / (tp[i] + fp + fn))
    total = cm.sum()
    assert r["pixels"] == total
    assert r["pixel_accuracy"] == pytest.approx(tp.sum() / total)
    assert r["miou"] == pytest.approx(np.mean(tp / (cm.sum(0) + cm.sum(1) - tp)))
    chance = (cm.sum(0) * cm.sum(1)).sum() / total**2
    assert r["kappa"] == pytest.approx((tp.sum() / total - chance) / (1 - chance))


# --- issue 10, defect 1 ---------------------------------------------------------------------


def test_truth_nodata_is_not_mapped_through_truth_values(make_raster, tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255  # a 0 / 255 building mask
    mask[:, :4] = 9  # the truth's nodata: no label there
    t = make_raster(mask, name="mask.tif", nodata=9)
    pred = np.zeros((20, 20), np.uint8)
    pred[5:15, 5:15] = 1
    p = _class_raster(tmp_path, "pred.tif", pred, t)
    r = evaluate_rasters(p, t, truth_values={0: 0, 255: 1})
    # nodata columns are not scored: before the fix they became 255 -> class 1 (building)
    assert r["pixels"] == 20 * 16
    assert r["per_class"]["precision"]["building"] == pytest.approx(1.0)
    assert r["per_class"]["iou"]["building"] == pytest.approx(1.0)


def test_fill_outside_the_truth_footprint_is_not_scored(make_raster, tmp_path):
    # the truth covers only the right half of the prediction's grid and has no nodata value
    t = make_raster(np.full((20, 10), 255, np.uint8), name="mask.tif", origin=(500005, 3700000))
    pred_grid = make_raster(np.zeros((20, 20), np.uint8), name="grid.tif")
    pred = np.zeros((20, 20), np.uint8)
    pred[:, 10:] = 1
    p = _class_raster(tmp_path, "pred.tif", pred, pred_grid)
    r = evaluate_rasters(p, t, truth_values={0: 0, 255: 1})
    assert r["pixels"] == 20 * 10  # before the fix: 400, the left half counted as building
    assert r["per_class"]["iou"]["building"] == pytest.approx(1.0)


def test_a_0_255_truth_mask_is_vectorized_through_truth_values(make_raster, tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 255  # one 10 m x 10 m building in a 0 / 255 mask (255 is no class index)
    t = make_raster(mask, name="mask.tif")
    pred = (mask == 255).astype(np.uint8)
    p = _class_raster(tmp_path, "pred.tif", pred, t, names={0: "background", 1: "building"})
    r = evaluate(p, t, truth_values={0: 0, 255: 1})
    assert r["miou"] == pytest.approx(1.0)
    b = r["buildings"]
    assert (b["n_truth"], b["n_pred"], b["tp"]) == (1, 1, 1)


def test_a_0_255_truth_mask_is_read_as_prepare_data_reads_it(make_raster, tmp_path):
    """Without ``truth_values`` a 0 / 255 mask scored no building at all (255 is 'not
    scored'): it is read as the one class, with a note; a model of more classes is refused
    with the option to give."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 255
    t = make_raster(mask, name="mask.tif")
    pred = (mask == 255).astype(np.uint8)
    p = _class_raster(tmp_path, "pred.tif", pred, t, names={0: "background", 1: "building"})
    r = evaluate(p, t)
    assert r["miou"] == pytest.approx(1.0) and r["pixels"] == 40 * 40
    assert (r["buildings"]["n_truth"], r["buildings"]["tp"]) == (1, 1)
    assert any("0 / 255 mask, 255 read as 'building'" in n for n in r["notes"])
    p3 = _class_raster(tmp_path, "pred3.tif", pred, t, names=NAMES)
    with pytest.raises(LabelError, match="--truth-values 0=0,255=N"):
        evaluate(p3, t)
    r = evaluate(p3, t, truth_values={0: 0, 255: 1})  # told: as before
    assert r["per_class"]["iou"]["building"] == pytest.approx(1.0)


def test_one_layer_with_a_class_field_holds_several_classes(make_raster, tmp_path):
    grid = make_raster(np.zeros((40, 40), np.uint8), name="grid.tif")
    pred = np.zeros((40, 40), np.uint8)
    pred[4:14, 6:16] = 1
    p = _class_raster(tmp_path, "pred.tif", pred, grid)
    features = gpd.GeoDataFrame(
        {"class": ["building", "road"]},
        geometry=[
            box(500003, 3699993, 500008, 3699998),
            LineString([(500000, 3699985), (500020, 3699985)]),
        ],
        crs="EPSG:32616",
    )
    features.to_file(tmp_path / "truth.gpkg")
    r = evaluate(p, tmp_path / "truth.gpkg")
    assert r["per_class"]["iou"]["building"] == pytest.approx(1.0)
    # the road line is burnt as a corridor 2 m each side: 8 rows of 40 pixels, all missed
    assert r["per_class"]["support"]["road"] == 8 * 40
    assert r["per_class"]["recall"]["road"] == 0.0
    assert r["roads"]["completeness"] == 0.0 and r["roads"]["apls"] == 0.0


def test_rasters_in_different_crss_that_do_not_overlap_are_refused(make_raster, tmp_path):
    p = _class_raster(
        tmp_path, "pred.tif", np.zeros((10, 10), np.uint8), make_raster(np.zeros((10, 10)))
    )
    far = make_raster(
        np.zeros((10, 10), np.uint8), name="far.tif", crs=CRS.from_epsg(32617), origin=(2e5, 5e6)
    )
    with pytest.raises(CRSMismatchError, match="do not overlap"):
        evaluate_rasters(p, far)  # before the fix: NaN metrics from an all-fill warp


def test_warped_truth_is_closed_when_scoring_fails(make_raster, tmp_path, monkeypatch):
    opened = []

    class RecordingVRT(pixels_module.WarpedVRT):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    def fail(self, pred, truth):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(pixels_module, "WarpedVRT", RecordingVRT)
    monkeypatch.setattr(ConfusionAccumulator, "update", fail)
    t = make_raster(np.zeros((10, 10), np.uint8), name="t.tif", origin=(500001, 3700000))
    grid = make_raster(np.zeros((10, 10), np.uint8), name="grid.tif")
    p = _class_raster(tmp_path, "pred.tif", np.zeros((10, 10), np.uint8), grid)
    with pytest.raises(RuntimeError, match="disk gone"):
        evaluate_rasters(p, t)
    assert opened and all(v.closed for v in opened)


# --- vectors on the raster's grid, CRSs, extents ----------------------------------------------


def _boxes_gpkg(path, boxes, crs="EPSG:32616", layer="building"):
    gdf = gpd.GeoDataFrame(geometry=[box(*b) for b in boxes], crs="EPSG:32616").to_crs(crs)
    gdf.to_file(path, layer=layer, driver="GPKG")
    return path


@pytest.mark.parametrize("crs", ["EPSG:32616", "EPSG:4326"])
def test_vector_truth_is_burnt_onto_the_prediction_grid(make_raster, tmp_path, crs):
    # 40 x 40 grid of 0.5 m pixels from (500000, 3700000) down; buildings on pixel edges
    grid = make_raster(np.zeros((40, 40), np.uint8), name="grid.tif")
    truth = np.zeros((40, 40), np.int64)
    truth[4:14, 6:16] = 1  # rows 4-13, cols 6-15
    truth[20:30, 20:36] = 1
    boxes = [(500003, 3699993, 500008, 3699998), (500010, 3699985, 500018, 3699990)]
    t = _boxes_gpkg(tmp_path / "truth.gpkg", boxes, crs=crs)
    pred = np.zeros((40, 40), np.uint8)
    pred[4:14, 6:12] = 1  # part of the first building
    pred[30:36, 0:10] = 1  # a false building
    pred[0, :] = 255  # nodata
    p = _class_raster(tmp_path, "pred.tif", pred, grid, names={0: "background", 1: "building"})
    r = evaluate(p, t)
    expected = _numpy_confusion(pred.astype(np.int64), truth, 2)
    # a reprojected outline may cross a pixel centre: allow a few edge pixels in EPSG:4326
    tolerance = 0 if crs == "EPSG:32616" else 12
    assert np.abs(np.array(r["confusion_matrix"]) - expected).sum() <= tolerance
    b = r["buildings"]
    # the partial building overlaps its truth by IoU 15 / 25 = 0.6; the false one by nothing
    assert (b["n_truth"], b["n_pred"], b["tp"], b["fp"], b["fn"]) == (2, 2, 1, 1, 1)
    assert r["roads"] is None


def test_vector_prediction_against_a_truth_raster(make_raster, tmp_path):
    truth = np.zeros((40, 40), np.uint8)
    truth[4:14, 6:16] = 1
    truth[:, 36:] = 255  # no label
    t = make_raster(truth, name="truth.tif", nodata=255)
    boxes = [(500003, 3699993, 500008, 3699998), (500000, 3699980, 500005, 3699985)]
    p = _boxes_gpkg(tmp_path / "pred.gpkg", boxes)
    r = evaluate(p, t, classes={1: "building"})
    pred = np.zeros((40, 40), np.int64)
    pred[4:14, 6:16] = 1
    pred[30:40, 0:10] = 1
    assert r["confusion_matrix"] == _numpy_confusion(pred, truth.astype(np.int64), 2).tolist()
    assert r["buildings"]["tp"] == 1 and r["buildings"]["fp"] == 1


def test_buildings_under_the_maps_nodata_are_not_scored(make_raster, tmp_path):
    """An orthomosaic's nodata border classifies as nodata (255): a true building there is
    no more a miss than its pixels are; one half under it is cut to the part with data."""
    grid = make_raster(np.zeros((80, 80), np.uint8), name="grid.tif")  # x 500000-040
    pred = np.zeros((80, 80), np.uint8)
    pred[:, :30] = 255  # no imagery left of x = 500015
    pred[10:30, 30:50] = 1  # the part of the second building with imagery, and the third
    pred[50:70, 50:70] = 1
    p = _class_raster(tmp_path, "pred.tif", pred, grid, names={0: "background", 1: "building"})
    boxes = [(500002, 3699980, 500010, 3699990), (500010, 3699985, 500025, 3699995)]
    boxes.append((500025, 3699965, 500035, 3699975))
    r = evaluate(p, _boxes_gpkg(tmp_path / "truth.gpkg", boxes))
    b = r["buildings"]
    assert (b["n_truth"], b["n_pred"], b["tp"], b["fp"], b["fn"]) == (2, 2, 2, 0, 0)
    assert any("1 of 3 true buildings lie outside" in n for n in r["notes"])


def test_a_dissolved_truth_layer_counts_each_building_and_no_empty_row(make_raster, tmp_path):
    """A truth layer dissolved in a GIS (one MultiPolygon of all buildings) counted as one
    building, and an empty row as one lying beyond the map."""
    grid = make_raster(np.zeros((80, 80), np.uint8), name="grid.tif")  # x 500000-040
    pred = np.zeros((80, 80), np.uint8)
    pred[10:30, 10:30] = 1
    pred[50:70, 50:70] = 1
    p = _class_raster(tmp_path, "pred.tif", pred, grid, names={0: "background", 1: "building"})
    a = shapely.box(500005, 3699985, 500015, 3699995)
    b = shapely.box(500025, 3699965, 500035, 3699975)
    truth = tmp_path / "dissolved.gpkg"
    layer = gpd.GeoDataFrame(geometry=[shapely.MultiPolygon([a, b]), None], crs=32616)
    layer.to_file(truth, layer="building")
    r = evaluate(p, truth)
    bs = r["buildings"]
    assert (bs["n_truth"], bs["n_pred"], bs["tp"], bs["fp"], bs["fn"]) == (2, 2, 2, 0, 0)
    assert any("1 empty geometries ignored and 1 multi-part" in n for n in r["notes"])
    assert not any("lie outside" in n for n in r["notes"])


def test_a_geopackage_of_buildings_and_roads_layers_is_read_as_the_classes(make_raster, tmp_path):
    """Layers named ``buildings`` and ``roads`` (an OSM export) against a model's classes
    ``building`` and ``road`` were refused: "layer 'buildings' is not one of the classes"."""
    grid = make_raster(np.zeros((80, 80), np.uint8), name="grid.tif")
    pred = np.zeros((80, 80), np.uint8)
    pred[10:30, 10:30] = 1
    pred[50:54, :] = 2
    p = _class_raster(tmp_path, "pred.tif", pred, grid, names=NAMES)
    town = tmp_path / "town.gpkg"
    box_ = shapely.box(500005, 3699985, 500015, 3699995)
    road = LineString([(500000, 3699974), (500040, 3699974)])
    gpd.GeoDataFrame(geometry=[box_], crs=32616).to_file(town, layer="buildings")
    gpd.GeoDataFrame(geometry=[road], crs=32616).to_file(town, layer="roads")
    r = evaluate(p, town)
    assert r["buildings"]["tp"] == 1 and r["roads"]["completeness"] == pytest.approx(1.0)


def test_a_class_spelled_buildings_is_scored_as_buildings(make_raster, tmp_path):
    grid = make_raster(np.zeros((40, 40), np.uint8), name="grid.tif")
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1
    names = {0: "background", 1: "Buildings"}
    p = _class_raster(tmp_path, "pred.tif", mask, grid, names=names)
    t = _class_raster(tmp_path, "truth.tif", mask, grid, names=names)
    b = evaluate(p, t)["buildings"]
    assert b is not None and (b["tp"], b["fp"], b["fn"]) == (1, 0, 0)
    # a plain polygon layer (an OSM extract) as truth: its buildings are the raster's Buildings
    box_ = (500002.5, 3699987.5, 500012.5, 3699997.5)
    v = _boxes_gpkg(tmp_path / "osm.gpkg", [box_], layer="buildings")
    r = evaluate(p, v)
    assert r["classes"] == ["background", "Buildings"]
    assert (r["buildings"]["tp"], r["buildings"]["fp"], r["buildings"]["fn"]) == (1, 0, 0)


def test_objects_are_scored_where_the_map_is(make_raster, tmp_path):
    """A truth file covering more than the class raster (an OSM extract of the whole town):
    buildings outside the raster are not false negatives, one across its edge is cut, and
    a sliver the edge leaves is dropped; the other way round, predicted polygons beyond a
    truth raster are not false positives."""
    grid = make_raster(np.zeros((80, 80), np.uint8), name="grid.tif")  # x 500000-040
    pred = np.zeros((80, 80), np.uint8)
    pred[10:20, 10:20] = pred[40:60, 40:60] = 1
    pred[10:30, 70:80] = 1  # the part of a building that the raster holds
    p = _class_raster(tmp_path, "pred.tif", pred, grid, names={0: "background", 1: "building"})
    inside = [(500005, 3699990, 500010, 3699995), (500020, 3699970, 500030, 3699980)]
    across = [(500035, 3699985, 500045, 3699995)]  # half of it beyond the right edge
    outside = [(500100, 3699900, 500110, 3699910), (500039.9, 3699960, 500050, 3699970)]
    t = _boxes_gpkg(tmp_path / "truth.gpkg", inside + across + outside)  # the second: a sliver
    r = evaluate(p, t)
    b = r["buildings"]
    assert (b["n_truth"], b["n_pred"], b["tp"], b["fp"], b["fn"]) == (3, 3, 3, 0, 0)
    assert any("2 of 5 true buildings lie outside" in n for n in r["notes"])
    truth = make_raster(pred[:, :60], name="truth.tif")  # a truth raster of the left part
    v = _boxes_gpkg(tmp_path / "pred.gpkg", inside + across)
    b = evaluate(v, truth, classes={1: "building"})["buildings"]
    assert (b["n_truth"], b["n_pred"], b["tp"], b["fp"], b["fn"]) == (2, 2, 2, 0, 0)
    both = evaluate(v, t)  # two vector files: no area of their own, all scored, and said so
    assert both["buildings"]["n_truth"] == 5
    assert any("1 of 5 true buildings lie beyond the prediction" in n for n in both["notes"])


def test_vector_truth_elsewhere_is_refused(make_raster, tmp_path):
    grid = make_raster(np.zeros((20, 20), np.uint8), name="grid.tif")
    p = _class_raster(tmp_path, "pred.tif", np.zeros((20, 20), np.uint8), grid)
    t = _boxes_gpkg(tmp_path / "far.gpkg", [(600000, 3600000, 600010, 3600010)], crs="EPSG:4326")
    with pytest.raises(CRSMismatchError, match="do not overlap"):
        evaluate(p, t)


def test_unknown_layer_names_are_refused(make_raster, tmp_path):
    grid = make_raster(np.zeros((20, 20), np.uint8), name="grid.tif")
    p = _class_raster(tmp_path, "pred.tif", np.zeros((20, 20), np.uint8), grid)
    path = tmp_path / "two.gpkg"
    _boxes_gpkg(path, [(500001, 3699995, 500004, 3699998)], layer="building")
    _boxes_gpkg(path, [(500001, 3699995, 500004, 3699998)], layer="trees")
    with pytest.raises(LabelError, match="'trees'"):
        evaluate(p, path)


# --- outputs: error map, HTML report, JSON through the CLI -----------------------------------


def _scene(make_raster, tmp_path):
    """A 3-class truth raster and a prediction with every kind of error, on one grid."""
    truth = np.zeros((48, 64), np.uint8)
    truth[5:20, 5:25] = 1  # a building
    truth[30:34, :] = 2  # a road
    pred = truth.copy()
    pred[5:20, 20:25] = 0  # part of the building missed (false negative)
    pred[40:46, 40:50] = 1  # a false building (false positive)
    pred[30:34, 0:8] = 1  # road predicted as building (wrong class)
    pred[:, 60:] = 255  # nodata strip
    t = make_raster(truth, name="truth.tif", nodata=255)
    with rasterio.open(t) as src:
        src_tags = src.tags()
    assert "CLASSES" not in src_tags
    p = _class_raster(tmp_path, "pred.tif", pred, t)
    return p, t, pred, truth


def test_error_map_geotiff_codes_colours_and_georeferencing(make_raster, tmp_path):
    p, t, pred, truth = _scene(make_raster, tmp_path)
    out = tmp_path / "errors.tif"
    r = evaluate(p, t, error_map=out)
    with rasterio.open(out) as src, rasterio.open(p) as ref:
        codes = src.read(1)
        assert src.crs == ref.crs and src.transform == ref.transform and src.nodata == 255
        cmap = src.colormap(1)
        names = json.loads(src.tags()["CLASSES"])
    valid = pred != 255
    assert (codes[~valid] == 255).all()
    assert (codes[5:20, 5:20] == 1).all() and (codes[30:34, 8:60] == 1).all()  # true positives
    assert (codes[5:20, 20:25] == 3).all()  # false negatives
    assert (codes[40:46, 40:50] == 2).all()  # false positives
    assert (codes[30:34, 0:8] == 4).all()  # wrong class
    assert ((codes == 0) == (valid & (pred == 0) & (truth == 0))).all()
    assert names["1"] == "true positive" and names["3"] == "false negative"
    assert len({cmap[c][:3] for c in range(5)}) == 5  # one colour per outcome
    assert r["errors"]["false negative"] == 15 * 5 and r["errors"]["wrong class"] == 4 * 8
    with pytest.raises(OutputExistsError):
        evaluate(p, t, error_map=out)


def test_html_report_is_one_offline_file(make_raster, tmp_path):
    p, t, _, _ = _scene(make_raster, tmp_path)
    out = tmp_path / "report.html"
    r = evaluate(p, t, report=out)
    text = out.read_text(encoding="utf-8")
    assert r["report"] == str(out)
    assert text.count('src="data:image/png;base64,') >= 4  # matrix, bars, error map, sizes
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "<link" not in text  # no external style sheets
    for word in ("Confusion matrix", "Buildings", "Roads", "APLS", "road", "building"):
        assert word in text
    assert f"{r['miou']:.4f}" in text


def test_cli_writes_json_report_and_error_map(make_raster, tmp_path):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    p, t, _, _ = _scene(make_raster, tmp_path)
    args = ["evaluate", str(p), "--truth", str(t), "--json", str(tmp_path / "r.json")]
    args += ["--report", str(tmp_path / "r.html"), "--error-map", str(tmp_path / "e.tif")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=pytest.fail)  # no NaN
    assert data["kappa"] == pytest.approx(evaluate_rasters(p, t)["kappa"])
    assert {"buildings", "roads", "errors"} <= set(data)
    assert (tmp_path / "r.html").exists() and (tmp_path / "e.tif").exists()
    assert "kappa" in res.output and "buildings: F1" in res.output and "APLS" in res.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2 and "already exists" in again.output


# --- APLS on tiny networks ------------------------------------------------------------------

# A 200 m x 150 m grid: three horizontal streets crossed by three vertical ones.
GRID = [LineString([(0, y), (200, y)]) for y in (0, 75, 150)]
GRID += [LineString([(x, 0), (x, 150)]) for x in (0, 100, 200)]


def test_apls_of_identical_graphs_is_one():
    r = apls(GRID, GRID)
    assert r["apls"] == pytest.approx(1.0)
    assert r["pairs_truth_to_pred"] == r["truth_nodes"] * (r["truth_nodes"] - 1)
    # the lines given in another order and direction, split at other vertices: same network
    pieces = [shapely.reverse(g) for g in GRID[::-1]]
    assert apls(GRID, pieces)["apls"] == pytest.approx(1.0)


def test_apls_by_hand_on_a_t_junction():
    # truth: a 200 m street with a 150 m side street at x = 100; the proposal misses the side
    # street. Control nodes: ends, junction, 50 and 150 on the street, 50 and 100 on the side
    # street -> 8 nodes, 56 ordered pairs; the 5 street nodes snap with exact paths (20 pairs),
    # the 36 pairs that touch the 3 side-street nodes get the penalty 1.
    truth = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 150)])]
    r = apls(truth, truth[:1])
    assert r["apls_truth_to_pred"] == pytest.approx(1 - 36 / 56)
    assert r["apls_pred_to_truth"] == pytest.approx(1.0)
    assert r["apls"] == pytest.approx(2 * (20 / 56) / (1 + 20 / 56))


def test_apls_takes_multilinestrings_and_empty_lines():
    """A road layer of MultiLineStrings (a GIS's "dissolve", or a class raster's lines read
    back) and empty rows: shapely cannot nest a MultiLineString in another, which broke
    ``geounet evaluate`` on such a layer with a TypeError."""
    from shapely.geometry import MultiLineString

    multi = [MultiLineString([list(g.coords) for g in GRID[:3]]), *GRID[3:], LineString()]
    assert apls(GRID, multi)["apls"] == pytest.approx(1.0)
    assert apls(multi, GRID)["apls"] == pytest.approx(1.0)


def test_apls_two_nodes_snapping_to_one_place_both_count():
    # truth: a 200 m street and a 2 m stub at x = 100; the proposal lacks the stub, so the
    # stub's end and the junction snap to the same proposal point. Control nodes: 0, 50, 100,
    # 150, 200 and the stub end (6 nodes, 30 ordered pairs). Penalties: stub end <-> junction
    # 1 (both ways), stub end <-> 50 / 150: 2 / 52, <-> 0 / 200: 2 / 102 (both ways each).
    truth = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 2)])]
    r = apls(truth, truth[:1], snap_m=3.0)
    expected = 1 - (2 + 4 * 2 / 52 + 4 * 2 / 102) / 30
    assert r["pairs_truth_to_pred"] == 30
    assert r["apls_truth_to_pred"] == pytest.approx(expected)
    assert r["apls_pred_to_truth"] == pytest.approx(1.0)


def test_apls_samples_control_nodes_of_large_networks():
    r = apls(GRID, GRID, max_nodes=5)
    assert r["pairs_truth_to_pred"] == r["pairs_pred_to_truth"] == 5 * 4
    assert r["apls"] == pytest.approx(1.0)
    cut = [GRID[0], *GRID[2:]]  # the middle street is missing
    assert apls(GRID, cut, max_nodes=12)["apls"] < 1.0


def test_apls_falls_when_an_edge_is_removed():
    full = apls(GRID, GRID)["apls"]
    cut = [GRID[0], LineString([(0, 75), (100, 75)]), *GRID[2:]]  # half a street gone
    assert apls(GRID, cut)["apls"] < full


def test_apls_of_an_empty_proposal_is_zero():
    assert apls(GRID, [])["apls"] == 0.0
    assert math.isnan(apls([], GRID)["apls"])  # nothing to measure


def test_a_proposal_shifted_beyond_the_buffer_scores_lower():
    near = [translate(g, 1.5, 1.5) for g in GRID]  # about 2.1 m off
    far = [translate(g, 4.0, 4.0) for g in GRID]  # about 5.7 m off
    a_near, a_far = apls(GRID, near, snap_m=3.0), apls(GRID, far, snap_m=3.0)
    assert a_near["apls"] > 0.9 > a_far["apls"]
    r_near = road_scores(GRID, near, buffer_m=3.0)
    r_far = road_scores(GRID, far, buffer_m=3.0)
    assert r_near["completeness"] > r_far["completeness"]
    assert r_near["correctness"] > r_far["correctness"]
    assert r_near["apls"] > r_far["apls"]


# --- real data ------------------------------------------------------------------------------


def _brute_force_f1(truth, pred, threshold=0.5):
    """Reference written apart from the code: every pairwise IoU, greedy one-to-one."""
    pairs = []
    for i, a in enumerate(truth):
        for j, b in enumerate(pred):
            inter = a.intersection(b).area
            iou = inter / (a.area + b.area - inter)
            if iou >= threshold:
                pairs.append((iou, i, j))
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    used_t, used_p = set(), set()
    for _, i, j in pairs:
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    tp = len(used_t)
    return 2 * tp / (len(truth) + len(pred)), tp


@pytest.mark.realdata
def test_spacenet_building_f1_equals_brute_force():
    folder = shared_data("spacenet_vector")
    r = evaluate(folder / "buildings_pred.geojson", folder / "buildings_truth.geojson")
    truth = list(gpd.read_file(folder / "buildings_truth.geojson").geometry)
    pred = list(gpd.read_file(folder / "buildings_pred.geojson").geometry)
    f1, tp = _brute_force_f1(truth, pred)
    b = r["buildings"]
    assert b["f1"] == pytest.approx(f1) and b["tp"] == tp
    assert (b["n_truth"], b["n_pred"]) == (len(truth), len(pred))
    assert sum(s["tp"] for s in b["by_size"]) == tp
    assert sum(s["n_truth"] for s in b["by_size"]) == len(truth)
    assert r["per_class"] is None  # two vector files: no grid for pixel metrics


@pytest.mark.realdata
def test_an_osm_file_of_the_whole_scene_scores_the_half_that_was_mapped(tmp_path):
    """Kampala's OpenStreetMap buildings (some outlines cross themselves) burnt into the
    bottom half's grid, scored against the whole file: the 51 buildings of that half (as
    ``benchmarks/recipe.py`` counts them), not the 108 of the scene."""
    folder = shared_data("oam_kampala")
    with rasterio.open(folder / "image.tif") as src:
        h, w, crs = src.height, src.width, src.crs
        transform = src.window_transform(rasterio.windows.Window(0, h // 2, w, h - h // 2))
    osm = gpd.read_file(folder / "buildings.geojson").to_crs(crs)
    mask = rasterio.features.rasterize(
        [(g, 1) for g in shapely.make_valid(osm.geometry.values)],
        out_shape=(h - h // 2, w),
        transform=transform,
        dtype="uint8",
    )
    burnt = write_raster(tmp_path / "burnt.tif", mask, crs, transform, nodata=255,
                         class_names={0: "background", 1: "building"})  # fmt: skip
    r = evaluate(burnt, folder / "buildings.geojson")
    b = r["buildings"]
    assert b["n_truth"] == 51 and b["f1"] > 0.9, b  # touching roofs burnt into one region
    assert any(f"57 of {len(osm)} true buildings lie outside" in n for n in r["notes"])


def _vegas_prediction(folder, out):
    """The competition's predicted lines (pixel coordinates) mapped through the image's grid."""
    with rasterio.open(folder / "image.tif") as src:
        tr, crs = src.transform, src.crs
    table = pd.read_csv(folder / "prediction_pixel_wkt.csv")
    lines = [
        shapely.transform(
            shapely.from_wkt(w), lambda xy: np.column_stack(tr * (xy[:, 0], xy[:, 1]))
        )
        for w in table["WKT_Pix"]
    ]
    gpd.GeoDataFrame({"class": ["road"] * len(lines)}, geometry=lines, crs=crs).to_file(out)
    return out


@pytest.mark.realdata
def test_vegas_competition_roads(tmp_path):
    folder = shared_data("spacenet_vegas_roads_rgb")
    pred = _vegas_prediction(folder, tmp_path / "pred.gpkg")
    r = evaluate(pred, folder / "roads.geojson", road_buffer_m=4.0)["roads"]
    # completeness and correctness against an independent union-of-buffers computation
    truth = gpd.read_file(folder / "roads.geojson").geometry
    lines = gpd.read_file(pred).geometry
    utm = truth.estimate_utm_crs()
    truth, lines = truth.to_crs(utm), lines.to_crs(utm)
    zone_p = shapely.union_all(lines.buffer(4.0).values)
    zone_t = shapely.union_all(truth.buffer(4.0).values)
    assert r["completeness"] == pytest.approx(
        truth.intersection(zone_p).length.sum() / truth.length.sum(), rel=1e-3
    )
    assert r["correctness"] == pytest.approx(
        lines.intersection(zone_t).length.sum() / lines.length.sum(), rel=1e-3
    )
    assert 0.0 < r["apls"] < 1.0
    assert r["apls"] == pytest.approx(
        2 / (1 / r["apls_truth_to_pred"] + 1 / r["apls_pred_to_truth"])
    )
    same = evaluate(folder / "roads.geojson", folder / "roads.geojson")["roads"]
    assert same["apls"] == pytest.approx(1.0) and same["completeness"] == pytest.approx(1.0)
    print(
        f"Vegas (SpaceNet-3 img0), 4 m: completeness {r['completeness']:.4f} correctness "
        f"{r['correctness']:.4f} quality {r['quality']:.4f} APLS {r['apls']:.4f} "
        f"(truth->pred {r['apls_truth_to_pred']:.4f}, pred->truth {r['apls_pred_to_truth']:.4f})"
    )


# --- UnetClassifier.evaluate ----------------------------------------------------------------


def test_classifier_evaluate_is_classify_then_evaluate(make_raster, tmp_path, one_thread):
    from model_fakes import make_fake_data

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, size=64, chip=32)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    rng = np.random.default_rng(0)
    image = make_raster(rng.integers(0, 255, (3, 64, 64)).astype(np.uint8), name="image.tif")
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    truth = make_raster(labels, name="labels.tif")
    kept = tmp_path / "classified.tif"
    r = model.evaluate(image, truth, classified=kept, report=tmp_path / "r.html")
    separate = evaluate_rasters(kept, truth)
    assert r["image"] == str(image) and r["confusion_matrix"] == separate["confusion_matrix"]
    assert r["pixels"] == 64 * 64 and (tmp_path / "r.html").exists()
    assert r["buildings"] is not None and r["buildings"]["n_truth"] == 1
    bgr = make_raster(rng.integers(0, 255, (3, 64, 64)).astype(np.uint8), name="bgr.tif")
    with rasterio.open(bgr) as src:  # the same scene with its bands in reverse order
        rgb = make_raster(src.read()[::-1], name="rgb.tif")
    swapped = model.evaluate(bgr, truth, bands=(3, 2, 1))
    assert swapped["confusion_matrix"] == model.evaluate(rgb, truth)["confusion_matrix"]
    assert swapped["confusion_matrix"] != model.evaluate(bgr, truth)["confusion_matrix"]


def test_classifier_evaluate_scores_the_polygons_classify_vector_writes(
    make_raster, tmp_path, one_thread, monkeypatch
):
    """The building probabilities are at hand while vectorizing, so the peak filter runs."""
    from model_fakes import make_fake_data

    import geounet.evaluation.evaluate as evaluation
    from geounet.app.classifier import UnetClassifier
    from geounet.vectorizing.confidence import PROBABILITIES_TAG, tagged_probabilities

    seen = {}
    real = evaluation.vectorize

    def spy(path, **kwargs):
        with rasterio.open(path) as src:
            found = tagged_probabilities(path, src.tags().get(PROBABILITIES_TAG))
        seen[Path(path).name] = found is not None and found.exists()
        return real(path, **kwargs)

    monkeypatch.setattr(evaluation, "vectorize", spy)
    data = make_fake_data(bands=3, size=64, chip=32)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    image = make_raster(np.full((3, 64, 64), 90, np.uint8), name="image.tif")
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    model.evaluate(image, make_raster(labels, name="labels.tif"))
    assert seen == {"classified.tif": True, "labels.tif": False}


def test_classifier_classify_with_vector_is_classify_vector(
    make_raster, tmp_path, one_thread, monkeypatch
):
    """``model.classify(image, out, vector)`` vectorizes with the probabilities at hand."""
    from model_fakes import make_fake_data

    import geounet.vectorizing.pipeline as pipeline
    from geounet.app.classifier import UnetClassifier
    from geounet.core.errors import OutputExistsError

    seen = []
    real = pipeline.vectorize

    def spy(classified, out=None, **kw):
        seen.append(Path(kw["probabilities"]).is_file())
        return real(classified, out, **kw)

    monkeypatch.setattr(pipeline, "vectorize", spy)
    data = make_fake_data(bands=3, size=64, chip=32)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    image = make_raster(np.full((3, 64, 64), 90, np.uint8), name="image.tif")
    out, vector = tmp_path / "c.tif", tmp_path / "f.gpkg"
    assert model.classify(image, out, vector, tile_size=64, overlap=16, progress=False) == out
    assert seen == [True] and out.exists() and vector.exists()
    names = ["c.tif", "c_probabilities.tif", "f.gpkg", "image.tif"]  # kept beside by default
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    out.unlink()
    with pytest.raises(OutputExistsError, match=r"f\.gpkg"):
        model.classify(image, out, vector, tile_size=64, overlap=16, progress=False)
    assert not out.exists() and seen == [True]  # refused before the network ran
