"""``prepare_data(label_area=)``: part of an image labelled, the rest left to map."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import UTM

from geounet.cli.main import cli
from geounet.core.errors import CRSMismatchError, InputNotFoundError, LabelError, MissingCRSError
from geounet.data.chipping import auto_strip, chip_grid
from geounet.data.labels.area import LabelledArea, read_area
from geounet.data.prepare import prepare_data
from geounet.io.raster import open_raster

X0, Y0, RES = 500000.0, 3700000.0, 0.5  # conftest's origin and pixel size


def px_box(c0: int, r0: int, c1: int, r1: int) -> shapely.Polygon:
    """A box over pixel columns ``[c0, c1)`` and rows ``[r0, r1)`` of conftest's grid."""
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


def write_vector(path: Path, geoms: list, crs: str | None = str(UTM)) -> Path:
    gpd.GeoDataFrame(geometry=geoms, crs=crs).to_file(path)
    return path


@pytest.fixture
def wide(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    """A 128 x 384 image and buildings everywhere (one 16 px square per 64 px cell)."""
    rng = np.random.default_rng(0)
    img = make_raster(rng.integers(0, 200, (3, 128, 384), dtype=np.uint8), "wide.tif")
    roofs = [px_box(c + 24, r + 24, c + 40, r + 40) for r in (0, 64) for c in range(0, 384, 64)]
    return img, write_vector(tmp_path / "roofs.gpkg", roofs)


def chips_of(data, split: str) -> list[tuple[float, ...]]:
    return sorted(tuple(c["bounds"]) for c in data.manifest["chips"] if c["split"] == split)


def test_only_the_labelled_part_is_chipped_and_the_strip_goes_away_from_the_rest(
    wide, tmp_path
) -> None:
    img, roofs = wide
    area = write_vector(tmp_path / "area.gpkg", [px_box(0, 0, 256, 128)])  # left two thirds
    data = prepare_data(img, roofs, classes=["building"], chip_size=64, stride=64, label_area=area)
    train, valid = chips_of(data, "train"), chips_of(data, "valid")
    assert max(b[2] for b in train + valid) <= X0 + 256 * RES + 1e-6  # nothing right of the area
    # the rest lies to the right: the strip is the left end, the labels beside the rest train
    assert max(b[2] for b in valid) <= min(b[0] for b in train) + 1e-6
    assert data.manifest["label_area"] == str(area)
    assert data.manifest["val_strip"] == "auto"


def test_the_strip_goes_to_the_right_when_the_rest_lies_left(wide, tmp_path) -> None:
    img, roofs = wide
    area = write_vector(tmp_path / "area.gpkg", [px_box(128, 0, 384, 128)])
    data = prepare_data(img, roofs, classes=["building"], chip_size=64, stride=64, label_area=area)
    train, valid = chips_of(data, "train"), chips_of(data, "valid")
    assert min(b[0] for b in train) >= X0 + 128 * RES - 1e-6
    assert min(b[0] for b in valid) >= max(b[2] for b in train) - 1e-6


def test_pixels_outside_an_uneven_area_are_no_label_not_background(wide, tmp_path) -> None:
    img, roofs = wide
    # an L: the left 128 columns whole, and the top 64 rows up to column 256
    area = write_vector(
        tmp_path / "l.gpkg", [shapely.union(px_box(0, 0, 128, 128), px_box(0, 0, 256, 64))]
    )
    data = prepare_data(
        img, roofs, classes=["building"], chip_size=64, stride=64, split="random",
        val_fraction=0.0, label_area=area, min_valid_fraction=0.0,
    )  # fmt: skip
    seen = {}
    for c in data.manifest["chips"]:
        with rasterio.open(data.chip_dir / c["label"]) as src:
            seen[(src.transform.c, src.transform.f)] = src.read(1)
    # the chip at rows 64-128, columns 128-192 lies outside the L: it is dropped (no label)
    assert (X0 + 128 * RES, Y0 - 64 * RES) not in seen
    # inside the L every pixel is labelled, with the buildings burnt as usual
    top = seen[(X0 + 128 * RES, Y0)]
    assert (top != 255).all() and (top == 1).sum() == 16 * 16
    assert len(seen) == 6  # 4 chips in the left 128 columns, 2 more in the L's arm
    # without the area, that chip would teach its roof-free ground as background
    plain = prepare_data(img, roofs, classes=["building"], chip_size=64, stride=64)
    names = [c["label"] for c in plain.manifest["chips"] if c["bounds"][0] == X0 + 128 * RES]
    bottoms = []
    for name in names:
        with rasterio.open(plain.chip_dir / name) as src:
            if src.transform.f == Y0 - 64 * RES:
                bottoms.append(src.read(1))
    assert len(bottoms) == 1 and (bottoms[0] != 255).all()


def test_the_labelled_box_is_chipped_flush_with_its_end_as_an_image_is(wide, tmp_path) -> None:
    img, roofs = wide
    area = write_vector(tmp_path / "a.gpkg", [px_box(0, 0, 96, 128)])  # 96 columns: 1.5 chips
    data = prepare_data(
        img, roofs, classes=["building"], chip_size=64, stride=64, split="random",
        val_fraction=0.0, label_area=area,
    )  # fmt: skip
    labels = {}
    for c in data.manifest["chips"]:
        with rasterio.open(data.chip_dir / c["label"]) as src:
            labels[(round(-(src.transform.f - Y0) / RES), round((src.transform.c - X0) / RES))] = (
                src.read(1)
            )
    assert sorted(labels) == [(0, 0), (0, 32), (64, 0), (64, 32)]  # the last chip ends at 96
    assert all((lab != 255).all() for lab in labels.values())


def test_statistics_cover_the_whole_image_the_rest_included(make_raster, tmp_path) -> None:
    arr = np.zeros((1, 128, 256), np.uint8)
    arr[:, :, 128:] = 200  # the unlabelled half is bright
    img = make_raster(arr, "half.tif")
    roofs = write_vector(tmp_path / "r.gpkg", [px_box(10, 10, 30, 30)])
    area = write_vector(tmp_path / "a.gpkg", [px_box(0, 0, 128, 128)])
    data = prepare_data(img, roofs, classes=["building"], chip_size=64, label_area=area)
    assert data.stats["mean"][0] == pytest.approx(100.0)


def test_raster_labels_take_a_label_area_too(make_raster, tmp_path) -> None:
    img = make_raster(np.full((1, 128, 256), 50, np.uint8), "r.tif")
    lab = make_raster(np.ones((128, 256), np.uint8), "r_lab.tif")
    area = write_vector(tmp_path / "a.gpkg", [px_box(0, 0, 128, 128)])
    data = prepare_data(img, lab, classes={1: "field"}, chip_size=64, stride=64, label_area=area)
    assert data.manifest["class_pixel_counts"] == [0, 128 * 128]


LINE = shapely.LineString([(X0, Y0), (X0 + 9, Y0 - 9)])


@pytest.mark.parametrize(
    ("make_file", "error", "words"),
    [
        (lambda d: d / "missing.gpkg", InputNotFoundError, "not found"),
        (lambda d: write_vector(d / "lines.gpkg", [LINE]), LabelError, "no polygon"),
        (
            lambda d: write_vector(d / "far.gpkg", [shapely.box(0, 0, 10, 10)]),
            CRSMismatchError,
            "overlaps none",
        ),
        (
            lambda d: write_vector(d / "nocrs.gpkg", [px_box(0, 0, 64, 64)], crs=None),
            MissingCRSError,
            "no CRS",
        ),
    ],
)
def test_a_bad_label_area_is_refused_with_the_file_and_the_fix(
    wide, tmp_path, make_file, error, words
) -> None:
    img, roofs = wide
    bad = make_file(tmp_path)
    out = tmp_path / "chips"
    with pytest.raises(error, match=words) as info:
        prepare_data(img, roofs, classes=["building"], chip_size=64, label_area=bad, out_dir=out)
    assert str(bad) in str(info.value)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "chips" in p.name]


