"""prepare_data / GeoData: chipping, labels, splits, chip folders, errors (issue 3)."""

from __future__ import annotations

import dataclasses
import gc
import glob
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from conftest import UTM, shared_data
from rasterio import features
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geounet.core.errors import (
    BandMismatchError,
    CRSMismatchError,
    InputNotFoundError,
    InvalidParameterError,
    LabelError,
    MissingCRSError,
    NoChipsError,
    OutputExistsError,
)
from geounet.data.augment import dihedral, random_dihedral
from geounet.data.chipping import (
    Chip,
    assign_splits,
    check_chip_size,
    chip_grid,
    median_frequency_weights,
)
from geounet.data.prepare import GeoData, prepare_data
from geounet.data.settings import PrepareSettings

DUBAI_CLASSES = {
    "#3C1098": "Building",
    "#8429F6": "Land",
    "#6EC1E4": "Road",
    "#FEDD3A": "Vegetation",
    "#E2A929": "Water",
    "#9B9B9B": "Unlabeled",
}


# ---------------------------------------------------------------- helpers


def stitch(data: GeoData, shape: tuple[int, int]) -> np.ndarray:
    """Paste every label chip back at its window; 255 where no chip says anything."""
    canvas = np.full(shape, 255, np.uint8)
    for rec in data.manifest["chips"]:
        r, c, h, w = rec["window"]
        with rasterio.open(data.chip_dir / rec["label"]) as src:
            lab = src.read(1)
        hh, ww = min(h, shape[0] - r), min(w, shape[1] - c)
        part = lab[:hh, :ww]
        view = canvas[r : r + hh, c : c + ww]
        view[part != 255] = part[part != 255]
    return canvas


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def boxes_overlap(a: list[float], b: list[float]) -> bool:
    """Positive-area intersection of two [minx, miny, maxx, maxy] boxes."""
    return min(a[2], b[2]) - max(a[0], b[0]) > 1e-9 and min(a[3], b[3]) - max(a[1], b[1]) > 1e-9


def assert_no_leak(data: GeoData) -> None:
    chips = data.manifest["chips"]
    train = [c["bounds"] for c in chips if c["split"] == "train"]
    valid = [c["bounds"] for c in chips if c["split"] == "valid"]
    assert train and valid
    for v in valid:
        assert not any(boxes_overlap(t, v) for t in train)


def scene(h: int = 256, w: int = 256, bands: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 250, size=(bands, h, w)).astype(np.uint8)


def blocks_mask(h: int = 256, w: int = 256, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[20:60, 30:90] = value
    m[150:230, 100:140] = value
    return m


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def inria() -> GeoData:
    d = shared_data("inria_austin")
    return prepare_data(
        d / "image.tif", d / "buildings_mask.tif", classes={255: "building"}, chip_size=128,
        stride=128,
    )  # fmt: skip


@pytest.mark.realdata
def test_inria_rgb_uint8(inria: GeoData) -> None:
    data = inria
    assert data.classes == ["background", "building"]
    assert data.class_values == [0, 255]
    assert (data.n_bands, data.source_dtype, data.chip_size) == (3, "uint8", 128)
    assert data.band_names == ["red", "green", "blue"]
    assert data.gsd_m == pytest.approx(0.3, abs=1e-6)
    assert "UTM zone 14N" in data.crs
    share = data.class_pixel_counts[1] / sum(data.class_pixel_counts)
    assert 0.10 < share < 0.18  # 14 % buildings
    assert data.class_weights[1] > data.class_weights[0]
    # the validation strip (the bottom 20 %: rows 800-999) is chipped apart from the training
    # area (rows 0-799): 8 columns x (7 + 2) rows of 128 px, each part flush with its border
    assert (len(data.train_ds), len(data.valid_ds)) == (8 * 7, 8 * 2)
    x, y = next(iter(data.train_dl))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 128, 128)
    assert y.dtype == torch.int64 and y.shape == (8, 128, 128)
    values: set[int] = set()
    for _, yv in data.valid_dl:
        values |= set(torch.unique(yv).tolist())
    assert values == {0, 1}  # both classes, and no "no label" in a fully labelled scene
    with rasterio.open(shared_data("inria_austin") / "buildings_mask.tif") as src:
        truth = src.read(1) == 255
    got = stitch(data, truth.shape)
    covered = got != 255
    assert covered.mean() > 0.9
    assert np.array_equal(got[covered] == 1, truth[covered])  # the mask, chip by chip
    assert abs(float(x.mean())) < 0.5  # normalised with the scene statistics
    # chips are georeferenced GeoTIFFs at the place the manifest says
    rec = data.manifest["chips"][5]
    with rasterio.open(data.chip_dir / rec["image"]) as src:
        assert src.crs is not None and src.count == 3
        assert list(src.bounds) == pytest.approx(rec["bounds"])
    with rasterio.open(data.chip_dir / rec["label"]) as src:
        assert src.nodata == 255 and src.colormap(1)[1][:3] == (0xE6, 0x19, 0x4B)


