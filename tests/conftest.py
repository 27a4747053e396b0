"""Shared fixtures: tiny georeferenced rasters written into tmp_path, offline hub."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
UTM = CRS.from_epsg(32616)


#: The test being set up or run (set by ``pytest_runtest_setup``), so that :func:`shared_data`
#: can check its markers, also when a module-scoped fixture calls it.
_CURRENT: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember the test item before its fixtures are set up."""
    _CURRENT[:] = [item]


@pytest.fixture(autouse=True)
def _no_idle_engines() -> None:
    """Each test loads its own engines: none kept idle from an earlier test's jobs."""
    from geounet.inference.engine_choice import clear_idle_engines

    clear_idle_engines()


def shared_data(sub: str) -> Path:
    """Path to a folder of ../shared/data, or skip the test with the reason.

    A test that reads the real data must carry ``@pytest.mark.realdata`` (so that
    ``-m "not realdata"`` deselects it); one without the marker fails here, on every machine,
    whether or not the data is present.
    """
    if not _CURRENT:
        pytest.fail(
            "shared_data() runs outside a test, or from a second copy of conftest: import it "
            "with `from conftest import shared_data` (not `tests.conftest`).",
            pytrace=False,
        )
    item = _CURRENT[0]
    if item.get_closest_marker("realdata") is None:
        pytest.fail(
            f"{item.nodeid} reads ../shared/data/{sub} but has no @pytest.mark.realdata marker; "
            "add the marker to the test (or to the module's pytestmark).",
            pytrace=False,
        )
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"real data {p} is absent (it lies beside the project only on CI/dev machines)")
    return p


def write_geotiff(
    path: Path,
    array: np.ndarray,
    crs: CRS | str | None = UTM,
    res: float = 0.5,
    origin: tuple[float, float] = (500000.0, 3700000.0),
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    colorinterp: list | None = None,
) -> Path:
    """Write ``array`` ((bands, h, w) or (h, w)) as a north-up GeoTIFF at ``path``."""
    arr = array[None] if array.ndim == 2 else array
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": str(arr.dtype),
        "transform": from_origin(origin[0], origin[1], res, res),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small georeferenced GeoTIFF into tmp_path.

    ``make_raster(array, name="img.tif", crs=UTM, res=0.5, origin=(500000, 3700000),
    nodata=None, descriptions=None, colorinterp=None)``; ``array`` is (bands, h, w) or (h, w).
    """

    def _make(
        array: np.ndarray,
        name: str = "img.tif",
        crs: CRS | None = UTM,
        res: float = 0.5,
        origin: tuple[float, float] = (500000.0, 3700000.0),
        nodata: float | None = None,
        descriptions: list[str] | None = None,
        colorinterp: list | None = None,
    ) -> Path:
        return write_geotiff(
            tmp_path / name, array, crs, res, origin, nodata, descriptions, colorinterp
        )

    return _make


@pytest.fixture
def labelled_model(make_raster: Callable[..., Path], tmp_path: Path) -> Callable[..., object]:
    """Factory: an untrained tiny ``UnetClassifier`` on a scene labelled ``labels`` (class 1).

    ``labelled_model(labels, chip_size, crs=UTM)``: the image is bright where the labels say
    building (three bands, 0.5 m pixels); ``crs=None`` prepares it without a CRS. The model's
    ``config.object_sizes`` are those of the labels.
    """
    from geounet.app.classifier import UnetClassifier
    from geounet.data.prepare import prepare_data

    def _make(labels: np.ndarray, chip_size: int, crs: CRS | None = UTM) -> object:
        image = np.where(labels[None] == 1, 160, 60).astype(np.uint8).repeat(3, axis=0)
        data = prepare_data(
            make_raster(image, "scene.tif", crs=crs), make_raster(labels, "labels.tif", crs=crs),
            classes={1: "building"}, chip_size=chip_size, allow_no_crs=crs is None,
            out_dir=tmp_path / "chips",
        )  # fmt: skip
        return UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)

    return _make


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny networks gain nothing from threads, and one thread avoids
    OpenMP spin-waiting when other processes share the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pointwise_building_model(object_sizes: dict) -> SimpleNamespace:
    """A stand-in for a trained model: "building" where band 1 is above 100 (a 1x1 convolution).

    One band, 0.5 m pixels, trained on labels with these ``object_sizes``
    (:attr:`geounet.model.files.ModelConfig.object_sizes`); what ``classify_raster`` needs.
    """
    import torch

    from geounet.core.classes import make_classes
    from geounet.model.files import ModelConfig

    net = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[1, 0] = 1.0
        net.bias[1] = -100.0
    config = ModelConfig(
        arch="unet", backbone=None, in_channels=1, classes=make_classes({1: "building"}),
        bands=[1], band_names=["b1"], stats={"mean": [0.0], "std": [1.0], "p98": [255.0]},
        chip_size=64, gsd_m=0.5, source_dtype="uint8", object_sizes=object_sizes,
    )  # fmt: skip
    return SimpleNamespace(network=net, config=config, device=torch.device("cpu"))
