"""Tiled, streamed inference: exact to the pixel with pointwise models, seamless otherwise."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geounet.core.classes import make_classes
from geounet.core.errors import (
    BandMismatchError,
    InvalidParameterError,
    MissingCRSError,
    ModelFileError,
    OutputExistsError,
)
from geounet.inference.blending import RowAccumulator, TilePlan
from geounet.inference.classify import (
    classify_raster,
    classify_rows,
    classify_with_options,
    predict_array,
)
from geounet.inference.engine import run_network
from geounet.inference.engines import CPU_TILES_PER_CALL
from geounet.inference.options import ClassifyOptions
from geounet.model.files import ModelConfig

MEAN, STD = 100.0, 50.0


class Threshold(torch.nn.Module):
    """Class 1 where band 1 > 100.5 (raw), with logits far from a tie: a pointwise model."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = STD  # logit1 = raw - 100 - 0.5
            self.conv.bias[1] = -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Smooth(torch.nn.Module):
    """Two fixed 3x3 convolutions (receptive field 5): not pointwise."""

    def __init__(self, in_channels: int = 3, n_classes: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, n_classes, 3, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class Counting(torch.nn.Module):
    """Counts forward calls; raises on call number ``fail_on`` when given."""

    def __init__(self, inner: torch.nn.Module, fail_on: int | None = None) -> None:
        super().__init__()
        self.inner, self.calls, self.fail_on = inner, 0, fail_on
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.shapes.append(tuple(x.shape))
        if self.fail_on is not None and self.calls >= self.fail_on:
            raise RuntimeError("network failed on purpose")
        return self.inner(x)


def make_model(network=None, n_classes=2, bands=3, gsd=0.5, p98=250.0, dtype="uint8"):
    names = {i: f"class{i}" for i in range(1, n_classes)}
    config = ModelConfig(
        arch="unet",
        backbone=None,
        in_channels=bands,
        classes=make_classes(names),
        bands=list(range(1, bands + 1)),
        band_names=[f"b{i}" for i in range(bands)],
        stats={"mean": [MEAN] * bands, "std": [STD] * bands, "p2": [0.0] * bands,
               "p98": [p98] * bands},
        chip_size=256,
        gsd_m=gsd,
        source_dtype=dtype,
    )  # fmt: skip
    net = network if network is not None else Threshold(bands)
    return SimpleNamespace(network=net, config=config, device=torch.device("cpu"))


def image(h, w, bands=3, seed=0):
    return np.random.default_rng(seed).integers(1, 255, (bands, h, w)).astype(np.uint8)


def expected(arr):
    return (arr[0].astype(np.int32) > 100).astype(np.uint8)


def read(path, band=1):
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


def whole_forward(model, arr, halo):
    """One forward over the whole (reflect-padded) image, the reference for tiled results."""
    x = (arr.astype(np.float32) - MEAN) / STD
    x = np.pad(x, ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
    with torch.inference_mode():
        logits = model.network(torch.from_numpy(x[None]))[0].numpy()
    return logits[:, halo:-halo, halo:-halo].argmax(0).astype(np.uint8)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("tile", "overlap", "blend"),
    [(128, 32, "spline"), (64, 16, "linear"), (128, 0, "none"), (96, 48, "none"),
     (256, 64, "spline"), (64, 0, "spline")],
)  # fmt: skip
def test_pointwise_model_is_exact_to_the_pixel(make_raster, tmp_path, tile, overlap, blend):
    arr = image(300, 410)
    src = make_raster(arr)
    out = classify_raster(
        make_model(), src, tmp_path / "out.tif", tile_size=tile, overlap=overlap, blend=blend,
        batch_size=3, progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(read(out), expected(arr))


@pytest.mark.parametrize(("h", "w"), [(40, 70), (70, 40), (1, 90), (33, 1000), (700, 20)])
def test_tiny_and_thin_rasters(make_raster, tmp_path, h, w):
    arr = image(h, w, seed=h + w)
    out = classify_raster(make_model(), make_raster(arr), tmp_path / "o.tif", progress=False)
    got = read(out)
    assert got.shape == (h, w)
    np.testing.assert_array_equal(got, expected(arr))


def test_tiny_raster_gets_a_small_tile_not_zero_padding():
    plan = TilePlan.build(40, 70, tile_size=512, overlap=64, blend="spline")
    assert (plan.tile_h, plan.tile_w) == (128, 160)  # padded 104 x 134, rounded up to 32
    assert plan.n_tiles == 1


def test_probabilities_match_a_whole_array_softmax():
    arr = image(150, 230)
    classes, probs = predict_array(make_model(), arr, ClassifyOptions(tile_size=64, overlap=16))
    x = torch.from_numpy((arr.astype(np.float32) - MEAN) / STD)[None]
    ref = torch.softmax(make_model().network(x), dim=1)[0].detach().numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_array_equal(classes, expected(arr))


def test_non_pointwise_model_tiled_equals_whole_image(make_raster, tmp_path):
    arr = image(300, 330, seed=3)
    model = make_model(Smooth(), n_classes=3)
    out = classify_raster(
        model, make_raster(arr), tmp_path / "o.tif", tile_size=96, overlap=32, progress=False
    )
    plan = TilePlan.build(300, 330, tile_size=96, overlap=32, blend="spline")
    agree = (read(out) == whole_forward(model, arr, plan.halo)).mean()
    assert agree >= 0.999


@pytest.mark.parametrize("blend", ["spline", "linear", "none"])
@pytest.mark.parametrize("tta", [None, "rot180", "flips", "dihedral"])
def test_every_blend_and_tta_mode_is_exact_with_a_pointwise_model(
    make_raster, tmp_path, tta, blend
):
    arr = image(120, 200)
    model = make_model(Counting(Threshold()))
    out = classify_raster(
        model, make_raster(arr), tmp_path / "o.tif", tile_size=64, overlap=16, blend=blend,
        tta=tta, batch_size=100, progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(read(out), expected(arr))
    n_versions = {None: 1, "rot180": 2, "flips": 4, "dihedral": 8}[tta]
    # on the CPU one tile per network call (CPU_TILES_PER_CALL), every version of every tile
    plan = TilePlan.build(*arr.shape[1:], tile_size=64, overlap=16, blend=blend)
    tiles = len(plan.row_starts) * len(plan.col_starts)
    assert model.network.calls == n_versions * tiles
    assert {shape[0] for shape in model.network.shapes} == {CPU_TILES_PER_CALL}


@pytest.mark.parametrize("tta", ["rot180", "flips", "dihedral"])
def test_tta_on_a_non_square_tile(make_raster, tmp_path, tta):
    arr = image(40, 70, seed=9)
    model = make_model(Counting(Threshold()))
    out = classify_raster(model, make_raster(arr), tmp_path / "o.tif", tta=tta, progress=False)
    np.testing.assert_array_equal(read(out), expected(arr))
    assert {s[-2:] for s in model.network.shapes} >= {(128, 160)}
    if tta == "dihedral":  # transposed versions run as 160 x 128
        assert (160, 128) in {s[-2:] for s in model.network.shapes}


def test_run_network_tta_undoes_its_transforms():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 1)  # pointwise: every transform, undone, gives the same map
    model = SimpleNamespace(network=net, device="cpu")
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 96)).astype(np.float32)
    plain = run_network(model, x)
    assert plain.shape == (2, 4, 64, 96)
    np.testing.assert_allclose(plain.sum(1), 1.0, atol=1e-5)
    for tta in ("rot180", "flips", "dihedral"):
        np.testing.assert_allclose(run_network(model, x, tta), plain, atol=1e-5)