@pytest.mark.realdata
def test_show_batch_returns_figure(inria: GeoData) -> None:
    from matplotlib.figure import Figure

    fig = inria.show_batch(rows=2)
    assert isinstance(fig, Figure)
    assert len([a for a in fig.axes if a.images]) == 6


@pytest.mark.realdata
def test_summary_table(inria: GeoData) -> None:
    df = inria.summary()
    assert df.loc["chips", "total"] == 72  # 8 columns x (7 training + 2 validation rows)
    assert df.loc["% building", "total"] == pytest.approx(14.1, abs=1.0)
    assert "building" in str(df)


@pytest.fixture(scope="module")
def atlanta() -> GeoData:
    d = shared_data("spacenet_atlanta_pan")
    return prepare_data(
        d / "image.tif", d / "buildings.geojson", classes="building", chip_size=128, stride=96
    )


@pytest.mark.realdata
def test_atlanta_uint16_vector_footprints(atlanta: GeoData) -> None:
    d = shared_data("spacenet_atlanta_pan")
    assert atlanta.source_dtype == "uint16" and atlanta.n_bands == 1
    assert atlanta.stats["p98"][0] > 255  # 16-bit statistics, not clipped to 8 bits
    with rasterio.open(d / "image.tif") as src:
        shape, tr, crs = src.shape, src.transform, src.crs
    gdf = gpd.read_file(d / "buildings.geojson").to_crs(crs)
    truth = features.rasterize(gdf.geometry, out_shape=shape, transform=tr) > 0
    got = stitch(atlanta, shape)
    covered = got != 255
    score = iou(got[covered] == 1, truth[covered])
    assert score >= 0.95, f"atlanta stitched footprints IoU = {score:.4f}"


@pytest.mark.realdata
def test_atlanta_leakage_with_overlapping_chips(atlanta: GeoData) -> None:
    assert atlanta.manifest["stride"] == 96
    assert_no_leak(atlanta)
    # the validation strip is chipped apart: overlapping chips cost no gap chip
    assert atlanta.manifest["dropped_chips"]["split_gap"] == 0
    cost = atlanta.manifest["split_cost"]
    assert cost["gap_chips"] == 0 and 0.15 < cost["valid_pixel_share"] < 0.3


def test_spatial_split_costs_only_the_strip_on_a_small_area(make_raster) -> None:
    # one 2 x 3 chip area, overlapping chips: a single strip of chips validates, none dropped
    # (at the end: "auto" would move it, as the blocks stand left of it)
    img = make_raster(scene(256, 384), "small.tif")
    lab = make_raster(blocks_mask(256, 384), "small_l.tif")
    data = prepare_data(
        img, lab, classes=["b"], chip_size=128, stride=64, val_fraction=0.2, val_strip="end"
    )
    cost = data.manifest["split_cost"]
    assert cost["gap_chips"] == 0 and data.manifest["dropped_chips"]["split_gap"] == 0
    assert (cost["train_chips"], cost["valid_chips"]) == (9, 3)  # 3 x 3 left, 1 x 3 strip
    assert cost["valid_pixel_share"] == pytest.approx(3 / 12)
    right = [c["bounds"] for c in data.manifest["chips"] if c["split"] == "valid"]
    left = [c["bounds"] for c in data.manifest["chips"] if c["split"] == "train"]
    assert min(b[0] for b in right) >= max(b[2] for b in left) - 1e-6  # strip at the right
    assert "split cost: % labelled px" in data.summary().index


@pytest.mark.parametrize("where", ["start", "middle"])
def test_the_validation_strip_can_lie_at_the_start_or_in_the_middle(make_raster, where) -> None:
    # 128 rows x 384 columns, chips of 128 side by side: the strip is one chip wide
    img = make_raster(scene(128, 384), "wide.tif")
    lab = make_raster(blocks_mask(128, 384), "wide_l.tif")
    data = prepare_data(img, lab, classes=["b"], chip_size=128, stride=128, val_strip=where)
    assert data.manifest["val_strip"] == where
    cost = data.manifest["split_cost"]
    assert (cost["train_chips"], cost["valid_chips"], cost["gap_chips"]) == (2, 1, 0)
    valid = [c["bounds"] for c in data.manifest["chips"] if c["split"] == "valid"]
    train = [c["bounds"] for c in data.manifest["chips"] if c["split"] == "train"]
    lefts = sorted(b[0] for b in train + valid)
    assert valid[0][0] == lefts[0 if where == "start" else 1]  # chip 1 of 3, or 2 (middle)
    if where == "middle":  # training chips on both sides of the strip
        assert min(b[0] for b in train) < valid[0][0] < max(b[0] for b in train)


