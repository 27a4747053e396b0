"""Raster IO: opening and validating, windows with mirror padding, statistics, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from geounet.core.classes import colormap, make_classes
from geounet.core.errors import (
    BandMismatchError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    MissingCRSError,
    OutputExistsError,
    OutputLockedError,
)
from geounet.io import stats as stats_module
from geounet.io import write as raster_write
from geounet.io.raster import (
    BandStats,
    RasterInfo,
    RasterWriter,
    WriterOptions,
    atomic_output,
    band_stats,
    iter_windows,
    local_metric_crs,
    open_raster,
    pixel_size_m,
    read_window,
    valid_mask,
    write_raster,
)
from geounet.io.write import BIGTIFF_THRESHOLD, _profile, needs_bigtiff

UTM = CRS.from_epsg(32616)
WGS84 = CRS.from_epsg(4326)
TRANSFORM = from_origin(500000.0, 3700000.0, 0.5, 0.5)
RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- open_raster


def test_open_raster_describes_a_geotiff(make_raster):
    arr = _rng().integers(1, 1000, (4, 30, 20), dtype=np.uint16)
    path = make_raster(arr, nodata=0, descriptions=["blue", "green", "red", "nir"])
    info = open_raster(path)
    assert (info.width, info.height, info.count, info.dtype) == (20, 30, 4, "uint16")
    assert info.crs == UTM
    assert info.transform == TRANSFORM
    assert info.nodata == 0
    assert info.alpha_band is None
    assert info.data_bands == [1, 2, 3, 4]
    assert info.band_names == ["blue", "green", "red", "nir"]
    assert info.bounds == pytest.approx((500000.0, 3700000.0 - 15.0, 500000.0 + 10.0, 3700000.0))
    assert info.path == path


def test_open_raster_missing_file_is_input_not_found(tmp_path):
    path = tmp_path / "nowhere.tif"
    with pytest.raises(InputNotFoundError, match=r"nowhere\.tif") as err:
        open_raster(path)
    assert isinstance(err.value, FileNotFoundError)


def test_open_raster_text_file_is_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not a GeoTIFF\n")
    with pytest.raises(InvalidRasterError, match=r"notes\.tif") as err:
        open_raster(path)
    assert isinstance(err.value, ValueError)
    assert "not a raster" in str(err.value)


def test_open_raster_folder_is_not_a_raster(tmp_path):
    folder = tmp_path / "folder.tif"
    folder.mkdir()
    with pytest.raises(InvalidRasterError, match=r"folder\.tif"):
        open_raster(folder)


def test_open_raster_refuses_missing_crs_unless_allowed(make_raster):
    path = make_raster(np.ones((1, 8, 8), np.uint8), name="nocrs.tif", crs=None)
    with pytest.raises(MissingCRSError, match=r"nocrs\.tif") as err:
        open_raster(path)
    assert isinstance(err.value, InvalidRasterError)
    assert "allow_no_crs" in str(err.value)
    info = open_raster(path, allow_no_crs=True)
    assert info.crs is None
    assert info.gsd_m == pytest.approx(0.5)  # pixel units without a CRS


@pytest.mark.parametrize("dtype", ["complex64", "int64", "uint64"])
def test_open_raster_refuses_unsupported_dtype(make_raster, dtype):
    path = make_raster(np.ones((1, 4, 4), dtype), name=f"{dtype}.tif")
    with pytest.raises(InvalidRasterError, match=f"{dtype}.tif") as err:
        open_raster(path)
    msg = str(err.value)
    assert dtype in msg and "not supported" in msg and "float32" in msg


def test_open_raster_refuses_zero_bands(tmp_path):
    netcdf = pytest.importorskip("scipy.io").netcdf_file
    path = tmp_path / "container.nc"
    f = netcdf(str(path), "w")  # two variables: GDAL shows subdatasets and no band
    f.createDimension("y", 4)
    f.createDimension("x", 5)
    for name in ("a", "b"):
        f.createVariable(name, "f4", ("y", "x"))[:] = 1.0
    f.close()
    with pytest.raises(InvalidRasterError, match=r"container\.nc") as err:
        open_raster(path, allow_no_crs=True)
    assert "no bands" in str(err.value)
    assert "subdataset" in str(err.value)


def test_open_raster_refuses_alpha_only(make_raster):
    path = make_raster(np.ones((1, 4, 4), np.uint8), name="alpha.tif", colorinterp=[RGBA[3]])
    with pytest.raises(InvalidRasterError, match="no data band"):
        open_raster(path)


def test_open_raster_detects_alpha_band(make_raster):
    path = make_raster(np.ones((4, 6, 6), np.uint8), colorinterp=RGBA)
    info = open_raster(path)
    assert info.alpha_band == 4
    assert info.data_bands == [1, 2, 3]
    assert info.band_names == ["band_1", "band_2", "band_3"]


def test_gsd_of_projected_raster(make_raster):
    assert open_raster(make_raster(np.ones((1, 4, 4), np.uint8))).gsd_m == pytest.approx(0.5)


def test_gsd_of_geographic_raster_at_las_vegas(make_raster):
    res = 2.7e-6  # degrees
    lon0, lat0 = -115.17, 36.12
    path = make_raster(np.ones((1, 100, 100), np.uint8), crs=WGS84, res=res, origin=(lon0, lat0))
    info = open_raster(path)
    lon, lat = lon0 + 50 * res, lat0 - 50 * res
    geod = Geod(ellps="WGS84")
    dx = geod.inv(lon, lat, lon + res, lat)[2]
    dy = geod.inv(lon, lat, lon, lat + res)[2]
    assert info.gsd_m == pytest.approx((dx + dy) / 2, rel=1e-6)
    assert 0.25 < info.gsd_m < 0.3
    assert local_metric_crs(info.crs, info.bounds) == CRS.from_epsg(32611)


def test_gsd_converts_feet_and_local_metric_crs_keeps_projected():
    feet = CRS.from_epsg(2229)  # NAD83 / California zone 5 (ftUS), in Los Angeles
    la = from_origin(6500000, 1850000, 1, 1)
    assert pixel_size_m(feet, la) == pytest.approx(0.3048006, rel=1e-6)
    assert local_metric_crs(UTM, (500000, 3700000, 500001, 3700001)) == UTM
    assert local_metric_crs(WGS84, (150.0, -34.0, 151.0, -33.0)) == CRS.from_epsg(32756)


@pytest.mark.parametrize(("lat", "utm", "scale"), [(0.5, None, 1.0), (50.0, 32632, 0.6428)])
def test_web_mercator_is_measured_on_the_ground_away_from_the_equator(lat, utm, scale):
    """EPSG:3857 "metres" are 1 / cos(latitude) ground metres: at 50 degrees a 0.3 unit
    pixel is 0.193 m (areas 2.4 times too large if taken as metres); at the equator it is
    taken as it is."""
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, lat)
    mercator = CRS.from_epsg(3857)
    metric = local_metric_crs(mercator, (x, y, x + 300, y + 300))
    assert metric == (mercator if utm is None else CRS.from_epsg(utm))
    size = pixel_size_m(mercator, from_origin(x, y + 300, 0.3, 0.3), 1000, 1000)
    assert size == pytest.approx(0.3 * scale, rel=0.005)


def test_raster_info_band_names_without_descriptions():
    info = RasterInfo(Path("x.tif"), 2, 2, 2, "uint8", None, TRANSFORM, None)
    assert info.band_names == ["band_1", "band_2"]


# ----------------------------------------------------------------------------- read_window

WINDOWS = {
    "inside": (5, 7, 10, 12),
    "whole": (0, 0, 40, 70),
    "past_top": (-6, 10, 16, 16),
    "past_bottom": (30, 10, 16, 16),
    "past_left": (10, -9, 16, 16),
    "past_right": (10, 60, 16, 16),
    "top_left": (-8, -8, 20, 20),
    "top_right": (-8, 60, 20, 20),
    "bottom_left": (30, -8, 20, 20),
    "bottom_right": (30, 60, 20, 20),
    "halo_wider_than_read": (-32, -40, 36, 44),  # pads longer than the part read
    "larger_than_raster": (0, 0, 128, 128),
    "larger_centred": (-44, -29, 128, 128),
}


def _expected(full: np.ndarray, row: int, col: int, h: int, w: int, mode: str) -> np.ndarray:
    pad = 300
    widths = [(0, 0)] * (full.ndim - 2) + [(pad, pad), (pad, pad)]
    padded = np.pad(full, widths, mode=mode)
    return padded[..., row + pad : row + pad + h, col + pad : col + pad + w]


@pytest.fixture
def scene(make_raster):
    """A 40 x 70 three-band uint16 raster with nodata pixels."""
    arr = _rng(1).integers(1, 60000, (3, 40, 70), dtype=np.uint16)
    arr[:, 3:6, 50:60] = 0  # nodata in every band
    arr[0, 20:22, 5:9] = 0  # nodata in one band only: still valid
    return make_raster(arr, nodata=0), arr


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "edge"])
@pytest.mark.parametrize("name", list(WINDOWS))
def test_read_window_equals_numpy_pad(scene, name, mode):
    path, arr = scene
    row, col, h, w = WINDOWS[name]
    with rasterio.open(path) as src:
        data, valid = read_window(src, row, col, h, w, [1, 2, 3], pad_mode=mode)
    assert data.shape == (3, h, w) and data.dtype == np.uint16
    assert valid.shape == (h, w) and valid.dtype == bool
    np.testing.assert_array_equal(data, _expected(arr, row, col, h, w, mode))
    full_valid = ~np.all(arr == 0, axis=0)
    np.testing.assert_array_equal(valid, _expected(full_valid, row, col, h, w, mode))


def test_read_window_band_subset_and_order(scene):
    path, arr = scene
    with rasterio.open(path) as src:
        data, _ = read_window(src, -3, -3, 10, 10, [3, 1])
    np.testing.assert_array_equal(data, _expected(arr[[2, 0]], -3, -3, 10, 10, "reflect"))


def test_read_window_constant_padding_is_zero_and_invalid(scene):
    path, arr = scene
    with rasterio.open(path) as src:
        data, valid = read_window(src, -2, -3, 10, 10, [1, 2, 3], pad_mode="constant")
    assert (data[:, :2] == 0).all() and (data[:, :, :3] == 0).all()
    assert not valid[:2].any() and not valid[:, :3].any()
    np.testing.assert_array_equal(data[:, 2:, 3:], arr[:, :8, :7])


def test_read_window_single_row_and_column(make_raster):
    arr = np.arange(9, dtype=np.uint8).reshape(1, 1, 9)
    path = make_raster(arr)
    with rasterio.open(path) as src:
        data, valid = read_window(src, -3, -2, 7, 13, [1])
    np.testing.assert_array_equal(data, _expected(arr, -3, -2, 7, 13, "reflect"))
    assert valid.all()


def test_read_window_rejects_outside_window_and_bad_mode(scene):
    path, _ = scene
    with rasterio.open(path) as src:
        with pytest.raises(InvalidParameterError, match="outside"):
            read_window(src, 40, 0, 8, 8, [1])
        with pytest.raises(InvalidParameterError, match="'reflect'"):
            read_window(src, 0, 0, 8, 8, [1], pad_mode="wrap")


def test_valid_mask_honours_alpha(make_raster):
    arr = np.full((4, 20, 20), 100, np.uint8)
    arr[3, 5:10, 5:10] = 0  # transparent
    path = make_raster(arr, colorinterp=RGBA)
    info = open_raster(path)
    with rasterio.open(path) as src:
        data, valid = read_window(src, -4, -4, 16, 16, info.data_bands, alpha_band=info.alpha_band)
    assert data.shape == (3, 16, 16)
    expected = _expected(arr[3] > 0, -4, -4, 16, 16, "reflect")
    np.testing.assert_array_equal(valid, expected)
    assert not valid.all()


def test_valid_mask_honours_nan_and_nan_nodata(make_raster):
    arr = _rng().random((2, 10, 12), dtype=np.float32)
    arr[0, 2, 3] = np.nan  # NaN in one band: invalid
    arr[:, 7, 7] = np.inf
    path = make_raster(arr, nodata=float("nan"))
    with rasterio.open(path) as src:
        _, valid = read_window(src, 0, 0, 10, 12, [1, 2])
    assert not valid[2, 3] and not valid[7, 7]
    assert valid.sum() == 10 * 12 - 2


def test_valid_mask_nodata_needs_every_band():
    data = np.array([[[0, 0, 5]], [[0, 3, 0]]], np.int16)
    np.testing.assert_array_equal(valid_mask(data, 0), [[False, True, True]])
    np.testing.assert_array_equal(valid_mask(data, None), [[True, True, True]])
    alpha = np.array([[255, 0, 255]], np.uint8)
    np.testing.assert_array_equal(valid_mask(data, None, alpha), [[True, False, True]])


def test_read_window_uses_gdal_mask_band(tmp_path):
    path = tmp_path / "masked.tif"
    arr = np.full((1, 20, 20), 7, np.uint8)
    mask = np.full((20, 20), 255, np.uint8)
    mask[:4] = 0
    profile = dict(driver="GTiff", width=20, height=20, count=1, dtype="uint8", crs=UTM)
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(path, "w", transform=TRANSFORM, **profile) as dst,
    ):
        dst.write(arr)
        dst.write_mask(mask)
    with rasterio.open(path) as src:
        _, valid = read_window(src, 0, 0, 20, 20, [1])
    np.testing.assert_array_equal(valid, mask > 0)
    assert band_stats([path]).count == 16 * 20


# ----------------------------------------------------------------------------- band_stats


def _check_stats(stats: BandStats, values: np.ndarray, exact_percentiles: bool = True) -> None:
    v = values.astype(np.float64)
    assert stats.count == values.shape[1]
    np.testing.assert_allclose(stats.mean, v.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats.std, v.std(axis=1), rtol=1e-6)
    if exact_percentiles:
        np.testing.assert_allclose(stats.p2, np.percentile(values, 2, axis=1), rtol=1e-9)
        np.testing.assert_allclose(stats.p98, np.percentile(values, 98, axis=1), rtol=1e-9)


def _scene(dtype: str, shape=(3, 150, 130), seed=0) -> np.ndarray:
    rng = _rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.normal(1000.0, 250.0, shape)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32"])
def test_band_stats_match_numpy_over_valid_pixels(make_raster, dtype):
    arr = _scene(dtype)
    nodata = 7
    arr[:, :20, :30] = nodata  # nodata block in every band
    arr[1, 50:60, 50:60] = nodata  # one band only: still valid
    info = open_raster(make_raster(arr, nodata=nodata))
    stats = band_stats([info], block=64)  # 3 x 3 windows, partial ones at the edges
    valid = ~np.all(arr == nodata, axis=0)
    _check_stats(stats, arr[:, valid])


def test_band_stats_int16_negative_offsets(make_raster):
    arr = np.array([[[-32768, -5, -5, 0, 3, 32767]]], np.int16)
    stats = band_stats([make_raster(arr)], block=2)
    _check_stats(stats, arr.reshape(1, -1))
    assert stats.p2[0] < -5000  # the histogram offset was undone


def test_band_stats_several_rasters_and_dtypes(make_raster):
    a = _scene("uint8", (2, 50, 40), seed=1)
    b = _scene("uint16", (2, 33, 71), seed=2)
    a[:, :5] = 0
    paths = [make_raster(a, name="a.tif", nodata=0), make_raster(b, name="b.tif", nodata=0)]
    stats = band_stats([open_raster(p) for p in paths], block=32)
    va, vb = a[:, ~np.all(a == 0, axis=0)], b[:, ~np.all(b == 0, axis=0)]
    _check_stats(stats, np.concatenate([va.astype(np.uint16), vb], axis=1))


def test_band_stats_excludes_alpha_and_explicit_bands(make_raster):
    arr = _scene("uint8", (4, 40, 40))
    arr[3] = 255
    arr[3, :10] = 0
    path = make_raster(arr, colorinterp=RGBA)
    stats = band_stats([open_raster(path)], block=16)
    _check_stats(stats, arr[:3, 10:].reshape(3, -1))
    only2 = band_stats([open_raster(path)], bands=[2], block=16)
    assert only2.mean == pytest.approx([stats.mean[1]])


def test_band_stats_nodata_override(make_raster):
    arr = _scene("uint8", (1, 30, 30))
    arr[0, :3] = 200
    stats = band_stats([make_raster(arr)], nodata=200)
    _check_stats(stats, arr[:, arr[0] != 200])


def test_band_stats_float_percentiles_from_bounded_sample(make_raster, monkeypatch):
    monkeypatch.setattr(stats_module, "STATS_SAMPLE", 5000)
    arr = _scene("float32", (2, 200, 180))
    info = open_raster(make_raster(arr))
    stats = band_stats([info], block=50)
    _check_stats(stats, arr.reshape(2, -1), exact_percentiles=False)
    v = arr.reshape(2, -1)
    for b in range(2):  # within a percentile point of the truth
        assert np.percentile(v[b], 1) < stats.p2[b] < np.percentile(v[b], 3)
        assert np.percentile(v[b], 97) < stats.p98[b] < np.percentile(v[b], 99)
    assert stats.p2 == band_stats([info], block=50).p2  # seeded: deterministic


def test_band_stats_sample_is_uniform_over_windows(make_raster, monkeypatch):
    monkeypatch.setattr(stats_module, "STATS_SAMPLE", 1000)
    big = make_raster(np.ones((1, 100, 100), np.float32), name="big.tif")
    small = make_raster(np.full((1, 10, 10), 2.0, np.float32), name="small.tif")
    # 1 % of the pixels are 2.0: a per-window quota would over-represent the small raster
    assert band_stats([big, small]).p98 == [1.0]


def test_stats_accumulator_sample_stays_bounded_and_uniform():
    acc = stats_module.StatsAccumulator(2, "float64", seed=3, sample_size=500)
    rng = _rng(5)
    chunks = [rng.normal(size=(2, n)) for n in (10, 3000, 7, 20000, 1, 900)]
    for chunk in chunks:
        acc.add(chunk)
    allv = np.concatenate(chunks, axis=1)
    result = acc.result()
    assert acc.sample.shape == (2, 500) and acc.keys.size == 500
    assert result.count == allv.shape[1]
    np.testing.assert_allclose(result.mean, allv.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(result.std, allv.std(axis=1), rtol=1e-9)
    # the sample pairs band values of the same pixels
    pairs = {tuple(v) for v in allv.T}
    assert all(tuple(v) in pairs for v in acc.sample.T)


def test_stats_accumulator_moments_of_large_values_with_small_spread():
    acc = stats_module.StatsAccumulator(1, "float64")
    values = 1e9 + _rng().normal(0, 1e-3, (1, 30000))
    for i in range(0, 30000, 1000):
        acc.add(values[:, i : i + 1000])
    assert acc.result().std[0] == pytest.approx(values.std(), rel=1e-6)


def test_band_stats_all_nodata_is_an_error(make_raster):
    path = make_raster(np.zeros((2, 10, 10), np.uint8), name="empty.tif", nodata=0)
    with pytest.raises(InvalidRasterError, match=r"empty\.tif"):
        band_stats([open_raster(path)])


def test_band_stats_bad_inputs(make_raster):
    with pytest.raises(InvalidParameterError):
        band_stats([])
    a = make_raster(np.ones((2, 4, 4), np.uint8), name="a.tif")
    b = make_raster(np.ones((3, 4, 4), np.uint8), name="b.tif")
    with pytest.raises(BandMismatchError, match=r"b\.tif"):
        band_stats([a, b])
    with pytest.raises(BandMismatchError, match="do not exist"):
        band_stats([a], bands=[3])


def test_band_stats_dict_round_trip():
    stats = BandStats([1.0], [2.0], [0.0], [3.0], count=5)
    assert BandStats.from_dict(json.loads(json.dumps(stats.to_dict()))).to_dict() == stats.to_dict()


def test_iter_windows_cover_once():
    seen = np.zeros((70, 45), int)
    for win in iter_windows(70, 45, 32):
        seen[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] += 1
    assert (seen == 1).all()
    with pytest.raises(InvalidParameterError):
        list(iter_windows(10, 10, 0))


# ----------------------------------------------------------------------------- writing


def _classes_raster(h: int, w: int) -> np.ndarray:
    arr = (np.add.outer(np.arange(h) // 7, np.arange(w) // 5) % 3).astype(np.uint8)
    arr[:10, :10] = 255
    return arr


def test_write_raster_class_raster_with_everything(tmp_path):
    classes = make_classes({1: "building", 2: "road"})
    arr = _classes_raster(600, 700)
    out = write_raster(
        tmp_path / "classes.tif",
        arr,
        UTM,
        TRANSFORM,
        nodata=255,
        colormap=colormap(classes),
        class_names={i: c.name for i, c in enumerate(classes)},
        descriptions=["class"],
    )
    assert out == tmp_path / "classes.tif"
    assert _files(tmp_path) == ["classes.tif"]
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), arr)
        assert src.crs == UTM and src.transform == TRANSFORM and src.nodata == 255
        assert src.block_shapes == [(512, 512)]
        assert src.profile["tiled"] and src.compression.name == "deflate"
        assert src.colormap(1)[1] == (0xE6, 0x19, 0x4B, 255)
        assert src.colormap(1)[255][3] == 0
        assert json.loads(src.tags()["CLASSES"]) == {
            "0": "background",
            "1": "building",
            "2": "road",
        }
        assert src.descriptions == ("class",)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64"])
def test_write_raster_multiband_round_trip(tmp_path, dtype):
    arr = _scene(dtype, (3, 40, 70))
    out = write_raster(tmp_path / "img.tif", arr, UTM, TRANSFORM, descriptions=["a", None, "c"])
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), arr)
        assert src.profile["tiled"]  # small rasters are tiled too, with small blocks
        assert src.block_shapes[0] == (48, 80)
        assert src.descriptions == ("a", None, "c")
        pred = "3" if dtype.startswith("float") else "2"
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == pred


def test_write_raster_cog_has_overviews(tmp_path):
    classes = make_classes(["building", "road"])
    arr = _classes_raster(1024, 1100)
    out = write_raster(
        tmp_path / "cog.tif",
        arr,
        UTM,
        TRANSFORM,
        nodata=255,
        colormap=colormap(classes),
        class_names={0: "background", 1: "building", 2: "road"},
        descriptions=["class"],
        output_format="COG",
    )
    assert _files(tmp_path) == ["cog.tif"]
    with rasterio.open(out) as src:
        assert src.driver == "GTiff"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) == [2, 4]  # halved until both sides fit one 512 block
        assert src.block_shapes == [(512, 512)]
        np.testing.assert_array_equal(src.read(1), arr)
        assert src.crs == UTM and src.transform == TRANSFORM and src.nodata == 255
        assert src.colormap(1)[2][:3] == (0xFF, 0xE1, 0x19)
        assert "CLASSES" in src.tags() and src.descriptions == ("class",)


def test_write_raster_cog_of_imagery(tmp_path):
    arr = _scene("float32", (2, 1024, 1024))
    out = write_raster(tmp_path / "img.tif", arr, UTM, TRANSFORM, output_format="COG")
    with rasterio.open(out) as src:
        assert src.overviews(1) == src.overviews(2) == [2]
        overview = src.read(1, out_shape=(512, 512))
    assert abs(float(overview.mean()) - float(arr[0].mean())) < 1.0  # averaged, not sampled


def test_write_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.tif"
    write_raster(path, np.zeros((8, 8), np.uint8), UTM, TRANSFORM)
    with pytest.raises(OutputExistsError, match=r"out\.tif") as err:
        write_raster(path, np.ones((8, 8), np.uint8), UTM, TRANSFORM)
    assert isinstance(err.value, FileExistsError) and "overwrite" in str(err.value)
    with rasterio.open(path) as src:
        assert src.read(1).max() == 0
    write_raster(path, np.ones((8, 8), np.uint8), UTM, TRANSFORM, overwrite=True)
    with rasterio.open(path) as src:
        assert src.read(1).min() == 1
    assert _files(tmp_path) == ["out.tif"]


@pytest.mark.parametrize("fmt", ["GTiff", "COG"])
def test_raster_writer_exception_leaves_nothing(tmp_path, fmt):
    path = tmp_path / "half.tif"
    writer = RasterWriter(
        path, 64, 64, 1, "uint8", UTM, TRANSFORM, WriterOptions(output_format=fmt)
    )
    with pytest.raises(RuntimeError, match="boom"), writer as w:
        w.write(np.ones((32, 64), np.uint8), row=0, col=0)
        raise RuntimeError("boom")
    assert _files(tmp_path) == []


def test_raster_writer_exception_keeps_existing_output(tmp_path):
    path = tmp_path / "keep.tif"
    write_raster(path, np.full((8, 8), 3, np.uint8), UTM, TRANSFORM)
    writer = RasterWriter(path, 8, 8, 1, "uint8", UTM, TRANSFORM, WriterOptions(overwrite=True))
    with pytest.raises(KeyboardInterrupt), writer as w:
        w.write(np.zeros((8, 8), np.uint8), row=0, col=0)
        raise KeyboardInterrupt
    assert _files(tmp_path) == ["keep.tif"]
    with rasterio.open(path) as src:
        assert src.read(1).min() == 3


def test_raster_writer_streams_windows_and_checks_use(tmp_path):
    path = tmp_path / "stream.tif"
    writer = RasterWriter(path, 50, 30, 2, "int16", UTM, TRANSFORM, WriterOptions(nodata=-1))
    with pytest.raises(RuntimeError, match="with-block"):
        writer.write(np.zeros((2, 5, 5), np.int16), 0, 0)
    with writer as w:
        for row in range(0, 30, 10):
            w.write(np.full((2, 10, 50), row, np.int16), row=row, col=0)
        assert not path.exists()  # only renamed at the end
    with rasterio.open(path) as src:
        assert src.read(2)[25, 3] == 20 and src.nodata == -1
    with pytest.raises(InvalidParameterError, match="'GTiff', 'COG'"):
        WriterOptions(output_format="PNG")
    with pytest.raises(InvalidParameterError, match="shape"):
        write_raster(tmp_path / "y.tif", np.zeros(5, np.uint8), UTM, TRANSFORM)


def test_bigtiff_decision_without_writing_4gb():
    assert not needs_bigtiff(1024, 1024, 4, "uint16")
    assert needs_bigtiff(30000, 30000, 4, "uint16")  # 7.2 GB raw
    assert needs_bigtiff(40000, 40000, 1, "float64")
    # just under the threshold, but over it once overviews are counted
    side = int((BIGTIFF_THRESHOLD / 4) ** 0.5)
    assert not needs_bigtiff(side, side, 1, "float32")
    assert needs_bigtiff(side, side, 1, "float32", overviews=True)
    small = _profile(100, 100, 1, "uint8", UTM, TRANSFORM, None)
    big = _profile(30000, 30000, 4, "uint16", UTM, TRANSFORM, 0)
    assert small["BIGTIFF"] == "NO" and big["BIGTIFF"] == "YES"
    assert big["blockxsize"] == big["blockysize"] == 512 and big["tiled"]
    assert big["compress"] == "deflate" and big["predictor"] == 2 and big["interleave"] == "pixel"
    assert _profile(5, 1000, 1, "float32", None, TRANSFORM, None)["blockxsize"] == 16


# ----------------------------------------------------------------------------- atomic_output


def test_atomic_output_success_failure_and_refusal(tmp_path):
    target = tmp_path / "report.json"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}"
    with pytest.raises(OutputExistsError), atomic_output(target):
        pass
    with pytest.raises(ValueError, match="bad"), atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise ValueError("bad")
    assert target.read_text() == "{}"
    assert _files(tmp_path) == ["report.json"]


def _is_model(folder):
    return (folder / "geounet.json").is_file()


def test_atomic_output_folders(tmp_path):
    target = tmp_path / "model"
    for content in ("first", "second"):
        with atomic_output(target, overwrite=True, replaceable=_is_model) as tmp:
            tmp.mkdir()
            (tmp / "geounet.json").write_text(content)
    assert (target / "geounet.json").read_text() == "second"
    assert _files(tmp_path) == ["model"]


def test_overwrite_never_deletes_a_folder_that_is_not_this_output(tmp_path):
    """``--overwrite`` with a user's folder as the output name used to delete the folder and
    everything in it (a class raster or a model saved over ``~/projects``)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "scene.tif").write_text("the user's data")
    for replaceable in (None, _is_model):  # a file output; a model folder's own check
        with (
            pytest.raises(OutputExistsError, match="refusing to delete it"),
            atomic_output(folder, overwrite=True, replaceable=replaceable) as tmp,
        ):
            tmp.write_text("classified")
    assert (folder / "scene.tif").read_text() == "the user's data"
    assert _files(tmp_path) == ["project"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_output(empty, overwrite=True) as tmp:  # an empty folder holds nothing to lose
        tmp.write_text("classified")
    assert empty.read_text() == "classified"


@pytest.mark.parametrize("exc", [OSError, KeyboardInterrupt])
def test_atomic_output_keeps_the_old_folder_when_the_new_cannot_move_in(tmp_path, monkeypatch, exc):
    """Overwriting a folder used to delete the old one first: a failure (or Ctrl-C) while the
    new one was moved in lost both. The old folder must survive, whole, under its name."""
    target = tmp_path / "model"
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "geounet.json").write_text("old")
        (tmp / "model.safetensors").write_text("old weights")
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(src).name.startswith(".model.tmp-"):  # the move of the new folder onto model
            raise exc("interrupted while moving the new folder in")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(raster_write.os, "replace", replace)
    with (
        pytest.raises(exc, match="interrupted"),
        atomic_output(target, overwrite=True, replaceable=_is_model) as tmp,
    ):
        tmp.mkdir()
        (tmp / "geounet.json").write_text("new")
    monkeypatch.undo()
    assert (target / "geounet.json").read_text() == "old"
    assert (target / "model.safetensors").read_text() == "old weights"
    assert _files(tmp_path) == ["model"]  # no temporary or set-aside folder left behind