def test_an_image_the_area_misses_gives_no_chip_and_a_warning(make_raster, tmp_path) -> None:
    a = make_raster(np.full((3, 128, 128), 9, np.uint8), "a.tif")
    b = make_raster(np.full((3, 128, 128), 9, np.uint8), "b.tif", origin=(X0 + 1000, Y0))
    roofs = write_vector(tmp_path / "r.gpkg", [px_box(10, 10, 30, 30), px_box(2010, 10, 2030, 30)])
    area = write_vector(tmp_path / "ar.gpkg", [px_box(0, 0, 128, 128)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = prepare_data(
            [a, b], roofs, classes=["building"], chip_size=64, stride=64, label_area=area
        )
    assert any("does not overlap" in str(w.message) and "b.tif" in str(w.message) for w in caught)
    assert {Path(c["source"]).name for c in data.manifest["chips"]} == {"a.tif"}


def test_the_area_box_is_rounded_out_clipped_and_at_least_a_chip(make_raster) -> None:
    info = open_raster(make_raster(np.zeros((1, 128, 256), np.uint8), "g.tif"))
    area = LabelledArea(px_box(10.5, 20, 40, 30), info, "x.gpkg")
    assert area.box(64) == (0, 0, 64, 64)  # 10 rows x 30 columns, widened inside the image
    assert LabelledArea(px_box(-50, -9, 300, 200), info, "x.gpkg").box(64) == (0, 0, 128, 256)
    assert LabelledArea(px_box(200, 100, 250, 128), info, "x.gpkg").box(64) == (64, 192, 64, 64)
    inside = area.inside(0, 0, 40, 64)
    assert inside[25, 20] and not inside[25, 5] and not inside[35, 20]


def test_auto_strip_and_a_boxed_grid() -> None:
    assert auto_strip(1024, 2048, (0, 0, 1024, 1365)) == "start"
    assert auto_strip(1024, 2048, (0, 683, 1024, 1365)) == "end"
    assert auto_strip(512, 768, (0, 0, 256, 768)) == "end"  # the rest is beside both ends
    assert auto_strip(2048, 512, (0, 0, 1500, 512)) == "start"  # rows: the rest lies below
    grid = chip_grid(512, 1024, 256, 256, val_strip="auto", box=(256, 0, 256, 768))
    assert grid == [(256, 0, 1), (256, 256, 0), (256, 512, 0)]
    assert chip_grid(512, 1024, 256, 256, box=(0, 0, 0, 0)) == []


def test_read_area_merges_and_repairs_polygons(tmp_path) -> None:
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])  # self-intersecting
    path = write_vector(tmp_path / "b.gpkg", [bowtie, shapely.box(5, 5, 6, 6)])
    geom = read_area(path, UTM)
    assert geom.is_valid and geom.area == pytest.approx(3.0)