def test_spatial_split_with_many_images_sends_whole_images(make_raster) -> None:
    imgs = [make_raster(scene(128, 128, seed=i), f"m{i}.tif") for i in range(6)]
    lab = make_raster(blocks_mask(128, 128), "m_l.tif")
    data = prepare_data(imgs, lab, classes=["b"], chip_size=64, stride=32, val_fraction=0.2)
    by_source: dict[str, set[str]] = {}
    for c in data.manifest["chips"]:
        by_source.setdefault(c["source"], set()).add(c["split"])
    assert all(len(s) == 1 for s in by_source.values())  # no image is split
    assert sum(s == {"valid"} for s in by_source.values()) == 1  # ~20 % of 6 images
    assert data.manifest["split_cost"]["gap_chips"] == 0


@pytest.mark.realdata
def test_vegas_roads_geographic_crs_metre_buffer() -> None:
    d = shared_data("spacenet_vegas_roads_pan")
    data = prepare_data(
        d / "image.tif", d / "roads.geojson", classes="road", chip_size=128, line_width_m=4
    )
    assert data.crs is not None and "WGS 84" in data.crs
    assert data.gsd_m == pytest.approx(0.27, abs=0.01)  # 2.7e-6 degrees at 36 N, in metres
    with rasterio.open(d / "roads_mask_4m.tif") as src:
        truth = src.read(1) > 0
    got = stitch(data, truth.shape)
    covered = got != 255
    score = iou(got[covered] == 1, truth[covered])
    assert score >= 0.90, f"vegas stitched road mask IoU = {score:.4f}"


def dubai_pairs(n_rgb: int = 2, n_palette: int = 1) -> tuple[list[str], list[str]]:
    d = shared_data("dubai_multiclass")
    ims = sorted(glob.glob(str(d / "tile_1/images/*.jpg")))[:n_rgb]
    ims += sorted(glob.glob(str(d / "tile_2/images/*.jpg")))[:n_palette]
    return ims, [p.replace("images", "masks").replace(".jpg", ".png") for p in ims]


@pytest.mark.realdata
def test_dubai_without_crs_refused_then_accepted() -> None:
    ims, masks = dubai_pairs()
    with pytest.raises(MissingCRSError, match="allow_no_crs=True"):
        prepare_data(ims, masks, classes=DUBAI_CLASSES, chip_size=128)
    data = prepare_data(ims, masks, classes=DUBAI_CLASSES, chip_size=128, allow_no_crs=True)
    assert data.classes[1:] == list(DUBAI_CLASSES.values())
    found = [n for n, c in zip(data.classes, data.class_pixel_counts) if c > 0]
    assert found == list(DUBAI_CLASSES.values())  # the 6 classes are all found
    assert data.colors[1] == "#3C1098"
    assert data.crs is None and data.gsd_m is None
    x, y = data.valid_ds[0]  # no augmentation on validation chips
    labels = set(torch.unique(y).tolist())
    assert x.shape == (3, 128, 128)
    assert labels - {255} and labels <= {*range(7), 255}  # classes 0-6, 255 = unlabeled padding


@pytest.mark.realdata
def test_dubai_classes_inferred_from_colours() -> None:
    ims, masks = dubai_pairs(n_rgb=1, n_palette=0)
    data = prepare_data(ims, masks, chip_size=128, allow_no_crs=True)
    assert sorted(data.classes[1:]) == sorted(DUBAI_CLASSES)  # named by their colour


@pytest.mark.realdata
def test_missing_label_field_lists_fields() -> None:
    d = shared_data("spacenet_atlanta_pan")
    with pytest.raises(LabelError, match="building") as err:
        prepare_data(d / "image.tif", d / "buildings.geojson", label_field="kind", chip_size=128)
    assert "label_field='kind'" in str(err.value)


@pytest.mark.realdata
def test_an_identifier_as_label_field_is_refused_not_made_a_class_per_building() -> None:
    """``--label-field osm_id`` made 121 classes, one per OpenStreetMap building."""
    d = shared_data("oam_zanzibar")
    with pytest.raises(LabelError, match=r"label_field='osm_id' holds \d+ distinct values"):
        prepare_data(d / "image.tif", d / "buildings.geojson", label_field="osm_id")


