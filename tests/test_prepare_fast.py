"""The fast chipping path (row bands, labels per band, threaded writes) changes no result.

Each test prepares a small deterministic scene with :func:`prepare_data` and compares every
written chip with a reference written here, independently, the way chips were made before:
one window read per chip (plain rasterio), its validity from the dataset mask, its labels read
for that chip's window alone. Pixel values, masks, labels, georeferencing and the chip list
(kept, dropped, split gap) must be identical.
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from conftest import UTM
from rasterio import windows
from rasterio.transform import from_origin
from rasterio.windows import Window

from geounet.core.classes import parse_classes
from geounet.data.chipping import chip_grid
from geounet.data.labels import open_labels, resolve_classes
from geounet.data.prepare import prepare_data
from geounet.io.raster import band_stats, open_raster
from geounet.io.stats import StatsAccumulator


def write_scene(path, h, w, res, origin, *, mask_band=False):
    """A 4-band uint16 scene: smooth fields, noise, a nodata (0) corner or a GDAL mask band."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([1000 + 7 * b + (xx * (b + 1) + yy * 3) % 500 for b in range(4)])
    data = (data + rng.integers(0, 50, data.shape)).astype(np.uint16)
    corner = (yy + xx) < 120
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 4, "dtype": "uint16", "crs": UTM,
        "transform": from_origin(*origin, res, res), "tiled": True, "blockxsize": 64,
        "blockysize": 64,
    }  # fmt: skip
    if not mask_band:
        data[:, corner] = 0
        profile["nodata"] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("blue", "green", "red", "nir")
        if mask_band:
            dst.write_mask(np.where(corner, 0, 255).astype(np.uint8))
    return path


def write_vectors(path, h, w, res, origin):
    """Buildings (class 1, some overlapping) and a road grid (class 2, lines)."""
    rng = np.random.default_rng(5)
    x0, y0 = origin
    n = 60
    cx = x0 + rng.uniform(0, w * res, n)
    cy = y0 - rng.uniform(0, h * res, n)
    half = rng.uniform(1.5, 9.0, n) * res * 2
    boxes = list(shapely.box(cx - half, cy - half, cx + half, cy + half))
    lines = [shapely.LineString([(x0, y0 - t), (x0 + w * res, y0 - t * 0.8)]) for t in (30, 90)]
    lines.append(shapely.LineString([(x0 + 40, y0), (x0 + 55, y0 - h * res)]))
    cls = [1] * len(boxes) + [2] * len(lines)
    gpd.GeoDataFrame({"class": cls}, geometry=boxes + lines, crs=UTM).to_file(path, driver="GPKG")
    return path


def reference(image, labels, classes, size, stride, split, min_valid=0.5, label_field=None):
    """Chips made one window at a time: ``{(row, col): (data, valid, labels)}`` and drops."""
    info = open_raster(image)
    # the default of prepare_data: touching building polygons parted by a gap
    src_labels = open_labels(labels, info, label_field=label_field, separate="building")
    src_labels.bind(resolve_classes(parse_classes(classes), [src_labels]))
    grid = chip_grid(info.height, info.width, size, stride, split=split, val_fraction=0.2)
    kept, dropped = {}, 0
    with rasterio.open(image) as src:
        for row, col, _ in grid:
            win = Window(col, row, size, size)
            data = src.read(window=win)
            valid = src.dataset_mask(window=win) > 0
            lab = src_labels.read(row, col, size, size)
            lab[~valid] = 255
            n_known = int(np.count_nonzero(lab != 255))
            if n_known == 0 or n_known < math.ceil(min_valid * size * size):
                dropped += 1
                continue
            kept[(row, col)] = (data, valid, lab, windows.transform(win, src.transform))
    src_labels.close()
    return kept, dropped