def test_cli_prepare_takes_a_label_area(wide, tmp_path) -> None:
    img, roofs = wide
    area = write_vector(tmp_path / "area.gpkg", [px_box(0, 0, 256, 128)])
    out = tmp_path / "chips"
    args = ["prepare", str(img), "--labels", str(roofs), "--classes", "building",
            "--chip-size", "64", "--label-area", str(area), "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, [*args[:-4], "--label-area", str(tmp_path / "no.gpkg"),
                                   "--out", str(tmp_path / "c2")])  # fmt: skip
    assert res.exit_code == 2 and "no.gpkg" in res.output and "not found" in res.output
    assert not (tmp_path / "c2").exists()


class _SeenError(Exception):
    """Raised by the fake prepare_data once it has seen its arguments."""


def test_cli_train_passes_a_label_area_to_prepare_data_and_refuses_it_with_chips(
    wide, tmp_path, monkeypatch
) -> None:
    import geounet.data.prepare as prepare_module

    img, roofs = wide
    seen = {}

    def fake_prepare(*args, **kwargs):
        seen.update(kwargs)
        raise _SeenError

    monkeypatch.setattr(prepare_module, "prepare_data", fake_prepare)
    args = ["train", str(img), "--labels", str(roofs), "--classes", "building",
            "--label-area", str(tmp_path / "area.gpkg"), "--out", str(tmp_path / "m")]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert isinstance(res.exception, _SeenError) and seen["label_area"] == tmp_path / "area.gpkg"
    chips = tmp_path / "chips"
    chips.mkdir()
    res = CliRunner().invoke(cli, ["train", str(chips), "--label-area", str(tmp_path / "a.gpkg"),
                                   "--out", str(tmp_path / "m2")])  # fmt: skip
    assert res.exit_code == 2 and "chip folder" in res.output and "--label-area" in res.output