def test_classify_rows_equals_the_same_rows_of_the_whole_run(make_raster, tmp_path):
    arr = image(400, 250, seed=5)
    model = make_model(Smooth(), n_classes=3)
    src = make_raster(arr)
    kw = {"tile_size": 96, "overlap": 32}
    whole = read(classify_raster(model, src, tmp_path / "o.tif", progress=False, **kw))
    opts = ClassifyOptions(progress=False, **kw)
    parts = [classify_rows(model, src, a, b, opts)[0] for a, b in [(0, 77), (77, 301), (301, 400)]]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_predict_array_marks_invalid_pixels():
    arr = image(90, 120)
    valid = np.ones((90, 120), bool)
    valid[10:20, 30:50] = False
    opts = ClassifyOptions(tile_size=64, overlap=16)
    classes, probs = predict_array(make_model(), arr, opts, valid=valid)
    assert (classes[~valid] == 255).all()
    np.testing.assert_array_equal(classes[valid], expected(arr)[valid])
    assert (probs[:, ~valid] == 0).all()


# ----------------------------------------------------------------------------- georeferencing


def test_output_keeps_grid_and_has_colours_and_class_names(make_raster, tmp_path):
    arr = image(260, 300)
    src = make_raster(arr, res=0.5, origin=(431000.0, 3911000.0))
    model = make_model(n_classes=3, network=Smooth())
    out = classify_raster(model, src, tmp_path / "o.tif", tile_size=128, progress=False)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height) == (a.crs, a.transform, a.width, a.height)
        assert b.count == 1 and b.dtypes[0] == "uint8" and b.nodata == 255
        cmap = b.colormap(1)
        tags = b.tags()
    assert cmap[1][:3] == (0xE6, 0x19, 0x4B)
    assert json.loads(tags["CLASSES"]) == {"0": "background", "1": "class1", "2": "class2"}
    assert [c["name"] for c in json.loads(tags["GEOUNET_CLASSES"])][1] == "class1"


