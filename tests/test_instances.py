"""Touching buildings come out as separate polygons (marker-controlled watershed)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from click.testing import CliRunner
from conftest import shared_data
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geounet.cli.main import cli
from geounet.core.errors import InvalidParameterError
from geounet.evaluation.metrics import match_polygons
from geounet.io.raster import write_raster
from geounet.vectorizing.instances import SeparationOptions, split_mask
from geounet.vectorizing.pipeline import vectorize

UTM = CRS.from_epsg(32616)
ORIGIN = (500000.0, 3700000.0)
RES = 0.5  # metres per pixel
NAMES = {0: "background", 1: "building"}


def classified(path: Path, data: np.ndarray) -> Path:
    """A class raster as ``classify`` writes it (0.5 m pixels, CLASSES tag)."""
    return write_raster(
        path, data, UTM, from_origin(*ORIGIN, RES, RES), nodata=255, class_names=NAMES
    )


def two_squares_with_bridge() -> np.ndarray:
    """Two 8 m squares joined by a 2 m wide, 2 m long bridge."""
    a = np.zeros((24, 44), np.uint8)
    a[4:20, 4:20] = 1
    a[4:20, 24:40] = 1
    a[10:14, 20:24] = 1
    return a


def terraced_row(n: int = 4) -> np.ndarray:
    """``n`` touching 8 m x 8 m houses in a row, a 1.5 m notch on both sides of each wall."""
    a = np.zeros((24, 16 * n + 8), np.uint8)
    a[4:20, 4 : 4 + 16 * n] = 1
    for k in range(1, n):
        wall = 4 + 16 * k
        a[4:7, wall - 1 : wall + 1] = 0
        a[17:20, wall - 1 : wall + 1] = 0
    return a


def test_bridge_between_two_squares_splits_them(tmp_path):
    path = classified(tmp_path / "c.tif", two_squares_with_bridge())
    b = vectorize(path)["building"]
    assert len(b) == 2
    # each piece holds one square and half the bridge
    centroids = sorted(g.centroid.x - ORIGIN[0] for g in b.geometry)
    assert centroids[0] == pytest.approx(6.0, abs=0.6)
    assert centroids[1] == pytest.approx(16.0, abs=0.6)
    assert b["area_m2"].sum() == pytest.approx(2 * 64 + 4, rel=0.02)
    assert len(vectorize(path, separate=False)["building"]) == 1


def test_one_rectangle_stays_one_polygon(tmp_path):
    a = np.zeros((30, 60), np.uint8)
    a[5:21, 4:56] = 1  # 26 m x 8 m
    b = vectorize(classified(tmp_path / "c.tif", a))["building"]
    assert len(b) == 1
    assert b["area_m2"][0] == pytest.approx(26 * 8)


def test_l_shaped_building_stays_one_polygon(tmp_path):
    a = np.zeros((50, 50), np.uint8)
    a[5:45, 5:21] = 1
    a[29:45, 5:45] = 1
    assert len(vectorize(classified(tmp_path / "c.tif", a))["building"]) == 1


def test_terraced_row_of_four_houses_becomes_four(tmp_path):
    path = classified(tmp_path / "c.tif", terraced_row(4))
    b = vectorize(path)["building"]
    assert len(b) == 4
    # each polygon is one house: 8 m wide, centred on its house
    xs = np.sort([g.centroid.x - ORIGIN[0] for g in b.geometry])
    np.testing.assert_allclose(xs, [6.0, 14.0, 22.0, 30.0], atol=0.6)
    assert len(vectorize(path, separate=False)["building"]) == 1


def test_min_separation_keeps_narrow_parts_together(tmp_path):
    path = classified(tmp_path / "c.tif", two_squares_with_bridge())
    assert len(vectorize(path, min_separation_m=10.0)["building"]) == 1


def test_split_does_not_depend_on_windows(tmp_path):
    a = np.pad(terraced_row(5), ((8, 8), (1, 1)))  # 40 x 90: 16-pixel windows cut houses
    path = classified(tmp_path / "c.tif", a)
    kw = {"regularize": False, "simplify_m": 0, "min_area_m2": 0}
    whole = vectorize(path, window_size=128, **kw)["building"]
    tiled = vectorize(path, window_size=16, **kw)["building"]
    assert len(whole) == len(tiled) == 5
    g1 = shapely.normalize(whole.sort_values("area_m2").geometry.to_numpy())
    g2 = shapely.normalize(tiled.sort_values("area_m2").geometry.to_numpy())
    order1 = np.argsort([g.centroid.x for g in g1])
    order2 = np.argsort([g.centroid.x for g in g2])
    for p, q in zip(g1[order1], g2[order2]):
        assert shapely.equals_exact(p, q)


def test_probability_dip_splits_roofs_without_a_notch(tmp_path):
    a = np.zeros((24, 44), np.uint8)
    a[4:20, 4:40] = 1  # two 9 m x 8 m roofs sharing a wall, no notch: one rectangle
    path = classified(tmp_path / "c.tif", a)
    prob = np.zeros((2, 24, 44), np.uint8)
    prob[1][a == 1] = 250
    prob[1, 4:20, 21:23] = 140  # the model is less sure along the shared wall
    prob[0] = 255 - prob[1]
    p_path = write_raster(
        tmp_path / "p.tif",
        prob,
        UTM,
        from_origin(*ORIGIN, RES, RES),
        descriptions=["background", "building"],
    )
    assert len(vectorize(path)["building"]) == 1
    b = vectorize(path, probabilities=p_path)["building"]
    assert len(b) == 2
    np.testing.assert_allclose(sorted(b["area_m2"]), [72, 72], rtol=0.05)


def test_split_mask_labels_each_instance_inside_the_mask():
    mask = two_squares_with_bridge().astype(bool)
    labels = split_mask(mask, (RES, RES), SeparationOptions())
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert np.array_equal(labels > 0, mask)
    assert labels[12, 10] != labels[12, 30]


def _merge_by_rescoring_all(labels, s, dist, opts):
    """The merge as it first was: every pair rescored after each merge (n**2, kept as truth)."""
    from scipy import ndimage

    from geounet.vectorizing.instances import _merge_score, _saddles

    idx = np.arange(1, int(labels.max()) + 1)
    peak = dict(zip(idx.tolist(), ndimage.maximum(s, labels, idx)))
    width = dict(zip(idx.tolist(), ndimage.maximum(dist, labels, idx) * 2))
    saddle, parent = _saddles(labels, s), np.arange(len(idx) + 1)
    while saddle:
        score = {
            k: _merge_score(v, peak[k[0]], peak[k[1]], width[k[0]], width[k[1]], opts)
            for k, v in saddle.items()
        }
        (a, b), best = max(score.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if best <= opts.neck_ratio:
            break
        parent[parent == b] = a
        peak[a], width[a] = max(peak[a], peak[b]), max(width[a], width[b])
        merged = {}
        for (x, y), v in saddle.items():
            x, y = (a if x == b else x), (a if y == b else y)
            if x != y:
                merged[(min(x, y), max(x, y))] = max(v, merged.get((min(x, y), max(x, y)), -np.inf))
        saddle = merged
    _, dense = np.unique(parent, return_inverse=True)
    return dense[labels].astype(np.int32)


def test_merging_regions_from_a_heap_equals_rescoring_every_pair(monkeypatch):
    """Ragged masks of many peaks: the heap merges exactly the regions the n**2 loop merged."""
    from scipy import ndimage

    import geounet.vectorizing.instances as inst

    fast = inst._merge_regions
    # seeds 180, 255 and 459 give regions whose merged neighbours share a third one (the
    # pass kept must be the higher of the two): a heap that kept either one failed on them
    for trial in [*range(12), 180, 255, 459]:
        rng = np.random.default_rng(trial)
        h, w = rng.integers(30, 80, 2)
        mask = ndimage.binary_opening(rng.random((h, w)) < rng.uniform(0.5, 0.8))
        mask[0] = mask[-1] = False
        mask[:, 0] = mask[:, -1] = False
        prob = rng.random((h, w)) if trial % 2 else None
        pixel = (0.3, 0.3) if trial % 3 else (0.5, 0.5)
        monkeypatch.setattr(inst, "_merge_regions", fast)
        got = split_mask(mask, pixel, SeparationOptions(), prob)
        monkeypatch.setattr(inst, "_merge_regions", _merge_by_rescoring_all)
        want = split_mask(mask, pixel, SeparationOptions(), prob)
        assert np.array_equal(got, want), trial


def _ragged_scene(seed: int) -> np.ndarray:
    """Blobs of smoothed noise with pepper: many regions, some touching at corners."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = rng.integers(60, 260, 2)
    field = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(2, 6))
    mask = field > np.quantile(field, rng.uniform(0.4, 0.7))
    mask |= ndimage.binary_opening(rng.random((h, w)) < 0.6) & (rng.random((h, w)) < 0.5)
    return mask


