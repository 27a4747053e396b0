"""Touching building polygons are parted by a background gap in the training masks."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import write_geotiff

from geounet.core.classes import make_classes
from geounet.data.labels import open_labels
from geounet.data.prepare import prepare_data
from geounet.io.raster import open_raster

X0, Y0, RES = 500000.0, 3700000.0, 0.5


def _box(c0: int, r0: int, c1: int, r1: int) -> shapely.Polygon:
    """A box over pixel columns c0..c1 and rows r0..r1 of the test grid."""
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


@pytest.fixture()
def scene(tmp_path):
    """A 64 x 64 image with a row of two touching houses and one house on its own."""
    image = write_geotiff(tmp_path / "img.tif", np.zeros((3, 64, 64), np.uint8))
    houses = [_box(4, 4, 20, 20), _box(20, 4, 36, 20), _box(40, 40, 56, 56)]
    gpd.GeoDataFrame(geometry=houses, crs="EPSG:32616").to_file(tmp_path / "b.geojson")
    return image, tmp_path / "b.geojson"


def _read(image, labels, separate, row=0, col=0, size=64):
    src = open_labels(labels, open_raster(image), separate=separate)
    src.bind(make_classes(["building"]))
    return src.read(row, col, size, size)


def test_touching_houses_get_a_two_pixel_gap_and_lone_houses_stay_whole(scene):
    image, labels = scene
    plain, parted = _read(image, labels, None), _read(image, labels, "Building")
    assert plain[4:20, 4:36].all()  # burnt as they are: one merged block
    assert (parted[4:20, 19:21] == 0).all()  # both sides of the shared wall
    assert parted[4:20, 4:19].all() and parted[4:20, 21:36].all()
    assert (parted[40:56, 40:56] == plain[40:56, 40:56]).all()  # no neighbour: unchanged
    assert int(plain.sum()) - int(parted.sum()) == 2 * 16


def test_the_gap_does_not_depend_on_the_window(scene):
    image, labels = scene
    whole = _read(image, labels, "building")
    # a window whose left edge falls on the shared wall sees the neighbour outside it
    assert (_read(image, labels, "building", col=20, size=32) == whole[0:32, 20:52]).all()
    assert (_read(image, labels, "building", col=19, size=32) == whole[0:32, 19:51]).all()


def test_prepare_data_parts_touching_buildings_by_default_and_records_it(scene, tmp_path):
    image, labels = scene
    on = prepare_data(image, labels, classes=["building"], chip_size=64, val_fraction=0)
    off = prepare_data(
        image, labels, classes=["building"], chip_size=64, val_fraction=0, separate_touching=None
    )
    assert on.manifest["separate_touching"] == "building"
    assert off.manifest["separate_touching"] is None
    lab_on, lab_off = on.train_ds.read(0)[1], off.train_ds.read(0)[1]
    assert int(lab_off.sum()) - int(lab_on.sum()) == 2 * 16