def test_cog_output_is_a_valid_cog_with_mode_overviews(make_raster, tmp_path):
    arr = image(600, 700)
    net = torch.nn.Conv2d(3, 5, 1)  # pointwise: class 4 where band 1 > 100.5, else class 0
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, -50.0, -50.0, -50.0, -0.5]))
        net.weight[4, 0] = STD
    out = classify_raster(
        make_model(net, n_classes=5), make_raster(arr), tmp_path / "o.tif", tile_size=256,
        output_format="COG", progress=False,
    )  # fmt: skip
    with rasterio.open(out) as b:
        assert b.driver == "GTiff" and b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert b.overviews(1) == [2]
        assert b.block_shapes[0] == (512, 512)
        assert b.colormap(1)[4][:3] == (67, 99, 216)  # the palette's fifth colour
        assert json.loads(b.tags()["CLASSES"])["4"] == "class4"
        full = b.read(1)
    with rasterio.open(out, overview_level=0) as o:
        overview = o.read(1)
    np.testing.assert_array_equal(full, 4 * expected(arr))
    votes = full.reshape(300, 2, 350, 2).astype(int).sum((1, 3)) // 4  # count of class 4
    assert set(np.unique(overview)) == {0, 4}  # averaging would give 1, 2 or 3 here
    np.testing.assert_array_equal(overview[votes >= 3], 4)  # the mode of each 2 x 2 block
    np.testing.assert_array_equal(overview[votes <= 1], 0)
    head = out.read_bytes()[:1000]  # GDAL's COG "ghost" header, untouched since written
    assert b"LAYOUT=IFDS_BEFORE_DATA" in head and b"KNOWN_INCOMPATIBLE_EDITION=NO" in head
    outputs = sorted(p.name for p in tmp_path.iterdir() if p.name != "img.tif")
    assert outputs == ["o.tif", "o_probabilities.tif"]  # the probabilities beside it, a COG too
    with rasterio.open(tmp_path / "o_probabilities.tif") as p:
        assert p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and p.count == 5


def test_probabilities_raster(make_raster, tmp_path):
    arr = image(130, 170)
    model = make_model(Smooth(), n_classes=3)
    src = make_raster(arr)
    out = classify_raster(
        model, src, tmp_path / "o.tif", tile_size=64, overlap=16, progress=False,
        probabilities=tmp_path / "p.tif",
    )  # fmt: skip
    _, probs = predict_array(model, arr, ClassifyOptions(tile_size=64, overlap=16))
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(out) as o:
        assert p.count == 3 and p.dtypes[0] == "uint8"
        assert p.descriptions == ("background", "class1", "class2")
        assert (p.crs, p.transform) == (o.crs, o.transform)
        got = p.read()
    assert np.abs(got.astype(int) - np.rint(probs * 255)).max() <= 1
    assert np.abs(got.sum(0).astype(int) - 255).max() <= 2


def test_probabilities_are_written_beside_the_class_raster_by_default(make_raster, tmp_path):
    """``classify(image, out)`` alone leaves what ``vectorize(out)`` needs for its filters."""
    from geounet.inference.options import probabilities_path
    from geounet.vectorizing.confidence import PROBABILITIES_TAG, tagged_probabilities

    model, src = make_model(Smooth(), n_classes=3), make_raster(image(130, 170))
    opts = {"tile_size": 64, "overlap": 16, "progress": False}
    out = classify_raster(model, src, tmp_path / "scene_classified.tif", **opts)
    side = tmp_path / "scene_classified_probabilities.tif"
    assert probabilities_path(out) == side
    with rasterio.open(out) as o, rasterio.open(side) as p:
        assert o.tags()[PROBABILITIES_TAG] == side.name  # relative: the pair can be moved
        assert p.count == 3 and p.descriptions == ("background", "class1", "class2")
        assert p.profile["compress"] == "deflate" and (p.crs, p.transform) == (o.crs, o.transform)
        assert tagged_probabilities(out, o.tags()[PROBABILITIES_TAG]) == side
    explicit = tmp_path / "p.tif"
    classify_raster(model, src, tmp_path / "e.tif", probabilities=explicit, **opts)
    with rasterio.open(side) as a, rasterio.open(explicit) as b:
        np.testing.assert_array_equal(a.read(), b.read())  # the same raster either way
    bare = classify_raster(model, src, tmp_path / "bare.tif", probabilities=False, **opts)
    assert not probabilities_path(bare).exists()
    with rasterio.open(bare) as o:
        assert PROBABILITIES_TAG not in o.tags()
    stale = tmp_path / "new_probabilities.tif"
    stale.write_bytes(b"x")  # left from another run: refused before any work
    with pytest.raises(OutputExistsError, match=r"new_probabilities\.tif.*--no-probabilities"):
        classify_raster(model, src, tmp_path / "new.tif", **opts)
    assert not (tmp_path / "new.tif").exists()


