"""min_area_m2 from the training labels: measured at model creation, carried to vectorize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import pointwise_building_model

from geounet.cli.main import cli
from geounet.inference.classify import classify_raster
from geounet.model.files import CONFIG_FILE, read_config
from geounet.vectorizing.pipeline import vectorize
from geounet.vectorizing.sizes import (
    MIN_AREA_FALLBACK_M2,
    MIN_AREA_TAG,
    min_area_from_sizes,
    min_area_from_tag,
    object_sizes,
)


def test_sizes_leave_out_cut_objects_and_weight_large_ones():
    lab = np.zeros((64, 64), np.uint8)
    for r, c in ((5, 5), (5, 50), (50, 5), (50, 50)):
        lab[r : r + 2, c : c + 2] = 1  # four 4-pixel objects
    lab[20:40, 20:40] = 1  # one 400-pixel object
    lab[0:10, 30:34] = 1  # touches the border: its size is unknown, not counted
    lab[60:62, 20:22] = 255  # no label: never an object
    sizes = object_sizes([lab], {1: "building"}, pixel_area_m2=0.25)["building"]
    assert sizes["count"] == 5
    assert sizes["p5_m2"] == 1.0  # 4 pixels of 0.25 m²
    # a 64-pixel chip sees a 20 x 20 object whole half as often as a 2 x 2 one: weighted,
    # the large object is more than a fifth of the objects (unweighted p75 would be 1 m²)
    assert sizes["p75_m2"] == 100.0
    assert object_sizes([np.zeros((8, 8), np.uint8)], {1: "building"}, pixel_area_m2=1) == {}


def test_min_area_from_sizes_and_from_the_tag():
    sizes = {"building": {"count": 30, "p10_m2": 7.04}, "car": {"count": 2, "p10_m2": 1.0}}
    assert min_area_from_sizes(sizes) == {"building": 7.0}  # two cars are too few to tell
    assert min_area_from_sizes({}) == {} and min_area_from_sizes(None) == {}
    tag = json.dumps({"building": 7.0, "water": 50.0})
    assert min_area_from_tag(tag, ["building", "water"], "building") == 7.0
    assert min_area_from_tag(tag, ["water"], "building") == 50.0
    assert min_area_from_tag(tag, ["road"], "building") is None
    assert min_area_from_tag("not json", ["building"], "building") is None
    assert min_area_from_tag(None, ["building"], "building") is None


def test_new_model_records_training_object_sizes_and_old_files_load(tmp_path, labelled_model):
    labels = np.zeros((128, 128), np.uint8)
    for r in range(4, 120, 12):
        for c in range(4, 120, 12):
            labels[r : r + 6, c : c + 6] = 1  # 6 x 6 pixels of 0.5 m: 9 m² each
    model = labelled_model(labels, 32)
    sizes = model.config.object_sizes["building"]
    assert sizes["count"] > 20
    assert sizes["p5_m2"] == sizes["p50_m2"] == 9.0
    folder = model.save(tmp_path / "m")
    assert read_config(folder).object_sizes == model.config.object_sizes
    meta = json.loads((folder / CONFIG_FILE).read_text())
    del meta["object_sizes"]  # a model folder written before the sizes were recorded
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    assert read_config(folder).object_sizes == {}


@pytest.fixture
def classified(tmp_path, make_raster):
    """A class raster of a 1 m² and a 9 m² building, from a model whose labels' p10 is 4 m²."""
    img = np.zeros((1, 40, 40), np.uint8)
    img[0, 5:7, 5:7] = 200  # 2 x 2 pixels of 0.5 m: 1 m²
    img[0, 20:26, 20:26] = 200  # 9 m²
    model = pointwise_building_model({"building": {"count": 40, "p10_m2": 4.0, "p50_m2": 20.0}})
    src = make_raster(img, "scene.tif")
    # without probabilities: the tagged minimum area as it is (the peak filter halves it)
    return classify_raster(
        model, src, tmp_path / "classified.tif", probabilities=False, progress=False
    )


def test_classified_raster_carries_min_area_that_vectorize_uses(classified, tmp_path):
    with rasterio.open(classified) as src:
        assert json.loads(src.tags()[MIN_AREA_TAG]) == {"building": 4.0}
    b = vectorize(classified)["building"]
    assert b.attrs["min_area_m2"] == 4.0
    assert b["area_m2"].tolist() == [9.0]
    both = vectorize(classified, min_area_m2=0.5)["building"]
    assert sorted(both["area_m2"]) == [1.0, 9.0]
    r = CliRunner().invoke(cli, ["vectorize", str(classified), "--out", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 0, r.output
    assert "building: 1 features" in r.output


def test_without_recorded_sizes_the_fallback_applies(tmp_path, make_raster):
    img = np.zeros((1, 40, 40), np.uint8)
    img[0, 5:9, 5:9] = 200  # 4 m²: below the 5 m² fallback
    img[0, 20:26, 20:26] = 200
    out = classify_raster(
        pointwise_building_model({}),
        make_raster(img, "s.tif"),
        tmp_path / "c.tif",
        probabilities=False,
        progress=False,
    )
    with rasterio.open(out) as src:
        assert MIN_AREA_TAG not in src.tags()
    b = vectorize(out)["building"]
    assert b.attrs["min_area_m2"] == MIN_AREA_FALLBACK_M2
    assert b["area_m2"].tolist() == [9.0]


def test_without_a_crs_sizes_are_in_pixels_and_reach_only_unreferenced_rasters(
    tmp_path, make_raster, labelled_model
):
    labels = np.zeros((128, 128), np.uint8)
    for r in range(4, 120, 12):
        for c in range(4, 120, 12):
            labels[r : r + 6, c : c + 6] = 1  # 36 pixels each
    model = labelled_model(labels, 32, crs=None)
    assert model.config.object_sizes["building"]["p10_m2"] == 36.0  # square pixels
    # a pixel-unit model tags only rasters that vectorize measures in pixels too
    sized = pointwise_building_model({"building": {"count": 40, "p10_m2": 36.0}})
    sized.config.gsd_m = None
    img = np.zeros((1, 40, 40), np.uint8)
    img[0, 20:26, 20:26] = 200
    bare = classify_raster(
        sized, make_raster(img, "bare.tif", crs=None), tmp_path / "b.tif", progress=False,
        allow_no_crs=True,
    )  # fmt: skip
    mapped = classify_raster(sized, make_raster(img, "geo.tif"), tmp_path / "g.tif", progress=False)
    with rasterio.open(bare) as b, rasterio.open(mapped) as g:
        assert json.loads(b.tags()[MIN_AREA_TAG]) == {"building": 36.0}
        assert MIN_AREA_TAG not in g.tags()
