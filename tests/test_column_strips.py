"""Column strips: a wide raster runs strip by strip, with the same result as in one band."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import MaskFlags

import geounet.inference.blending as blending
from geounet.inference.blending import RowAccumulator, TilePlan
from geounet.inference.classify import classify_raster, classify_rows
from geounet.inference.options import ClassifyOptions
from tests.test_inference import Smooth, make_model, read, two_level_image

KW = {"tile_size": 96, "overlap": 32, "progress": False}


@pytest.fixture
def narrow_strips(monkeypatch):
    """Strips of 128 columns (every output block in these tests is at most 128 wide)."""
    monkeypatch.setattr(blending, "STRIP_COLUMNS", 128)


@pytest.fixture
def band_widths(monkeypatch):
    """Records the width of every blend band made."""
    widths: list[int] = []
    original = RowAccumulator.__init__

    def record(self, n_classes, width, *args, **kwargs):
        widths.append(width)
        original(self, n_classes, width, *args, **kwargs)

    monkeypatch.setattr(RowAccumulator, "__init__", record)
    return widths


def test_strips_cover_the_raster_with_boundaries_at_multiples_of_the_width():
    plan = TilePlan.build(50, 1000, tile_size=96, overlap=32, blend="spline")
    assert plan.column_strips(256) == [(0, 256), (256, 512), (512, 768), (768, 1000)]
    assert plan.column_strips(4096) == [(0, 1000)]
    with pytest.raises(ValueError, match="max_width"):
        plan.column_strips(0)


@pytest.mark.parametrize("blend", ["spline", "none"])
def test_tile_columns_of_a_strip_are_exactly_those_touching_it(blend):
    plan = TilePlan.build(50, 1000, tile_size=96, overlap=32, blend=blend)
    for a, b in plan.column_strips(128):
        cols = plan.tile_cols_for(a, b)
        touching = [
            j
            for j in range(len(plan.col_starts))
            if plan.col_span(j)[0] < b and plan.col_span(j)[1] > a
        ]
        assert list(cols) == touching
    # every raster column lies in the span of some tile column
    covered = np.zeros(1000, bool)
    for j in range(len(plan.col_starts)):
        a, b = plan.col_span(j)
        covered[a:b] = True
    assert covered.all()


@pytest.mark.parametrize("blend", ["spline", "linear", "none"])
def test_strips_give_the_same_raster_as_one_band(
    make_raster, tmp_path, monkeypatch, band_widths, blend
):
    arr = np.random.default_rng(4).integers(1, 255, (3, 150, 500)).astype(np.uint8)
    src = make_raster(arr)
    model = make_model(Smooth(), n_classes=3)
    kw = {**KW, "blend": blend}
    whole = classify_raster(model, src, tmp_path / "whole.tif", **kw)
    assert band_widths == [500]
    monkeypatch.setattr(blending, "STRIP_COLUMNS", 128)
    band_widths.clear()
    strips = classify_raster(model, src, tmp_path / "strips.tif", **kw)
    assert band_widths == [128, 128, 128, 116]
    np.testing.assert_array_equal(read(strips), read(whole))


def test_strips_with_probabilities_nodata_and_a_cog(make_raster, tmp_path, monkeypatch):
    arr = np.random.default_rng(5).integers(1, 255, (3, 140, 420)).astype(np.uint8)
    arr[:, :, 150:170] = 0  # a nodata column across a strip boundary at 128..256
    arr[:, 60:80, :] = 0
    src = make_raster(arr, nodata=0)
    model = make_model(Smooth(), n_classes=3)
    kw = {**KW, "output_format": "COG"}
    whole = classify_raster(model, src, tmp_path / "w.tif", probabilities=tmp_path / "wp.tif", **kw)
    monkeypatch.setattr(blending, "STRIP_COLUMNS", 128)
    strips = classify_raster(
        model, src, tmp_path / "s.tif", probabilities=tmp_path / "sp.tif", **kw
    )
    got = read(strips)
    np.testing.assert_array_equal(got, read(whole))
    np.testing.assert_array_equal(read(tmp_path / "sp.tif", None), read(tmp_path / "wp.tif", None))
    assert (got[:, 150:170] == 255).all() and (got[60:80] == 255).all()
    with rasterio.open(strips) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    for probs in ("sp.tif", "wp.tif"):  # every byte is a probability: the mask says nodata
        with rasterio.open(tmp_path / probs) as ds:
            assert ds.nodata is None and ds.mask_flag_enums[0] == [MaskFlags.per_dataset]
            np.testing.assert_array_equal(ds.dataset_mask() > 0, got != 255)


def test_classify_rows_runs_in_strips_too(make_raster, tmp_path, narrow_strips, band_widths):
    arr = np.random.default_rng(6).integers(1, 255, (3, 200, 300)).astype(np.uint8)
    src = make_raster(arr)
    model = make_model(Smooth(), n_classes=3)
    whole = read(classify_raster(model, src, tmp_path / "o.tif", **KW))
    rows, probs = classify_rows(model, src, 40, 170, ClassifyOptions(**KW))
    np.testing.assert_array_equal(rows, whole[40:170])
    assert max(band_widths) <= 128
    assert probs.shape == (3, 130, 300)


def test_resampled_input_maps_strips_back_to_the_input_grid(
    make_raster, tmp_path, monkeypatch, band_widths
):
    arr = two_level_image(70, 290)
    arr[:, 30:40, 100:140] = 0
    src = make_raster(arr, res=1.0, nodata=0)
    model = make_model(gsd=0.5)  # the network runs on a 140 x 580 grid
    with pytest.warns(UserWarning, match="pixel size"):
        whole = read(classify_raster(model, src, tmp_path / "w.tif", **KW))
    monkeypatch.setattr(blending, "STRIP_COLUMNS", 128)
    band_widths.clear()
    with pytest.warns(UserWarning, match="pixel size"):
        strips = read(classify_raster(model, src, tmp_path / "s.tif", **KW))
    assert band_widths == [128, 128, 128, 128, 68]
    np.testing.assert_array_equal(strips, whole)
    assert (strips[30:40, 100:140] == 255).all()


def test_resumable_runs_keep_whole_rows(make_raster, tmp_path, narrow_strips, band_widths):
    arr = np.random.default_rng(7).integers(1, 255, (3, 120, 300)).astype(np.uint8)
    src = make_raster(arr)
    model = make_model(Smooth(), n_classes=3)
    out = classify_raster(model, src, tmp_path / "r.tif", resume=True, **KW)
    assert band_widths == [300]
    ref = read(classify_raster(model, src, tmp_path / "o.tif", **KW))
    np.testing.assert_array_equal(read(out), ref)


class FakeWriter:
    """Records the windows written."""

    def __init__(self, block: int) -> None:
        self.profile = {"blockysize": block}
        self.writes: list[tuple[int, int, int, int]] = []

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        self.writes.append((row, col, data.shape[-2], data.shape[-1]))


def test_writer_sink_writes_whole_blocks_of_rows_per_strip():
    from geounet.inference.streams import WriterSink

    writer = FakeWriter(64)
    sink = WriterSink(writer)
    for col, width in [(0, 128), (128, 40)]:
        for row in range(0, 200, 45):
            n = min(45, 200 - row)
            sink.put(row, np.zeros((n, width), np.uint8), None, np.ones((n, width), bool), col=col)
    sink.close()
    for col, width in [(0, 128), (128, 40)]:
        mine = [(r, n) for r, c, n, w in writer.writes if c == col and w == width]
        assert [r for r, _ in mine] == [0, 64, 128, 192]  # every write starts a block row
        assert sum(n for _, n in mine) == 200