def test_input_without_crs_is_refused_unless_allowed(make_raster, tmp_path):
    arr = image(50, 60)
    src = make_raster(arr, crs=None)
    with pytest.raises(MissingCRSError):
        classify_raster(make_model(), src, tmp_path / "o.tif", progress=False)
    out = classify_raster(make_model(), src, tmp_path / "o.tif", progress=False, allow_no_crs=True)
    np.testing.assert_array_equal(read(out), expected(arr))


# ----------------------------------------------------------------------------- nodata


def test_nodata_stays_nodata_and_empty_tiles_are_skipped(make_raster, tmp_path):
    arr = image(256, 1000)
    arr[:, :, :600] = 0  # left 60 % nodata
    counting = Counting(Threshold())
    model = make_model(counting)
    out = classify_raster(
        model, make_raster(arr, nodata=0), tmp_path / "o.tif", tile_size=128, overlap=32,
        batch_size=1, progress=False,
    )  # fmt: skip
    got = read(out)
    assert (got[:, :600] == 255).all()
    np.testing.assert_array_equal(got[:, 600:], expected(arr)[:, 600:])
    # By hand: a 16 px mirrored halo makes the raster 288 x 1032; tiles of 128 every 96 px,
    # the last one flush with the border, start at rows 0, 96, 160 and at columns 0, 96, ...,
    # 864, 904 (3 x 11 = 33 tiles). Data begins at padded column 616, so only the 5 tile
    # columns starting at 576, 672, 768, 864 and 904 hold data: 3 x 5 = 15 network calls.
    assert counting.calls == 15


def test_alpha_band_is_a_mask(make_raster, tmp_path):
    arr = image(100, 140)
    alpha = np.full((1, 100, 140), 255, np.uint8)
    alpha[0, 40:60] = 0
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    src = make_raster(np.concatenate([arr, alpha]), colorinterp=interp)
    got = read(classify_raster(make_model(), src, tmp_path / "o.tif", progress=False))
    assert (got[40:60] == 255).all()
    np.testing.assert_array_equal(got[:40], expected(arr)[:40])


# ----------------------------------------------------------------------------- checks


def test_band_mismatch_names_both_counts(make_raster, tmp_path):
    src = make_raster(image(50, 50, bands=2), name="two_bands.tif")
    with pytest.raises(BandMismatchError, match=r"two_bands\.tif.*2 data band.*reads 3"):
        classify_raster(make_model(), src, tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_bands_named_on_both_sides_are_read_by_name(make_raster, tmp_path):
    """A model of red, green, blue fed a scene of blue, green, red, nir (Maxar's order) reads
    the scene's red, green and blue: it was refused (4 bands for 3), and a BGR scene of three
    bands was read as if it were RGB."""
    model = make_model()
    model.config.band_names = ["red", "green", "blue"]
    arr = image(64, 80, bands=4)
    bgrn = make_raster(
        arr,
        name="bgrn.tif",
        descriptions=["Blue", "green", "red ", "nir"],
        colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined],
    )  # fmt: skip (four data bands, no alpha)
    got = read(classify_raster(model, bgrn, tmp_path / "a.tif", progress=False))
    np.testing.assert_array_equal(got, expected(arr[[2, 1, 0]]))  # the model's red is band 3
    bgr = make_raster(arr[:3], name="bgr.tif", colorinterp=[ColorInterp.blue, ColorInterp.green,
                      ColorInterp.red])  # fmt: skip
    got = read(classify_raster(model, bgr, tmp_path / "b.tif", progress=False))
    np.testing.assert_array_equal(got, expected(arr[[2, 1, 0]]))
    unnamed = make_raster(arr[:3], name="plain.tif")  # no names: by position, as before
    got = read(classify_raster(model, unnamed, tmp_path / "c.tif", progress=False))
    np.testing.assert_array_equal(got, expected(arr[:3]))
    model.config.band_names = ["band_1", "band_2", "band_3"]  # names that only number bands
    with pytest.raises(
        BandMismatchError, match=r"4 data band\(s\) \(named Blue, green, red , nir\)"
    ):
        classify_raster(model, bgrn, tmp_path / "d.tif", progress=False)