@pytest.mark.realdata
def test_real_scene_labelled_two_thirds_chip_as_the_crop_with_the_strip_at_the_left(
    tmp_path,
) -> None:
    """``oam_zanzibar``: the whole image with its left two thirds as the labelled area."""
    from conftest import shared_data
    from rasterio.windows import Window, bounds

    folder = shared_data("oam_zanzibar")
    image, labels = folder / "image.tif", folder / "buildings.geojson"
    with rasterio.open(image) as src:
        cut = round(src.width * 2 / 3)
        left = Window(0, 0, cut, src.height)
        area = write_vector(
            tmp_path / "left.gpkg", [shapely.box(*bounds(left, src.transform))], str(src.crs)
        )
        profile = src.profile | {"width": cut, "transform": src.window_transform(left)}
        crop = tmp_path / "crop.tif"
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=left))
    whole = prepare_data(image, labels, classes=["building"], label_area=area)
    cropped = prepare_data(crop, labels, classes=["building"], val_strip="start")
    assert whole.manifest["chip_counts"] == cropped.manifest["chip_counts"]
    assert whole.manifest["class_pixel_counts"] == cropped.manifest["class_pixel_counts"]
    x_cut = bounds(left, open_raster(image).transform)[2]
    assert max(c["bounds"][2] for c in whole.manifest["chips"]) <= x_cut + 1e-6
    valid, train = chips_of(whole, "valid"), chips_of(whole, "train")
    assert max(b[2] for b in valid) <= min(b[0] for b in train) + 1e-6  # the strip is at the left


def test_labels_over_a_small_part_of_the_image_warn_and_point_to_label_area(wide, tmp_path) -> None:
    """Buildings drawn over the left third only: the right two thirds would be taught as
    background, silently. A warning names label_area; none with it, none for full cover."""
    img, _ = wide
    left = [px_box(c + 24, r + 24, c + 40, r + 40) for r in (0, 64) for c in (0, 64)]
    part = write_vector(tmp_path / "left.gpkg", left)
    with pytest.warns(UserWarning, match=r"span only \d+% of .*label_area="):
        prepare_data(img, part, classes=["building"], chip_size=64, stride=64)
    area = write_vector(tmp_path / "area.gpkg", [px_box(0, 0, 128, 128)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        prepare_data(img, part, classes=["building"], chip_size=64, stride=64, label_area=area)
        prepare_data(img, wide[1], classes=["building"], chip_size=64, stride=64)


def test_a_geopackage_of_several_layers_is_read_by_the_layer_named(wide, tmp_path) -> None:
    """Its first layer was read silently (GDAL's order, not the user's); a layer is named
    as QGIS writes a layer's source, ``file.gpkg|layername=NAME``."""
    img, roofs = wide
    town = tmp_path / "town.gpkg"
    gpd.read_file(roofs).to_file(town, layer="roads")  # the first layer: not the buildings
    gpd.read_file(roofs).to_file(town, layer="buildings")
    with pytest.raises(LabelError, match=r"2 layers \(roads, buildings\).*\|layername=roads"):
        prepare_data(img, town, chip_size=64, stride=64)
    data = prepare_data(img, f"{town}|layername=buildings", chip_size=64, stride=64)
    assert data.classes == ["background", "building"]  # named by the layer
    with pytest.raises(LabelError, match="no layer 'trees'; layers: roads, buildings"):
        prepare_data(img, f"{town}|layername=trees", chip_size=64, stride=64)
    out = tmp_path / "chips"
    r = CliRunner().invoke(
        cli, ["-q", "prepare", str(img), "--labels", f"{town}|layername=buildings", "--out",
              str(out), "--chip-size", "64"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
