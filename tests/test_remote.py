"""Cloud-native inputs (issue 16): COGs over HTTP range requests and STAC Items.

A local HTTP server on 127.0.0.1 (``tests/http_range_server.py``) honours Range requests and
counts the bytes it serves, standing in for object storage.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.transform import from_origin

from geounet.cli.main import cli
from geounet.core.classes import make_classes
from geounet.core.errors import InvalidParameterError
from geounet.inference.classify import classify_raster
from geounet.io.raster import open_raster, read_window
from geounet.io.remote import RemotePath, gdal_path
from geounet.model.files import ModelConfig
from tests.http_range_server import RangeServer

UTM = "EPSG:32633"


def write_cog(path, arr, block=256):
    """A Cloud-Optimized GeoTIFF (rasterio's COG driver: tiled, deflate, overviews)."""
    profile = {
        "driver": "COG", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
        "dtype": "uint8", "crs": UTM, "transform": from_origin(500000, 3700000, 0.5, 0.5),
        "blocksize": block, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def scene(h, w, seed=0):
    """Smooth fields plus noise: compresses like imagery, not like random bytes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(yy / 37.0) * np.cos(xx / 23.0)
    bands = [base + rng.normal(0, 4, (h, w)) + 10 * b for b in range(3)]
    return np.clip(np.stack(bands), 0, 255).astype(np.uint8)


class Smooth(torch.nn.Module):
    """A fixed 3x3 convolution (not pointwise, so the halo matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def make_model():
    config = ModelConfig(
        arch="unet", backbone=None, in_channels=3, classes=make_classes({1: "thing"}),
        bands=[1, 2, 3], band_names=["r", "g", "b"],
        stats={"mean": [128.0] * 3, "std": [40.0] * 3, "p2": [0.0] * 3, "p98": [250.0] * 3},
        chip_size=128, gsd_m=0.5, source_dtype="uint8",
    )  # fmt: skip
    return SimpleNamespace(network=Smooth(), config=config, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder with a large COG (4096 x 4096 x 3) and a small one, served over HTTP."""
    root = tmp_path_factory.mktemp("bucket")
    write_cog(root / "large.tif", scene(4096, 4096), block=512)
    write_cog(root / "small.tif", scene(300, 410, seed=1), block=128)
    server = RangeServer(root, lifetime_s=300).start()
    yield server
    server.stop()


def test_a_window_of_a_large_remote_cog_reads_a_small_fraction_of_it(served):
    size = (served.root / "large.tif").stat().st_size
    served.reset()
    info = open_raster(served.url("large.tif"))
    assert isinstance(info.path, RemotePath) and info.path.startswith("/vsicurl/http://")
    assert (info.width, info.height, info.path.name) == (4096, 4096, "large.tif")
    with rasterio.open(info.path) as src:
        remote, valid = read_window(src, 1800, 2100, 512, 512, [1, 2, 3])
    with rasterio.open(served.root / "large.tif") as src:
        local, _ = read_window(src, 1800, 2100, 512, 512, [1, 2, 3])
    np.testing.assert_array_equal(remote, local)
    assert valid.all()
    sent = served.bytes_served["large.tif"]
    assert 0 < sent < 0.08 * size, f"{sent} of {size} bytes served for a 512 x 512 window"


def test_remote_classification_equals_the_local_one(served, tmp_path):
    model, kw = make_model(), {"tile_size": 128, "overlap": 32, "progress": False}
    local = classify_raster(model, served.root / "small.tif", tmp_path / "local.tif", **kw)
    remote = classify_raster(model, served.url("small.tif"), tmp_path / "remote.tif", **kw)
    with rasterio.open(local) as a, rasterio.open(remote) as b:
        assert (a.crs, a.transform) == (b.crs, b.transform)
        np.testing.assert_array_equal(a.read(), b.read())
        assert len(np.unique(a.read())) == 2  # both classes occur: a real comparison


COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def stac_item(href):
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": "small", "properties": {},
        "geometry": None, "links": [],
        "assets": {
            "visual": {"href": href, "type": COG_TYPE},
            "thumbnail": {"href": "thumb.png", "type": "image/png"},
        },
    }  # fmt: skip


def test_a_stac_item_resolves_to_its_asset(served, tmp_path):
    # a local Item pointing at the server, and an Item served with a relative href
    (tmp_path / "item.json").write_text(json.dumps(stac_item(served.url("small.tif"))))
    (served.root / "item.json").write_text(json.dumps(stac_item("./small.tif")))
    want = gdal_path(served.url("small.tif"))
    assert gdal_path(tmp_path / "item.json", "visual") == want
    assert gdal_path(served.url("item.json"), "visual") == want
    assert gdal_path(served.url("item.json")) == want  # the only GeoTIFF asset
    model, kw = make_model(), {"tile_size": 128, "overlap": 32, "progress": False}
    a = classify_raster(model, served.root / "small.tif", tmp_path / "a.tif", **kw)
    b = classify_raster(model, served.url("item.json"), tmp_path / "b.tif", asset="visual", **kw)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        np.testing.assert_array_equal(ra.read(), rb.read())


def test_a_missing_asset_names_the_assets_there_are(served, tmp_path):
    (tmp_path / "item.json").write_text(json.dumps(stac_item(served.url("small.tif"))))
    with pytest.raises(InvalidParameterError, match=r"item\.json.*thumbnail, visual.*--asset"):
        open_raster(tmp_path / "item.json", asset="red")


def test_s3_gs_az_uris_become_gdal_virtual_files():
    assert gdal_path("s3://bucket/k/a.tif") == "/vsis3/bucket/k/a.tif"
    assert gdal_path("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    assert gdal_path("az://container/a.tif") == "/vsiaz/container/a.tif"
    assert gdal_path("https://h/x/a.tif?sig=1").stem == "a"


def test_a_remote_output_is_refused_before_any_work(served, tmp_path):
    model = make_model()
    with pytest.raises(InvalidParameterError, match=r"s3://b/out\.tif: outputs are written"):
        classify_raster(model, served.url("small.tif"), "s3://b/out.tif", progress=False)


def test_cli_classifies_a_stac_item_url_with_asset(served, tmp_path, monkeypatch):
    (served.root / "item2.json").write_text(json.dumps(stac_item("small.tif")))
    from geounet.model.saved import SavedModel

    monkeypatch.setattr(SavedModel, "open", lambda *a, **k: make_model())
    out = tmp_path / "cli.tif"
    args = ["classify", served.url("item2.json"), "--asset", "visual", "--model", str(tmp_path)]
    res = CliRunner().invoke(cli, [*args, "--out", str(out), "--tile-size", "128"])
    assert res.exit_code == 0, res.output
    ref = classify_raster(make_model(), served.root / "small.tif", tmp_path / "ref.tif",
                          tile_size=128, progress=False)  # fmt: skip
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    bad = CliRunner().invoke(cli, [*args[:2], "--asset", "nir", "--model", str(tmp_path)])
    assert bad.exit_code == 2 and "visual" in bad.output


def test_a_cog_output_is_served_the_same_way(served, tmp_path):
    out = served.root / "classes_cog.tif"
    classify_raster(make_model(), served.url("small.tif"), out, tile_size=128, overlap=32,
                    output_format="COG", progress=False)  # fmt: skip
    served.reset()
    info = open_raster(served.url("classes_cog.tif"))
    with rasterio.open(info.path) as remote, rasterio.open(out) as local:
        assert remote.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(remote.read(1), local.read(1))
    assert served.bytes_served["classes_cog.tif"] > 0