def test_bands_chosen_by_the_user_override_names_and_positions(make_raster, tmp_path):
    """A four-band image whose red, green and blue are bands 3, 2, 1 (no names to match) was
    refused, and the only way was a VRT built with gdalbuildvrt: ``bands=`` says it."""
    model = make_model()
    arr = image(64, 80, bands=4)
    plain = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined, ColorInterp.undefined]
    src = make_raster(arr, name="bgrn.tif", colorinterp=plain)  # four data bands, no alpha
    with pytest.raises(BandMismatchError, match=r"4 data band.*--bands 1,2,3, bands=\(1, 2, 3\)"):
        classify_raster(model, src, tmp_path / "a.tif", progress=False)
    got = read(classify_raster(model, src, tmp_path / "a.tif", progress=False, bands=[3, 2, 1]))
    np.testing.assert_array_equal(got, expected(arr[[2, 1, 0]]))
    grey = make_raster(arr[:1], name="pan.tif")  # a band may repeat
    got = read(classify_raster(model, grey, tmp_path / "g.tif", progress=False, bands=(1, 1, 1)))
    np.testing.assert_array_equal(got, expected(arr[[0, 0, 0]]))
    model.config.band_names = ["red", "green", "blue"]  # names lose to the user's choice
    named = make_raster(arr[:3], name="rgb.tif", descriptions=["red", "green", "blue"])
    got = read(classify_raster(model, named, tmp_path / "n.tif", progress=False, bands=(3, 2, 1)))
    np.testing.assert_array_equal(got, expected(arr[[2, 1, 0]]))
    with pytest.raises(BandMismatchError, match=r"bgrn\.tif: bands=\(3, 2\) names 2 .* reads 3"):
        classify_raster(model, src, tmp_path / "b.tif", progress=False, bands=(3, 2))
    with pytest.raises(BandMismatchError, match=r"band\(s\) \[5\] but the raster has 4 "):
        classify_raster(model, src, tmp_path / "c.tif", progress=False, bands=(5, 2, 1))
    alpha = make_raster(
        arr, name="rgba.tif",
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )  # fmt: skip
    with pytest.raises(BandMismatchError, match=r"band 4, the alpha band.*\[1, 2, 3\]"):
        classify_raster(model, alpha, tmp_path / "d.tif", progress=False, bands=(4, 2, 1))
    for bad in ([0, 1, 2], [1.0, 2, 3], "3,2,1", [True, 2, 3], 3.0):
        with pytest.raises(InvalidParameterError, match=r"bands=.*\(--bands 3,2,1\)"):
            ClassifyOptions(bands=bad)
    assert ClassifyOptions(bands=[]).bands is None
    assert ClassifyOptions(bands=np.array([3, 2, 1])).bands == (3, 2, 1)  # NumPy's integers
    assert not any((tmp_path / n).exists() for n in ("b.tif", "c.tif", "d.tif"))


def test_value_range_far_from_training_warns(make_raster, tmp_path):
    arr = image(64, 64).astype(np.uint16) * 16  # 12-bit values to an 8-bit model
    with pytest.warns(UserWarning, match=r"values reach about .* up to about 250"):
        classify_raster(make_model(), make_raster(arr), tmp_path / "o.tif", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        classify_raster(
            make_model(), make_raster(image(64, 64), name="ok.tif"), tmp_path / "ok_out.tif",
            progress=False,
        )  # fmt: skip


def test_values_beyond_an_eight_bit_model_warn_even_when_close_in_ratio(make_raster, tmp_path):
    """An 11-bit scene of dark values (98th percentile about 3 times the training one) was
    not warned about, though no 8-bit image holds such values."""
    arr = (image(64, 64).astype(np.float64) * 3).clip(0, 2047)  # float64, up to ~750
    with pytest.warns(UserWarning, match=r"values reach about 7\d\d .*float64.*uint8"):
        classify_raster(make_model(), make_raster(arr), tmp_path / "o.tif", progress=False)


def test_eight_bit_image_given_to_a_sixteen_bit_model_warns(make_raster, tmp_path):
    model = make_model(p98=3000.0, dtype="uint16")
    with pytest.warns(UserWarning, match=r"values reach about 2\d\d .*uint8.*3000.*uint16"):
        out = classify_raster(model, make_raster(image(64, 64)), tmp_path / "o.tif", progress=False)
    assert read(out).shape == (64, 64)  # a warning, not an error


def test_an_input_far_coarser_than_the_model_is_refused_unless_classified_as_is(
    make_raster, tmp_path
):
    """A 10 m scene for a 0.3 m model was resampled to a grid a thousand times larger; more
    than 4 times coarser is refused with the way out, resample=False."""
    src = make_raster(image(40, 40), res=2.5)
    with pytest.raises(InvalidParameterError, match=r"5 times the 0\.5 m.*200 x 200 pixels"):
        classify_raster(make_model(gsd=0.5), src, tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()
    with pytest.warns(UserWarning, match="classifying it as is"):
        out = classify_raster(
            make_model(gsd=0.5), src, tmp_path / "o.tif", progress=False, resample=False,
            tile_size=64, overlap=16,
        )  # fmt: skip
    assert read(out).shape == (40, 40)


def test_other_resolution_warns_and_is_mapped_back_to_the_input_grid(make_raster, tmp_path):
    arr = image(90, 120)
    arr[0] = np.repeat(np.repeat(arr[0, ::3, ::3], 3, 0), 3, 1)[:90, :120]  # 3x3 blocks
    src = make_raster(arr, res=1.5)
    model = make_model(gsd=0.5)
    with pytest.warns(UserWarning, match=r"pixel size 1\.5 m .* trained at 0\.5 m"):
        out = classify_raster(model, src, tmp_path / "o.tif", tile_size=128, progress=False)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height) == (a.crs, a.transform, a.width, a.height)
        got = b.read(1)
    np.testing.assert_array_equal(got, expected(arr))
    with pytest.warns(UserWarning, match=r"pixel size 1\.5 m .* trained at 0\.5 m"):
        rows, _ = classify_rows(model, src, 20, 61, ClassifyOptions(tile_size=128))
    np.testing.assert_array_equal(rows, got[20:61])


def test_resampled_run_keeps_nodata_of_the_input(make_raster, tmp_path):
    arr = image(120, 150)
    arr[:, 50:70, :] = 0
    src = make_raster(arr, res=0.3, nodata=0)
    with pytest.warns(UserWarning, match="pixel size"):
        out = classify_raster(make_model(gsd=0.5), src, tmp_path / "o.tif", progress=False)
    got = read(out)
    assert (got[50:70] == 255).all()
    assert (got[:45] != 255).all() and (got[75:] != 255).all()


def two_level_image(h, w, seed=0):
    """Band 1 only 1 or 200: bilinear resampling by 2 keeps every pixel's side of 100.5."""
    arr = image(h, w, seed=seed)
    arr[0] = np.where(np.random.default_rng(seed).random((h, w)) < 0.5, 1, 200)
    return arr


def test_input_at_twice_the_model_gsd_is_resampled_and_mapped_back(make_raster, tmp_path):
    arr = two_level_image(60, 80)
    src = make_raster(arr, res=1.0)
    model = make_model(Counting(Threshold()), gsd=0.5)
    with pytest.warns(UserWarning, match=r"pixel size 1 m but the model was trained at 0\.5 m"):
        out = classify_raster(model, src, tmp_path / "o.tif", progress=False)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height) == (a.crs, a.transform, a.width, a.height)
        got = b.read(1)
    np.testing.assert_array_equal(got, expected(arr))
    working = TilePlan.build(120, 160, tile_size=512, overlap=64, blend="spline")
    assert model.network.shapes == [(1, 3, working.tile_h, working.tile_w)]  # 120 x 160 grid


