"""The QGIS plugin: its runner and command lines here, its algorithms in a real headless QGIS.

The runner and command builders import no QGIS, so they are tested in this environment. The
Processing algorithms are run by ``tests/qgis_driver.py`` under the system Python that has
PyQGIS (Debian's ``python3-qgis``; ``.ci/run`` installs it), with the geounet executable of
this environment as the configured command, and their outputs are compared with
``geounet classify`` / ``vectorize`` run directly. Those tests skip with a reason when QGIS is
not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import torch
from click.testing import CliRunner
from conftest import REPO
from model_fakes import make_fake_data, synthetic_scene

sys.path.insert(0, str(REPO / "qgis"))
from geounet_qgis import commands
from geounet_qgis.runner import GeounetRunError, run_geounet

from geounet.app.classifier import UnetClassifier
from geounet.app.qgis_install import install_qgis_plugin
from geounet.cli.main import cli
from geounet.core.types import ENGINE_CHOICES

SYSTEM_PYTHON = "/usr/bin/python3"
GEOUNET = str(Path(sys.executable).parent / "geounet")


def _fake_command(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake_geounet"
    script.write_text(f"#!{sys.executable}\nimport sys, time, signal\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_runner_relays_tqdm_progress_and_lines(tmp_path: Path):
    exe = _fake_command(
        tmp_path,
        "print('starting', flush=True)\n"
        "for i in (0, 25, 50, 100):\n"
        "    sys.stderr.write(f'\\r{i:3d}%|###| {i}/100 [00:00<00:00]'); sys.stderr.flush()\n"
        "print('\\nwrote out.tif', flush=True)",
    )
    progress, lines = [], []
    tail = run_geounet(["x"], executable=exe, on_progress=progress.append, on_line=lines.append)
    assert progress == [0, 25, 50, 100]
    assert lines == ["starting", "wrote out.tif"] and tail[-1] == "wrote out.tif"


def test_runner_reports_geounet_one_line_error(tmp_path: Path):
    exe = _fake_command(
        tmp_path, "print('geounet: error: a.tif: not found; check the path.'); sys.exit(2)"
    )
    with pytest.raises(GeounetRunError, match=r"code 2: geounet: error: a\.tif: not found"):
        run_geounet([], executable=exe)
    with pytest.raises(GeounetRunError, match="cannot run the geounet command"):
        run_geounet([], executable=str(tmp_path / "missing"))


def test_runner_cancel_interrupts_with_sigint(tmp_path: Path):
    marker = tmp_path / "cleaned"
    exe = _fake_command(
        tmp_path,
        "def stop(*a):\n"
        f"    open({str(marker)!r}, 'w').close(); sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)",
    )
    seen = []
    with pytest.raises(GeounetRunError, match="cancelled"):
        run_geounet([], executable=exe, on_line=seen.append, is_canceled=lambda: bool(seen))
    assert marker.exists()  # the command got SIGINT and cleaned up, it was not killed


def test_a_stale_executable_setting_falls_back_to_the_installed_one(tmp_path: Path, monkeypatch):
    """QGIS keeps the executable path of an earlier install in its settings; when that
    environment is gone, the plugin runs the one ``geounet qgis-install`` configured last."""
    from geounet_qgis import runner

    monkeypatch.delenv("GEOUNET_EXECUTABLE", raising=False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"executable": GEOUNET}))
    monkeypatch.setattr(runner, "CONFIG_FILE", config)
    assert runner.choose_executable(str(tmp_path / "old-env" / "bin" / "geounet")) == GEOUNET
    assert runner.choose_executable(None) == GEOUNET
    assert runner.choose_executable(sys.executable) == sys.executable  # one that exists stays


def test_command_lines():
    args = commands.classify_args("a.tif", "m", "o.tif", tta="flips", vector="v.gpkg")
    assert args[:2] == ["classify", "a.tif"] and "--overwrite" in args
    assert args[args.index("--tta") + 1] == "flips" and args[args.index("--vector") + 1] == "v.gpkg"
    assert "--tta" not in commands.classify_args("a.tif", "m", "o.tif", tta="none")
    plain = commands.classify_args("a.tif", "m", "o.tif")
    assert not {"--device", "--nodata", "--allow-no-crs", "--engine"} & set(plain)
    more = commands.classify_args("a.tif", "m", "o.tif", device="cpu", nodata=0, allow_no_crs=True)
    assert more[more.index("--device") + 1] == "cpu" and more[more.index("--nodata") + 1] == "0.0"
    assert "--allow-no-crs" in more
    onnx = commands.classify_args("a.tif", "m", "o.tif", engine="onnx-int8")
    assert onnx[onnx.index("--engine") + 1] == "onnx-int8"
    bgr = commands.classify_args("a.tif", "m", "o.tif", bands=[3, 2, 1])
    assert bgr[bgr.index("--bands") + 1] == "3,2,1" and "--bands" not in plain
    train = commands.train_args("a.tif", "l.gpkg", "m", label_field="kind", epochs=2, lr=1e-3)
    assert train[train.index("--label-field") + 1] == "kind" and "--epochs" in train
    assert "--label-area" not in train
    assert "--refit-on-all" not in train
    train = commands.train_args("a.tif", "l.gpkg", "m", label_area="area.gpkg", refit_on_all=True)
    assert train[train.index("--label-area") + 1] == "area.gpkg" and "--refit-on-all" in train
    assert "--from" not in train
    train = commands.train_args("a.tif", "l.gpkg", "m2", start_from="models/m")
    assert train[train.index("--from") + 1] == "models/m"
    assert commands.flatten_metrics({"pixel": {"miou": 0.5, "classes": {"b": {"iou": 1}}}}) == [
        ("pixel.miou", 0.5),
        ("pixel.classes.b.iou", 1.0),
    ]


def test_the_plugins_engines_are_geounets():
    """The plugin (no geounet import inside QGIS) offers exactly the engines classify takes."""
    assert commands.ENGINES == ENGINE_CHOICES


def test_geounet_commands_accept_the_plugins_arguments():
    """Every option the plugin passes exists on the real command (no typo reaches QGIS)."""
    built = {
        "classify": commands.classify_args(
            "a",
            "m",
            "o",
            tta="flips",
            probabilities="p",
            vector="v",
            device="cpu",
            nodata=0,
            allow_no_crs=True,
            engine="openvino",
            bands=[3, 2, 1],
        ),
        "vectorize": commands.vectorize_args("c", "o", min_area_m2=3),
        "train": commands.train_args(
            "a",
            "l",
            "o",
            label_field="f",
            classes="1=b",
            epochs=1,
            lr=0.01,
            label_area="x",
            refit_on_all=True,
            start_from="m",
        ),
        "evaluate": commands.evaluate_args("p", "t", "j", report="r", objects="s"),
    }
    for name, args in built.items():
        help_text = CliRunner().invoke(cli, [name, "--help"]).output
        for option in (a for a in args if a.startswith("--")):
            assert option in help_text, (name, option)


def test_qgis_install_copies_configures_and_enables(tmp_path: Path):
    profile = tmp_path / "profile"
    (profile / "QGIS").mkdir(parents=True)
    stale = "Configuration\\GEOUNET_EXECUTABLE=/gone/env/bin/geounet"  # an earlier install's
    (profile / "QGIS" / "QGIS3.ini").write_text(f"[Processing]\n{stale}\n")
    target = install_qgis_plugin(profile, executable=GEOUNET)
    assert (target / "metadata.txt").is_file() and (target / "algorithms.py").is_file()
    assert json.loads((target / "config.json").read_text())["executable"] == GEOUNET
    ini = (profile / "QGIS" / "QGIS3.ini").read_text()
    assert "[PythonPlugins]" in ini and "geounet_qgis=true" in ini
    assert f"Configuration\\GEOUNET_EXECUTABLE={GEOUNET}" in ini  # the setting follows
    result = CliRunner().invoke(cli, ["qgis-install", "--profile", str(profile), "--link"])
    assert result.exit_code == 0, result.output
    assert (profile / "python" / "plugins" / "geounet_qgis").is_symlink()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--profile", "{tmp}/no-such-profile"], "the QGIS profile does not exist"),
        (["--profile", "{tmp}/a-file"], "the QGIS profile is not a folder"),
        (["--executable", "{tmp}/missing/geounet"], "no such geounet executable"),
    ],
)
def test_qgis_install_refuses_bad_arguments_in_one_line(tmp_path: Path, args, expected):
    (tmp_path / "a-file").write_text("")
    argv = ["qgis-install", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    if "--profile" not in argv:
        (tmp_path / "p").mkdir()
        argv += ["--profile", str(tmp_path / "p")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- real QGIS
def _has_qgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core, processing"],
        capture_output=True,
        env=dict(
            os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH="/usr/share/qgis/python/plugins"
        ),
    )
    return probe.returncode == 0


needs_qgis = pytest.mark.skipif(
    not _has_qgis(),
    reason="QGIS is not installed (apt-get install qgis python3-qgis; .ci/run does it)",
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-band scene with bright 'buildings', a label GeoPackage and a briefly trained model."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qgis")
    image, labels = synthetic_scene(192, 3, seed=4)
    transform = rasterio.transform.from_origin(500000, 3700000, 0.5, 0.5)
    profile = dict(driver="GTiff", width=192, height=192, count=3, dtype="uint8", crs="EPSG:32616")
    with rasterio.open(folder / "scene.tif", "w", transform=transform, **profile) as dst:
        dst.write(image)
    shapes = rasterio.features.shapes(labels, mask=labels == 1, transform=transform)
    polys = [shapely.geometry.shape(g) for g, _ in shapes]
    gpd.GeoDataFrame({"kind": ["building"] * len(polys)}, geometry=polys, crs="EPSG:32616").to_file(
        folder / "labels.gpkg"
    )
    model = UnetClassifier(
        make_fake_data(image=image, labels=labels), backbone=None, base_channels=8, depth=2, seed=0
    )
    model.fit(4, lr=1e-2, progress=False)
    return {
        "image": folder / "scene.tif",
        "labels": folder / "labels.gpkg",
        "model": model.save(folder / "model"),
        "dir": folder,
    }


def _drive(runs: list[dict], tmp_path: Path) -> dict:
    spec, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"executable": GEOUNET, "runs": runs}))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(REPO / "tests" / "qgis_driver.py"), str(spec), str(result)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


def _read(path: Path) -> tuple[np.ndarray, str]:
    with rasterio.open(path) as src:
        return src.read(1), src.crs.to_string()


@needs_qgis
def test_qgis_algorithms_match_geounet_run_directly(scene: dict[str, Path], tmp_path: Path):
    direct = tmp_path / "direct.tif"
    runner = CliRunner()
    args = ["classify", str(scene["image"]), "--model", str(scene["model"]), "--out", str(direct)]
    assert runner.invoke(cli, [*args, "--tile-size", "128", "--overlap", "32"]).exit_code == 0
    direct_vec = tmp_path / "direct.gpkg"
    assert runner.invoke(cli, ["vectorize", str(direct), "--out", str(direct_vec)]).exit_code == 0
    both_vec = tmp_path / "both.gpkg"  # with the probabilities: the peak filter runs
    both_args = [*args[:-1], str(tmp_path / "both.tif"), "--vector", str(both_vec)]
    assert runner.invoke(cli, [*both_args, "--tile-size", "128", "--overlap", "32"]).exit_code == 0
    bgr_args = [*args[:-1], str(tmp_path / "bgr.tif"), "--bands", "3,2,1"]
    assert runner.invoke(cli, [*bgr_args, "--tile-size", "128", "--overlap", "32"]).exit_code == 0

    common = {
        "INPUT": str(scene["image"]),
        "MODEL": str(scene["model"]),
        "TILE_SIZE": 128,
        "OVERLAP": 32,
        "TTA": 0,
    }
    runs = [
        {"alg": "geounet:classify", "params": {**common, "OUTPUT": str(tmp_path / "q.tif")}},
        {
            "alg": "geounet:classify",
            "params": {**common, "BANDS": [3, 2, 1], "OUTPUT": str(tmp_path / "qbgr.tif")},
        },
        {
            "alg": "geounet:vectorize",
            "params": {"INPUT": str(direct), "OUTPUT": str(tmp_path / "q.gpkg")},
        },
        {
            "alg": "geounet:classify_vectorize",
            "params": {
                **common,
                "OUTPUT": str(tmp_path / "qv.tif"),
                "VECTORS": str(tmp_path / "qv.gpkg"),
            },
        },
        {
            "alg": "geounet:evaluate",
            "params": {
                "INPUT": str(tmp_path / "q.tif"),
                "TRUTH": str(direct),
                "JSON": str(tmp_path / "m.json"),
                "OUTPUT": "TEMPORARY_OUTPUT",
                "OBJECTS": str(tmp_path / "scored.gpkg"),
            },
        },
    ]
    result = _drive(runs, tmp_path)
    assert result["algorithms"] == [
        "geounet:classify",
        "geounet:classify_vectorize",
        "geounet:evaluate",
        "geounet:train",
        "geounet:vectorize",
    ]
    classify, bgr, vectorize, both, evaluate = result["runs"]
    assert [r["error"] for r in result["runs"]] == [None] * 5
    assert np.array_equal(_read(tmp_path / "qbgr.tif")[0], _read(tmp_path / "bgr.tif")[0])
    assert not np.array_equal(_read(tmp_path / "bgr.tif")[0], _read(direct)[0])
    assert bgr["output_layer"]["renderer"] == "paletted"
    expected, crs = _read(direct)
    for run, name in ((classify, "q.tif"), (both, "qv.tif")):
        got, got_crs = _read(tmp_path / name)
        assert np.array_equal(got, expected) and got_crs == crs
        assert run["output_layer"]["renderer"] == "paletted"  # the model's class colours
        assert run["progress_updates"] > 0
    assert 0 < (expected == 1).mean() < 0.5  # the model maps buildings, not nothing/everything
    for run, vec in ((vectorize, direct_vec), (both, both_vec)):
        loaded = {layer["name"]: layer for layer in run["loaded"]}
        assert loaded["building"]["features"] == len(gpd.read_file(vec, layer="building")) > 3
        assert loaded["building"]["crs"] == "EPSG:32616" and loaded["building"]["valid"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics and evaluate["outputs"]["OUTPUT"]
    scored = {layer["name"]: layer["features"] for layer in evaluate["loaded"]}
    assert sorted(scored) == ["false_positive", "matched", "missed"]  # loaded into the project
    assert scored["matched"] > 0  # the class raster scored against its own vectorized buildings


@needs_qgis
def test_qgis_train_and_cancel(scene: dict[str, Path], tmp_path: Path):
    big = tmp_path / "big.tif"
    with rasterio.open(scene["image"]) as src:
        profile = src.profile | {"width": 2048, "height": 2048}
        data = np.tile(src.read(), (1, 11, 11))[:, :2048, :2048]
    with rasterio.open(big, "w", **profile) as dst:
        dst.write(data)
    area = tmp_path / "labelled.gpkg"  # the left two thirds of the 192 px (96 m) scene
    gpd.GeoDataFrame(
        geometry=[shapely.box(500000, 3699904, 500064, 3700000)], crs="EPSG:32616"
    ).to_file(area)
    far = tmp_path / "elsewhere.gpkg"  # a labelled area 10 km away: geounet must refuse it
    gpd.GeoDataFrame(
        geometry=[shapely.box(510000, 3709904, 510064, 3710000)], crs="EPSG:32616"
    ).to_file(far)
    train = {
        "INPUT": str(scene["image"]),
        "LABELS": str(scene["labels"]),
        "LABEL_AREA": str(area),
        "CLASS_FIELD": "kind",
        "BACKBONE": 2,
        "EPOCHS": 1,
        "LEARNING_RATE": 0.001,
        "CHIP_SIZE": 64,
        "REFIT_ON_ALL": True,
        "OUTPUT": str(tmp_path / "trained"),
    }
    runs = [
        {"alg": "geounet:train", "params": train},
        {
            "alg": "geounet:train",
            "params": train | {"LABEL_AREA": str(far), "OUTPUT": str(tmp_path / "never")},
        },
        {
            "alg": "geounet:classify",
            "params": {
                "INPUT": str(big),
                "MODEL": str(scene["model"]),
                "TILE_SIZE": 64,
                "OVERLAP": 0,
                "TTA": 0,
                "OUTPUT": str(tmp_path / "cancelled.tif"),
            },
            "cancel_on_progress": True,
        },
    ]
    train, refused, cancelled = _drive(runs, tmp_path)["runs"]
    assert train["error"] is None
    # the Labelled area reaches geounet: one that misses the raster is refused
    assert "label_area" in refused["error"] and "overlaps none" in refused["error"]
    assert not (tmp_path / "never" / "geounet.json").exists()
    config = json.loads((tmp_path / "trained" / "geounet.json").read_text())
    assert [c["name"] for c in config["classes"]] == ["background", "building"]
    # the check box reaches fit: the epoch validation picked, then the refit on all chips
    assert len(config["history"]) == 2 and config["history"][1].get("valid_miou") is None
    assert "cancel" in cancelled["error"]
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name.startswith("cancelled") or ".tmp" in p.name
    ]
    assert leftovers == []
