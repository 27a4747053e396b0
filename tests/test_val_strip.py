"""``val_strip="auto"``: the validation strip goes where the labels are like the whole."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import UTM

import geounet.data.strips as strips
from geounet.data.prepare import prepare_data
from geounet.data.strips import choose_strip, pick_strip, strip_score

X0, Y0, RES = 500000.0, 3700000.0, 0.5  # conftest's origin and pixel size


class ArrayLabels:
    """A bound label source over an in-memory class array (counts the pixels read)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.read_px = arr, 0

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        out = self.arr[row : row + height, col : col + width].copy()
        assert out.shape == (height, width), "a read past the box"
        self.read_px += out.size
        return out


def test_the_score_is_the_worst_class_share_ratio() -> None:
    whole = np.array([900, 100])
    assert strip_score(np.array([900, 100]), whole) == 1.0
    assert strip_score(np.array([950, 50]), whole) == pytest.approx(0.5)
    assert strip_score(np.array([800, 200]), whole) == pytest.approx(800 / 1000 / 0.9)
    assert strip_score(np.array([0, 0]), whole) == 0.0  # no labelled pixel: judges nothing
    assert strip_score(np.array([5, 5]), np.array([0, 0])) == 1.0
    # a class under 1 % of the labels does not count
    assert strip_score(np.array([900, 100, 0]), np.array([900, 95, 5])) == pytest.approx(1.0)


def test_the_preferred_place_is_kept_unless_it_misrepresents_a_class() -> None:
    whole = np.array([900, 100])
    ok = {"end": np.array([970, 30]), "start": np.array([900, 100])}
    assert pick_strip(ok, whole, ["end", "start"]) == "end"  # 0.3 of the share: kept
    bad = {"end": np.array([980, 20]), "start": np.array([950, 50]), "middle": np.array([1, 0])}
    assert pick_strip(bad, whole, ["end", "start", "middle"]) == "start"
    tie = {"end": np.array([1, 0]), "start": np.array([9, 1]), "middle": np.array([9, 1])}
    assert pick_strip(tie, whole, ["end", "middle", "start"]) == "middle"  # the earlier


def roofs_inland(height: int, width: int) -> np.ndarray:
    """Buildings (1) between a fifth and two thirds of the width, 255 (no label) in a corner."""
    arr = np.zeros((height, width), np.uint8)
    arr[:, width // 5 : 2 * width // 3][::8, ::4] = 1
    arr[:4, :4] = 255
    return arr


@pytest.mark.parametrize("transpose", [False, True])
def test_choose_strip_moves_an_empty_end_strip(transpose: bool) -> None:
    arr = roofs_inland(256, 1280)  # neither end's strip holds a building
    if transpose:  # a tall image: the strips are rows
        arr = np.ascontiguousarray(arr.T)
    src = ArrayLabels(arr)
    box = (0, 0, *arr.shape)
    place, record = choose_strip(
        src, box, chip_size=256, val_fraction=0.2, n_classes=2, preferred="end"
    )
    assert place == "middle"
    assert record["preferred"] == "end" and record["chosen"] == "middle"
    assert record["shares"]["end"][1] == 0.0 and record["scores"]["end"] == 0.0
    assert record["shares"]["middle"][1] > 0
    assert record["whole"][1] == pytest.approx((arr == 1).sum() / (arr < 2).sum(), abs=1e-4)
    assert src.read_px == arr.size  # a small image is read once, whole


@pytest.mark.parametrize("shape", [(1024, 2048), (2048, 1024)])
def test_choose_strip_keeps_a_representative_end_and_samples_large_images(
    monkeypatch, shape
) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.random(shape) < 0.1).astype(np.uint8)  # buildings everywhere
    monkeypatch.setattr(strips, "STRIP_SAMPLE_PIXELS", 2**20)  # half the image
    src = ArrayLabels(arr)
    place, record = choose_strip(
        src, (0, 0, *shape), chip_size=256, val_fraction=0.2, n_classes=2, preferred="end"
    )
    assert place == "end"
    assert 0 < src.read_px <= 2**20
    assert record["whole"][1] == pytest.approx(0.1, abs=0.005)
    for share in record["shares"].values():  # every strip is sampled
        assert share[1] == pytest.approx(0.1, abs=0.01)


