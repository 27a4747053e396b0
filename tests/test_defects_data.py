"""Defects of issue 10 in the data stage: nodata in training vs inference (2), source band
count in the model file (4), label raster leaks and NaN labels (5), repaired vector slivers (6)
and the life of a temporary chip folder (12b)."""

from __future__ import annotations

import gc
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import psutil
import pytest
import rasterio
import shapely
import torch
from rasterio.enums import ColorInterp

from geounet.app.classifier import config_from_data
from geounet.core.classes import make_classes
from geounet.core.errors import BandMismatchError, LabelError, MissingCRSError
from geounet.data.labels.raster import RasterLabels
from geounet.data.labels.vector import VectorLabels
from geounet.data.prepare import GeoData, prepare_data
from geounet.inference.blending import TilePlan
from geounet.inference.classify import _model_bands, classify_raster
from geounet.io.raster import open_raster
from geounet.model.files import CONFIG_FILE, read_config, save_model

RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
TILE = 64


class Recorder(torch.nn.Module):
    """Records every batch the network is fed; predicts background everywhere."""

    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.inputs: list[np.ndarray] = []
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().float().cpu().numpy().copy())
        b, _, h, w = x.shape
        return torch.zeros(b, self.n_classes, h, w) + self.scale


class FirstBand(torch.nn.Module):
    """Class 1 where the first input band, back in raw values, is above 100.5 (pointwise)."""

    def __init__(self, mean: float, std: float, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = std
            self.conv.bias[1] = mean - 100.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def scene(h: int, w: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 240, (bands, h, w)).astype(np.uint8)


def labels(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 1
    return m


def model_for(data: GeoData, network: torch.nn.Module) -> SimpleNamespace:
    config = config_from_data(data, None, {})
    return SimpleNamespace(network=network, config=config, device=torch.device("cpu"))


def fed_by_inference(data: GeoData, path: Path, out: Path) -> np.ndarray:
    """What inference feeds the network at each pixel of ``path`` (NaN where nothing)."""
    net = Recorder(data.n_classes)
    classify_raster(
        model_for(data, net), path, out, tile_size=TILE, overlap=0, blend="none",
        batch_size=1, progress=False,
    )  # fmt: skip
    info = open_raster(path)
    plan = TilePlan.build(info.height, info.width, tile_size=TILE, overlap=0, blend="none")
    tiles = [(i, j) for i in range(len(plan.row_starts)) for j in range(len(plan.col_starts))]
    assert len(net.inputs) == len(tiles)  # every tile has data: the k-th call is the k-th tile
    fed = np.full((data.n_bands, info.height, info.width), np.nan, np.float32)
    for x, (i, j) in zip(net.inputs, tiles):
        reg = plan.region(i, j)
        r0, c0 = max(reg.row, 0), max(reg.col, 0)
        r1 = min(reg.row + plan.tile_h, info.height)
        c1 = min(reg.col + plan.tile_w, info.width)
        fed[:, r0:r1, c0:c1] = x[0, :, r0 - reg.row : r1 - reg.row, c0 - reg.col : c1 - reg.col]
    return fed


def training_items(data: GeoData, source: Path):
    """``(window, image, mask)`` of every chip of ``source`` as the loaders serve them."""
    for ds in (data.train_ds, data.valid_ds):
        for k, rec in enumerate(ds.chips):
            if Path(rec["source"]) == source.resolve():
                x, y = ds[k]
                yield rec["window"], x.numpy(), y.numpy()


def check_same_as_inference(
    data: GeoData, path: Path, invalid: np.ndarray, out: Path
) -> tuple[int, int]:
    """Compare every chip of ``path`` with inference; return (invalid, padding) pixels seen."""
    fed = fed_by_inference(data, path, out)
    h, w = invalid.shape
    n_invalid = n_pad = 0
    for (r, c, size, _), x, y in training_items(data, path):
        hh, ww = min(size, h - r), min(size, w - c)
        bad = invalid[r : r + hh, c : c + ww]
        inside = x[:, :hh, :ww]
        np.testing.assert_allclose(inside, fed[:, r : r + hh, c : c + ww], atol=1e-6)
        assert (inside[:, bad] == 0.0).all()  # the training mean, as inference feeds
        assert (y[:hh, :ww][bad] == 255).all()  # and masked in the loss
        n_invalid += int(bad.sum())
        pad = np.ones((size, size), bool)
        pad[:hh, :ww] = False
        assert (x[:, pad] == 0.0).all() and (y[pad] == 255).all()
        n_pad += int(pad.sum())
    return n_invalid, n_pad


# ---------------------------------------------------------------- defect 2: nodata


def test_alpha_band_pixels_are_fed_as_in_inference(make_raster, tmp_path) -> None:
    arr = scene(128, 128, bands=4)
    arr[3] = 255
    arr[3, 30:50, :] = 0  # a transparent band across the image
    arr[:3, 30:50, :] = 250  # raw values far from the mean
    img = make_raster(arr, colorinterp=RGBA)
    data = prepare_data(
        img, make_raster(labels(128, 128), "l.tif"), classes=["b"], chip_size=32,
        augment=False, min_valid_fraction=0.1, split="random",
    )  # fmt: skip
    n_invalid, _ = check_same_as_inference(data, img, arr[3] == 0, tmp_path / "o.tif")
    assert n_invalid > 0


def test_gdal_mask_band_pixels_are_fed_as_in_inference(make_raster, tmp_path) -> None:
    arr = scene(128, 128)
    img = make_raster(arr)
    valid = np.ones((128, 128), bool)
    valid[:, 70:90] = False
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(img, "r+") as dst:
        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    data = prepare_data(
        img, make_raster(labels(128, 128), "l.tif"), classes=["b"], chip_size=32,
        augment=False, min_valid_fraction=0.1, split="random",
    )  # fmt: skip
    n_invalid, _ = check_same_as_inference(data, img, ~valid, tmp_path / "o.tif")
    assert n_invalid > 0


def test_padding_of_an_image_smaller_than_a_chip(make_raster, tmp_path) -> None:
    arr = scene(40, 50)
    img = make_raster(arr)  # no nodata: only the padding is invalid
    data = prepare_data(
        img, make_raster(labels(40, 50), "l.tif"), classes=["b"], chip_size=64,
        augment=False, min_valid_fraction=0.1, val_fraction=0.0,
    )  # fmt: skip
    assert len(data.train_ds) == 1
    invalid = np.zeros((40, 50), bool)
    n_invalid, n_pad = check_same_as_inference(data, img, invalid, tmp_path / "o.tif")
    assert n_invalid == 0 and n_pad == 64 * 64 - 40 * 50
    x, y = next(iter(data.train_dl))  # the loader serves what the dataset reads
    assert (x[0, :, 40:, :] == 0).all() and (y[0, 40:, :] == 255).all()


def test_each_image_keeps_its_own_nodata(make_raster, tmp_path) -> None:
    a, b = scene(64, 64, seed=1), scene(64, 64, seed=2)
    a[:, :10, :] = 0
    b[:, 40:52, :] = 7  # the second image's nodata value, a valid value in the first
    a[:, 20:24, :] = 7
    img_a = make_raster(a, "a.tif", nodata=0)
    img_b = make_raster(b, "b.tif", nodata=7)
    lab = make_raster(labels(64, 64), "l.tif")
    data = prepare_data(
        [img_a, img_b], lab, classes=["b"], chip_size=32, stride=32, augment=False,
        min_valid_fraction=0.1, split="random",
    )  # fmt: skip
    n_b, _ = check_same_as_inference(data, img_b, np.all(b == 7, axis=0), tmp_path / "out_b.tif")
    n_a, _ = check_same_as_inference(data, img_a, np.all(a == 0, axis=0), tmp_path / "out_a.tif")
    assert n_b == 12 * 64 and n_a == 10 * 64  # the 7s of image a stay valid data
    nodata = {Path(s["image"]).name: s["nodata"] for s in data.manifest["sources"]}
    assert nodata == {"a.tif": 0, "b.tif": 7}


# ---------------------------------------------------------------- defect 4: bands


def train_like(data: GeoData, tmp_path: Path) -> SimpleNamespace:
    """A pointwise model of ``data`` saved and loaded back (as after training)."""
    net = FirstBand(data.stats["mean"][0], data.stats["std"][0], data.n_bands)
    model = model_for(data, net)
    save_model(tmp_path / "m", net, model.config)
    return SimpleNamespace(network=net, config=read_config(tmp_path / "m"), device=model.device)


def classified(model, path: Path, out: Path) -> np.ndarray:
    classify_raster(model, path, out, tile_size=TILE, overlap=16, progress=False)
    with rasterio.open(out) as src:
        return src.read(1)


def test_band_subset_model_reads_the_image_it_was_trained_on(make_raster, tmp_path) -> None:
    arr = scene(96, 96, bands=4)
    img = make_raster(arr)
    lab = make_raster(labels(96, 96), "l.tif")
    for bands in ([1, 2, 3], [3, 2, 1]):
        data = prepare_data(img, lab, classes=["b"], chip_size=32, bands=bands)
        model = train_like(data, tmp_path / str(bands[0]))
        assert model.config.source_band_count == 4
        got = classified(model, img, tmp_path / f"o{bands[0]}.tif")
        np.testing.assert_array_equal(got, (arr[bands[0] - 1] > 100).astype(np.uint8))


def test_alpha_band_first_keeps_band_indices(make_raster, tmp_path) -> None:
    arr = scene(96, 96, bands=4)
    arr[0] = 255
    arr[0, :, :20] = 0
    interp = [ColorInterp.alpha, ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    img = make_raster(arr, colorinterp=interp)
    data = prepare_data(img, make_raster(labels(96, 96), "l.tif"), classes=["b"], chip_size=32)
    assert data.bands == [2, 3, 4]
    model = train_like(data, tmp_path)
    got = classified(model, img, tmp_path / "o.tif")
    want = (arr[1] > 100).astype(np.uint8)
    want[:, :20] = 255
    np.testing.assert_array_equal(got, want)
    # the same bands in another file, alpha last, read the same data bands
    moved = make_raster(np.concatenate([arr[1:], arr[:1]]), "moved.tif", colorinterp=RGBA)
    np.testing.assert_array_equal(classified(model, moved, tmp_path / "o2.tif"), want)


def test_model_file_without_source_band_count_still_loads(make_raster, tmp_path) -> None:
    arr = scene(64, 64)
    img = make_raster(arr)
    data = prepare_data(img, make_raster(labels(64, 64), "l.tif"), classes=["b"], chip_size=32)
    model = train_like(data, tmp_path)
    path = tmp_path / "m" / CONFIG_FILE
    meta = json.loads(path.read_text())
    assert meta["source_band_count"] == 3
    for key in ("source_band_count", "source_alpha_band"):
        meta.pop(key)
    path.write_text(json.dumps(meta))
    old = read_config(tmp_path / "m")
    assert old.source_band_count is None
    model.config = old
    got = classified(model, img, tmp_path / "o.tif")
    np.testing.assert_array_equal(got, (arr[0] > 100).astype(np.uint8))


# ---------------------------------------------------------------- defect 5: label rasters


def open_paths() -> list[str]:
    return [f.path for f in psutil.Process().open_files()]


@pytest.mark.parametrize("case", ["colours_without_palette", "rgb_as_values", "no_crs"])
def test_label_raster_is_closed_when_validation_fails(make_raster, case) -> None:
    image = open_raster(make_raster(scene(32, 32), "img.tif"))
    if case == "colours_without_palette":
        lab, kw, err = make_raster(labels(32, 32), "l.tif"), {"colors": True}, LabelError
    elif case == "rgb_as_values":
        lab, kw, err = make_raster(scene(32, 32), "l.tif"), {"colors": False}, LabelError
    else:
        lab, kw, err = make_raster(labels(16, 16), "l.tif", crs=None), {}, MissingCRSError
    with pytest.raises(err) as info:
        RasterLabels(lab, image, **kw)
    # closed at once, not whenever the traceback (which holds the object) is collected
    assert info.traceback and str(lab) not in open_paths()


def test_nan_label_without_nodata_is_no_label(make_raster) -> None:
    img = make_raster(scene(64, 64), "img.tif")
    lab = labels(64, 64).astype(np.float32)
    lab[40:50, 10:30] = np.nan
    path = make_raster(lab, "l.tif")
    src = RasterLabels(path, open_raster(img))
    try:
        assert src.found_values() == [0, 1]
        src.bind(make_classes({1: "b"}))
        got = src.read(0, 0, 64, 64)
    finally:
        src.close()
    want = labels(64, 64)
    want[40:50, 10:30] = 255
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- defect 6: vector slivers


def test_repaired_bowtie_building_burns_no_line_sliver(make_raster, tmp_path) -> None:
    img = open_raster(make_raster(scene(80, 80), "img.tif"))  # 0.5 m pixels, 40 m x 40 m
    x0, y0 = 500000.0, 3700000.0
    # a bow-tie (two triangles meeting at the centre) with a 10 m spike going up-left:
    # make_valid gives a GeometryCollection(MultiPolygon, LineString)
    ring = [(10, -30), (30, -10), (30, -30), (10, -10), (10, -30), (10, -35), (10, -30)]
    bowtie = shapely.Polygon([(x0 + x, y0 + y) for x, y in ring])
    assert shapely.get_type_id(shapely.make_valid(bowtie)) == 7
    path = tmp_path / "buildings.gpkg"
    gpd.GeoDataFrame(geometry=[bowtie], crs=img.crs).to_file(path)
    src = VectorLabels(path, img, line_width_m=4.0)
    src.bind(make_classes({1: "building"}))
    got = src.read(0, 0, 80, 80)
    assert got[60:70, 16:24].sum() == 0  # the spike (y -30..-35 m, x 10 m) is not burnt
    assert got[40, 30] == 1 and got[40, 50] == 1  # the triangles are (left and right)
    assert abs(int(got.sum()) - 800) < 50  # two triangles of 100 m2 (400 px) each


# ---------------------------------------------------------------- defect 12b: temp folder


def test_temporary_chip_folder_lives_as_long_as_its_loader(make_raster) -> None:
    img, lab = make_raster(scene(64, 64)), make_raster(labels(64, 64), "l.tif")
    dl = prepare_data(img, lab, classes=["b"], chip_size=32, batch_size=2).train_dl
    gc.collect()
    folder = dl.dataset.chip_dir
    assert folder.is_dir()
    x, y = next(iter(dl))
    assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32)
    copy = pickle.loads(pickle.dumps(dl.dataset))  # what spawned workers get
    assert len(copy) == len(dl.dataset) and copy.owner is None
    del copy
    gc.collect()
    assert folder.is_dir()  # a worker's copy does not own the folder
    del dl
    gc.collect()
    assert not folder.exists()


@pytest.mark.parametrize(
    ("trained", "alpha", "bands", "image", "image_alpha", "want"),
    [
        (4, None, [1, 2, 3], 4, None, [1, 2, 3]),  # a subset of the same kind of image
        (4, None, [3, 2, 1], 4, None, [3, 2, 1]),
        (4, None, [1, 2, 3], 3, None, [1, 2, 3]),  # a subset the input has
        (4, None, [1, 2, 4], 3, None, None),  # band 4 is not there
        (3, None, [1, 2, 3], 4, None, None),  # every band of 3-band images, given 4
        (3, None, [3, 2, 1], 4, None, None),  # the same, whatever the order
        (4, 4, [1, 2, 3], 3, None, [1, 2, 3]),  # RGBA-trained on RGB
        (4, 1, [2, 3, 4], 4, 4, [1, 2, 3]),  # alpha first in training, last in the input
        (4, 4, [1, 2, 3, 4], 4, 4, [1, 2, 3, 4]),  # the alpha band chosen as an input band
    ],
)
def test_model_bands_compare_like_with_like(
    make_raster, trained, alpha, bands, image, image_alpha, want
) -> None:
    interp = [ColorInterp.gray] * image
    if image_alpha:
        interp[image_alpha - 1] = ColorInterp.alpha
    info = open_raster(make_raster(scene(8, 8, bands=image), colorinterp=interp))
    config = SimpleNamespace(
        bands=bands, in_channels=len(bands), band_names=[], source_band_count=trained,
        source_alpha_band=alpha,
    )  # fmt: skip
    if want is None:
        with pytest.raises(BandMismatchError, match=f"{image} data band.*images with"):
            _model_bands(info, config)
    else:
        assert _model_bands(info, config) == want


# ---------------------------------------------------------------- rotated and sheared grids


@pytest.mark.parametrize("angle", [30.0, 135.0])
def test_rotated_grid_keeps_every_label_of_a_window(tmp_path, angle) -> None:
    """A rotated (or sheared) image grid: the labels of a window were looked up in the box of
    two of its corners only, so most of a chip's buildings were dropped from its mask."""
    from affine import Affine
    from rasterio import features

    transform = (
        Affine.translation(500000, 3700000) @ Affine.rotation(angle) @ Affine.scale(0.5, -0.5)
    )
    path = tmp_path / "rotated.tif"
    profile = dict(driver="GTiff", width=96, height=96, count=3, dtype="uint8", crs="EPSG:32616")
    with rasterio.open(path, "w", transform=transform, **profile) as dst:
        dst.write(scene(96, 96))
    img = open_raster(path)
    # buildings: 3 x 3 m squares on a grid of pixel positions across the whole image
    centres = [transform * (c, r) for r in range(8, 96, 16) for c in range(8, 96, 16)]
    squares = [shapely.box(x - 1.5, y - 1.5, x + 1.5, y + 1.5) for x, y in centres]
    gpkg = tmp_path / "buildings.gpkg"
    gpd.GeoDataFrame(geometry=squares, crs=img.crs).to_file(gpkg)
    src = VectorLabels(gpkg, img)
    src.bind(make_classes({1: "building"}))
    whole = features.rasterize([(g, 1) for g in squares], out_shape=(96, 96), transform=transform)
    assert whole.sum() > 36 * 20  # every square burnt
    for row in (0, 32, 64):
        for col in (0, 32, 64):
            got = src.read(row, col, 32, 32)
            np.testing.assert_array_equal(got, whole[row : row + 32, col : col + 32])