def _outlines(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge outlines of the 4-connected regions of ``mask`` (pixel coordinates)."""
    from geounet.vectorizing.polygons import polygons_from_shapes

    items = rasterio.features.shapes(mask.astype(np.uint8), mask=mask, connectivity=4)
    return polygons_from_shapes(list(items), offset=(0.0, 0.0))[0]


def _reader(array: np.ndarray):
    """A block reader (rows ``a:e``, columns ``b:f``) of an array in memory."""
    return lambda a, b, e, f: array[a:e, b:f]


def test_outlines_split_together_get_the_instances_of_their_own_crops(monkeypatch):
    """A block of outlines split in one mosaic == each outline split in its own crop.

    The only freedom is the watershed's order among pixels of equal height: a few pixels
    of a line may move, never the number of instances.
    """
    import geounet.vectorizing.instances as inst

    batched = inst._split_batch
    identical = total = 0
    for seed in range(16):
        mask = _ragged_scene(seed)
        data = mask.astype(np.uint8)
        rng = np.random.default_rng(seed)
        prob = rng.random(mask.shape).astype(np.float32) if seed % 2 else None
        pixel = (0.3, 0.3) if seed % 3 else (0.5, 0.4)
        outlines = _outlines(mask)
        args = (outlines, 1, _reader(data), pixel, SeparationOptions())
        kw = {"size": mask.shape, "prob": None if prob is None else _reader(prob)}
        monkeypatch.setattr(inst, "_split_batch", batched)
        got, got_src = inst.split_polygons(*args, **kw)
        alone = lambda block, *a, **k: ({}, np.arange(len(block[0])))  # noqa: E731
        monkeypatch.setattr(inst, "_split_batch", alone)
        want, want_src = inst.split_polygons(*args, **kw)
        assert np.array_equal(got_src, want_src), seed  # as many pieces from each outline
        assert len(got) > len(outlines)  # the scenes do split
        for i, outline in enumerate(outlines):
            a, b = got[got_src == i], want[want_src == i]
            total += 1
            if all(shapely.equals_exact(x, y, 0) for x, y in zip(a, b)):
                identical += 1
                continue
            moved = sum(shapely.area(shapely.symmetric_difference(x, y)) for x, y in zip(a, b))
            assert moved / 2 <= 0.02 * outline.area, (seed, i)
            assert shapely.equals(shapely.union_all(a), outline)
    assert identical >= 0.995 * total


def test_the_split_does_not_depend_on_the_thread_count(monkeypatch):
    """Blocks split on one thread or several give the same polygons, in the same order."""
    import geounet.vectorizing.instances as inst

    for seed in (1, 4):
        mask = _ragged_scene(seed)
        prob = np.random.default_rng(seed).random(mask.shape).astype(np.float32)
        outlines = _outlines(mask)
        monkeypatch.setattr(inst, "BATCH_PX", 64)  # several blocks even on a small scene
        runs = []
        for threads in ("1", "2", "3"):
            monkeypatch.setenv("GEOUNET_NUM_THREADS", threads)
            runs.append(
                inst.split_polygons(
                    outlines,
                    1,
                    _reader(mask.astype(np.uint8)),
                    (0.3, 0.3),
                    SeparationOptions(),
                    size=mask.shape,
                    prob=_reader(prob),
                )
            )
        (one, one_src), *others = runs
        assert len(one) > len(outlines)
        for got, src in others:
            assert np.array_equal(src, one_src)
            assert all(shapely.equals_exact(a, b, 0) for a, b in zip(got, one))


def test_outlines_are_packed_side_by_side_without_overlap():
    from geounet.vectorizing.instances import _pack

    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 90, (200, 2))
    corners, shape = _pack(sizes)
    cover = np.zeros(shape, dtype=np.int64)
    for (y, x), (h, w) in zip(corners, sizes):
        cover[y : y + h, x : x + w] += 1
    assert cover.max() == 1  # no two crops overlap, all inside the mosaic
    assert cover.sum() == np.prod(sizes, axis=1).sum()
    assert cover.mean() > 0.6  # packed, not strung out


def test_first_pixel_of_an_outline_in_raster_order():
    from geounet.vectorizing.instances import _first_pixel

    u = np.zeros((12, 12), bool)
    u[2:10, 3:5] = u[2:10, 8:10] = u[8:10, 3:10] = True  # a U: two runs on its top row
    ring = np.zeros((12, 12), bool)
    ring[1:11, 1:11] = True
    ring[4:7, 4:7] = False  # a hole
    for mask, first in ((u, (2, 3)), (ring, (1, 1))):
        (outline,) = _outlines(mask)
        assert tuple(_first_pixel(np.array([outline]))[0]) == first


def test_buildings_touching_at_a_corner_split_each_on_its_own(tmp_path):
    """Two terraced rows meeting corner to corner stay two rows of houses, four each."""
    row = terraced_row(4)
    h, w = row.shape
    data = np.zeros((2 * h - 8, 2 * w - 8), np.uint8)
    data[:h, :w] = row
    data[h - 8 :, w - 8 :] |= row  # the second row's first pixel touches the first's last
    path = classified(tmp_path / "c.tif", data)
    assert len(vectorize(path)["building"]) == 8


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "3"])
def test_bad_min_separation_is_refused(tmp_path, bad):
    path = classified(tmp_path / "c.tif", terraced_row(2))
    with pytest.raises(InvalidParameterError, match="min_separation_m"):
        vectorize(path, min_separation_m=bad)


def test_cli_separation_options(tmp_path):
    path = classified(tmp_path / "c.tif", terraced_row(4))
    runner = CliRunner()
    out = tmp_path / "a.gpkg"
    r = runner.invoke(cli, ["vectorize", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "building: 4 features" in r.output
    base = ["vectorize", str(path), "--out", str(out), "--overwrite"]
    r = runner.invoke(cli, [*base, "--no-separate"])
    assert r.exit_code == 0, r.output
    assert "building: 1 features" in r.output
    r = runner.invoke(cli, [*base, "--min-separation", "20"])
    assert r.exit_code == 0, r.output
    assert "building: 1 features" in r.output


@pytest.mark.realdata
@pytest.mark.parametrize(("scene", "min_f1"), [("oam_kampala", 0.97), ("oam_zanzibar", 0.97)])
def test_real_touching_roofs_come_back_as_their_buildings(tmp_path, scene, min_f1):
    """OSM buildings burnt into one class (touching roofs merge) come back one by one."""
    folder = shared_data(scene)
    with rasterio.open(folder / "image.tif") as src:
        shape, crs, transform, bounds = (src.height, src.width), src.crs, src.transform, src.bounds
    truth = gpd.read_file(folder / "buildings.geojson").to_crs(crs).geometry.clip_by_rect(*bounds)
    truth = truth[truth.to_crs(truth.estimate_utm_crs()).area.to_numpy() >= 2.0]
    burnt = rasterio.features.rasterize(
        [(g, 1) for g in truth], out_shape=shape, transform=transform, dtype="uint8"
    )
    path = write_raster(tmp_path / "t.tif", burnt, crs, transform, nodata=255, class_names=NAMES)
    merged = vectorize(path, min_area_m2=1, separate=False)["building"]
    split = vectorize(path, min_area_m2=1)["building"]
    scores = match_polygons(truth, split.geometry)
    assert scores["f1"] >= min_f1
    assert scores["f1"] > match_polygons(truth, merged.geometry)["f1"]  # 0.945 and 0.970
    assert abs(len(split) - len(truth)) <= 0.05 * len(truth)
