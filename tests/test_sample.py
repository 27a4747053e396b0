"""The synthetic sample data: regenerated bit-identically, georeferenced, consistent, plausible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

from geounet.app import sample
from geounet.app.sample import (
    BANDS,
    EPSG,
    NODATA_STRIP,
    SAMPLE_FILES,
    ensure_sample_data,
    generate_sample_data,
)
from geounet.core.errors import OutputExistsError

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "sample_data"
RASTERS = ("train", "train_labels", "test", "test_labels")
VECTORS = ("train_buildings", "train_roads", "test_buildings", "test_roads")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_sample_data(tmp_path_factory.mktemp("sample"), quicklook=False)


def _read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _features(path: Path) -> list[tuple]:
    gdf = gpd.read_file(path, engine="pyogrio")
    cols = [c for c in gdf.columns if c != "geometry"]
    rows = zip(shapely.to_wkb(gdf.geometry.values, hex=True), *(gdf[c].tolist() for c in cols))
    return sorted(rows)


def test_committed_files_present_and_small() -> None:
    for name in [*SAMPLE_FILES.values(), "quicklook.png", "README.md"]:
        assert (COMMITTED / name).is_file(), name
    total = sum(p.stat().st_size for p in COMMITTED.iterdir() if p.is_file())
    assert total <= 12_000_000


@pytest.mark.parametrize("key", RASTERS)
def test_regenerated_pixels_identical(regenerated: dict[str, Path], key: str) -> None:
    new, new_profile = _read(regenerated[key])
    old, old_profile = _read(COMMITTED / SAMPLE_FILES[key])
    assert _sha(new) == _sha(old)
    for k in ("crs", "transform", "dtype", "nodata", "count", "width", "height"):
        assert new_profile[k] == old_profile[k], k


@pytest.mark.parametrize("key", VECTORS)
def test_regenerated_features_identical(regenerated: dict[str, Path], key: str) -> None:
    assert _features(regenerated[key]) == _features(COMMITTED / SAMPLE_FILES[key])


@pytest.mark.parametrize("name", ["train", "test"])
def test_image_georeferencing_and_bands(name: str) -> None:
    with rasterio.open(COMMITTED / f"{name}.tif") as src:
        assert src.crs.to_epsg() == EPSG
        assert src.count == 4 and src.dtypes == ("uint16",) * 4
        assert (src.width, src.height) == (1024, 1024)
        assert src.res == (0.5, 0.5)
        assert src.nodata == 0
        assert src.descriptions == BANDS
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"


def test_scenes_differ() -> None:
    train, _ = _read(COMMITTED / "train.tif")
    test, _ = _read(COMMITTED / "test.tif")
    assert np.mean(train != test) > 0.9


def test_nodata_strip_and_value_range() -> None:
    train, _ = _read(COMMITTED / "train.tif")
    test, _ = _read(COMMITTED / "test.tif")
    assert (train > 0).all()
    assert (test[:, :, -NODATA_STRIP:] == 0).all()
    valid = test[:, :, :-NODATA_STRIP]
    assert (valid > 0).all()
    for img in (train, valid):
        assert img.max() <= 4095
        med = np.median(img.reshape(4, -1), axis=1)
        assert ((med > 100) & (med < 3000)).all()


@pytest.mark.parametrize("name", ["train", "test"])
def test_labels(name: str) -> None:
    with rasterio.open(COMMITTED / f"{name}_labels.tif") as src:
        labels = src.read(1)
        assert src.dtypes == ("uint8",) and src.nodata == 255 and src.crs.to_epsg() == EPSG
        cmap = src.colormap(1)
        assert cmap[1][:3] != cmap[2][:3] and cmap[255][3] == 0
        assert json.loads(src.tags()["CLASSES"]) == {
            "0": "background",
            "1": "building",
            "2": "road",
        }
        with rasterio.open(COMMITTED / f"{name}.tif") as img:
            assert src.transform == img.transform
            nodata = (img.read() == 0).all(axis=0)
    assert np.array_equal(labels == 255, nodata)
    assert set(np.unique(labels)) == {0, 1, 2} | ({255} if nodata.any() else set())
    assert nodata.any() == (name == "test")  # only the test scene has a nodata strip
    valid = labels[labels != 255]
    assert 0.10 <= np.mean(valid == 1) <= 0.20
    assert 0.08 <= np.mean(valid == 2) <= 0.15


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("name", ["train", "test"])
def test_vectors_match_labels(name: str) -> None:
    with rasterio.open(COMMITTED / f"{name}_labels.tif") as src:
        labels, transform, crs = src.read(1), src.transform, src.crs
    buildings = gpd.read_file(COMMITTED / f"{name}_buildings.gpkg", engine="pyogrio")
    roads = gpd.read_file(COMMITTED / f"{name}_roads.gpkg", engine="pyogrio")
    assert buildings.crs == crs and roads.crs == crs
    assert set(buildings.geom_type) == {"Polygon"} and set(roads.geom_type) == {"LineString"}
    assert buildings.is_valid.all()
    assert roads["width"].between(5, 12.5).all()
    valid = labels != 255
    b = rasterize(buildings.geometry, labels.shape, transform=transform).astype(bool)
    assert _iou(b & valid, labels == 1) > 0.99
    polys = roads.geometry.buffer(roads["width"] / 2)
    r = rasterize(polys, labels.shape, transform=transform).astype(bool) & ~b
    assert _iou(r & valid, labels == 2) > 0.95


def test_roads_form_a_network() -> None:
    roads = gpd.read_file(COMMITTED / "train_roads.gpkg", engine="pyogrio")
    union = shapely.union_all(roads.geometry.buffer(roads["width"] / 2).values)
    parts = shapely.get_parts(union)
    largest = max(p.area for p in parts)
    assert largest / union.area > 0.9  # one connected network, maybe a stub cut by the edge
    junctions = sum(
        shapely.intersects(a, b)
        for i, a in enumerate(roads.geometry)
        for b in roads.geometry[i + 1 :]
    )
    assert junctions >= 6


def test_not_separable_by_one_band() -> None:
    """Roofs share their tones with the ground and the roads in every band."""
    img, _ = _read(COMMITTED / "train.tif")
    labels, _ = _read(COMMITTED / "train_labels.tif")
    roof, other = img[:, labels[0] == 1], img[:, labels[0] != 1]
    for band in range(4):
        lo, hi = np.percentile(other[band], [5, 95])
        inside = np.mean((roof[band] >= lo) & (roof[band] <= hi))
        assert inside > 0.3, BANDS[band]


def test_overwrite_refused(tmp_path: Path) -> None:
    (tmp_path / "train.tif").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="overwrite"):
        generate_sample_data(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tif"]
    assert (tmp_path / "train.tif").read_bytes() == b"mine"
    assert sample.main([str(tmp_path)]) == 2


def test_ensure_sample_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ensure_sample_data() == COMMITTED
    assert ensure_sample_data(COMMITTED) == COMMITTED
    calls = []
    # ensure_sample_data looks generate_sample_data up in the module that defines it
    monkeypatch.setattr(
        "geounet.app.sample.files.generate_sample_data", lambda d, **kw: calls.append((d, kw))
    )
    assert ensure_sample_data(tmp_path / "absent") == tmp_path / "absent"
    assert calls and calls[0][1]["overwrite"] is True