@pytest.mark.realdata
def test_label_values_outside_classes_are_listed() -> None:
    d = shared_data("inria_austin")
    with pytest.raises(LabelError, match=r"255") as err:
        prepare_data(d / "image.tif", d / "buildings_mask.tif", classes={1: "building"})
    assert "values found: 0, 255" in str(err.value)


# ---------------------------------------------------------------- synthetic


def test_synthetic_raster_labels(make_raster, tmp_path: Path) -> None:
    img = make_raster(scene(), "img.tif")
    lab = make_raster(blocks_mask(value=255), "lab.tif")
    data = prepare_data(img, lab, chip_size=64, out_dir=tmp_path / "chips")
    assert data.classes == ["background", "class_255"]  # inferred from the values
    got = stitch(data, (256, 256))
    assert np.array_equal(got == 1, blocks_mask() == 1)
    assert not data.is_temporary


def test_stats_over_valid_pixels_only(make_raster) -> None:
    arr = scene(bands=2)
    arr[:, :64, :] = 0  # nodata rows
    img = make_raster(arr, nodata=0)
    data = prepare_data(
        img, make_raster(blocks_mask(), "l.tif"), classes=["x"], chip_size=64, stride=64
    )
    valid = arr[:, 64:, :].reshape(2, -1).astype(np.float64)
    assert data.stats["mean"] == pytest.approx(valid.mean(axis=1).tolist())
    assert data.stats["std"] == pytest.approx(valid.std(axis=1).tolist(), rel=1e-4)
    # the nodata rows are dropped chips (0 % valid), not training data
    assert data.manifest["dropped_chips"]["low_valid_fraction"] == 4


def test_nodata_and_alpha_become_ignore(make_raster) -> None:
    arr = scene(bands=4)
    arr[3] = 255
    arr[3, :, :40] = 0  # transparent strip
    img = make_raster(
        arr, colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    )
    data = prepare_data(
        img,
        make_raster(blocks_mask(), "l.tif"),
        classes=["b"],
        chip_size=64,
        min_valid_fraction=0.3,
    )
    assert data.n_bands == 3 and data.bands == [1, 2, 3]  # alpha is not an input band
    got = stitch(data, (256, 256))
    assert (got[:, :40] == 255).all() and (got[:, 64:] != 255).all()


def test_label_raster_on_another_grid_is_resampled(make_raster) -> None:
    img = make_raster(scene(), "img.tif", res=0.5)
    coarse = np.zeros((100, 100), np.uint8)
    coarse[10:30, 20:40] = 1  # 1 m pixels, the label's top-left 10 m up-left of the image's
    lab = make_raster(coarse, "lab.tif", res=1.0, origin=(499990.0, 3700010.0))
    data = prepare_data(img, lab, classes={1: "b"}, chip_size=64, min_valid_fraction=0.1)
    got = stitch(data, (256, 256))
    want = np.zeros((256, 256), bool)
    want[0:40, 20:60] = True  # label rows 10:30 -> image rows 0:40, cols 20:40 -> 20:60
    assert np.array_equal(got == 1, want)
    assert (got[180:, :] == 255).all()  # beyond the label raster: no label


def test_vector_lines_and_label_field_by_name(make_raster, tmp_path: Path) -> None:
    img = make_raster(scene(), "img.tif")  # 0.5 m pixels from (500000, 3700000)
    x0, y0 = 500000.0, 3700000.0
    gdf = gpd.GeoDataFrame(
        {"kind": ["building", "road"]},
        geometry=[
            shapely.box(x0 + 10, y0 - 40, x0 + 30, y0 - 20),
            shapely.LineString([(x0, y0 - 100), (x0 + 128, y0 - 100)]),
        ],
        crs=UTM.to_wkt(),
    )
    vec = tmp_path / "labels.gpkg"
    gdf.to_file(vec)
    data = prepare_data(
        img,
        vec,
        classes={1: "building", 2: "road"},
        label_field="kind",
        chip_size=64,
        line_width_m=4,
    )
    got = stitch(data, (256, 256))
    assert (got[40:80, 20:60] == 1).all()
    road_rows = np.nonzero((got == 2).any(axis=1))[0]
    assert road_rows.min() == 196 and road_rows.max() == 203  # 4 m = 8 rows around row 200


