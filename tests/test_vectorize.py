"""vectorize: class raster -> polygons and road centre lines, in every output format."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import ndimage

from geounet.cli.main import cli
from geounet.core.errors import (
    DependencyNotFoundError,
    GeounetError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    MissingCRSError,
    OutputExistsError,
)
from geounet.io.raster import write_raster
from geounet.vectorizing.pipeline import vectorize
from geounet.vectorizing.polygons import (
    PolygonTracer,
    fill_small_holes,
    largest_polygon,
    simplify_polygons,
)
from geounet.vectorizing.regularize import regularize_buildings

UTM = CRS.from_epsg(32616)
WGS84 = CRS.from_epsg(4326)
ORIGIN = (500000.0, 3700000.0)
NAMES = {0: "background", 1: "building", 2: "road"}


def classified(
    path: Path,
    data: np.ndarray,
    *,
    res: float = 0.5,
    crs: CRS = UTM,
    origin: tuple[float, float] = ORIGIN,
    names: dict[int, str] | None = NAMES,
) -> Path:
    """A class raster as ``classify`` writes it (uint8, nodata 255, CLASSES tag)."""
    transform = from_origin(origin[0], origin[1], res, res)
    return write_raster(path, data, crs, transform, nodata=255, class_names=names)


def corner_angles(poly: shapely.Polygon) -> np.ndarray:
    """Unsigned angle (degrees) at each vertex of the shell."""
    c = np.asarray(poly.exterior.coords)[:-1]
    a, b = np.roll(c, 1, axis=0) - c, np.roll(c, -1, axis=0) - c
    cos = (a * b).sum(axis=1) / np.hypot(*a.T) / np.hypot(*b.T)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    return shapely.area(shapely.intersection(a, b)) / shapely.area(shapely.union(a, b))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """Two buildings and a plus-shaped road (1 m pixels)."""
    a = np.zeros((81, 81), np.uint8)
    a[37:44, :] = 2
    a[:, 37:44] = 2
    a[5:15, 5:20] = 1
    a[55:70, 50:62] = 1
    return classified(tmp_path / "scene.tif", a, res=1.0)


# --- polygons ------------------------------------------------------------------------


def test_square_becomes_one_polygon_at_its_map_coordinates(tmp_path):
    a = np.zeros((20, 20), np.uint8)
    a[5:15, 4:14] = 1  # 10 x 10 pixels of 0.5 m
    layers = vectorize(classified(tmp_path / "c.tif", a))
    assert list(layers) == ["building", "road"]
    b, roads = layers["building"], layers["road"]
    assert len(b) == 1 and len(roads) == 0
    assert b.crs == UTM
    x0, y0 = ORIGIN
    expected = shapely.box(x0 + 2.0, y0 - 7.5, x0 + 7.0, y0 - 2.5)
    assert shapely.equals_exact(shapely.normalize(b.geometry[0]), shapely.normalize(expected))
    assert b["class"].tolist() == ["building"]
    assert b["area_m2"][0] == pytest.approx(25.0)
    assert b["perimeter_m"][0] == pytest.approx(20.0)


def test_rotated_l_shape_regularizes_to_six_right_angles(tmp_path):
    ell = shapely.Polygon([(0, 0), (40, 0), (40, 16), (16, 16), (16, 40), (0, 40)])
    ell = shapely.affinity.translate(shapely.affinity.rotate(ell, 20, origin=(20, 20)), 20, 20)
    a = rasterio.features.rasterize([(ell, 1)], out_shape=(80, 80)).astype(np.uint8)
    b = vectorize(classified(tmp_path / "c.tif", a))["building"]
    assert len(b) == 1
    poly = b.geometry[0]
    assert len(poly.exterior.coords) - 1 == 6
    np.testing.assert_allclose(corner_angles(poly), 90.0, atol=0.5)
    # close to the drawn L (pixel coordinates -> map: x = x0 + 0.5 col, y = y0 - 0.5 row)
    truth = shapely.affinity.affine_transform(ell, [0.5, 0, 0, -0.5, ORIGIN[0], ORIGIN[1]])
    assert iou(poly, truth) > 0.95
    traced = vectorize(tmp_path / "c.tif", regularize=False, simplify_m=0)["building"]
    assert len(traced.geometry[0].exterior.coords) > 20  # the staircase it came from
    assert iou(poly, traced.geometry[0]) >= 0.85


def test_object_cut_by_window_seams_is_one_polygon(tmp_path):
    a = np.zeros((48, 48), np.uint8)
    a[5:40, 5:12] = 1  # a U whose arms join only in the lower windows
    a[5:40, 30:37] = 1
    a[33:40, 5:37] = 1
    a[20:28, 20:26] = 1  # a block inside one window
    path = classified(tmp_path / "c.tif", a)
    kw = {"regularize": False, "simplify_m": 0, "min_area_m2": 0}
    whole = vectorize(path, window_size=64, **kw)["building"]
    tiled = vectorize(path, window_size=16, **kw)["building"]
    assert len(whole) == len(tiled) == 2
    key = np.argsort(tiled["area_m2"].to_numpy())
    for g_tiled, g_whole in zip(tiled.geometry[key], whole.sort_values("area_m2").geometry):
        assert shapely.equals_exact(shapely.normalize(g_tiled), shapely.normalize(g_whole))
    u = tiled.geometry[key[-1]]
    assert u.area == pytest.approx((35 * 7 * 2 + 7 * 18) * 0.25)
    # regularized and simplified, the seams still change nothing
    reg_whole = vectorize(path, window_size=64)["building"].sort_values("area_m2")
    reg_tiled = vectorize(path, window_size=16)["building"].sort_values("area_m2")
    assert len(reg_tiled) == 2
    for g1, g2 in zip(reg_whole.geometry, reg_tiled.geometry):
        assert shapely.equals_exact(shapely.normalize(g1), shapely.normalize(g2), 1e-6)


def _traced(a: np.ndarray, window: int) -> set[bytes]:
    """Every polygon of classes 1 and 2, traced window by window, as normalized WKB."""
    tracer = PolygonTracer([1, 2], height=a.shape[0], width=a.shape[1])
    out = []
    for r in range(0, a.shape[0], window):
        for c in range(0, a.shape[1], window):
            out.append(tracer.trace(a[r : r + window, c : c + window], r, c)[0])
    out.append(tracer.merged()[0])
    return set(shapely.to_wkb(shapely.normalize(np.concatenate(out))))


def test_seam_pieces_with_holes_merge_into_the_single_pass_outlines():
    """A class over the whole scene with holes everywhere: inside one window, straddling a
    seam, at a window's corner; islands in holes, one of the same class across a seam. The
    pieces' holes are put back into the union of their outer rings, which must give exactly
    what one pass traces."""
    rng = np.random.default_rng(0)
    a = np.ones((64, 64), np.uint8)
    a[rng.random(a.shape) < 0.08] = 0  # one-pixel holes
    a[14:18, 30:34] = 0  # a hole across the seam at row 16
    a[30:34, 30:34] = 0  # a hole at the corner of four windows
    a[40:50, 40:50] = 0
    a[44:46, 44:46] = 2  # an island of another class inside that hole
    a[55:64, 0:9] = 2  # another class cut by the scene's edge
    a[10:22, 44:58] = 0  # a hole across seams at row 16 and column 48...
    a[14:18, 46:50] = 1  # ... with an island of the same class across them too
    whole = _traced(a, 64)
    holes = shapely.get_num_interior_rings(shapely.from_wkb(list(whole)))
    assert len(whole) >= 3 and holes.max() > 100
    for window in (16, 24):
        assert _traced(a, window) == whole


def test_fill_small_holes_rebuilds_only_the_polygons_that_lose_one():
    ring = shapely.box(0, 0, 10, 10)
    two = ring.difference(shapely.box(1, 1, 2, 2)).difference(shapely.box(4, 4, 7, 7))
    one = ring.difference(shapely.box(4, 4, 7, 7))  # a 9 m² hole
    other = shapely.MultiPolygon([shapely.box(0, 0, 1, 1)])
    geoms = np.array([two, one, ring, other, None], dtype=object)
    out = fill_small_holes(geoms, 5.0)
    assert [len(g.interiors) for g in out[:3]] == [1, 1, 0]
    assert shapely.equals(out[0], one)
    assert out[1] is one and out[2] is ring and out[3] is other and out[4] is None
    # a limit per polygon: the first keeps both holes, the second loses its own
    out = fill_small_holes(geoms, np.array([0.5, 10.0, 1, 1, 1]))
    assert len(out[0].interiors) == 2 and shapely.equals(out[1], ring)
    assert len(fill_small_holes(np.empty(0, dtype=object), 1.0)) == 0


def test_min_area_drops_small_objects(tmp_path):
    a = np.zeros((30, 30), np.uint8)
    a[2:4, 2:4] = 1  # 1 m2
    a[10:20, 10:20] = 1  # 25 m2
    path = classified(tmp_path / "c.tif", a)
    assert vectorize(path, min_area_m2=5)["building"]["area_m2"].tolist() == [25.0]
    assert sorted(vectorize(path, min_area_m2=0)["building"]["area_m2"]) == [1.0, 25.0]


def test_small_holes_are_filled_large_holes_kept(tmp_path):
    a = np.zeros((30, 30), np.uint8)
    a[2:28, 2:28] = 1
    a[5:7, 5:7] = 0  # 1 m2 hole: filled
    a[12:22, 12:22] = 0  # 25 m2 courtyard: kept
    path = classified(tmp_path / "c.tif", a, names={0: "background", 1: "water"})
    water = vectorize(path, min_area_m2=5)["water"]
    assert len(water) == 1
    poly = water.geometry[0]
    assert len(poly.interiors) == 1
    assert shapely.Polygon(poly.interiors[0]).area == pytest.approx(25.0)
    assert water["area_m2"][0] == pytest.approx(13 * 13 - 25)


def test_mean_confidence_from_probability_raster(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[2:12, 2:12] = 1
    a[20:34, 20:30] = 1
    a[36:39, :] = 2  # a road along the bottom
    path = classified(tmp_path / "c.tif", a)
    prob = np.zeros((3, 40, 40), np.uint8)
    prob[1, 2:12, 2:12] = 204  # 0.8
    prob[1, 20:34, 20:30] = 102  # 0.4
    prob[2, 36:39, :] = 255
    prob[0] = 255 - prob[1] - prob[2]
    p_path = write_raster(
        tmp_path / "p.tif",
        prob,
        UTM,
        from_origin(*ORIGIN, 0.5, 0.5),
        descriptions=["background", "building", "road"],
    )
    layers = vectorize(path, probabilities=p_path, min_area_m2=1, min_peak_confidence=0)
    b = layers["building"].sort_values("area_m2")
    np.testing.assert_allclose(b["mean_confidence"], [0.8, 0.4], atol=1e-6)
    np.testing.assert_allclose(b["peak_confidence"], [0.8, 0.4], atol=1e-6)
    assert "mean_confidence" in layers["road"].columns
    other = write_raster(tmp_path / "q.tif", prob[:, :20], UTM, from_origin(*ORIGIN, 0.5, 0.5))
    with pytest.raises(InvalidParameterError, match="grid"):
        vectorize(path, probabilities=other)


def test_geographic_raster_uses_metre_parameters(tmp_path):
    res = 5e-6  # about 0.46 m east-west, 0.55 m north-south at 33.7 N
    lon0, lat0 = -84.4, 33.75
    a = np.zeros((60, 60), np.uint8)
    a[10:30, 10:30] = 1  # about 100 m2
    a[40:43, 40:43] = 1  # about 2.3 m2: dropped at min_area_m2=5
    a[50:57, :] = 2  # a road about 27 m long, 3.9 m wide
    path = classified(tmp_path / "c.tif", a, res=res, crs=WGS84, origin=(lon0, lat0))
    layers = vectorize(path, min_area_m2=5.0)
    b = layers["building"]
    assert b.crs == WGS84 and len(b) == 1
    square = shapely.box(lon0 + 10 * res, lat0 - 30 * res, lon0 + 30 * res, lat0 - 10 * res)
    geod_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(square)[0])
    assert b["area_m2"][0] == pytest.approx(geod_area, rel=0.01)
    assert iou(b.geometry[0], square) > 0.98  # written back in degrees, at the right place
    road = layers["road"]
    assert road.crs == WGS84 and len(road) == 1
    assert 18 < road["length_m"][0] < 28
    assert road.attrs["road_width_m"] == pytest.approx(7 * 0.555, rel=0.15)


# --- road centre lines ---------------------------------------------------------------


def test_plus_shaped_road_is_four_lines_meeting_at_one_node(scene):
    road = vectorize(scene)["road"]
    assert len(road) == 4
    assert set(road.geom_type) == {"LineString"}
    ends = [(g.coords[0], g.coords[-1]) for g in road.geometry]
    shared = set.intersection(*(set(e) for e in ends))
    assert len(shared) == 1
    node = shapely.Point(shared.pop())
    centre = shapely.Point(ORIGIN[0] + 40.5, ORIGIN[1] - 40.5)
    assert node.distance(centre) < 1.5
    assert road["length_m"].to_numpy() == pytest.approx(np.full(4, 38.0), abs=2.5)
    assert road.attrs["road_width_m"] == pytest.approx(7.0, abs=1.0)
    assert road.attrs["spur_length_m"] == pytest.approx(2 * road.attrs["road_width_m"])


def test_short_spur_is_pruned(tmp_path):
    a = np.zeros((40, 80), np.uint8)
    a[18:23, :] = 2  # 5 m wide road
    a[23:27, 40:44] = 2  # a 4 m stub: shorter than twice the width
    road = vectorize(classified(tmp_path / "c.tif", a, res=1.0))["road"]
    assert len(road) == 1
    assert road["length_m"][0] > 70
    kept = vectorize(tmp_path / "c.tif", spur_length_m=0)["road"]
    assert len(kept) == 3  # the stub, and the road cut in two at the stub's junction
    lengths = sorted(kept["length_m"])
    assert lengths[0] == pytest.approx(5.0, abs=1.0)  # the stub: rows 20.5 to 26
    assert lengths[1] + lengths[2] == pytest.approx(road["length_m"][0], abs=1.0)


def _parts(lines: gpd.GeoDataFrame) -> int:
    """Connected parts of a line network in metres (the graph APLS scores)."""
    import networkx as nx

    from geounet.evaluation.apls import road_graph

    return nx.number_connected_components(road_graph(lines.geometry))


def test_break_in_a_road_is_bridged_up_to_six_road_widths(tmp_path):
    a = np.zeros((60, 200), np.uint8)
    a[28:32, :60] = 2  # a 4 m road broken for 10 m (the mask of a model, not the road)
    a[28:32, 70:] = 2
    path = classified(tmp_path / "c.tif", a, res=1.0)
    road = vectorize(path)["road"]
    width = road.attrs["road_width_m"]
    assert road.attrs["gap_m"] == pytest.approx(6 * width)  # width 3 m as measured: 18 m
    assert _parts(road) == 1
    broken = vectorize(path, gap_m=0)["road"]
    assert _parts(broken) == 2 and broken.attrs["gap_m"] == 0
    # the skeleton stops short of the mask's ends: a 14 m bridge over the 10 m break
    assert road["length_m"].sum() == pytest.approx(broken["length_m"].sum() + 14, abs=1)
    assert _parts(vectorize(path, gap_m=8)["road"]) == 2  # the break is longer
    assert vectorize(path, spur_length_m=30)["road"].attrs["gap_m"] == 30  # never below
    runner, out = CliRunner(), tmp_path / "f.gpkg"
    r = runner.invoke(cli, ["vectorize", str(path), "--gap", "0", "--out", str(out)])
    assert r.exit_code == 0 and "road: 2 features" in r.output, r.output
    bad = runner.invoke(cli, ["vectorize", str(path), "--gap", "-1", "--out", str(out)])
    assert bad.exit_code == 2
    with pytest.raises(InvalidParameterError, match="gap_m=-1"):
        vectorize(path, gap_m=-1)


def _closest_end(lines: gpd.GeoDataFrame, x: float, to: shapely.Geometry) -> float:
    """Distance to ``to`` of the nearest vertex of the lines whose centre lies near ``x``."""
    near = [g for g in lines.geometry if abs(g.centroid.x - x) < 3]
    assert near
    return min(shapely.distance(to, shapely.Point(c)) for g in near for c in g.coords)


def test_dead_end_joins_the_road_it_points_at(tmp_path):
    a = np.zeros((120, 120), np.uint8)
    a[8:12, :] = 2  # a road along the top
    a[22:110, 38:42] = 2  # an aisle whose mask ends 10 m short of it
    path = classified(tmp_path / "c.tif", a, res=1.0)
    top = shapely.LineString([(ORIGIN[0], ORIGIN[1] - 10), (ORIGIN[0] + 120, ORIGIN[1] - 10)])
    road = vectorize(path)["road"]
    assert _closest_end(road, ORIGIN[0] + 40, top) < 1.0 and _parts(road) == 1
    unjoined = vectorize(path, gap_m=0)["road"]
    assert _closest_end(unjoined, ORIGIN[0] + 40, top) > 10 and _parts(unjoined) == 2


def test_lines_split_by_a_bridge_keep_their_mean_confidence(tmp_path):
    a = np.zeros((120, 120), np.uint8)
    a[8:12, :] = 2  # a road along the top, probability 0.9
    a[22:110, 38:42] = 2  # an aisle ending 10 m short of it (0.8): its bridge splits the road
    path = classified(tmp_path / "c.tif", a, res=1.0)
    prob = np.zeros((3, 120, 120), np.uint8)
    prob[2, 8:12, :] = round(0.9 * 255)
    prob[2, 22:110, 38:42] = 204
    prob[0] = 255 - prob[2]
    transform = from_origin(*ORIGIN, 1.0, 1.0)
    p_path = write_raster(tmp_path / "p.tif", prob, UTM, transform)
    road = vectorize(path, probabilities=p_path, min_road_confidence=0)["road"]  # keep all
    assert len(road) == 3  # the road cut in two where the aisle's bridge meets it
    along = road.geometry.centroid.y > ORIGIN[1] - 15  # the two parts of the top road
    # a rounded pixel count gave them 0.897 and 0.904 (and means above 1 on real masks)
    np.testing.assert_allclose(road["mean_confidence"][along], round(0.9 * 255) / 255, atol=1e-6)
    np.testing.assert_allclose(road["mean_confidence"][~along], 0.8, atol=1e-6)


def test_many_dead_ends_join_one_road_each_on_the_line_as_split_so_far(tmp_path):
    """A comb of 90 aisles ending 10 m short of one road: every bridge splits the road again.

    Each ray must find the piece of the road that earlier bridges left there (the spatial
    index is updated, and rebuilt past 64 new lines, instead of rebuilt after each bridge).
    """
    a = np.zeros((80, 90 * 8 + 8), np.uint8)
    a[8:12, :] = 2  # the road along the top
    for i in range(90):
        a[22:76, 8 + 8 * i : 11 + 8 * i] = 2  # aisles 3 px wide, 5 m apart
    road = vectorize(classified(tmp_path / "c.tif", a, res=1.0))["road"]
    assert _parts(road) == 1  # every aisle reached the road
    # the road cut at each of the 90 joints, the 90 aisles with their bridges
    assert 170 <= len(road) <= 181
    aisles = road[road.geometry.centroid.y < ORIGIN[1] - 15]
    assert len(aisles) == 90


def test_a_bridge_snaps_to_the_nearer_end_of_a_short_line():
    """Which end a bridge joins does not depend on how the graph lists the line."""
    import networkx as nx

    from geounet.vectorizing.centerlines import _snap_or_split

    for u, v in ((0, 1), (1, 0)):
        g = nx.MultiGraph()
        g.add_node(0, xy=np.array([0.0, 0.0]))
        g.add_node(1, xy=np.array([4.0, 0.0]))
        g.add_edge(u, v, xy=np.array([g.nodes[u]["xy"], g.nodes[v]["xy"]]), conf=(0.0, 0))
        assert _snap_or_split(g, u, v, 0, shapely.Point(3.0, 0.0), 5.0) == 1
        assert g.number_of_nodes() == 2  # snapped, not split


def test_parallel_roads_are_not_bridged(tmp_path):
    a = np.zeros((40, 110), np.uint8)
    a[10:14, 10:100] = 2  # two roads 16 m apart: their ends are close but face away
    a[26:30, 10:100] = 2
    road = vectorize(classified(tmp_path / "c.tif", a, res=1.0))["road"]
    assert len(road) == 2 and _parts(road) == 2


@pytest.mark.realdata
def test_real_road_mask_becomes_one_network_on_the_true_lines():
    """SpaceNet-3 Las Vegas: the 4 m road mask (lon/lat grid) against its 38 centre lines."""
    from conftest import shared_data

    from geounet.evaluation.apls import apls
    from geounet.evaluation.metrics import line_completeness_correctness

    d = shared_data("spacenet_vegas_roads_rgb")
    lines = vectorize(d / "roads_mask_4m.tif", classes={1: "road"})["road"]
    truth = gpd.read_file(d / "roads.geojson")
    utm = truth.estimate_utm_crs()
    pred_m, truth_m = lines.to_crs(utm).geometry, truth.to_crs(utm).geometry
    scores = line_completeness_correctness(truth_m, pred_m, 3.0)
    assert scores["completeness"] > 0.98 and scores["correctness"] > 0.98
    assert _parts(lines.to_crs(utm)) == 1  # aisles and streets meet: one network
    assert lines.attrs["road_width_m"] == pytest.approx(4.0, abs=0.5)
    assert apls(truth_m, pred_m)["apls"] > 0.9


def test_roads_as_polygons_without_centerlines(scene):
    road = vectorize(scene, road_centerlines=False)["road"]
    assert set(road.geom_type) == {"Polygon"}
    assert len(road) == 1
    assert road["area_m2"][0] == pytest.approx(2 * 7 * 81 - 7 * 7)  # the plus, 1 m pixels


# --- classes -------------------------------------------------------------------------


def test_class_names_come_from_the_classes_tag(tmp_path):
    a = np.zeros((20, 20), np.uint8)
    a[2:8, 2:8] = 1
    a[12:18, 12:18] = 3
    names = {0: "background", 1: "building", 2: "road", 3: "water"}
    path = classified(tmp_path / "c.tif", a, names=names)
    with rasterio.open(path) as src:
        assert json.loads(src.tags()["CLASSES"])["3"] == "water"
    layers = vectorize(path)
    assert list(layers) == ["building", "road", "water"]
    assert layers["water"]["class"].tolist() == ["water"]
    assert len(layers["building"]) == 1 and len(layers["road"]) == 0


def test_classes_argument_names_a_plain_label_raster(tmp_path, make_raster):
    a = np.zeros((20, 20), np.uint8)
    a[2:8, 2:8] = 1
    a[12:18, 12:18] = 3
    a[12:18, 2:8] = 7  # not listed: ignored
    path = make_raster(a, name="labels.tif")
    layers = vectorize(path, classes={1: "building", 3: "field"})
    assert list(layers) == ["building", "field"]
    assert len(layers["building"]) == 1 and len(layers["field"]) == 1
    with pytest.warns(UserWarning, match="no CLASSES tag"):
        unnamed = vectorize(path)
    assert list(unnamed) == ["class_1", "class_3", "class_7"]


def test_class_values_outside_0_to_254_are_refused(tmp_path, make_raster):
    """A negative value used to index the tracer's lookup table from the end: -1 traced the
    nodata pixels (255). Values 255 (nodata) and above are no classes either."""
    for bad in ([-1], [1, -1], [255], [1, 300]):
        with pytest.raises(InvalidParameterError, match=r"0\.\.254") as err:
            PolygonTracer(bad, height=4, width=4)
        assert str(max(bad) if max(bad) > 254 else min(bad)) in str(err.value)
    a = np.full((10, 10), 255, np.uint8)
    a[2:6, 2:6] = 254
    tracer = PolygonTracer([254], height=10, width=10)
    geoms, values = tracer.trace(a, row=0, col=0)
    assert values.tolist() == [254] and geoms[0].area == 16.0
    b = np.full((12, 12), 255, np.int16)  # nodata fill with one block of class 1
    b[2:6, 2:6] = 1
    path = make_raster(b, name="labels.tif", nodata=255)
    with pytest.raises(InvalidParameterError, match=r"-1"):
        vectorize(path, classes={-1: "minus one", 1: "building"})


# --- output --------------------------------------------------------------------------


def _read(path: Path, layer: str) -> gpd.GeoDataFrame:
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer=layer if path.suffix == ".gpkg" else None)


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".shp", ".fgb", ".parquet"])
def test_every_format_round_trips_with_its_crs(scene, tmp_path, ext):
    out = tmp_path / f"features{ext}"
    if ext == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(DependencyNotFoundError, match="pip install pyarrow"):
            vectorize(scene, out)
        assert list(tmp_path.iterdir()) == [scene]  # refused before any work
        pytest.skip("pyarrow is not installed: GeoParquet round trip not checked")
    layers = vectorize(scene, out)
    for name, gdf in layers.items():
        path = Path(gdf.attrs["path"])
        assert path.exists()
        assert path == (out if ext == ".gpkg" else tmp_path / f"features_{name}{ext}")
        back = _read(path, name)
        assert back.crs == UTM
        assert len(back) == len(gdf) > 0
        assert set(back.geom_type) == set(gdf.geom_type)
        # FlatGeobuf reorders features (spatial index): compare the sets
        assert sorted(shapely.normalize(back.geometry).to_wkt()) == sorted(
            shapely.normalize(gdf.geometry).to_wkt()
        )
        assert back["class"].tolist() == gdf["class"].tolist()
    if ext == ".gpkg":
        assert sorted(pyogrio.list_layers(out)[:, 0]) == ["building", "road"]
    if ext == ".shp":
        assert "perim_m" in _read(tmp_path / "features_building.shp", "").columns


def test_classes_spelled_buildings_and_roads_are_treated_as_such(make_raster, tmp_path):
    """A model trained on ``Buildings`` / ``Roads``: outlines split and regularized, centre
    lines drawn, as for ``building`` / ``road``; a name given explicitly must still exist."""
    labels = np.zeros((64, 64), np.uint8)
    labels[4:20, 4:20] = 1
    labels[40:46, :] = 2
    path = make_raster(labels, "spelled.tif")
    layers = vectorize(path, classes={1: "Buildings", 2: "Roads"})
    assert set(layers["Roads"].geom_type) == {"LineString"}
    assert layers["Buildings"].attrs["separate"] is True  # the building treatment
    with pytest.raises(InvalidParameterError, match="'house' is not a class"):
        vectorize(path, classes={1: "Buildings", 2: "Roads"}, building_class="house")


def test_web_mercator_buildings_are_measured_on_the_ground(tmp_path):
    """A class raster in EPSG:3857 at 50 degrees north (aerial imagery is often served so):
    areas in square metres on the ground, not in Mercator units (2.4 times as large), and
    the outline where the pixels are."""
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, 50.0)
    mask = np.zeros((200, 200), np.uint8)
    mask[70:130, 70:130] = 1  # 60 x 60 pixels of 0.3 Mercator units: 11.57 m on the ground
    transform = from_origin(x, y, 0.3, 0.3)
    path = write_raster(tmp_path / "m.tif", mask, CRS.from_epsg(3857), transform, nodata=255,
                        class_names={0: "background", 1: "building"})  # fmt: skip
    (building,) = vectorize(path)["building"].itertuples()
    ground = (60 * 0.3 * math.cos(math.radians(50.0))) ** 2
    assert building.area_m2 == pytest.approx(ground, rel=0.02)
    left, bottom, right, top = building.geometry.bounds
    assert (left, top) == pytest.approx((x + 21, y - 21), abs=0.05)
    assert (right, bottom) == pytest.approx((x + 39, y - 39), abs=0.05)


def test_shapefiles_get_every_attribute_under_its_own_short_name(tmp_path):
    """dBASE names hold 10 characters: each attribute vectorize writes gets a name of ours
    (GDAL would launder it with a warning, and two long names could collide)."""
    from geounet.io.vectors import SHAPEFILE_FIELDS, write_layers

    square = shapely.box(500000, 3699990, 500010, 3700000)
    columns = {"class": ["building"], "area_m2": [100.0], "perimeter_m": [40.0]}
    columns |= {"mean_confidence": [0.9], "peak_confidence": [1.0]}
    line = shapely.LineString([(500000, 3699950), (500050, 3699950)])
    layers = {
        "building": gpd.GeoDataFrame(columns, geometry=[square], crs=UTM),
        "road": gpd.GeoDataFrame(
            {"class": ["road"], "length_m": [50.0], "mean_confidence": [0.95]},
            geometry=[line],
            crs=UTM,
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "truncated" / "laundered" warning
        write_layers(layers, tmp_path / "f.shp")
    for name, gdf in layers.items():
        back = _read(tmp_path / f"f_{name}.shp", "")
        want = [SHAPEFILE_FIELDS.get(c, c) for c in gdf.columns if c != "geometry"]
        assert [c for c in back.columns if c != "geometry"] == want
        assert all(len(c) <= 10 for c in want)


def test_the_command_line_names_the_files_it_wrote(scene, tmp_path):
    """A format of one file per class writes ``<stem>_<class>.<ext>``: those are named."""
    r = CliRunner().invoke(cli, ["vectorize", str(scene), "--out", str(tmp_path / "f.shp")])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("written:"))
    assert line == f"written: {tmp_path / 'f_building.shp'}, {tmp_path / 'f_road.shp'}"


def test_existing_output_is_refused_unless_overwrite(scene, tmp_path):
    out = tmp_path / "f.geojson"
    vectorize(scene, out)
    road = tmp_path / "f_road.geojson"
    before = road.read_bytes()
    (tmp_path / "f_building.geojson").unlink()  # one of the two targets still exists
    with pytest.raises(OutputExistsError, match="overwrite") as err:
        vectorize(scene, out)
    assert isinstance(err.value, FileExistsError)
    assert not (tmp_path / "f_building.geojson").exists()  # refused before writing anything
    assert road.read_bytes() == before
    vectorize(scene, out, overwrite=True)
    assert (tmp_path / "f_building.geojson").exists()


def test_failed_write_leaves_no_partial_output(scene, tmp_path, monkeypatch):
    import geounet.io.vectors as vio

    real = vio._write_one
    calls = []

    def failing(gdf, path, layer, driver):
        calls.append(layer)
        if len(calls) == 2:
            raise OSError("disk full")
        real(gdf, path, layer, driver)

    monkeypatch.setattr(vio, "_write_one", failing)
    before = sorted(p.name for p in tmp_path.iterdir())
    for ext in (".geojson", ".shp"):
        calls.clear()
        with pytest.raises(OSError, match="disk full"):
            vectorize(scene, tmp_path / f"f{ext}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- errors --------------------------------------------------------------------------


def test_bad_inputs_raise_clear_geounet_errors(scene, tmp_path, make_raster):
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputNotFoundError, match=r"nope\.tif"):
        vectorize(missing)
    with pytest.raises(InvalidParameterError, match="house") as err:
        vectorize(scene, building_class="house")
    assert "building" in str(err.value) and "road" in str(err.value)
    image = make_raster(np.ones((3, 10, 10), np.uint16), name="image.tif")
    with pytest.raises(InvalidRasterError, match="single-band integer"):
        vectorize(image)
    with pytest.raises(InvalidParameterError, match="unknown vector format"):
        vectorize(scene, tmp_path / "f.kml")
    with pytest.raises(InvalidParameterError, match="min_area_m2"):
        vectorize(scene, min_area_m2=-1)
    with pytest.raises(InvalidParameterError, match="integer raster value"):
        vectorize(scene, classes={"one": "building"})
    for exc in (InputNotFoundError, InvalidParameterError, InvalidRasterError):
        assert issubclass(exc, GeounetError)


# --- robustness ----------------------------------------------------------------------


def test_simplification_never_leaves_a_multipolygon():
    # two lobes joined by a one-pixel neck: plain Douglas-Peucker splits it in two
    shape = shapely.union_all(
        [shapely.box(0, 0, 6, 6), shapely.box(6, 2.5, 7, 3.5), shapely.box(7, 0, 13, 6)]
    )
    out = simplify_polygons(np.array([shape, shapely.box(0, 0, 1, 1)]), 2.0)
    assert list(shapely.get_type_id(out)) == [3, 3]
    assert shapely.is_valid(out).all() and not shapely.is_empty(out).any()
    multi = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 5, 3)])
    parts = largest_polygon(np.array([multi, shapely.Polygon(), None], dtype=object))
    assert parts[0].area == 9.0 and parts[1] is None and parts[2] is None


def test_regularize_keeps_jagged_buildings_valid_polygons():
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(40):  # random pixel blobs: necks, diagonal touches, holes
        m = rng.random((12, 12)) < 0.6
        shapes = rasterio.features.shapes(m.astype(np.uint8), mask=m, connectivity=4)
        blobs += [shapely.geometry.shape(g) for g, _ in shapes]
    traced = np.array([b for b in blobs if b.area >= 4], dtype=object)
    out = regularize_buildings(traced, pixel_m=0.5, simplify_m=0.5)
    assert len(out) == len(traced)
    assert (shapely.get_type_id(out) == 3).all()
    assert shapely.is_valid(out).all() and not shapely.is_empty(out).any()


def test_demo_like_jagged_raster_vectorizes(tmp_path):
    rng = np.random.default_rng(1)
    noisy = (rng.random((96, 96)) < 0.55).astype(np.uint8)  # a jagged, noisy prediction
    noisy[60:90, 10:40] = 2
    path = classified(tmp_path / "c.tif", noisy)
    b = vectorize(path, window_size=32)["building"]
    assert (b.geom_type == "Polygon").all() and b.is_valid.all()
    assert not b.is_empty.any() and (b["area_m2"] > 0).all()
    # the reference: 4-connected components of the building pixels (0.25 m² each), by scipy
    components, n = ndimage.label(noisy == 1)
    pixels = np.bincount(components.ravel())[1:]
    filled = np.array([ndimage.binary_fill_holes(components == i).sum() for i in range(1, n + 1)])
    kw = {"regularize": False, "simplify_m": 0}
    every = vectorize(path, window_size=32, min_area_m2=0, **kw)["building"]
    assert len(every) == n  # one polygon per component, across the window seams
    with rasterio.open(path) as src:
        burnt = rasterio.features.rasterize(every.geometry, noisy.shape, transform=src.transform)
    np.testing.assert_array_equal(burnt == 1, noisy == 1)  # exactly the building pixels
    traced = vectorize(path, **kw)["building"]  # min_area_m2=5: 20 pixels, small holes filled
    assert (pixels >= 20).sum() <= len(traced) <= (filled >= 20).sum()
    assert len(traced) == len(b) and (traced["area_m2"] >= 5.0).all()  # min_area: traced size


# --- CLI -----------------------------------------------------------------------------


def test_cli_vectorize(scene, tmp_path):
    runner = CliRunner()
    out = tmp_path / "features.gpkg"
    result = runner.invoke(cli, ["vectorize", str(scene), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "building: 2 features" in result.output and "road: 4 features" in result.output
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["building", "road"]
    assert gpd.read_file(out, layer="road").crs == UTM
    again = runner.invoke(cli, ["vectorize", str(scene), "--out", str(out)])
    assert again.exit_code == 2 and "overwrite" in again.output
    bad = runner.invoke(cli, ["vectorize", str(tmp_path / "missing.tif"), "--out", str(out)])
    assert bad.exit_code == 2
    assert "missing.tif" in bad.output and "Traceback" not in bad.output


def test_raster_without_crs_is_refused_unless_asked(tmp_path):
    path = tmp_path / "nocrs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=8,
            height=8,
            count=1,
            dtype="uint8",
            transform=Affine.identity(),
        ) as dst:
            dst.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(MissingCRSError, match="no coordinate reference system") as err:
        vectorize(path, classes={1: "building"})
    assert "allow_no_crs=True (--allow-no-crs)" in str(err.value)
    layers = vectorize(path, classes={1: "building"}, min_area_m2=0, allow_no_crs=True)
    building = layers["building"]
    assert building.crs is None and len(building) == 1
    assert building.geometry.iloc[0].equals(shapely.box(0, 0, 8, 8))  # pixel coordinates
    assert building["area_m2"].iloc[0] == pytest.approx(64.0)  # in pixel units


def test_rectangle_clipping_area_matches_overlay():
    from geounet.vectorizing.regularize import _clipped_area

    shell = [(0, 0), (6, 0), (6, 2), (2, 2), (2, 5), (7, 5), (7, 8), (0, 8)]  # concave
    poly = shapely.normalize(shapely.Polygon(shell, [[(0.5, 6), (1.5, 6), (1.5, 7), (0.5, 7)]]))
    boxes = np.array([[1, 1, 5, 7], [-1, -1, 9, 9], [3, 3, 4, 4], [10, 10, 11, 11]], float)
    xy, ring = shapely.get_coordinates(shapely.get_rings(poly), return_index=True)
    closing = np.r_[ring[1:] != ring[:-1], True]
    got = _clipped_area(xy[~closing], ring[~closing], np.array([2]), np.zeros(4, int), boxes)
    want = [shapely.intersection(poly, shapely.box(*b)).area for b in boxes]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_cli_vectorize_class_names_and_spur_options(tmp_path):
    a = np.zeros((81, 81), np.uint8)
    a[37:44, :] = 2
    a[:, 37:44] = 2
    a[5:15, 5:20] = 1
    path = tmp_path / "labels.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=81, height=81, count=1, dtype="uint8", crs=UTM,
        transform=Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1]),
    ) as dst:  # fmt: skip
        dst.write(a[None])
    out = tmp_path / "f.gpkg"
    result = CliRunner().invoke(
        cli,
        ["vectorize", str(path), "--classes", "1=house,2=street", "--building-class", "house",
         "--road-class", "street", "--spur-length", "3", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "house: 1 features" in result.output and "street: 4 features" in result.output
    bad = CliRunner().invoke(
        cli, ["vectorize", str(path), "--classes", "1=house", "--building-class", "hut",
              "--out", str(tmp_path / "g.gpkg")],
    )  # fmt: skip
    assert bad.exit_code == 2 and "hut" in bad.output