def test_atomic_output_sidecars_follow_or_go(tmp_path):
    target = tmp_path / "a[1]*.tif"  # glob characters in the name
    stale = tmp_path / "a[1]*.tif.ovr"
    stale.write_text("old overviews")
    target.write_text("old")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("new")
        Path(str(tmp) + ".aux.xml").write_text("<PAMDataset/>")
    assert target.read_text() == "new"
    assert _files(tmp_path) == ["a[1]*.tif", "a[1]*.tif.aux.xml"]
    with pytest.raises(OSError), atomic_output(tmp_path / "b.tif") as tmp:
        tmp.write_text("x")
        Path(str(tmp) + ".aux.xml").write_text("x")
        raise OSError("disk full")
    assert _files(tmp_path) == ["a[1]*.tif", "a[1]*.tif.aux.xml"]


def test_atomic_output_creates_parent_and_needs_content(tmp_path):
    target = tmp_path / "deep" / "er" / "x.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("ok")
    assert target.read_text() == "ok"
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "nothing.txt"):
        pass
    assert not (tmp_path / "nothing.txt").exists()


def test_atomic_output_never_clobbers_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "race.txt"
    with pytest.raises(OutputExistsError), atomic_output(target) as tmp:
        tmp.write_text("mine")
        target.write_text("someone else's")
    assert target.read_text() == "someone else's"
    assert _files(tmp_path) == ["race.txt"]