def test_resample_false_runs_on_the_input_grid(make_raster, tmp_path):
    arr = image(60, 80)
    model = make_model(Counting(Threshold()), gsd=0.5)
    with pytest.warns(UserWarning, match=r"as is \(resample=False\)"):
        out = classify_raster(
            model, make_raster(arr, res=1.0), tmp_path / "o.tif", resample=False, progress=False
        )
    np.testing.assert_array_equal(read(out), expected(arr))
    assert model.network.shapes == [(1, 3, 128, 160)]  # 60 x 80 + 2 x 32 halo, to 32s


def test_geographic_crs_is_measured_in_metres(make_raster, tmp_path):
    deg = 0.5 / 111_320  # about half a metre at the equator
    arr = image(60, 80)
    src = make_raster(arr, crs=CRS.from_epsg(4326), res=deg, origin=(10.0, 0.001))
    model = make_model(Counting(Threshold()), gsd=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = classify_raster(model, src, tmp_path / "o.tif", progress=False)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == CRS.from_epsg(4326)
        assert (b.transform, b.width, b.height) == (a.transform, a.width, a.height)
        got = b.read(1)
    np.testing.assert_array_equal(got, expected(arr))
    assert model.network.shapes == [(1, 3, 128, 160)]  # not resampled


def test_square_degree_pixels_at_60_degrees_are_resampled_per_axis(make_raster, tmp_path):
    deg = 0.5 / 111_400  # 0.5 m high, about 0.25 m wide at 60 degrees north
    arr = two_level_image(64, 120, seed=2)
    arr[0] = np.repeat(arr[0, :, ::2], 2, axis=1)  # pairs of columns: 0.5 m wide blocks
    src = make_raster(arr, crs=CRS.from_epsg(4326), res=deg, origin=(10.0, 60.0))
    model = make_model(Counting(Threshold()), gsd=0.5)
    with pytest.warns(UserWarning, match=r"pixel size 0\.2\d m x 0\.5 m"):
        out = classify_raster(model, src, tmp_path / "o.tif", progress=False)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert (b.crs, b.transform, b.width, b.height) == (a.crs, a.transform, a.width, a.height)
        got = b.read(1)
    np.testing.assert_array_equal(got, expected(arr))
    (shape,) = model.network.shapes
    working = TilePlan.build(64, 60, tile_size=512, overlap=64, blend="spline")
    assert shape[-2:] == (working.tile_h, working.tile_w)  # half the columns, same rows


@pytest.mark.parametrize(
    "kwargs",
    [{"tile_size": 100}, {"tile_size": 32}, {"overlap": 300}, {"blend": "gauss"},
     {"tta": "rot"}, {"batch_size": 0}, {"output_format": "PNG"}],
)  # fmt: skip
def test_bad_parameters_are_refused_before_any_work(make_raster, tmp_path, kwargs):
    with pytest.raises(InvalidParameterError):
        classify_raster(make_model(), make_raster(image(40, 40)), tmp_path / "o.tif", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"tile_size": 100}, {"overlap": 300}, {"blend": "gauss"}, {"tta": "rot"},
     {"batch_size": 0}, {"batch_size": True}, {"batch_size": 2.0}, {"output_format": "PNG"}],
)  # fmt: skip
def test_classify_options_check_each_field_when_built(kwargs):
    (field,) = kwargs
    with pytest.raises(InvalidParameterError, match=rf"^{field}="):  # the message names it
        ClassifyOptions(**kwargs)