def check_same(folder, kept, dropped, classes_n, image):
    """Every written chip equals its reference; the chip list is the reference's; the
    statistics (gathered in the chipping pass) are those of a separate pass over the image."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stats"] == band_stats([image]).to_dict()
    assert manifest["dropped_chips"]["low_valid_fraction"] == dropped
    assert len(manifest["chips"]) + manifest["dropped_chips"]["split_gap"] == len(kept)
    assert manifest["chip_counts"]["valid"] > 0
    for entry in manifest["chips"]:
        row, col, _, _ = entry["window"]
        data, valid, lab, transform = kept[(row, col)]
        with rasterio.open(folder / entry["image"]) as src:
            np.testing.assert_array_equal(src.read(), data)
            np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
            assert src.transform == transform and src.crs == UTM
            assert src.descriptions == ("blue", "green", "red", "nir")
        with rasterio.open(folder / entry["label"]) as src:
            np.testing.assert_array_equal(src.read(1), lab)
            assert src.nodata == 255 and src.transform == transform
            assert len(json.loads(src.tags()["CLASSES"])) == classes_n
            assert src.colormap(1)[1][:3] != (0, 0, 0)


@pytest.mark.parametrize(
    ("res", "origin"),
    [(0.5, (500000.0, 3700000.0)), (0.3, (500123.37, 3700456.91))],
    ids=["dyadic-grid", "odd-grid"],
)
def test_vector_labels_overlapping_chips_identical_to_per_chip(tmp_path, res, origin) -> None:
    h, w = 333, 401
    image = write_scene(tmp_path / "img.tif", h, w, res, origin)
    labels = write_vectors(tmp_path / "lab.gpkg", h, w, res, origin)
    classes = {1: "building", 2: "road"}
    out = tmp_path / "chips"
    prepare_data(
        image, labels, classes=classes, label_field="class", chip_size=64, stride=48,
        out_dir=out, min_valid_fraction=0.3,
    )  # fmt: skip
    kept, dropped = reference(image, labels, classes, 64, 48, "spatial", 0.3, "class")
    assert dropped > 0  # the nodata corner drops chips: the drop rule is exercised
    check_same(out, kept, dropped, 3, image)


def test_raster_labels_and_mask_band_identical_to_per_chip(tmp_path) -> None:
    h, w = 400, 260
    origin = (500000.0, 3700000.0)
    image = write_scene(tmp_path / "img.tif", h, w, 0.5, origin, mask_band=True)
    yy, xx = np.mgrid[0:h, 0:w]
    lab = (((yy // 37) + (xx // 23)) % 3).astype(np.uint8)
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "uint8", "crs": UTM,
        "transform": from_origin(*origin, 0.5, 0.5),
    }  # fmt: skip
    with rasterio.open(tmp_path / "lab.tif", "w", **profile) as dst:
        dst.write(lab[None])
    out = tmp_path / "chips"
    classes = {1: "a", 2: "b"}
    prepare_data(
        image, tmp_path / "lab.tif", classes=classes, chip_size=64, stride=64, split="rows",
        out_dir=out,
    )  # fmt: skip
    kept, dropped = reference(image, tmp_path / "lab.tif", classes, 64, 64, "rows")
    check_same(out, kept, dropped, 3, image)
    masked = [k for k, (_, valid, _, _) in kept.items() if not valid.all()]
    assert masked  # chips of the masked corner carry a mask band


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
def test_exact_histogram_moments_match_numpy(dtype) -> None:
    rng = np.random.default_rng(1)
    hi = 250 if dtype == "uint8" else 3000
    lo = -2000 if dtype == "int16" else 0
    values = rng.integers(lo, hi, (3, 50_000)).astype(dtype)
    acc = StatsAccumulator(3, dtype)
    for i in range(0, values.shape[1], 7_001):
        acc.add(values[:, i : i + 7_001])
    result = acc.result()
    x = values.astype(np.float64)
    np.testing.assert_allclose(result.mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(result.std, x.std(axis=1), rtol=1e-13)
    assert result.p2 == [float(v) for v in np.percentile(x, 2, axis=1)]
    assert result.p98 == [float(v) for v in np.percentile(x, 98, axis=1)]
    assert result.count == values.shape[1]


def test_statistics_of_rows_no_chip_covers(tmp_path) -> None:
    """A part too short to chip (the bottom 60 rows here) still counts in the statistics."""
    image = write_scene(tmp_path / "img.tif", 300, 200, 0.5, (500000.0, 3700000.0))
    labels = write_vectors(tmp_path / "lab.gpkg", 300, 200, 0.5, (500000.0, 3700000.0))
    with pytest.warns(UserWarning, match="no validation chip"):
        data = prepare_data(image, labels, classes={1: "b", 2: "r"}, label_field="class",
                            chip_size=64, stride=48, split="rows")  # fmt: skip
    assert max(c["window"][0] for c in data.manifest["chips"]) + 64 == 240
    assert data.manifest["stats"] == band_stats([image]).to_dict()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_chip_that_cannot_be_written_is_one_clear_error(tmp_path, workers) -> None:
    """A failed chip write (here: no images/ folder) raises OutputNotWritableError naming it."""
    from affine import Affine

    from geounet.core.classes import make_classes
    from geounet.core.errors import OutputNotWritableError
    from geounet.data.chip_files import ChipWriter

    data, lab = np.ones((2, 32, 32), np.uint16), np.zeros((32, 32), np.uint8)
    writer = ChipWriter(tmp_path, make_classes({1: "a"}), ["b1", "b2"], workers=workers)
    valid, tr = np.ones((32, 32), bool), Affine(1, 0, 0, 0, -1, 0)
    with pytest.raises(OutputNotWritableError, match=r"images/c\.tif"), writer as w:
        w.submit("c.tif", data, valid, lab, UTM, tr, 0)


def test_augmentation_options_reach_the_training_chips_and_the_refit(tmp_path) -> None:
    """``augment`` takes a mapping of options; a bad one fails before anything is chipped."""
    from geounet.app.fitting import all_chips_loader
    from geounet.core.errors import InvalidParameterError
    from geounet.data.augment import AugmentOptions

    image = write_scene(tmp_path / "img.tif", 256, 192, 0.5, (500000.0, 3700000.0))
    labels = write_vectors(tmp_path / "lab.gpkg", 256, 192, 0.5, (500000.0, 3700000.0))
    kw = {"classes": {1: "b", 2: "r"}, "label_field": "class", "chip_size": 64}
    with pytest.raises(InvalidParameterError, match="unknown augmentation option"):
        prepare_data(image, labels, augment={"grey": 1.0}, out_dir=tmp_path / "bad", **kw)
    assert not (tmp_path / "bad").exists()
    data = prepare_data(image, labels, augment={"grayscale": 1.0, "p_photometric": 0.0}, **kw)
    wanted = AugmentOptions(grayscale=1.0, p_photometric=0.0)
    assert data.train_ds.augment == wanted and data.valid_ds.augment is None
    x, _ = data.train_ds[0]
    assert torch.allclose(x[0], x[3])  # every band the same: the colour was taken
    refit = all_chips_loader(data).dataset.datasets
    assert [d.augment for d in refit] == [wanted, wanted]
    assert prepare_data(image, labels, augment=False, **kw).train_ds.augment is None