def test_temporary_names_are_hidden_and_unique(tmp_path):
    a = raster_write._AtomicTarget(tmp_path / "x.tif", overwrite=False)
    with pytest.raises(OutputLockedError, match="another geounet run"):  # a holds the lock
        raster_write._AtomicTarget(tmp_path / "x.tif", overwrite=False)
    a.discard()
    b = raster_write._AtomicTarget(tmp_path / "x.tif", overwrite=False)
    b.discard()
    assert not (tmp_path / ".x.tif.lock").exists()
    assert a.tmp != b.tmp and a.tmp.name.startswith(".x.tmp-") and a.tmp.suffix == ".tif"
    assert os.path.dirname(a.tmp) == str(tmp_path)


@pytest.mark.parametrize("output_format", ["GTiff", "COG"])
def test_deflate_level_is_applied_and_checked(tmp_path, output_format):
    from geounet.io.write import RasterWriter, WriterOptions

    rng = np.random.default_rng(0)
    data = np.clip(rng.normal(128, 40, (2, 600, 600)), 0, 255).astype(np.uint8)
    sizes = {}
    for level in (1, 9):
        opts = WriterOptions(deflate_level=level, output_format=output_format)
        path = tmp_path / f"l{level}.tif"
        with RasterWriter(path, 600, 600, 2, "uint8", CRS.from_epsg(32616),
                          from_origin(0, 600, 1, 1), opts) as w:  # fmt: skip
            w.write(data, 0, 0)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(), data)  # lossless at any level
            assert src.profile["compress"] == "deflate"
        sizes[level] = path.stat().st_size
    assert sizes[1] > sizes[9]  # the level reached the encoder
    for bad in (0, 10):
        with pytest.raises(InvalidParameterError, match="deflate_level"):
            WriterOptions(deflate_level=bad)
