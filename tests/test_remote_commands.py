"""Every command takes remote images (issue 16): info, prepare, vectorize, evaluate, train.

The COGs are served by the local range-request server of ``tests/http_range_server.py``
(127.0.0.1, counting bytes), as in ``tests/test_remote.py``; outputs stay local.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import box

from geounet.cli.main import cli
from geounet.inference.classify import classify_raster
from tests.http_range_server import RangeServer
from tests.test_remote import UTM, make_model, scene, stac_item, write_cog


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A large and a small COG, the small one's class COG and a STAC Item, over HTTP."""
    root = tmp_path_factory.mktemp("bucket")
    write_cog(root / "large.tif", scene(4096, 4096), block=512)
    write_cog(root / "small.tif", scene(300, 410, seed=1), block=128)
    classify_raster(make_model(), root / "small.tif", root / "classes.tif", tile_size=128,
                    overlap=32, output_format="COG", progress=False)  # fmt: skip
    (root / "item.json").write_text(json.dumps(stac_item("small.tif")))
    server = RangeServer(root, lifetime_s=300).start()
    yield server
    server.stop()


def run(*args: str):
    """``geounet ARGS`` in-process; returns the click result."""
    return CliRunner().invoke(cli, ["-q", *args])


def test_info_reads_only_the_header_of_a_remote_cog(served):
    served.reset()
    res = run("info", served.url("large.tif"))
    assert res.exit_code == 0, res.output
    assert "4096 x 4096 pixels" in res.output and "/vsicurl/http://127.0.0.1" in res.output
    size = (served.root / "large.tif").stat().st_size
    assert 0 < served.bytes_served["large.tif"] < 0.01 * size


def test_info_of_a_stac_item_url_with_asset(served):
    res = run("info", served.url("item.json"), "--asset", "visual")
    assert res.exit_code == 0, res.output
    assert "410 x 300 pixels" in res.output and "small.tif" in res.output
    bad = run("info", served.url("item.json"), "--asset", "nir")
    assert bad.exit_code == 2 and "thumbnail, visual" in bad.output


def _labels(path):
    """Building squares inside the small scene (0.5 m pixels from x=500000, y=3700000)."""
    x0, y0 = 500000.0, 3700000.0
    boxes = [box(x0 + 10 + 25 * i, y0 - 20 - 30 * j, x0 + 22 + 25 * i, y0 - 30 - 30 * j)
             for i in range(7) for j in range(4)]  # fmt: skip
    gpd.GeoDataFrame({"class": [1] * len(boxes)}, geometry=boxes, crs=UTM).to_file(path)
    return path


def test_prepare_chips_a_remote_image_like_the_local_one(served, tmp_path):
    labels = _labels(tmp_path / "buildings.gpkg")
    common = ["--labels", str(labels), "--classes", "building", "--chip-size", "64"]
    local = run("prepare", str(served.root / "small.tif"), *common, "--out", str(tmp_path / "a"))
    assert local.exit_code == 0, local.output
    served.reset()
    remote = run("prepare", served.url("small.tif"), *common, "--out", str(tmp_path / "b"))
    assert remote.exit_code == 0, remote.output
    assert served.bytes_served["small.tif"] > 0  # read over HTTP, not from the disk
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert len(ma["chips"]) == len(mb["chips"]) > 4
    assert [c["split"] for c in ma["chips"]] == [c["split"] for c in mb["chips"]]
    for ca, cb in zip(ma["chips"], mb["chips"], strict=True):
        for key in ("image", "label"):
            with (
                rasterio.open(tmp_path / "a" / ca[key]) as a,
                rasterio.open(tmp_path / "b" / cb[key]) as b,
            ):
                assert (a.crs, a.transform) == (b.crs, b.transform)
                np.testing.assert_array_equal(a.read(), b.read())


def test_vectorize_a_served_class_cog_like_the_local_one(served, tmp_path):
    local = run("vectorize", str(served.root / "classes.tif"), "--out", str(tmp_path / "a.gpkg"))
    assert local.exit_code == 0, local.output
    served.reset()
    remote = run("vectorize", served.url("classes.tif"), "--out", str(tmp_path / "b.gpkg"))
    assert remote.exit_code == 0, remote.output
    assert served.bytes_served["classes.tif"] > 0
    a, b = (gpd.read_file(tmp_path / f"{n}.gpkg") for n in "ab")
    assert len(a) == len(b) > 0 and a.crs == b.crs
    assert a.geometry.union_all().symmetric_difference(b.geometry.union_all()).area < 1e-6


def test_evaluate_a_served_map_against_a_local_truth(served, tmp_path):
    out = tmp_path / "scores.json"
    truth = str(served.root / "classes.tif")
    res = run("evaluate", served.url("classes.tif"), "--truth", truth, "--json", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["miou"] == pytest.approx(1.0)


def test_remote_outputs_are_refused_with_the_fix(served, tmp_path):
    for args in (
        ["vectorize", served.url("classes.tif"), "--out", "s3://bucket/features.gpkg"],
        ["prepare", served.url("small.tif"), "--labels", "l.gpkg", "--out", "gs://b/chips"],
        ["train", served.url("small.tif"), "--labels", "l.gpkg", "--out", "az://c/model"],
    ):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert "outputs are written to a local path" in res.output and "://" in res.output


def test_train_keeps_an_image_url_intact(served, tmp_path):
    res = run("train", served.url("small.tif"), "--labels", "l.gpkg", "--out",
              str(tmp_path / "m"), "--ddp")  # fmt: skip
    assert res.exit_code == 2
    assert f"{served.url('small.tif')}: distributed training (--ddp) reads a chip folder" in (
        res.output
    )