def test_a_tall_sampled_image_still_finds_the_buildings(monkeypatch) -> None:
    arr = np.ascontiguousarray(roofs_inland(512, 4096).T)  # 4096 rows: strips are rows
    monkeypatch.setattr(strips, "STRIP_SAMPLE_PIXELS", 512 * 1024)  # a quarter of the rows
    src = ArrayLabels(arr)
    place, record = choose_strip(
        src, (0, 0, 4096, 512), chip_size=256, val_fraction=0.2, n_classes=2, preferred="end"
    )
    assert place == "middle"
    assert src.read_px <= 512 * 1024 and record["shares"]["middle"][1] > 0


def test_choose_strip_reads_only_the_box() -> None:
    arr = np.full((300, 1400), 255, np.uint8)
    arr[10:266, 100:1380] = roofs_inland(256, 1280)
    src = ArrayLabels(arr)
    place, _ = choose_strip(
        src, (10, 100, 256, 1280), chip_size=256, val_fraction=0.2, n_classes=2, preferred="end"
    )
    assert place == "middle"
    assert src.read_px == 256 * 1280


def test_no_strip_fits_keeps_the_preferred_place() -> None:
    src = ArrayLabels(np.zeros((256, 300), np.uint8))
    place, record = choose_strip(
        src, (0, 0, 256, 300), chip_size=256, val_fraction=0.2, n_classes=2, preferred="end"
    )
    assert (place, record["reason"]) == ("end", "no strip fits")
    assert src.read_px == 0


def px_box(c0: int, r0: int, c1: int, r1: int) -> shapely.Polygon:
    """A box over pixel columns ``[c0, c1)`` and rows ``[r0, r1)`` of conftest's grid."""
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


@pytest.fixture
def town_left(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    """A 64 x 640 image whose buildings stand in its left half only."""
    rng = np.random.default_rng(0)
    img = make_raster(rng.integers(0, 200, (3, 64, 640), dtype=np.uint8), "town.tif")
    roofs = [px_box(c + 8, 24, c + 24, 40) for c in range(0, 320, 32)]
    path = tmp_path / "roofs.gpkg"
    gpd.GeoDataFrame(geometry=roofs, crs=str(UTM)).to_file(path)
    return img, path


def valid_columns(data) -> tuple[float, float]:
    bounds = [c["bounds"] for c in data.manifest["chips"] if c["split"] == "valid"]
    return min(b[0] for b in bounds), max(b[2] for b in bounds)


def test_prepare_data_puts_the_strip_where_the_buildings_are(town_left) -> None:
    img, roofs = town_left
    data = prepare_data(img, roofs, classes=["building"], chip_size=64, stride=64)
    (choice,) = data.manifest["val_strip_choice"]
    assert choice["image"] == "town.tif"
    assert (choice["preferred"], choice["chosen"]) == ("end", "middle")
    x0, x1 = valid_columns(data)
    assert (x0, x1) == (X0 + 256 * RES, X0 + 384 * RES)  # the middle 128 columns
    assert data.manifest["class_pixel_counts_by_split"]["valid"][1] > 0
    assert data.manifest["val_strip"] == "auto"
    assert "middle" in data.summary().to_string()


def test_an_explicit_strip_is_kept(town_left) -> None:
    img, roofs = town_left
    data = prepare_data(img, roofs, classes=["building"], chip_size=64, stride=64, val_strip="end")
    assert "val_strip_choice" not in data.manifest
    assert valid_columns(data) == (X0 + 512 * RES, X0 + 640 * RES)
    assert data.manifest["class_pixel_counts_by_split"]["valid"][1] == 0
