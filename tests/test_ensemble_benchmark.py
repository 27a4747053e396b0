"""``benchmarks/ensemble.py``: the probability rasters of several runs averaged (no shared data)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "ensemble.py"


@pytest.fixture(scope="module")
def ensemble():
    spec = importlib.util.spec_from_file_location("ensemble_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_average_takes_the_most_probable_class_of_the_mean(ensemble, make_raster, tmp_path):
    # pixel 0: run a sure of class 1 (200), run b unsure of class 0 (130): mean says class 1
    # pixel 1: both lean to class 0; pixel 2: a says 0, b strongly 1 -> 1; pixel 3: nodata
    p1 = np.array([[[55, 200, 150, 100]], [[200, 55, 105, 155]]], np.uint8)
    p2 = np.array([[[130, 220, 20, 100]], [[125, 35, 235, 155]]], np.uint8)
    a, b = make_raster(p1, "a.tif"), make_raster(p2, "b.tif")
    like = make_raster(np.array([[[1, 0, 0, 255]]], np.uint8), "like.tif", nodata=255)
    with rasterio.open(like, "r+") as dst:
        dst.update_tags(MIN_AREA_M2="3.5")
    out = ensemble.average_classes([a, b], like, tmp_path / "mean.tif")
    with rasterio.open(out) as src:
        got, tags, nodata = src.read(1), src.tags(), src.nodata
    assert got.tolist() == [[1, 0, 1, 255]]
    assert tags["MIN_AREA_M2"] == "3.5"
    assert nodata == 255


def test_rasters_of_other_shapes_are_refused(ensemble, make_raster, tmp_path):
    a = make_raster(np.zeros((2, 1, 4), np.uint8), "a.tif")
    b = make_raster(np.zeros((2, 1, 3), np.uint8), "b.tif")
    like = make_raster(np.zeros((1, 1, 4), np.uint8), "like.tif")
    with pytest.raises(SystemExit, match="differs"):
        ensemble.average_classes([a, b], like, tmp_path / "mean.tif")


def test_one_run_is_refused(ensemble, tmp_path):
    with pytest.raises(SystemExit, match="two or more"):
        ensemble.main(["--scene", "oam_zanzibar", "--data", str(tmp_path), str(tmp_path)])
    assert "recipe_benchmark" not in sys.modules  # refused before the recipe is loaded