def test_classify_options_are_frozen_and_keep_paths():
    opts = ClassifyOptions(probabilities="p.tif")
    assert opts.probabilities == Path("p.tif") and isinstance(opts.probabilities, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tile_size = 64  # type: ignore[misc]


def test_entry_points_take_every_option_with_its_default():
    from geounet.app.classifier import UnetClassifier

    want = [(f.name, f.default) for f in dataclasses.fields(ClassifyOptions)]
    for entry in (classify_raster, UnetClassifier.classify):
        params = inspect.signature(entry).parameters.values()
        got = [(p.name, p.default) for p in params if p.kind is p.KEYWORD_ONLY]
        assert got == want, entry.__qualname__


def test_options_from_arguments_pick_the_fields_and_need_them_all():
    args = {f.name: f.default for f in dataclasses.fields(ClassifyOptions)}
    opts = ClassifyOptions.from_arguments({**args, "model": object(), "tile_size": 128})
    assert opts == ClassifyOptions(tile_size=128)
    del args["allow_no_crs"]
    with pytest.raises(KeyError, match="allow_no_crs"):
        ClassifyOptions.from_arguments(args)


def test_the_options_object_gives_the_same_run_as_the_keywords(make_raster, tmp_path):
    src = make_raster(image(120, 200))
    kw = {"tile_size": 64, "overlap": 16, "blend": "linear", "progress": False}
    a = classify_raster(make_model(), src, tmp_path / "a.tif", **kw)
    b = classify_with_options(make_model(), src, tmp_path / "b.tif", ClassifyOptions(**kw))
    np.testing.assert_array_equal(read(a), read(b))
    np.testing.assert_array_equal(read(b), expected(image(120, 200)))


# ----------------------------------------------------------------------------- outputs


def test_existing_output_is_not_overwritten(make_raster, tmp_path):
    src = make_raster(image(40, 40))
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        classify_raster(make_model(), src, out, progress=False)
    assert out.read_bytes() == b"keep me"
    classify_raster(make_model(), src, out, progress=False, overwrite=True)
    assert read(out).shape == (40, 40)


def test_existing_probabilities_output_is_not_overwritten(make_raster, tmp_path):
    src = make_raster(image(40, 40))
    (tmp_path / "p.tif").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match=r"p\.tif"):
        classify_raster(
            make_model(), src, tmp_path / "o.tif", probabilities=tmp_path / "p.tif",
            progress=False,
        )  # fmt: skip
    assert not (tmp_path / "o.tif").exists()
    assert (tmp_path / "p.tif").read_bytes() == b"keep me"


@pytest.mark.parametrize("output_format", ["GTiff", "COG"])
def test_failure_mid_run_leaves_no_output_nor_temporary_file(make_raster, tmp_path, output_format):
    src = make_raster(image(400, 400))
    before = set(tmp_path.iterdir())
    model = make_model(Counting(Threshold(), fail_on=3))
    with pytest.raises(RuntimeError, match="on purpose"):
        classify_raster(
            model, src, tmp_path / "o.tif", tile_size=64, overlap=16, batch_size=2,
            probabilities=tmp_path / "p.tif", output_format=output_format, progress=False,
        )  # fmt: skip
    assert set(tmp_path.iterdir()) == before
    assert model.network.calls == 3


def test_failure_mid_run_keeps_the_previous_output_when_overwriting(make_raster, tmp_path):
    src = make_raster(image(200, 200))
    out = tmp_path / "o.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="on purpose"):
        classify_raster(
            make_model(Counting(Threshold(), fail_on=2)), src, out, tile_size=64, overlap=16,
            batch_size=1, overwrite=True, progress=False,
        )  # fmt: skip
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "o.tif"]


