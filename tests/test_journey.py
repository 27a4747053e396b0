"""The user journey end to end: `geounet demo` (fast settings), the CLI chain, the notebook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner

from geounet.app.classifier import UnetClassifier
from geounet.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run `geounet demo` once with a tiny budget; the model lands in a private home."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("demo") / "out"
    old = os.environ.get("GEOUNET_HOME")
    os.environ["GEOUNET_HOME"] = str(home)
    try:
        result = CliRunner().invoke(
            cli, ["-q", "demo", "--out", str(out), "--epochs", "1", "--budget-min", "0.3"]
        )
    finally:
        if old is None:
            os.environ.pop("GEOUNET_HOME", None)
        else:
            os.environ["GEOUNET_HOME"] = old
    return result, out, home


@pytest.mark.slow
def test_demo_writes_every_output(demo_run):
    result, out, home = demo_run
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in ("classified.tif", "features.gpkg", "metrics.json", "quicklook.png"):
        assert (out / name).exists(), name
    with (
        rasterio.open(out / "classified.tif") as dst,
        rasterio.open(REPO / "sample_data" / "test.tif") as src,
    ):
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.colormap(1)[1][:3] != (0, 0, 0)
        classified, nodata = dst.read(1), (src.read() == 0).all(axis=0)
    assert nodata.any() and np.array_equal(classified == 255, nodata)  # the nodata strip only
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["classes"]) == {"background", "building", "road"}
    with rasterio.open(REPO / "sample_data" / "test_labels.tif") as lab:
        truth = lab.read(1)
    scored = (classified != 255) & (truth != 255)  # the report, recounted from the rasters
    assert metrics["pixels"] == int(scored.sum())
    assert metrics["pixel_accuracy"] == pytest.approx(np.mean(classified[scored] == truth[scored]))
    assert "building" in result.output and "IoU" in result.output
    assert (home / "models" / "demo" / "geounet.json").exists()


@pytest.mark.slow
def test_classify_uses_the_demo_model_by_default(demo_run, tmp_path, monkeypatch):
    _, _, home = demo_run
    monkeypatch.setenv("GEOUNET_HOME", str(home))
    monkeypatch.delenv("GEOUNET_MODEL", raising=False)
    src = REPO / "sample_data" / "test.tif"
    with rasterio.open(src) as ds:
        profile = ds.profile
        data = ds.read(window=((0, 300), (0, 200)))
        profile.update(width=200, height=300, transform=ds.window_transform(((0, 300), (0, 200))))
    img = tmp_path / "small.tif"
    with rasterio.open(img, "w", **profile) as dst:
        dst.write(data)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["-q", "classify", str(img), "--tile-size", "256", "--vector", str(tmp_path / "f.gpkg")],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = tmp_path / "small_classified.tif"
    with rasterio.open(out) as ds:
        assert ds.transform == profile["transform"] and ds.crs == profile["crs"]
        classified = ds.read(1)
    assert (classified != 255).all()  # the crop has no nodata
    # what the demo model predicts in memory with the same tiling (overlap: the CLI default)
    demo = UnetClassifier.from_model(home / "models" / "demo")
    np.testing.assert_array_equal(classified, demo.predict(data, tile_size=256, overlap=64)[0])
    assert sorted(pyogrio.list_layers(tmp_path / "f.gpkg")[:, 0]) == ["building", "road"]
    again = runner.invoke(cli, ["classify", str(img)])
    assert again.exit_code == 2 and "already exists" in again.output
    info = runner.invoke(cli, ["info", str(home / "models" / "demo")])
    assert info.exit_code == 0 and "model folder" in info.output


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GEOUNET_FAST", "1")
    monkeypatch.setenv("GEOUNET_HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the kernel's mkdtemp, not /tmp's
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