def test_points_and_building_lines_warn_that_they_label_strokes(make_raster, tmp_path) -> None:
    """Building outlines digitised as closed lines taught 4 m rings, points 4 m discs, in
    silence; a road's lines are what lines are for."""
    import warnings

    img = make_raster(scene(), "img.tif")
    x0, y0 = 500000.0, 3700000.0
    ring = shapely.box(x0 + 10, y0 - 40, x0 + 30, y0 - 20).exterior
    road = shapely.LineString([(x0, y0 - 100), (x0 + 128, y0 - 100)])
    cases = {
        "rings.gpkg": (["building", "road"], [ring, road], "1 of 1 features of class 'building' "
                       "are lines, labelled as strokes 4 m wide"),
        "wells.gpkg": (["well", "well"], [shapely.Point(x0 + 20, y0 - 30), shapely.box(
            x0 + 50, y0 - 60, x0 + 60, y0 - 50)], "1 of 2 features of class 'well' are points, "
                       "labelled as discs 4 m across"),
    }  # fmt: skip
    for name, (kinds, geoms, message) in cases.items():
        path = tmp_path / name
        gpd.GeoDataFrame({"kind": kinds}, geometry=geoms, crs=UTM.to_wkt()).to_file(path)
        with pytest.warns(UserWarning, match=re.escape(message)):
            prepare_data(img, path, label_field="kind", chip_size=64)
    path = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame({"kind": ["road"]}, geometry=[road], crs=UTM.to_wkt()).to_file(path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prepare_data(img, path, label_field="kind", chip_size=64)
    assert not [w for w in seen if "line_width_m" in str(w.message)]


def test_images_of_different_pixel_sizes_warn(make_raster) -> None:
    """The model records one pixel size, the first image's: a 0.5 m and a 1 m image warn;
    0.5 m and 0.55 m do not."""
    import warnings

    lab = blocks_mask()
    fine = make_raster(scene(), "fine.tif", res=0.5)
    coarse = make_raster(scene(), "coarse.tif", res=1.0, origin=(600000.0, 3700000.0))
    near = make_raster(scene(), "near.tif", res=0.55, origin=(700000.0, 3700000.0))
    labels = [
        make_raster(lab, "l1.tif"),
        make_raster(lab, "l2.tif", res=1.0, origin=(600000.0, 3700000.0)),
        make_raster(lab, "l3.tif", res=0.55, origin=(700000.0, 3700000.0)),
    ]
    with pytest.warns(UserWarning, match=r"0\.5 m .*fine\.tif.* to 1 m .*coarse\.tif.*2\.0 times"):
        data = prepare_data([fine, coarse], labels[:2], classes=["b"], chip_size=64)
    assert data.manifest["gsd_m"] == pytest.approx(0.5)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prepare_data([fine, near], [labels[0], labels[2]], classes=["b"], chip_size=64)
    assert not [w for w in seen if "pixel sizes" in str(w.message)]


def test_vector_in_another_crs_is_reprojected(make_raster, tmp_path: Path) -> None:
    img = make_raster(scene(), "img.tif")
    x0, y0 = 500000.0, 3700000.0
    utm = gpd.GeoDataFrame(
        geometry=[shapely.box(x0 + 10, y0 - 40, x0 + 30, y0 - 20)], crs=UTM.to_wkt()
    )
    vec = tmp_path / "wgs84.geojson"
    utm.to_crs("EPSG:4326").to_file(vec)
    got = stitch(prepare_data(img, vec, classes="b", chip_size=64), (256, 256))
    want = np.zeros((256, 256), bool)
    want[40:80, 20:60] = True
    assert iou(got == 1, want) > 0.95


def test_band_selection(make_raster) -> None:
    img = make_raster(scene(bands=4), descriptions=["blue", "green", "red", "nir"])
    lab = make_raster(blocks_mask(), "l.tif")
    data = prepare_data(img, lab, classes=["x"], bands=[3, 2, 1], chip_size=64)
    assert (data.n_bands, data.band_names) == (3, ["red", "green", "blue"])
    assert data.train_ds[0][0].shape == (3, 64, 64)
    with pytest.raises(BandMismatchError, match=r"1\.\.4"):
        prepare_data(img, lab, classes=["x"], bands=[5], chip_size=64)
    with pytest.raises(BandMismatchError, match=r"names a band twice.*bands=\[3, 2\]"):
        prepare_data(img, lab, classes=["x"], bands=[3, 2, 3], chip_size=64)  # a typo


def test_vector_without_field_takes_the_single_class(make_raster, tmp_path: Path) -> None:
    img = make_raster(scene(), "img.tif")
    vec = tmp_path / "houses.geojson"
    x0, y0 = 500000.0, 3700000.0
    gpd.GeoDataFrame(
        geometry=[shapely.box(x0 + 10, y0 - 40, x0 + 30, y0 - 20)], crs=UTM.to_wkt()
    ).to_file(vec)
    assert prepare_data(img, vec, chip_size=64).classes == ["background", "houses"]
    with pytest.raises(LabelError, match="label_field"):
        prepare_data(img, vec, classes={1: "a", 2: "b"}, chip_size=64)


def test_inferred_names_of_buildings_and_roads_are_the_pipelines(make_raster, tmp_path) -> None:
    """``buildings.geojson`` (or a 0/255 ``buildings_mask.tif``) labels ``building``, the class
    vectorize regularizes and splits; a field's ``Roads`` labels ``road``; values that differ
    only in case or surrounding spaces (a hand-typed attribute table) are one class."""
    img = make_raster(scene(), "img.tif")
    x0, y0 = 500000.0, 3700000.0
    boxes = [shapely.box(x0 + 10, y0 - 40, x0 + 30, y0 - 20), shapely.box(x0, y0 - 60, x0 + 9, y0)]
    names = {"buildings.geojson": "building", "Roads.gpkg": "road", "osm_roads_2020.fgb": "road"}
    names["roads_and_buildings.gpkg"] = "roads_and_buildings"  # which one? the name as it is
    for name, want in names.items():
        gpd.GeoDataFrame(geometry=boxes[:1], crs=UTM.to_wkt()).to_file(tmp_path / name)
        assert prepare_data(img, tmp_path / name, chip_size=64).classes[1] == want, name
    mask = np.zeros((256, 256), np.uint8)
    mask[40:80, 20:60] = 255  # a 0/255 mask, as Inria and SpaceNet give them
    for name, want in (("buildings_mask.tif", "building"), ("mask.tif", "class_255")):
        assert prepare_data(img, make_raster(mask, name), chip_size=64).classes[1] == want
    for values, names in (
        (["Buildings", "trees"], {"building", "trees"}),
        (["building", "Building"], {"building"}),
        (["Shed ", "shed"], {"shed"}),
    ):
        path = tmp_path / f"kinds_{values[1]}.gpkg"
        gpd.GeoDataFrame({"kind": values}, geometry=boxes, crs=UTM.to_wkt()).to_file(path)
        data = prepare_data(img, path, label_field="kind", chip_size=64)
        assert set(data.classes[1:]) == names, data.classes
        counts = data.manifest["class_pixel_counts"]
        assert len(counts) == 1 + len(names)
        if len(names) == 1:  # both boxes labelled, as when every feature is the one class
            one = prepare_data(img, path, classes=["x"], chip_size=64)
            assert counts == one.manifest["class_pixel_counts"]
    path = tmp_path / "two_classes_alike.gpkg"
    gpd.GeoDataFrame({"kind": ["Road", "road"]}, geometry=boxes, crs=UTM.to_wkt()).to_file(path)
    with pytest.raises(LabelError, match="spelled alike"):
        prepare_data(img, path, label_field="kind", classes={"Road": "road", "road": "lane"})


def test_rows_split_top_train_bottom_valid(make_raster) -> None:
    img = make_raster(scene(256, 256))
    data = prepare_data(
        img,
        make_raster(blocks_mask(), "l.tif"),
        classes=["b"],
        chip_size=32,
        stride=32,
        split="rows",
        val_fraction=0.25,
    )
    cut = 3700000.0 - 0.5 * 192
    for c in data.manifest["chips"]:
        if c["split"] == "train":
            assert c["bounds"][1] >= cut - 1e-6
        else:
            assert c["bounds"][3] <= cut + 1e-6
    assert len(data.valid_ds) == 16 and len(data.train_ds) == 48


def test_spatial_split_no_leak_deterministic_each_image(make_raster) -> None:
    imgs = [make_raster(scene(seed=i), f"i{i}.tif") for i in range(2)]
    lab = make_raster(blocks_mask(), "l.tif")
    kw = {"classes": ["b"], "chip_size": 64, "stride": 32, "val_fraction": 0.25}
    a = prepare_data(imgs, lab, **kw)
    b = prepare_data(imgs, lab, **kw)
    assert [c["split"] for c in a.manifest["chips"]] == [c["split"] for c in b.manifest["chips"]]
    for src in {c["source"] for c in a.manifest["chips"]}:
        splits = {c["split"] for c in a.manifest["chips"] if c["source"] == src}
        assert splits == {"train", "valid"}  # every image contributes to both
        one = [c for c in a.manifest["chips"] if c["source"] == src]
        tr = [c["bounds"] for c in one if c["split"] == "train"]
        assert not any(
            boxes_overlap(t, v["bounds"]) for t in tr for v in one if v["split"] == "valid"
        )


def test_random_split_is_available() -> None:
    chips = [Chip(0, r * 64, c * 64) for r in range(5) for c in range(4)]
    assign_splits(chips, split="random", val_fraction=0.25, chip_size=64, stride=64, seed=1)
    assert sum(c.split == "valid" for c in chips) == 5


def test_chip_grid_and_weights() -> None:
    assert chip_grid(100, 64, 64, 64) == [(0, 0, 0), (36, 0, 0)]
    assert chip_grid(30, 30, 64, 64) == [(0, 0, 0)]  # smaller than a chip: one padded chip
    middle = chip_grid(64, 192, 64, 64, val_strip="middle")
    assert middle == [(0, 0, 0), (0, 64, 1), (0, 128, 0)]
    # no room for a chip on both sides of a middle strip: the strip goes to the end
    assert chip_grid(64, 160, 64, 64, val_strip="middle") == [(0, 0, 0), (0, 32, 0), (0, 96, 1)]
    assert chip_grid(64, 160, 64, 64, val_strip="start") == [(0, 0, 1), (0, 64, 0), (0, 96, 0)]
    assert median_frequency_weights([800, 200, 0]) == pytest.approx([0.625, 2.5, 1.0])


def test_reopen_chip_folder_and_temporary_cleanup(make_raster, tmp_path: Path) -> None:
    img, lab = make_raster(scene()), make_raster(blocks_mask(), "l.tif")
    out = tmp_path / "chips"
    first = prepare_data(img, lab, classes=["b"], chip_size=64, out_dir=out)
    again = prepare_data(out, batch_size=2)
    assert again.manifest == json.loads((out / "manifest.json").read_text())
    assert (again.classes, again.stats, len(again.train_ds)) == (
        first.classes,
        first.stats,
        len(first.train_ds),
    )
    assert again.train_dl.batch_size == 2
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        prepare_data(img, lab, classes=["b"], chip_size=64, out_dir=out)
    prepare_data(img, lab, classes=["b"], chip_size=32, out_dir=out, overwrite=True)
    assert prepare_data(out).chip_size == 32
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a geounet chip folder"):
        prepare_data(
            img, lab, classes=["b"], out_dir=tmp_path / "notes", overwrite=True, chip_size=64
        )
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
    temp = prepare_data(img, lab, classes=["b"], chip_size=64)
    folder = temp.chip_dir
    assert temp.is_temporary and folder.is_dir()
    del temp
    gc.collect()
    assert not folder.exists()


def test_augmentation_keeps_image_and_mask_aligned(make_raster) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[5:20, 10:50] = 1
    mask[30:60, 40:45] = 1  # no symmetry: all 8 views differ
    img = make_raster(np.stack([mask * 200 + 10] * 3).astype(np.uint8))
    data = prepare_data(
        img, make_raster(mask, "l.tif"), classes=["b"], chip_size=64, val_fraction=0
    )
    assert len(data.train_ds) == 1 and len(data.valid_ds) == 0
    views = set()
    for _ in range(40):
        x, y = data.train_ds[0]
        known = y != 255  # a zoom-out leaves a nodata border
        agree = (x[0] > 0)[known] == (y == 1)[known]  # image and mask moved together
        assert agree.float().mean() > 0.95  # (bilinear image vs nearest mask at edges)
        assert (x[:, ~known] == 0).all()  # the uncovered border is nodata: the mean
        views.add(y.numpy().tobytes())
    assert len(views) > 8  # flips, quarter turns and zooms
    plain = GeoData(data.chip_dir, data.manifest, augment=False)
    assert torch.equal(plain.train_ds[0][1], torch.from_numpy(mask.astype(np.int64)))


def test_dihedral_group() -> None:
    img = torch.arange(16.0).reshape(1, 4, 4)
    mask = torch.arange(16).reshape(4, 4)
    outs = {tuple(dihedral(img, mask, k)[1].flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    for k in range(8):
        a, b = dihedral(img, mask, k)
        assert torch.equal(a[0].long(), b)
    g = torch.Generator().manual_seed(0)
    a, b = random_dihedral(img, mask, g)
    assert torch.equal(a[0].long(), b)


# ---------------------------------------------------------------- errors


def test_error_missing_label_file(make_raster, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="label file not found"):
        prepare_data(make_raster(scene()), tmp_path / "nope.gpkg", chip_size=64)


def test_error_no_overlap_names_both_extents(make_raster, tmp_path: Path) -> None:
    img = make_raster(scene())
    far = make_raster(blocks_mask(), "far.tif", origin=(600000.0, 3800000.0))
    with pytest.raises(CRSMismatchError, match=r"label extent \[600000.*image extent \[500000"):
        prepare_data(img, far, chip_size=64)
    vec = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326").to_file(vec)
    with pytest.raises(CRSMismatchError, match="do not overlap"):
        prepare_data(img, vec, chip_size=64)


def test_error_wrong_chip_size_suggests_sizes() -> None:
    with pytest.raises(InvalidParameterError, match="use 224 or 256"):
        check_chip_size(250)
    with pytest.raises(InvalidParameterError, match="use 32"):
        prepare_data("whatever.tif", "labels.tif", chip_size=20)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"chip_size": 20}, "chip_size=20"), ({"stride": 0}, "stride=0"),
     ({"split": "diagonal"}, "split='diagonal'"), ({"val_fraction": 1.0}, "val_fraction=1.0"),
     ({"min_valid_fraction": -0.1}, "min_valid_fraction=-0.1"),
     ({"line_width_m": 0}, "line_width_m=0"), ({"val_fraction": True}, "val_fraction=True"),
     ({"val_strip": "left"}, "val_strip='left'")],
)  # fmt: skip
def test_prepare_settings_refuse_bad_values_before_any_file_is_read(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        PrepareSettings(classes=None, **kwargs)
    with pytest.raises(InvalidParameterError, match=re.escape(message)):  # no such file: unread
        prepare_data("no_such_scene.tif", "no_such_labels.tif", **kwargs)


def test_prepare_settings_resolve_the_stride_and_are_frozen() -> None:
    s = PrepareSettings(classes={1: "x"}, chip_size=128, bands=[3, 2, 1])
    assert (s.stride, s.bands) == (None, (3, 2, 1))  # chosen from the area when chipping
    small, large = [(1000, 1000)], [(4000, 4000), (2000, 2000)]  # 64 and 1 250 chips of 128
    assert (s.for_area(small).stride, s.for_area(large).stride) == (64, 128)
    given = PrepareSettings(classes=None, chip_size=128, stride=96)
    assert given.stride == given.for_area(small).stride == given.for_area(large).stride == 96
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.chip_size = 64  # type: ignore[misc]


def test_the_manifest_records_the_settings(make_raster) -> None:
    data = prepare_data(
        make_raster(scene()), make_raster(blocks_mask(), "l.tif"), classes=["x"],
        chip_size=64, stride=32, val_fraction=0.25, min_valid_fraction=0.4, seed=3,
    )  # fmt: skip
    m = data.manifest
    assert (m["chip_size"], m["stride"], m["split"]) == (64, 32, "spatial")
    assert (m["val_fraction"], m["min_valid_fraction"], m["seed"]) == (0.25, 0.4, 3)


def test_error_band_count_mismatch(make_raster) -> None:
    a, b = make_raster(scene(bands=3), "a.tif"), make_raster(scene(bands=1), "b.tif")
    lab = make_raster(blocks_mask(), "l.tif")
    with pytest.raises(BandMismatchError, match="different numbers of bands"):
        prepare_data([a, b], lab, classes=["x"], chip_size=64)


def test_error_zero_chips(make_raster) -> None:
    img = make_raster(scene(128, 128))
    corner = make_raster(np.zeros((10, 10), np.uint8), "l.tif")  # labels cover 10 x 10 px only
    with pytest.raises(NoChipsError, match="no chip was produced"):
        prepare_data(img, corner, classes=["x"], chip_size=64)


def test_error_colour_mask_and_integer_classes(make_raster) -> None:
    rgb = np.zeros((3, 64, 64), np.uint8)
    rgb[0, :10] = 255
    img, lab = make_raster(scene(64, 64)), make_raster(rgb, "mask.tif")
    with pytest.raises(LabelError, match="colour"):
        prepare_data(img, lab, classes={1: "x"}, chip_size=64)
    with pytest.raises(LabelError, match="#FF0000"):
        prepare_data(img, lab, classes={"#00FF00": "x"}, chip_size=64)


def test_error_no_crs_label_of_other_size(make_raster) -> None:
    img = make_raster(scene(), crs=None)
    lab = make_raster(np.zeros((100, 100), np.uint8), "l.tif", crs=None)
    with pytest.raises(MissingCRSError, match="cannot be aligned"):
        prepare_data(img, lab, allow_no_crs=True, chip_size=64)


def test_error_crs_is_kept_as_wkt(make_raster) -> None:
    data = prepare_data(
        make_raster(scene()), make_raster(blocks_mask(), "l.tif"), classes=["x"], chip_size=64
    )
    assert CRS.from_wkt(data.crs) == UTM


def test_a_constant_band_warns_and_is_not_divided_by_a_millionth(make_raster) -> None:
    """An empty fourth band (or an alpha band chosen with bands=) was normalised with a
    standard deviation of 1e-6: any value it took in the scene to map became ~1e8."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, 64, 64)).astype(np.uint8)
    image[2] = 7
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    img, lab = make_raster(image, "img.tif"), make_raster(labels, "lab.tif")
    with pytest.warns(UserWarning, match=r"band\(s\) 3 hold one value"):
        data = prepare_data(img, lab, classes=["building"], chip_size=32)
    assert data.stats["std"][2] == 1.0 and data.stats["std"][0] > 10