def test_network_with_another_class_count_than_the_model_file_is_a_clear_error(
    make_raster, tmp_path
):
    model = make_model(Threshold(), n_classes=3)  # the network gives 2 scores
    with pytest.raises(ModelFileError, match=r"gives 2 class scores .* lists 3 classes"):
        classify_raster(model, make_raster(image(40, 40)), tmp_path / "o.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_unet_classifier_classify_passes_one_options_object(make_raster, tmp_path, monkeypatch):
    import geounet.inference.classify
    from geounet.app.classifier import UnetClassifier

    arr = image(70, 90)
    src = make_raster(arr)
    clf = UnetClassifier.__new__(UnetClassifier)  # a loaded model, without a model file
    fake = make_model()
    clf.network, clf.config, clf.device = fake.network, fake.config, fake.device
    calls = []
    real = geounet.inference.classify.classify_with_options

    def spy(model, in_raster, out_raster, options):
        calls.append((model, in_raster, out_raster, options))
        return real(model, in_raster, out_raster, options)

    monkeypatch.setattr(geounet.inference.classify, "classify_with_options", spy)
    kwargs = {"tile_size": 64, "overlap": 16, "blend": "linear", "tta": "flips",
              "probabilities": tmp_path / "p.tif", "progress": False}  # fmt: skip
    out = clf.classify(src, tmp_path / "o.tif", **kwargs)
    assert len(calls) == 1 and calls[0][:3] == (clf, src, tmp_path / "o.tif")
    assert calls[0][3] == ClassifyOptions(**kwargs)  # every keyword passed, the rest defaults
    assert calls[0][3].batch_size == 4 and calls[0][3].resample is True
    assert out == tmp_path / "o.tif"
    np.testing.assert_array_equal(read(out), expected(arr))
    assert read(tmp_path / "p.tif", band=None).shape == (2, 70, 90)


# ----------------------------------------------------------------------------- accumulator


def test_accumulator_band_is_a_tile_high_whatever_the_raster_height():
    plan = TilePlan.build(100_000, 300, tile_size=256, overlap=64, blend="spline")
    acc = RowAccumulator(4, plan.width, plan.tile_h)
    assert acc.sums.shape == (4, 256, 300)
    finished = [plan.finished_row(i) for i in range(len(plan.row_starts))]
    assert finished == sorted(finished) and finished[-1] == 100_000
    for i in range(1, len(plan.row_starts)):  # a tile row always fits in the band
        assert plan.span(i)[1] - finished[i - 1] <= plan.tile_h


def test_every_pixel_is_owned_by_exactly_one_core_with_blend_none():
    plan = TilePlan.build(333, 517, tile_size=128, overlap=48, blend="none")
    owners = np.zeros((333, 517), int)
    for i in range(len(plan.row_starts)):
        for j in range(len(plan.col_starts)):
            r = plan.region(i, j)
            a, b = max(r.row + r.r0, 0), min(r.row + r.r1, 333)
            c, d = max(r.col + r.c0, 0), min(r.col + r.c1, 517)
            owners[a:b, c:d] += 1
    assert (owners == 1).all()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        classify_raster(make_model(), tmp_path / "nope.tif", tmp_path / "o.tif")


def test_returns_the_output_path(make_raster, tmp_path):
    out = classify_raster(make_model(), make_raster(image(40, 40)), str(tmp_path / "o.tif"),
                          progress=False)  # fmt: skip
    assert out == Path(tmp_path / "o.tif")


def test_tiles_read_ahead_give_the_same_result_and_a_wrong_stream_is_refused():
    """A TileStream entered before the job (as classify does while the engine loads) gives
    the same classes as run_tiles reading on its own; one of other rows or strip order, or
    not entered, is refused."""
    from geounet.inference.engine import TileStream, run_tiles
    from geounet.inference.streams import ArraySink, ArraySource

    model, arr = make_model(), image(150, 230, seed=5)
    opts = ClassifyOptions(tile_size=64, overlap=16)
    plan = TilePlan.build(150, 230, tile_size=64, overlap=16, blend=opts.blend)
    source = ArraySource(arr, np.ones(arr.shape[1:], bool))
    rows = range(len(plan.row_starts))

    def opener() -> object:
        return contextlib.nullcontext(source)

    outs = [ArraySink(0, 150, 230, 2) for _ in range(2)]
    run_tiles(model, plan, rows, opener, outs[0], opts)
    with TileStream(model, plan, rows, opener, opts, column_strips=True) as tiles:
        run_tiles(model, plan, rows, opener, outs[1], opts, tiles=tiles)
    np.testing.assert_array_equal(outs[0].classes, outs[1].classes)
    np.testing.assert_array_equal(outs[1].classes, expected(arr))
    for wrong, strips in ((rows, False), (rows[:1], True)):
        with (
            TileStream(model, plan, wrong, opener, opts, column_strips=strips) as tiles,
            pytest.raises(InvalidParameterError, match="the tiles read ahead cover"),
        ):
            run_tiles(model, plan, rows, opener, ArraySink(0, 150, 230, 2), opts, tiles=tiles)
    unentered = TileStream(model, plan, rows, opener, opts, column_strips=True)
    with pytest.raises(InvalidParameterError, match="not entered"):
        run_tiles(model, plan, rows, opener, ArraySink(0, 150, 230, 2), opts, tiles=unentered)
