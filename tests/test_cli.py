"""The command line, in-process through click's CliRunner (plus one real subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from geounet.cli.main import cli
from geounet.cli.options import parse_bands, parse_value_map
from geounet.core.errors import InvalidParameterError
from geounet.io.raster import write_raster

COMMANDS = ["classify", "prepare", "train", "vectorize", "evaluate", "info", "demo"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_every_command(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_shows_an_example(runner, name):
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"geounet {name}" in result.output


def test_version(runner):
    from geounet import __version__

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_subprocess_help():
    out = subprocess.run(
        [sys.executable, "-m", "geounet", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "classify" in out.stdout


def test_info_raster(runner, make_raster):
    path = make_raster(np.ones((3, 20, 30), np.uint16), descriptions=["red", "green", "blue"])
    result = runner.invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "30 x 20 pixels" in result.output
    assert "EPSG:32616" in result.output
    assert "red, green, blue" in result.output


def test_info_says_how_the_pixels_are_masked_and_laid_out(runner, tmp_path):
    """An alpha band and a rotated grid decide how a raster is read: info says so."""
    from affine import Affine
    from rasterio.enums import ColorInterp

    path = tmp_path / "rot.tif"
    transform = Affine.translation(500000, 3700000) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)
    profile = dict(driver="GTiff", width=16, height=16, count=4, dtype="uint8", crs="EPSG:32616")
    with rasterio.open(path, "w", transform=transform, **profile) as dst:
        dst.write(np.full((4, 16, 16), 200, np.uint8))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    result = runner.invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "alpha band 4" in result.output and "rotated or sheared (30.0 degrees)" in result.output


def test_info_vector_file(runner, tmp_path):
    """Labels and vectorize's output are vector files: one row per layer, not a raster error."""
    import geopandas as gpd
    import shapely

    path = tmp_path / "labels.gpkg"
    boxes = [
        shapely.box(500000, 3700000, 500010, 3700010),
        shapely.box(500020, 3700000, 500030, 3700008),
    ]
    gdf = gpd.GeoDataFrame({"kind": ["house", "shed"]}, geometry=boxes, crs="EPSG:32616")
    gdf.to_file(path, layer="building")
    gdf.iloc[:1].to_file(path, layer="road")
    result = runner.invoke(cli, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["kind", "vector"]
    assert "2 Polygon, crs EPSG:32616" in result.output and "1 Polygon" in result.output
    assert "500000.000, 3700000.000, 500030.000, 3700010.000" in result.output
    assert "layer building" in result.output and "kind" in result.output
    (tmp_path / "notes.txt").write_text("not geodata")
    bad = runner.invoke(cli, ["info", str(tmp_path / "notes.txt")])
    assert bad.exit_code == 2 and "not a vector file GDAL can read either" in bad.output
    (tmp_path / "empty").mkdir()
    folder = runner.invoke(cli, ["info", str(tmp_path / "empty")])
    assert folder.exit_code == 2 and "neither a model folder" in folder.output


def test_missing_file_is_one_line_and_exit_2(runner, tmp_path):
    result = runner.invoke(cli, ["info", str(tmp_path / "nope.tif")])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("geounet: error:")
    assert "nope.tif" in lines[0]


def test_raster_without_crs_is_refused(runner, make_raster, tiny_model, tmp_path):
    """Refused for its missing CRS, with a valid model: the same pixels with a CRS classify."""
    pixels = np.full((3, 64, 64), 100, np.uint8)
    args = ["--model", str(tiny_model), "--tile-size", "64", "--overlap", "16"]
    no_crs = make_raster(pixels, name="nocrs.tif", crs=None)
    result = runner.invoke(cli, ["classify", str(no_crs), "--out", str(tmp_path / "a.tif"), *args])
    assert result.exit_code == 2, result.output + repr(result.exception)
    assert "nocrs.tif" in result.output and "coordinate reference system" in result.output
    assert not (tmp_path / "a.tif").exists()
    utm = make_raster(pixels, name="utm.tif")
    ok = runner.invoke(cli, ["-q", "classify", str(utm), "--out", str(tmp_path / "b.tif"), *args])
    assert ok.exit_code == 0, ok.output + repr(ok.exception)


def test_classify_without_any_model_says_how_to_get_one(runner, make_raster, monkeypatch, tmp_path):
    monkeypatch.delenv("GEOUNET_MODEL", raising=False)
    monkeypatch.setenv("GEOUNET_HOME", str(tmp_path / "home"))
    path = make_raster(np.ones((4, 8, 8), np.uint16))
    result = runner.invoke(cli, ["classify", str(path)])
    assert result.exit_code == 2
    assert "geounet demo" in result.output and "--model" in result.output


def test_an_output_given_as_a_second_image_gets_the_command_meant(runner, make_raster, tmp_path):
    """``geounet classify in.tif out.tif`` (GDAL's habit) is refused with ``--out out.tif``."""
    image = make_raster(np.ones((3, 8, 8), np.uint8), name="in.tif")
    target = tmp_path / "out.tif"
    result = runner.invoke(cli, ["classify", str(image), str(target)])
    assert result.exit_code == 2
    assert f"--out {target}" in result.output and "no such image" in result.output
    assert not target.exists()
    other = make_raster(np.ones((3, 8, 8), np.uint8), name="other.tif")  # two real images
    both = runner.invoke(cli, ["classify", str(image), str(other)])
    assert both.exit_code == 2 and "--out-dir" in both.output and "no such image" not in both.output


def test_many_images_are_checked_before_a_cluster_starts(runner, make_raster, monkeypatch,
                                                         tmp_path):  # fmt: skip
    """A missing image or an existing output is refused before Dask is started or reached."""
    import geounet.app.scale as scale

    def no_cluster(*args, **kwargs):
        raise AssertionError("a Dask cluster was started before the images were checked")

    monkeypatch.setattr(scale, "dask_client", no_cluster)
    image = make_raster(np.ones((3, 8, 8), np.uint8), name="a.tif")
    args = ["--out-dir", str(tmp_path / "out"), "--workers", "2"]
    missing = runner.invoke(cli, ["classify", str(image), str(tmp_path / "b.tif"), *args])
    assert missing.exit_code == 2, missing.output
    assert "b.tif: no such file" in missing.output
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_classified.tif").write_bytes(b"x")
    exists = runner.invoke(cli, ["classify", str(image), *args])
    assert exists.exit_code == 2 and "already exists" in exists.output, exists.output


@pytest.mark.parametrize(("flags", "preset", "expected"), [
    ([], None, "warning"),  # Dask's start and stop chatter hidden
    (["-vv"], None, None),  # debugging: Dask's own setting
    ([], "info", "info"),  # the user's setting kept
])  # fmt: skip
def test_dask_logs_only_warnings_unless_debugging(runner, monkeypatch, tmp_path, flags, preset,
                                                  expected):  # fmt: skip
    from geounet.cli.main import DASK_LOG_ENV

    monkeypatch.delenv(DASK_LOG_ENV, raising=False)
    if preset:
        monkeypatch.setenv(DASK_LOG_ENV, preset)
    runner.invoke(cli, [*flags, "info", str(tmp_path / "nope.tif")])
    assert os.environ.get(DASK_LOG_ENV) == expected


def test_the_onnx_export_passes_log_only_warnings(runner, tmp_path):
    """torch's ONNX export runs onnx_ir / onnxscript passes that log a line per initializer."""
    import logging

    from geounet.cli.main import ONNX_LOGGERS

    for name in ONNX_LOGGERS:  # as a fresh process has them
        logging.getLogger(name).setLevel(logging.NOTSET)
    runner.invoke(cli, ["info", str(tmp_path / "nope.tif")])
    assert all(logging.getLogger(n).level == logging.WARNING for n in ONNX_LOGGERS)


def test_evaluate_writes_json(runner, make_raster, tmp_path):
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    pred = truth.copy()
    pred[5:15, 5:10] = 0  # half the object missed
    pred[0, 0] = 255  # nodata is ignored
    t = make_raster(truth, name="truth.tif")
    with rasterio.open(t) as src:
        crs, transform = src.crs, src.transform
    p = write_raster(
        tmp_path / "pred.tif",
        pred,
        crs,
        transform,
        nodata=255,
        class_names={0: "background", 1: "building"},
    )
    result = runner.invoke(
        cli, ["evaluate", str(p), "--truth", str(t), "--json", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["per_class"]["iou"]["building"] == pytest.approx(0.5)
    assert report["per_class"]["recall"]["building"] == pytest.approx(0.5)
    assert report["pixels"] == 399
    again = runner.invoke(
        cli, ["evaluate", str(p), "--truth", str(t), "--json", str(tmp_path / "m.json")]
    )
    assert again.exit_code == 2 and "already exists" in again.output
    # --out, as every other command names its output, is the same JSON
    out = runner.invoke(cli, ["evaluate", str(p), "--truth", str(t), "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "o").read_text()) == report


def test_evaluate_truth_values_map_a_0_255_mask(runner, make_raster, tmp_path):
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 255
    t = make_raster(mask, name="mask.tif")
    with rasterio.open(t) as src:
        crs, transform = src.crs, src.transform
    pred = (mask == 255).astype(np.uint8)
    p = write_raster(
        tmp_path / "pred.tif", pred, crs, transform, nodata=255,
        class_names={0: "background", 1: "building"},
    )  # fmt: skip
    ok = runner.invoke(cli, ["evaluate", str(p), "--truth", str(t), "--truth-values", "0=0,255=1"])
    assert ok.exit_code == 0, ok.output
    assert "mIoU 1.0000" in ok.output
    bad = runner.invoke(cli, ["evaluate", str(p), "--truth", str(t), "--truth-values", "255=road"])
    assert bad.exit_code == 2
    assert "--truth-values" in bad.output and "255=road" in bad.output


def test_parse_value_map():
    assert parse_value_map("0=0, 255=1", "--x") == {0: 0, 255: 1}
    assert parse_value_map(None, "--x") is None
    with pytest.raises(InvalidParameterError, match="--x item '1'"):
        parse_value_map("1", "--x")


def test_parse_bands():
    assert parse_bands("3,2,1") == [3, 2, 1]
    assert parse_bands(" 4 ") == [4]
    assert parse_bands(None) is None
    for bad in ("x", "1,,2", "0,1", "-1", "1.5"):
        with pytest.raises(InvalidParameterError, match="1-based band numbers"):
            parse_bands(bad)


def test_bad_bands_is_one_line_and_exit_2(runner, make_raster, tmp_path):
    """Before: int("x") raised a ValueError traceback (exit code 1)."""
    image = make_raster(np.ones((3, 32, 32), np.uint8))
    labels = make_raster(np.zeros((32, 32), np.uint8), "labels.tif")
    r = runner.invoke(
        cli,
        ["prepare", str(image), "--labels", str(labels), "--out", str(tmp_path / "chips"),
         "--bands", "1,x"],
    )  # fmt: skip
    assert r.exit_code == 2, r.output + repr(r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("geounet: error: --bands '1,x'")
    assert "--bands 3,2,1" in lines[0] and not (tmp_path / "chips").exists()


def test_classes_spellings_agree_on_the_command_line(runner, make_raster, tmp_path):
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    labels[20:24, :] = 2
    path = make_raster(labels, "labels.tif")
    counts = []
    for i, spelling in enumerate(("1=building,2=road", "building,road")):
        out = tmp_path / f"v{i}.gpkg"
        r = runner.invoke(cli, ["vectorize", str(path), "--out", str(out), "--classes", spelling])
        assert r.exit_code == 0, r.output + repr(r.exception)
        counts.append(sorted(ln for ln in r.output.splitlines() if "features" in ln))
    assert counts[0] == counts[1] == ["building: 1 features", "road: 1 features"]


def test_vectorize_writes_beside_the_raster_without_out(runner, make_raster, tmp_path):
    """``geounet vectorize scene_classified.tif`` -> ``scene_classified.gpkg``, as classify does."""
    import geopandas as gpd

    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    path = make_raster(labels, "scene_classified.tif")
    r = runner.invoke(cli, ["vectorize", str(path), "--classes", "building"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    out = path.with_suffix(".gpkg")
    assert f"written: {out}" in r.output and len(gpd.read_file(out, layer="building")) == 1
    again = runner.invoke(cli, ["vectorize", str(path), "--classes", "building"])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize(("args", "says"), [
    (["vectorize"], "Missing argument 'CLASSIFIED'; add it (see `geounet vectorize --help`)."),
    (["info", "x.tif", "-q"], "-q is an option of geounet itself, not of `geounet info`: put it "
                              "before the command, `geounet -q info ...`."),
    (["classify", "a.tif", "--verbose"], "`geounet --verbose classify ...`"),
    (["classify", "a.tif", "--tile-size", "x"], "give an allowed value (see `geounet classify"),
])  # fmt: skip
def test_usage_errors_say_the_way_out(runner, args, says):
    r = runner.invoke(cli, args, prog_name="geounet")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], r.output


@pytest.fixture
def small_scene(tmp_path):
    """A 192 x 256 crop of the sample training scene with its label raster."""
    from geounet.app.demo import sample_dir

    src = sample_dir()
    out = {}
    for name in ("train.tif", "train_labels.tif"):
        with rasterio.open(src / name) as ds:
            window = ((0, 192), (0, 256))
            profile = ds.profile
            profile.update(height=192, width=256, transform=ds.window_transform(window))
            data = ds.read(window=window)
            colormap = ds.colormap(1) if name.endswith("labels.tif") else None
        path = tmp_path / name
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colormap:
                dst.write_colormap(1, colormap)
        out[name] = path
    return out["train.tif"], out["train_labels.tif"]


def test_prepare_places_the_validation_strip_where_asked(runner, small_scene, tmp_path):
    image, labels = small_scene
    args = ["-q", "prepare", str(image), "--labels", str(labels), "--classes", "1=building,2=road",
            "--chip-size", "64"]  # fmt: skip
    r = runner.invoke(cli, [*args, "--out", str(tmp_path / "c"), "--val-strip", "start"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["val_strip"] == "start"
    valid = [c["bounds"][0] for c in manifest["chips"] if c["split"] == "valid"]
    train = [c["bounds"][0] for c in manifest["chips"] if c["split"] == "train"]
    assert max(valid) < min(train)  # 256 columns: the strip is the left columns
    r = runner.invoke(cli, [*args, "--out", str(tmp_path / "d"), "--val-strip", "left"])
    assert r.exit_code == 2 and "end" in r.output and "middle" in r.output


def test_train_augment_option_reaches_the_training_chips(
    runner, small_scene, tmp_path, monkeypatch
):
    """``--augment KEY=VALUE`` / ``off`` set the loaders' augmentation; a bad item is one line."""
    import geounet.app.workflows as workflows

    image, labels = small_scene
    chips = tmp_path / "chips"
    args = ["-q", "prepare", str(image), "--labels", str(labels), "--out", str(chips),
            "--classes", "1=building,2=road", "--chip-size", "64"]  # fmt: skip
    assert runner.invoke(cli, args).exit_code == 0
    seen = []

    class Fitted:
        config = type("Config", (), {"metrics": {}})()
        writes_files = True
        history = pd.DataFrame()

    def fake_fit_and_save(data, out, **kwargs):
        seen.append(data.train_ds.augment)
        return Fitted()

    monkeypatch.setattr(workflows, "fit_and_save", fake_fit_and_save)
    train = ["-q", "train", str(chips), "--out", str(tmp_path / "m")]
    r = runner.invoke(cli, [*train, "--augment", "rotate=45", "--augment", "scale=0.9,1.1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert (seen[-1].rotate, seen[-1].scale, seen[-1].dihedral) == (45.0, (0.9, 1.1), True)
    assert runner.invoke(cli, [*train, "--augment", "off"]).exit_code == 0
    assert seen[-1] is None
    assert runner.invoke(cli, train).exit_code == 0 and seen[-1].rotate == 0.0
    r = runner.invoke(cli, [*train, "--augment", "rotate=200"])
    assert r.exit_code == 2 and "rotate=200" in r.output and len(r.output.splitlines()) == 1
    assert len(seen) == 3  # refused before any training


def test_train_from_a_saved_model_fine_tunes_it(runner, small_scene, tmp_path):
    """``geounet train --from MODEL_DIR``: the saved network goes on learning on new labels
    (Python had ``UnetClassifier(data, pretrained_path=)``; the shell and QGIS had nothing)."""
    from geounet.app.classifier import UnetClassifier
    from geounet.data.prepare import prepare_data

    image, labels = small_scene
    classes = {1: "building", 2: "road"}
    data = prepare_data(image, labels, classes=classes, chip_size=64, out_dir=tmp_path / "c")
    start = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    start.save(tmp_path / "area1")
    args = ["-q", "train", str(image), "--labels", str(labels), "--classes", "1=building,2=road",
            "--chip-size", "64", "--epochs", "1", "--lr", "1e-3", "--seed", "0"]  # fmt: skip
    r = runner.invoke(cli, [*args, "--from", str(tmp_path / "area1"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    saved = json.loads((tmp_path / "b" / "geounet.json").read_text())
    assert saved["arch"] == "unet-classic" and saved["unet_kwargs"]["base_channels"] == 4
    assert saved["encoder_weights"] == "fine-tuned from area1"
    missing = runner.invoke(cli, [*args, "--from", str(tmp_path / "nope"), "--out", "x"])
    assert missing.exit_code == 2 and "nope" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


def test_train_passes_split_and_fit_options(runner, small_scene, tmp_path, monkeypatch):
    """``geounet train`` chips with --stride/--val-*, fits with --refit-on-all/--seed/--budget-min.

    With a chip folder (chipped and split already) those chipping options are one line, exit 2.
    """
    import geounet.app.workflows as workflows

    image, labels = small_scene
    seen = []

    class Fitted:
        config = type(
            "Config", (), {"metrics": {"miou": 0.5, "per_class": {"building": {"iou": 0.25}}}}
        )()
        writes_files = True
        history = pd.DataFrame()

    def fake_fit_and_save(data, out, **kwargs):
        seen.append((data.manifest, kwargs["fit_options"]))
        return Fitted()

    monkeypatch.setattr(workflows, "fit_and_save", fake_fit_and_save)
    train = ["-q", "train", str(image), "--labels", str(labels), "--classes",
             "1=building,2=road", "--chip-size", "64"]  # fmt: skip
    r = runner.invoke(cli, [*train, "--out", str(tmp_path / "m1")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    manifest, fit_options = seen[-1]
    assert fit_options == {"progress": False} and manifest["val_strip"] == "auto"  # -q: no bars
    assert (manifest["stride"], manifest["val_fraction"]) == (32, 0.2)  # half a chip
    r = runner.invoke(
        cli,
        [*train, "--out", str(tmp_path / "m2"), "--stride", "16", "--val-fraction", "0.4",
         "--val-strip", "start", "--refit-on-all", "--seed", "3", "--budget-min", "0.5"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output + repr(r.exception)
    manifest, fit_options = seen[-1]
    assert fit_options == {
        "refit_on_all": True,
        "seed": 3,
        "time_budget_s": 30.0,
        "progress": False,
    }
    assert (manifest["stride"], manifest["val_fraction"]) == (16, 0.4)
    assert manifest["val_strip"] == "start"
    valid = [c["bounds"][0] for c in manifest["chips"] if c["split"] == "valid"]
    train_x = [c["bounds"][0] for c in manifest["chips"] if c["split"] == "train"]
    assert max(valid) < min(train_x)  # the strip is at the start, as asked
    assert "miou: 0.5000" in r.output and "iou building: 0.2500" in r.output  # per class too
    loud = runner.invoke(cli, [*train[1:], "--out", str(tmp_path / "m4")])
    assert loud.exit_code == 0 and seen[-1][1] == {}  # without -q fit shows its bars

    chips = tmp_path / "chips"
    prep = ["-q", "prepare", str(image), "--labels", str(labels), "--out", str(chips),
            "--classes", "1=building,2=road", "--chip-size", "64"]  # fmt: skip
    assert runner.invoke(cli, prep).exit_code == 0
    r = runner.invoke(cli, ["train", str(chips), "--out", str(tmp_path / "m3"), "--stride", "32"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert str(chips) in r.output and "stride" in r.output and "--labels" in r.output
    assert len(seen) == 3  # refused before any training


@pytest.mark.slow
def test_prepare_train_info_classify_evaluate_chain(runner, small_scene, tmp_path):
    image, labels = small_scene
    chips, model = tmp_path / "chips", tmp_path / "model"
    r = runner.invoke(
        cli,
        ["-q", "prepare", str(image), "--labels", str(labels), "--out", str(chips),
         "--classes", "1=building,2=road", "--chip-size", "64"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output + repr(r.exception)
    manifest = json.loads((chips / "manifest.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == ["background", "building", "road"]
    assert {c["split"] for c in manifest["chips"]} == {"train", "valid"}

    r = runner.invoke(cli, ["info", str(chips)])
    assert r.exit_code == 0 and "chip folder" in r.output and "building" in r.output

    r = runner.invoke(
        cli,
        ["-q", "train", str(chips), "--out", str(model), "--backbone", "resnet18",
         "--weights", "none", "--epochs", "1", "--lr", "1e-3", "--batch-size", "4"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "epochs: 1 (ended by its planned epochs); weights kept from epoch 1" in r.output
    assert (model / "geounet.json").exists() and (model / "model.safetensors").exists()
    r = runner.invoke(cli, ["info", str(model)])
    assert r.exit_code == 0 and "model folder" in r.output and "resnet18" in r.output
    assert re.search(r"pixel size +0\.5 m\n", r.output), r.output  # not 0.49999999
    assert "band_4 (bands 1, 2, 3, 4 of 4-band images)\n" in r.output  # what a scene must give

    out = tmp_path / "pred.tif"
    r = runner.invoke(
        cli, ["-q", "classify", str(image), "--model", str(model), "--out", str(out),
              "--tile-size", "128", "--overlap", "32"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output + repr(r.exception)
    with rasterio.open(out) as pred, rasterio.open(image) as img:
        assert (pred.crs, pred.transform, pred.shape) == (img.crs, img.transform, img.shape)
        assert pred.dtypes[0] == "uint8" and pred.colormap(1)[1][:3] != (0, 0, 0)
        assert (pred.read(1) != 255).all()  # the crop has no nodata: every pixel classified

    report = tmp_path / "report.json"
    r = runner.invoke(cli, ["evaluate", str(out), "--truth", str(labels), "--json", str(report)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert set(json.loads(report.read_text())["classes"]) == {"background", "building", "road"}


def test_ctrl_c_exits_130_and_leaves_no_output(
    runner, make_raster, tiny_model, tmp_path, monkeypatch
):
    """Ctrl-C in the middle of a run, while rows are already in the temporary output."""
    from geounet.model.saved import SavedModel

    image = make_raster(np.random.default_rng(0).integers(1, 255, (3, 160, 160), np.uint8))
    out = tmp_path / "never.tif"
    hidden_at_interrupt: list[list[str]] = []
    real = SavedModel.open.__func__

    def from_model(cls, *args, **kwargs):
        clf = real(cls, *args, **kwargs)
        forward, calls = clf.network.forward, []

        def interrupted_at_call_9(*a, **k):  # 4 x 4 tiles, one per call: in tile row 3
            calls.append(1)
            if len(calls) == 9:
                hidden_at_interrupt.append(
                    [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
                )
                raise KeyboardInterrupt
            return forward(*a, **k)

        clf.network.forward = interrupted_at_call_9
        return clf

    monkeypatch.setattr(SavedModel, "open", classmethod(from_model))
    r = runner.invoke(
        cli, ["classify", str(image), "--model", str(tiny_model), "--out", str(out),
              "--tile-size", "64", "--overlap", "16", "--batch-size", "1"],
    )  # fmt: skip
    assert r.exit_code == 130, r.output + repr(r.exception)
    (hidden,) = hidden_at_interrupt
    assert any(name.startswith(".never.tmp-") for name in hidden)  # the run was writing
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # and it is gone


# ------------------------------------------------------------------- rasters without a CRS
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved, untrained 3-band paper U-Net (4 channels, depth 2): fast to run."""
    from model_fakes import make_fake_data

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, chip=32, size=64)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    return model.save(tmp_path_factory.mktemp("models") / "tiny")


def _no_crs_args(name, make_raster, tmp_path, model):
    """The arguments of command ``name`` on rasters without a CRS."""
    image = make_raster(np.full((3, 64, 64), 100, np.uint8), "img.tif", crs=None)
    labels = np.zeros((64, 64), np.uint8)
    labels[8:40, 8:40] = 1
    lab = make_raster(labels, "labels.tif", crs=None)
    out = str(tmp_path / "out")
    return {
        "classify": [str(image), "--model", str(model), "--out", out + ".tif",
                     "--tile-size", "64", "--overlap", "16"],
        "prepare": [str(image), "--labels", str(lab), "--out", out, "--chip-size", "32"],
        "train": [str(image), "--labels", str(lab), "--out", out, "--chip-size", "32",
                  "--backbone", "unet-classic", "--weights", "none", "--epochs", "1",
                  "--lr", "1e-3", "--batch-size", "2"],
        "vectorize": [str(lab), "--out", out + ".gpkg", "--classes", "1=building"],
        "evaluate": [str(lab), "--truth", str(lab), "--classes", "building"],
    }[name]  # fmt: skip


@pytest.mark.parametrize("name", ["classify", "prepare", "train", "vectorize", "evaluate"])
def test_allow_no_crs_on_every_command_that_suggests_it(
    runner, make_raster, tmp_path, tiny_model, name
):
    args = _no_crs_args(name, make_raster, tmp_path, tiny_model)
    refused = runner.invoke(cli, ["-q", name, *args])
    assert refused.exit_code == 2, refused.output + repr(refused.exception)
    assert "coordinate reference system" in refused.output
    assert "--allow-no-crs" in refused.output  # the message suggests the option...
    accepted = runner.invoke(cli, ["-q", name, *args, "--allow-no-crs"])
    assert accepted.exit_code == 0, accepted.output + repr(accepted.exception)  # ...it exists


def test_classify_nodata_marks_an_undeclared_black_border(
    runner, make_raster, tmp_path, tiny_model
):
    """A black border the file does not declare: --nodata 0 (classify(nodata=0)) makes it
    nodata in the class raster instead of a class."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, 64, 64)).astype(np.uint8)
    image[:, :, :16] = 0
    img = make_raster(image, "img.tif")
    out = tmp_path / "out.tif"
    args = ["-q", "classify", str(img), "--model", str(tiny_model), "--out", str(out),
            "--tile-size", "64", "--overlap", "16", "--no-probabilities"]  # fmt: skip
    r = runner.invoke(cli, [*args, "--nodata", "0"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    with rasterio.open(out) as src:
        classes = src.read(1)
    assert (classes[:, :16] == 255).all() and (classes[:, 16:] != 255).all()
    r = runner.invoke(cli, [*args, "--overwrite"])  # the file's own: no nodata
    with rasterio.open(out) as src:
        assert (src.read(1) != 255).all()


def test_classify_bands_picks_the_image_bands(runner, make_raster, tmp_path, tiny_model):
    """--bands 3,2,1 reads a four-band image's bands 3, 2 and 1 (was: refused, 4 for 3); a
    wrong choice is one line naming the file, exit code 2."""
    from rasterio.enums import ColorInterp

    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (4, 64, 64)).astype(np.uint8)
    plain = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined, ColorInterp.undefined]
    four = make_raster(image, "bgrn.tif", colorinterp=plain)  # four data bands, no alpha
    three = make_raster(image[[2, 1, 0]], "rgb.tif")
    args = ["-q", "classify", "--model", str(tiny_model), "--tile-size", "64", "--overlap",
            "16", "--no-probabilities"]  # fmt: skip
    r = runner.invoke(cli, [*args, str(four), "--out", str(tmp_path / "a.tif"), "--bands", "3,2,1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    r = runner.invoke(cli, [*args, str(three), "--out", str(tmp_path / "b.tif")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    r = runner.invoke(cli, [*args, str(four), "--out", str(tmp_path / "c.tif")])
    assert r.exit_code == 2 and "--bands 1,2,3" in r.output
    r = runner.invoke(cli, [*args, str(four), "--out", str(tmp_path / "c.tif"), "--bands", "9,2,1"])
    assert r.exit_code == 2 and "bgrn.tif: bands=(9, 2, 1)" in r.output
    assert r.output.count("\n") == 1 and not (tmp_path / "c.tif").exists()


def test_classify_no_crs_output_has_no_crs(runner, make_raster, tmp_path, tiny_model):
    args = _no_crs_args("classify", make_raster, tmp_path, tiny_model)
    vector = tmp_path / "features.gpkg"
    r = runner.invoke(cli, ["-q", "classify", *args, "--vector", str(vector), "--allow-no-crs"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.crs is None and src.shape == (64, 64)
    assert vector.exists()


def test_prepare_takes_the_nodata_and_the_valid_share_of_a_chip(runner, make_raster, tmp_path):
    """A black border the file does not declare as nodata (--nodata 0), and chips kept only
    where 90 % of the pixels hold data (--min-valid-fraction): options the errors named."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (3, 128, 128)).astype(np.uint8)
    image[:, :, :64] = 0  # the left half is a black border
    labels = np.zeros((128, 128), np.uint8)
    labels[20:40, 80:100] = 1
    img, lab = make_raster(image, "img.tif"), make_raster(labels, "lab.tif")
    out = tmp_path / "chips"
    args = ["-q", "prepare", str(img), "--labels", str(lab), "--classes", "building",
            "--out", str(out), "--chip-size", "32", "--stride", "32"]  # fmt: skip
    r = runner.invoke(cli, [*args, "--nodata", "0", "--min-valid-fraction", "0.9"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    manifest = json.loads((out / "manifest.json").read_text())
    cols = [c["window"][1] for c in manifest["chips"]]
    assert cols and min(cols) >= 64  # no chip of the border
    assert manifest["stats"]["mean"][0] > 50  # the border is not in the statistics
    r = runner.invoke(cli, [*args, "--overwrite"])  # without: the border is imagery
    assert (
        min(c["window"][1] for c in json.loads((out / "manifest.json").read_text())["chips"]) == 0
    )


def test_warnings_are_one_line_each_and_said_once(make_raster, tmp_path, tiny_model):
    """Python's warnings printed the file, line and source line of each warning."""
    rng = np.random.default_rng(0)  # 12-bit values for a model trained on 8-bit: a warning
    image = make_raster(rng.integers(0, 4000, (3, 64, 64)).astype(np.uint16), "img.tif")
    out = tmp_path / "out.tif"
    command = [sys.executable, "-m", "geounet", "classify", str(image), "--model",
               str(tiny_model), "--out", str(out), "--tile-size", "128"]  # fmt: skip
    r = subprocess.run(command, capture_output=True, text=True, timeout=300)  # pytest's own
    assert r.returncode == 0, r.stderr  # warning capture would hide what a user sees
    lines = [x.split("\r")[-1] for x in r.stderr.splitlines()]
    said = [x for x in lines if "Warning" in x or x.startswith("warning:")]
    assert said and all(x.startswith("warning: ") for x in said), r.stderr
    assert len(said) == len(set(said))  # each once
    assert ".py:" not in r.stderr and "warnings.warn" not in r.stderr


def test_classify_vector_vectorizes_with_the_probabilities(
    runner, make_raster, tmp_path, tiny_model, monkeypatch
):
    """`classify --vector` drops unsure buildings: vectorize always gets the probabilities."""
    import geounet.vectorizing.pipeline as pipeline
    from geounet.vectorizing.confidence import PROBABILITIES_TAG

    seen = []
    real = pipeline.vectorize

    def spy(classified, out=None, **kw):
        seen.append((Path(kw["probabilities"]), Path(kw["probabilities"]).is_file()))
        return real(classified, out, **kw)

    monkeypatch.setattr(pipeline, "vectorize", spy)
    image = make_raster(np.full((3, 64, 64), 100, np.uint8), "img.tif")
    args = ["-q", "classify", str(image), "--model", str(tiny_model), "--tile-size", "64",
            "--overlap", "16"]  # fmt: skip
    out, vector = tmp_path / "c.tif", tmp_path / "f.gpkg"
    bare = ["--out", str(out), "--vector", str(vector), "--no-probabilities"]
    r = runner.invoke(cli, [*args, *bare])
    assert r.exit_code == 0, r.output + repr(r.exception)
    ((temp, existed),) = seen
    assert existed and not temp.exists()  # a temporary file, gone once vectorized
    assert temp.parent.parent == tmp_path  # beside the output, on its disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "f.gpkg", "img.tif"]
    out2, kept = tmp_path / "d.tif", tmp_path / "d_probabilities.tif"
    r = runner.invoke(cli, [*args, "--out", str(out2), "--vector", str(tmp_path / "g.gpkg")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert seen[1] == (kept, True) and kept.exists()  # by default kept beside the output
    with rasterio.open(out2) as src:
        assert src.tags()[PROBABILITIES_TAG] == "d_probabilities.tif"  # vectorize finds it
    chosen = tmp_path / "elsewhere" / "p.tif"
    chosen.parent.mkdir()
    r = runner.invoke(
        cli, [*args, "--out", str(tmp_path / "e.tif"), "--vector", str(tmp_path / "h.gpkg"),
              "--probabilities", str(chosen)]
    )  # fmt: skip
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert seen[2] == (chosen, True) and not (tmp_path / "e_probabilities.tif").exists()
    r = runner.invoke(
        cli, [*args, "--out", str(tmp_path / "x.tif"), "--probabilities", str(chosen),
              "--no-probabilities"]
    )  # fmt: skip
    assert r.exit_code == 2 and "contradict" in r.output and not (tmp_path / "x.tif").exists()


def test_classify_vector_names_the_files_it_wrote(runner, make_raster, tmp_path, tiny_model):
    """A bare name gets ``.gpkg``; a format of one file per class, ``<stem>_<class>.ext``."""
    image = make_raster(np.full((3, 64, 64), 100, np.uint8), "img.tif")
    args = ["-q", "classify", str(image), "--model", str(tiny_model), "--tile-size", "64",
            "--overlap", "16", "--no-probabilities"]  # fmt: skip
    for i, (vector, written) in enumerate([("f", ["f.gpkg"]), ("g.fgb", ["g_building.fgb"])]):
        out = ["--out", str(tmp_path / f"c{i}.tif"), "--vector", str(tmp_path / vector)]
        r = runner.invoke(cli, [*args, *out])
        assert r.exit_code == 0, r.output + repr(r.exception)
        line = next(ln for ln in r.output.splitlines() if ln.startswith("vector:"))
        assert line == "vector: " + ", ".join(str(tmp_path / w) for w in written)
        assert all((tmp_path / w).exists() for w in written)


def test_classify_then_vectorize_drops_unsure_buildings_by_default(runner, make_raster, tmp_path,
                                                                   tiny_model):  # fmt: skip
    """The analyst's two commands: ``vectorize`` finds the probabilities ``classify`` left."""
    image = make_raster(np.full((3, 64, 64), 100, np.uint8), "img.tif")
    args = ["classify", str(image), "--model", str(tiny_model), "--tile-size", "64",
            "--overlap", "16"]  # fmt: skip
    notes = {}
    for name, extra in (("default", []), ("bare", ["--no-probabilities"])):
        out = tmp_path / f"{name}.tif"
        r = runner.invoke(cli, ["-q", *args, "--out", str(out), *extra])
        assert r.exit_code == 0, r.output + repr(r.exception)
        assert (tmp_path / f"{name}_probabilities.tif").exists() == (name == "default")
        v = runner.invoke(cli, ["vectorize", str(out), "--out", str(tmp_path / f"{name}.gpkg")])
        assert v.exit_code == 0, v.output + repr(v.exception)
        notes[name] = "no building probabilities" in v.stderr
    assert notes == {"default": False, "bare": True}


# ----------------------------------------------------------- outputs checked before any work
@pytest.fixture
def spy_network(monkeypatch):
    """Record every forward pass of a model opened by ``geounet classify`` (``SavedModel``)."""
    from geounet.model.saved import SavedModel

    calls: list[int] = []
    real = SavedModel.open.__func__

    def from_model(cls, *args, **kwargs):
        clf = real(cls, *args, **kwargs)
        forward = clf.network.forward

        def counted(*a, **k):
            calls.append(1)
            return forward(*a, **k)

        clf.network.forward = counted
        return clf

    monkeypatch.setattr(SavedModel, "open", classmethod(from_model))
    return calls


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_classify_refuses_an_existing_vector_output_before_any_work(
    runner, make_raster, tmp_path, tiny_model, spy_network, suffix
):
    """Before: the whole scene was classified (and the raster written) before the check."""
    image = make_raster(np.full((3, 64, 64), 100, np.uint8), "img.tif")
    out, vector = tmp_path / "classified.tif", tmp_path / f"features{suffix}"
    existing = vector if suffix == ".gpkg" else tmp_path / f"features_building{suffix}"
    existing.write_text("keep me")
    args = ["classify", str(image), "--model", str(tiny_model), "--out", str(out),
            "--vector", str(vector), "--tile-size", "64", "--overlap", "16"]  # fmt: skip
    r = runner.invoke(cli, ["-q", *args])
    assert r.exit_code == 2, r.output + repr(r.exception)
    assert "already exists" in r.output and existing.name in r.output
    assert spy_network == [] and not out.exists()
    assert existing.read_text() == "keep me"
    r = runner.invoke(cli, ["-q", *args, "--overwrite"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert spy_network and out.exists() and existing.read_bytes() != b"keep me"
