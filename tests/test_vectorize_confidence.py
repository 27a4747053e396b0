"""Buildings the network was never sure of are dropped when the probabilities are known.

``vectorize`` reads the probability raster ``classify`` wrote (given, or named by the class
raster's tag) and drops buildings without a pixel at :data:`PEAK_CONFIDENCE` (or at the
scene's own level when its network is rarely that sure), and road lines that end with a mean
probability under :data:`ROAD_CONFIDENCE`.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geounet.cli.main import cli
from geounet.core.errors import InvalidParameterError
from geounet.io.raster import write_raster
from geounet.vectorizing.confidence import (
    PEAK_CONFIDENCE,
    PROBABILITIES_TAG,
    ROAD_CONFIDENCE,
    probabilities_tag,
    tagged_probabilities,
)
from geounet.vectorizing.pipeline import vectorize
from geounet.vectorizing.polygons import fill_small_holes
from geounet.vectorizing.sizes import MIN_AREA_TAG, filtered_min_area

UTM = CRS.from_epsg(32616)
GRID = from_origin(500000.0, 3700000.0, 0.5, 0.5)
NAMES = {0: "background", 1: "building", 2: "road"}


def scene(tmp_path: Path, tag: str | None = None) -> tuple[Path, Path]:
    """A sure building (a core at 1.0), an unsure one (0.9 at best) and an unsure road."""
    a = np.zeros((48, 48), np.uint8)
    a[2:14, 2:14] = 1
    a[20:32, 20:32] = 1
    a[40:44, :] = 2
    prob = np.zeros((3, 48, 48), np.uint8)
    prob[1, 2:14, 2:14] = 160
    prob[1, 4:12, 4:12] = 255  # the sure building's core: most building pixels are sure
    prob[1, 20:32, 20:32] = 230  # 0.90: never sure
    prob[2, 40:44, :] = 150
    prob[0] = 255 - prob[1] - prob[2]
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(NAMES.values()))
    tags = {PROBABILITIES_TAG: tag} if tag else None
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=NAMES, tags=tags)
    return c, p


def test_unsure_buildings_are_dropped_and_the_choice_recorded(tmp_path):
    c, p = scene(tmp_path)
    layers = vectorize(c, probabilities=p, min_area_m2=1)
    b = layers["building"]
    assert len(b) == 1
    assert b["peak_confidence"].iloc[0] == pytest.approx(1.0)
    assert b.geometry.iloc[0].centroid.x < 500000.0 + 10  # the sure one, at the top left
    assert b.attrs["min_peak_confidence"] == PEAK_CONFIDENCE
    assert b.attrs["unsure_removed"] == 1  # the one at 0.9
    assert len(layers["road"]) == 0  # a lone road at 0.59: the road lines' own filter
    kept = vectorize(c, probabilities=p, min_area_m2=1, min_peak_confidence=0)
    assert sorted(np.round(kept["building"]["peak_confidence"], 2)) == [0.9, 1.0]
    assert len(kept["road"]) == 0  # the peak filter is for buildings only
    assert len(vectorize(c, probabilities=p, min_road_confidence=0)["road"]) == 1
    assert (
        len(vectorize(c, probabilities=p, min_area_m2=1, min_peak_confidence=0.85)["building"]) == 2
    )
    plain = vectorize(c, min_area_m2=1)["building"]  # no probabilities: nothing dropped
    assert len(plain) == 2 and plain.attrs["min_peak_confidence"] is None
    assert "peak_confidence" not in plain.columns


def test_the_tagged_probability_raster_is_used_while_it_exists(tmp_path):
    c, p = scene(tmp_path, tag="p.tif")
    assert len(vectorize(c, min_area_m2=1)["building"]) == 1
    p.unlink()
    b = vectorize(c, min_area_m2=1)["building"]
    assert len(b) == 2 and b.attrs["min_peak_confidence"] is None
    with pytest.raises(InvalidParameterError, match=r"c\.tif.*probabilities="):
        vectorize(c, min_peak_confidence=0.9)


@pytest.mark.parametrize("value", [-0.1, 1.5, True])
def test_min_peak_confidence_must_be_a_probability(tmp_path, value):
    c, p = scene(tmp_path)
    with pytest.raises(InvalidParameterError, match=r"min_peak_confidence.*from 0 to 1"):
        vectorize(c, probabilities=p, min_peak_confidence=value)


def test_tag_paths_are_relative_to_the_class_raster(tmp_path):
    assert probabilities_tag(tmp_path / "a" / "c.tif", tmp_path / "a" / "p.tif") == "p.tif"
    assert probabilities_tag(tmp_path / "a" / "c.tif", tmp_path / "a" / "x" / "p.tif") == "x/p.tif"
    outside = tmp_path / "b" / "p.tif"
    assert probabilities_tag(tmp_path / "a" / "c.tif", outside) == str(outside)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "p.tif").write_bytes(b"x")
    assert tagged_probabilities(tmp_path / "a" / "c.tif", str(outside)) == outside
    assert tagged_probabilities(tmp_path / "a" / "c.tif", "gone.tif") is None
    assert tagged_probabilities("https://host/c.tif", "p.tif") is None
    assert tagged_probabilities(tmp_path / "c.tif", None) is None


def test_cli_min_peak_confidence(tmp_path):
    c, p = scene(tmp_path)
    args = ["vectorize", str(c), "--min-area", "1", "--probabilities", str(p)]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 0, r.output
    assert "building: 1 features (1 objects the network was unsure of dropped; " in r.output
    assert "--min-peak-confidence 0 keeps them)" in r.output  # said, not silent
    r = CliRunner().invoke(
        cli, [*args, "--min-peak-confidence", "0", "--out", str(tmp_path / "b.gpkg")]
    )
    assert r.exit_code == 0, r.output
    assert "building: 2 features" in r.output
    r = CliRunner().invoke(
        cli,
        ["vectorize", str(c), "--min-peak-confidence", "0.5", "--out", str(tmp_path / "x.gpkg")],
    )
    assert r.exit_code == 2 and "needs the building probabilities" in r.output
    assert not (tmp_path / "x.gpkg").exists()
    with rasterio.open(c) as src:
        assert PROBABILITIES_TAG not in src.tags()


def test_a_warning_when_most_buildings_are_dropped(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    prob = np.zeros((2, 64, 64), np.uint8)
    for k in range(12):  # twelve buildings, the network sure of three
        r, c = 2 + (k // 4) * 20, 2 + (k % 4) * 15
        a[r : r + 8, c : c + 8] = 1
        prob[1, r : r + 8, c : c + 8] = 255 if k < 3 else 200
    prob[0] = 255 - prob[1]
    names = {0: "background", 1: "building"}
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(names.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=names)
    with pytest.warns(UserWarning, match="9 of 12 buildings were dropped.*min_peak_confidence"):
        assert len(vectorize(c, probabilities=p, min_area_m2=1)["building"]) == 3


def test_cli_says_when_no_probabilities_filter_the_buildings(tmp_path):
    c, p = scene(tmp_path)
    r = CliRunner().invoke(cli, ["vectorize", str(c), "--out", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 0, r.output
    assert "building: 2 features" in r.output
    assert "no building probabilities" in r.stderr and "--probabilities PATH" in r.stderr
    args = ["vectorize", str(c), "--probabilities", str(p), "--out", str(tmp_path / "b.gpkg")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "no building probabilities" not in r.stderr


def test_buildings_keep_half_the_default_min_area_under_the_peak_filter(tmp_path):
    """The filter drops unsure specks, so sure small buildings (sheds) need not go with them."""
    names = {0: "background", 1: "building", 2: "water"}
    a = np.zeros((40, 40), np.uint8)
    a[2:5, 2:6] = 1  # a sure shed of 3 m² (0.5 m pixels)
    a[10:12, 2:5] = 1  # a sure speck of 1.5 m²
    a[20:32, 20:32] = 1  # a sure house of 36 m²
    a[30:33, 2:6] = 2  # 3 m² of water: other classes keep the whole default
    prob = np.zeros((3, 40, 40), np.uint8)
    prob[1][a == 1] = 255
    prob[2][a == 2] = 255
    prob[0] = 255 - prob[1] - prob[2]
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(names.values()))
    tags = {MIN_AREA_TAG: json.dumps({"building": 4.0})}
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=names, tags=tags)
    layers = vectorize(c, probabilities=p)
    assert sorted(layers["building"]["area_m2"]) == [3.0, 36.0]
    assert layers["building"].attrs["min_area_m2"] == filtered_min_area(4.0) == 2.0
    assert len(layers["water"]) == 0 and layers["water"].attrs["min_area_m2"] == 4.0
    plain = vectorize(c)["building"]  # no filter: the whole percentile
    assert plain["area_m2"].tolist() == [36.0] and plain.attrs["min_area_m2"] == 4.0
    given = vectorize(c, probabilities=p, min_area_m2=4.0)["building"]  # as given
    assert given["area_m2"].tolist() == [36.0] and given.attrs["min_area_m2"] == 4.0
    off = vectorize(c, probabilities=p, min_peak_confidence=0)["building"]  # no filter either
    assert off["area_m2"].tolist() == [36.0]


def test_small_holes_are_filled_per_polygon_limit():
    ring = [(0, 0), (10, 0), (10, 10), (0, 10)]
    hole = [(4, 4), (6, 4), (6, 5), (4, 5)]  # 2 m²
    both = np.array([shapely.Polygon(ring, [hole]), shapely.Polygon(ring, [hole])])
    filled = fill_small_holes(both, np.array([1.0, 3.0]))
    assert [len(g.interiors) for g in filled] == [1, 0]
    assert [len(g.interiors) for g in fill_small_holes(both, 3.0)] == [0, 0]


def road_scene(tmp_path: Path) -> tuple[Path, Path]:
    """Two streets (0.95), an unsure link between them, an unsure and a sure dead end (1 m)."""
    a = np.zeros((120, 120), np.uint8)
    prob = np.zeros((2, 120, 120), np.uint8)
    for rows, cols, p in [
        ((8, 12), (0, 120), 0.95),  # a street along the top
        ((100, 104), (0, 120), 0.95),  # and one along the bottom
        ((12, 100), (58, 62), 0.6),  # an unsure link between them: kept
        ((12, 60), (20, 24), 0.6),  # an unsure dead end (a false aisle): dropped
        ((12, 60), (90, 94), 0.95),  # a sure dead end: kept
    ]:
        a[slice(*rows), slice(*cols)] = 1
        prob[1, slice(*rows), slice(*cols)] = round(p * 255)
    prob[0] = 255 - prob[1]
    grid = from_origin(500000.0, 3700000.0, 1.0, 1.0)
    names = {0: "background", 1: "road"}
    p = write_raster(tmp_path / "p.tif", prob, UTM, grid, descriptions=list(names.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, grid, nodata=255, class_names=names)
    return c, p


def _has_line_at(roads, x: float) -> bool:
    """Whether a line runs north-south at ``x`` metres east of the origin, between the streets."""
    probe = shapely.LineString(
        [(500000.0 + x - 1, 3700000.0 - 40), (500000.0 + x + 1, 3700000.0 - 40)]
    )
    return bool(roads.geometry.intersects(probe.buffer(0.5)).any())


def test_unsure_road_ends_are_dropped_and_links_kept(tmp_path):
    c, p = road_scene(tmp_path)
    roads = vectorize(c, probabilities=p)["road"]
    assert roads.attrs["min_road_confidence"] == ROAD_CONFIDENCE
    assert roads.attrs["unsure_removed"] == 1
    assert not _has_line_at(roads, 22)  # the unsure dead end
    assert _has_line_at(roads, 60) and _has_line_at(roads, 92)  # the link, the sure dead end
    assert (roads["mean_confidence"] >= 0.6).all()
    kept = vectorize(c, probabilities=p, min_road_confidence=0)["road"]
    assert _has_line_at(kept, 22) and kept.attrs["unsure_removed"] == 0
    plain = vectorize(c)["road"]  # no probabilities: nothing dropped
    assert _has_line_at(plain, 22) and plain.attrs["min_road_confidence"] is None
    with pytest.raises(InvalidParameterError, match=r"min_road_confidence=0.5 needs the road"):
        vectorize(c, min_road_confidence=0.5)
    with pytest.raises(InvalidParameterError, match=r"min_road_confidence.*from 0 to 1"):
        vectorize(c, probabilities=p, min_road_confidence=2)
    args = ["vectorize", str(c), "--probabilities", str(p), "--out", str(tmp_path / "r.gpkg")]
    r = CliRunner().invoke(cli, args)
    assert "(1 road ends the network was unsure of dropped; --min-road-confidence 0" in r.output
    r = CliRunner().invoke(cli, [*args, "--min-road-confidence", "0", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert len(gpd.read_file(tmp_path / "r.gpkg")) == len(kept)


def test_a_scene_rarely_sure_of_anything_keeps_its_buildings(tmp_path):
    rng = np.random.default_rng(0)
    a = np.zeros((64, 64), np.uint8)
    prob = np.zeros((2, 64, 64), np.uint8)
    for k in range(12):  # twelve buildings at 0.59-0.90: a briefly trained model
        r, c = 2 + (k // 4) * 20, 2 + (k % 4) * 15
        a[r : r + 8, c : c + 8] = 1
        prob[1, r : r + 8, c : c + 8] = rng.integers(150, 230, (8, 8))
    for r, c in [(14, 5), (14, 35)]:  # two specks it is even less sure of (0.55)
        a[r : r + 3, c : c + 3] = 1
        prob[1, r : r + 3, c : c + 3] = 140
    prob[0] = 255 - prob[1]
    names = {0: "background", 1: "building"}
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(names.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=names)
    b = vectorize(c, probabilities=p, min_area_m2=1)["building"]
    assert len(b) == 12  # the specks dropped, the buildings kept
    # the threshold used: the 90th percentile of the building pixels' probability
    level = np.percentile(prob[1][a == 1], 90, method="inverted_cdf")
    assert b.attrs["min_peak_confidence"] == pytest.approx(level / 255) and level < 250
    for other in ({"separate": False}, {"window_size": 32}):  # read apart; counted by windows
        again = vectorize(c, probabilities=p, min_area_m2=1, **other)["building"]
        assert again.attrs["min_peak_confidence"] == b.attrs["min_peak_confidence"]
    with pytest.warns(UserWarning, match="14 of 14 buildings were dropped"):
        sure = vectorize(c, probabilities=p, min_area_m2=1, min_peak_confidence=0.98)
    assert len(sure["building"]) == 0 and sure["building"].attrs["min_peak_confidence"] == 0.98


# --- building outlines grown down to GROW_CONFIDENCE (hysteresis) ----------------------------


def grow_scene(tmp_path: Path) -> tuple[Path, Path]:
    """A sure shed of 4 x 4 px whose roof is only half found, a lone glimmer, a road beside."""
    a = np.zeros((32, 32), np.uint8)
    a[4:8, 4:8] = 1  # the arg-max: 16 px of a shed of 8 x 8 px
    a[4:12, 12:14] = 2  # a road touching the shed's roof
    prob = np.zeros((3, 32, 32), np.uint8)
    prob[1, 4:12, 4:12] = 80  # the rest of the roof at 0.31
    prob[1, 4:8, 4:8] = 255
    prob[1, 4:12, 12:14] = 90  # road pixels with some building probability: never taken
    prob[1, 20:26, 20:26] = 120  # 0.47 with no building pixel: stays background
    prob[2, 4:12, 12:14] = 160
    prob[0] = 255 - prob[1] - prob[2]
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(NAMES.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=NAMES)
    return c, p


def test_building_outlines_grow_to_the_low_threshold_but_not_into_other_classes(tmp_path):
    from geounet.vectorizing.confidence import GROW_CONFIDENCE

    c, p = grow_scene(tmp_path)
    before = Path(c).read_bytes()
    kw = {"probabilities": p, "min_area_m2": 1, "regularize": False}
    plain = vectorize(c, **kw)["building"]  # the default: the arg-max outline
    assert plain.geometry.iloc[0].area == pytest.approx(16 * 0.25)
    assert plain.attrs["grow_confidence"] is None
    grown = vectorize(c, **kw, grow_confidence=GROW_CONFIDENCE)["building"]
    assert len(grown) == 1 and grown.attrs["grow_confidence"] == 0.2
    assert grown.geometry.iloc[0].area == pytest.approx(64 * 0.25)  # the whole 8 x 8 px roof
    assert grown.geometry.iloc[0].bounds[2] <= 500000.0 + 12 * 0.5  # not into the road
    high = vectorize(c, **kw, grow_confidence=0.4)["building"]
    assert high.geometry.iloc[0].area == pytest.approx(16 * 0.25)  # 0.31 < 0.4
    assert Path(c).read_bytes() == before  # the class raster is never changed


@pytest.mark.parametrize("value", [0, -0.1, 1.5, True])
def test_grow_confidence_must_be_a_probability_above_0(tmp_path, value):
    c, p = grow_scene(tmp_path)
    with pytest.raises(InvalidParameterError, match="grow_confidence"):
        vectorize(c, probabilities=p, grow_confidence=value)


def test_grow_confidence_needs_the_probabilities(tmp_path):
    c, _ = grow_scene(tmp_path)
    with pytest.raises(InvalidParameterError, match="needs the building probabilities"):
        vectorize(c, grow_confidence=0.3)


def test_cli_grow_confidence(tmp_path):
    c, p = grow_scene(tmp_path)
    args = ["vectorize", str(c), "--probabilities", str(p), "--min-area", "1", "--no-regularize"]
    for extra, area in (([], 4.0), (["--grow-confidence", "0.2"], 16.0)):
        out = tmp_path / f"v{len(extra)}.gpkg"
        res = CliRunner().invoke(cli, [*args, *extra, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert gpd.read_file(out, layer="building").geometry.iloc[0].area == pytest.approx(area)
    bad = CliRunner().invoke(cli, [*args, "--grow-confidence", "0", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "grow_confidence" in bad.output


def test_grown_pixels_do_not_lower_the_scenes_peak_threshold(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[8:11, 8:11] = 1  # 9 sure pixels classed building ...
    prob = np.zeros((3, 32, 32), np.uint8)
    prob[1, 4:16, 4:16] = 80  # ... in a roof of 144 at 0.31: 94 % of the grown outline
    prob[1, 8:11, 8:11] = 255
    prob[0] = 255 - prob[1]
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(NAMES.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=NAMES)
    b = vectorize(c, probabilities=p, min_area_m2=1, regularize=False, grow_confidence=0.2)
    b = b["building"]
    assert b.geometry.iloc[0].area == pytest.approx(144 * 0.25)  # grown
    assert b.attrs["min_peak_confidence"] == PEAK_CONFIDENCE  # from the arg-max pixels only


def test_specks_under_the_smallest_area_do_not_grow_into_buildings(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[4:10, 4:10] = 1  # a sure roof of 36 px (9 m²), half of it found
    a[20:22, 20:22] = 1  # a sure speck of 4 px (1 m²) in a glimmer of 0.31
    prob = np.zeros((3, 32, 32), np.uint8)
    prob[1, 4:14, 4:14] = 80
    prob[1, 4:10, 4:10] = 255
    prob[1, 16:28, 16:28] = 80
    prob[1, 20:22, 20:22] = 255
    prob[0] = 255 - prob[1]
    p = write_raster(tmp_path / "p.tif", prob, UTM, GRID, descriptions=list(NAMES.values()))
    c = write_raster(tmp_path / "c.tif", a, UTM, GRID, nodata=255, class_names=NAMES)
    kw = {"probabilities": p, "min_area_m2": 4, "regularize": False}  # 16 px
    plain = vectorize(c, **kw)["building"]
    grown = vectorize(c, **kw, grow_confidence=0.2)["building"]
    assert len(plain) == len(grown) == 1  # the speck stays a speck, dropped by size
    assert plain.geometry.iloc[0].area == pytest.approx(9.0)
    assert grown.geometry.iloc[0].area == pytest.approx(25.0)  # the roof, 10 x 10 px
