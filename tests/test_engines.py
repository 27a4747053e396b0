"""Inference engines (issue 13): every engine agrees with PyTorch, ``auto`` picks and caches.

Tiny networks on tiny georeferenced rasters, all on the CPU. ``auto`` measures only runs of
``AUTO_MIN_MEGAPIXELS`` or more, so the tests that exercise it lower that threshold; the user
cache goes to ``tmp_path`` so that no test reads or writes the real one.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from model_fakes import make_fake_data

from geounet.app.classifier import UnetClassifier
from geounet.core.classes import make_classes
from geounet.core.errors import DependencyNotFoundError, InvalidParameterError
from geounet.inference import engine_choice
from geounet.inference.classify import classify_raster
from geounet.inference.engine import prepare_network, run_network
from geounet.inference.engine_choice import (
    AGREEMENT_MIN,
    DECISION_FILE,
    ENGINE_TAG,
    ONNX_FILE,
    choose_engine,
    clear_idle_engines,
)
from geounet.inference.engines import ENGINE_NAMES, TorchEngine
from geounet.model.files import ModelConfig

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
HAS_OV = HAS_ORT and importlib.util.find_spec("openvino") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason='needs pip install "geounet[onnx]"')
SHAPE = (3, 64, 64)
TILING = {"tile_size": 64, "overlap": 16}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two threads, and a user cache inside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


class Net(torch.nn.Module):
    """3 bands -> 3 classes, a 3 x 3 convolution, batch norm and a 1 x 1 head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        )
        self.head = torch.nn.Conv2d(8, 3, 1)
        with torch.no_grad():  # confident logits: class maps are far from ties
            self.head.weight.mul_(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_model(folder: Path | None = None) -> SimpleNamespace:
    config = ModelConfig(
        arch="unet", backbone=None, in_channels=3, classes=make_classes({1: "a", 2: "b"}),
        bands=[1, 2, 3], band_names=["r", "g", "b"],
        stats={"mean": [100.0] * 3, "std": [30.0] * 3, "p2": [0.0] * 3, "p98": [250.0] * 3},
        chip_size=64, gsd_m=0.5, source_dtype="uint8",
    )  # fmt: skip
    model = SimpleNamespace(network=Net().eval(), config=config, device=torch.device("cpu"))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        model.model_dir = folder
    prepare_network(model)
    return model


def tiles(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


def scene(make_raster, size: int = 192) -> Path:
    rng = np.random.default_rng(1)
    return make_raster(rng.integers(0, 256, size=(3, size, size)).astype(np.uint8))


def tag(path: Path) -> str:
    with rasterio.open(path) as src:
        return src.tags()[ENGINE_TAG]


def available(name: str) -> bool:
    family = name.split("-")[0]
    return family == "torch" or (HAS_OV if family == "openvino" else HAS_ORT)


@pytest.fixture()
def measure_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` measures runs of any size."""
    monkeypatch.setattr(engine_choice, "AUTO_MIN_MEGAPIXELS", 0.0)


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts ONNX exports and engine measurements."""
    counts = {"export": 0, "measure": 0}
    from geounet.model import onnx_export  # the export is imported when it runs

    real_export, real_measure = onnx_export.export_onnx, engine_choice.measure

    def export(*args, **kwargs):
        counts["export"] += 1
        return real_export(*args, **kwargs)

    def measure(*args, **kwargs):
        counts["measure"] += 1
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.setattr(engine_choice, "measure", measure)
    return counts


# ----------------------------------------------------------------------------- each engine


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_engine_gives_the_probabilities_of_torch(tmp_path, name):
    if not available(name):
        pytest.skip(f"{name} is not installed")
    model = make_model(tmp_path / "model")
    x = tiles()
    reference = run_network(model, x)
    engine = choose_engine(model, name, SHAPE, lambda: x, len(x))
    assert engine.name == name
    probs = run_network(model, x, engine=engine)
    assert probs.shape == reference.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    # float32 engines match to rounding; reduced precision within a few per cent
    tolerance = 1e-4 if name.endswith("fp32") else 0.1
    assert np.abs(probs - reference).mean() < tolerance / 4
    assert engine_choice.agreement(probs, reference) > (0.9999 if tolerance < 1e-3 else 0.95)


@needs_ort
def test_test_time_augmentation_is_the_same_through_onnx(tmp_path):
    model = make_model(tmp_path / "model")
    x = tiles(2)
    engine = choose_engine(model, "onnx", SHAPE, lambda: x, 2)
    for tta in ("flips", "dihedral"):
        np.testing.assert_allclose(
            run_network(model, x, tta, engine), run_network(model, x, tta), atol=1e-4
        )


# ----------------------------------------------------------------------------- auto


@needs_ort
def test_auto_picks_an_agreeing_engine_caches_it_and_tags_the_output(
    make_raster, tmp_path, measure_everything, calls
):
    model = make_model(tmp_path / "model")
    image = scene(make_raster)
    out = classify_raster(model, image, tmp_path / "a.tif", **TILING, progress=False)
    (folder,) = (tmp_path / "model" / ".engines").iterdir()
    decision = json.loads((folder / DECISION_FILE).read_text())
    chosen = decision["engine"]
    rows = {r["engine"]: r for r in decision["candidates"]}
    assert {"torch-fp32", "onnx-fp32"} <= set(rows)
    assert rows[chosen]["agreement"] >= AGREEMENT_MIN
    accepted = [r["mpx_s"] for r in rows.values() if r["accepted"]]
    assert rows[chosen]["mpx_s"] == max(accepted)
    assert (folder / ONNX_FILE).is_file() and calls["export"] == 1
    assert tag(out) == chosen
    torch_out = classify_raster(
        model, image, tmp_path / "t.tif", **TILING, progress=False, engine="torch"
    )
    assert tag(torch_out) == "torch-fp32"
    with rasterio.open(out) as a, rasterio.open(torch_out) as b:
        assert np.mean(a.read(1) == b.read(1)) >= AGREEMENT_MIN

    # a second run reuses the decision and the export: nothing measured or exported again
    measured = calls["measure"]
    again = classify_raster(model, image, tmp_path / "b.tif", **TILING, progress=False)
    assert calls == {"export": 1, "measure": measured} and tag(again) == chosen


@needs_ort
def test_a_corrupted_cache_is_rebuilt(make_raster, tmp_path, measure_everything, calls):
    model = make_model(tmp_path / "model")
    image = scene(make_raster)
    first = classify_raster(model, image, tmp_path / "a.tif", **TILING, engine="onnx",
                            progress=False)  # fmt: skip
    (folder,) = (tmp_path / "model" / ".engines").iterdir()
    (folder / ONNX_FILE).write_bytes(b"not an onnx file")
    clear_idle_engines()  # as in a new process: the engine is loaded from the folder again
    second = classify_raster(model, image, tmp_path / "b.tif", **TILING, engine="onnx",
                             progress=False)  # fmt: skip
    assert calls["export"] == 2  # rebuilt once, after the corruption
    with rasterio.open(first) as a, rasterio.open(second) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))

    (folder / DECISION_FILE).write_text('{"engine": "no such engine"')  # truncated JSON
    measured = calls["measure"]
    classify_raster(model, image, tmp_path / "c.tif", **TILING, progress=False)
    assert calls["measure"] > measured  # measured again
    assert json.loads((folder / DECISION_FILE).read_text())["engine"] in ENGINE_NAMES


class Disagreeing:
    """The fastest engine there is, and always wrong: class 2 everywhere."""

    name = "onnx-fp32"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((len(batch), 3, *batch.shape[2:]), np.float32)
        out[:, 2] = 1
        return out


def test_a_disagreeing_engine_is_never_picked(make_raster, tmp_path, monkeypatch,
                                              measure_everything):  # fmt: skip
    real = engine_choice.make_engine
    monkeypatch.setattr(engine_choice, "candidates", lambda model: ["torch-fp32", "onnx-fp32"])
    monkeypatch.setattr(
        engine_choice,
        "make_engine",
        lambda name, *a: Disagreeing() if name == "onnx-fp32" else real(name, *a),
    )
    model = make_model(tmp_path / "model")
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                          progress=False)  # fmt: skip
    (folder,) = (tmp_path / "model" / ".engines").iterdir()
    rows = {r["engine"]: r for r in json.loads((folder / DECISION_FILE).read_text())["candidates"]}
    assert rows["onnx-fp32"]["mpx_s"] > rows["torch-fp32"]["mpx_s"]  # fastest...
    assert rows["onnx-fp32"]["agreement"] < AGREEMENT_MIN and not rows["onnx-fp32"]["accepted"]
    assert tag(out) == "torch-fp32"  # ...and not picked


def test_small_runs_use_torch_without_measuring_or_caching(make_raster, tmp_path, calls):
    model = make_model(tmp_path / "model")
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                          progress=False)  # fmt: skip
    assert tag(out) == "torch-fp32"
    assert calls == {"export": 0, "measure": 0}
    assert not (tmp_path / "model" / ".engines").exists()
    assert not (tmp_path / "user-cache").exists()


# ----------------------------------------------------------------------------- extras, folders


@pytest.mark.parametrize(("engine", "module", "extra"), [
    ("onnx", "onnxruntime", "onnx"), ("onnx-int8", "onnxruntime", "onnx"),
    ("openvino", "openvino", "openvino"), ("openvino-int8", "openvino", "openvino"),
])  # fmt: skip
def test_a_missing_extra_asked_for_by_name_says_what_to_install(
    make_raster, tmp_path, monkeypatch, engine, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when not installed
    model = make_model(tmp_path / "model")
    with pytest.raises(DependencyNotFoundError, match=rf'pip install "geounet\[{extra}\]"'):
        classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                        engine=engine, progress=False)  # fmt: skip
    assert not (tmp_path / "a.tif").exists()


def test_without_onnxruntime_auto_is_torch(make_raster, tmp_path, monkeypatch, measure_everything):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = make_model(tmp_path / "model")
    assert engine_choice.candidates(model) in (["torch-fp32"], ["torch-fp32", "torch-bf16"])
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                          progress=False)  # fmt: skip
    assert tag(out).startswith("torch-")


def test_an_unknown_engine_is_refused_before_any_work(make_raster, tmp_path):
    with pytest.raises(InvalidParameterError, match="engine='tensorrt' is not allowed"):
        classify_raster(make_model(), scene(make_raster), tmp_path / "a.tif", engine="tensorrt")
    assert not (tmp_path / "a.tif").exists()


@needs_ort
def test_a_saved_model_caches_beside_itself_or_in_the_user_cache(make_raster, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    folder = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2,
                            seed=0).save(tmp_path / "model")  # fmt: skip
    clf = UnetClassifier.from_model(folder, device="cpu")
    image = scene(make_raster, 96)
    out = clf.classify(image, tmp_path / "a.tif", **TILING, engine="onnx", progress=False)
    assert tag(out) == "onnx-fp32"
    assert list((folder / ".engines").glob(f"*/{ONNX_FILE}"))

    real = engine_choice._writable  # a read-only model folder: the user cache instead
    monkeypatch.setattr(engine_choice, "_writable", lambda f: ".engines" not in str(f) and real(f))
    clf.classify(image, tmp_path / "b.tif", **TILING, engine="onnx", progress=False)
    assert list((tmp_path / "user-cache" / "geounet" / "engines").glob(f"*/{ONNX_FILE}"))


@needs_ort
def test_cli_engine_option_runs_the_engine_and_logs_it(make_raster, tmp_path, caplog):
    from click.testing import CliRunner

    from geounet.cli.main import cli

    folder = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2,
                            seed=0).save(tmp_path / "model")  # fmt: skip
    image, out = scene(make_raster, 96), tmp_path / "cli.tif"
    args = ["-v", "classify", str(image), "--model", str(folder), "--out", str(out),
            "--tile-size", "64", "--overlap", "16", "--engine", "onnx"]  # fmt: skip
    with caplog.at_level("INFO", logger="geounet.inference.engine_choice"):
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert tag(out) == "onnx-fp32"
    assert "engine: onnx-fp32" in caplog.text
    bad = CliRunner().invoke(cli, [*args[:-1], "tensorrt"])
    assert bad.exit_code == 2 and "tensorrt" in bad.output


def test_the_weights_digest_follows_the_weights():
    a, b = Net(), Net()
    assert engine_choice.weights_digest(a) == engine_choice.weights_digest(b)  # same values
    before = engine_choice.weights_digest(a)
    assert engine_choice.weights_digest(a) == before  # remembered, unchanged
    with torch.no_grad():
        a.head.bias.add_(1)  # trained further in place: another cache key
    assert engine_choice.weights_digest(a) != before
    b.head.bias.data = b.head.bias.data + 1  # a tensor replaced
    assert engine_choice.weights_digest(b) == engine_choice.weights_digest(a)


@needs_ort
def test_in_memory_and_row_band_classification_take_the_engine_too(make_raster, tmp_path):
    from geounet.inference.classify import classify_rows, predict_array
    from geounet.inference.options import ClassifyOptions

    model = make_model(tmp_path / "model")
    arr = np.random.default_rng(3).integers(0, 256, size=(3, 160, 160)).astype(np.uint8)
    onnx, plain = (ClassifyOptions(**TILING, progress=False, engine=e) for e in ("onnx", "torch"))
    classes, probs = predict_array(model, arr, onnx)
    np.testing.assert_allclose(probs, predict_array(model, arr, plain)[1], atol=1e-4)
    rows, _ = classify_rows(model, make_raster(arr), 40, 100, onnx)
    np.testing.assert_array_equal(rows, classes[40:100])


def test_a_network_prepared_under_inference_mode_is_hashed_too(make_raster, tmp_path):
    model = SimpleNamespace(**{**vars(make_model()), "network": Net().eval()})
    with torch.inference_mode():  # its weights become inference tensors (no version counter)
        prepare_network(model)
        out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                              progress=False)  # fmt: skip
    assert tag(out) == "torch-fp32"
    assert engine_choice.weights_digest(model.network) == engine_choice.weights_digest(Net())


#: The Fake engines not yet freed.
ALIVE: weakref.WeakSet = weakref.WeakSet()


class Fake:
    """Torch's answer, under another engine's name; registered in ALIVE."""

    def __init__(self, name: str, model) -> None:
        self.name, self.torch = name, TorchEngine(model)
        ALIVE.add(self)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.torch.probabilities(batch)


def test_measuring_keeps_only_the_fastest_engine_alive(make_raster, tmp_path, monkeypatch,
                                                       measure_everything):  # fmt: skip
    names = ["torch-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"]
    speeds = {"torch-fp32": 1.0, "onnx-fp32": 3.0, "onnx-int8": 2.0, "openvino-fp32": 5.0,
              "openvino-int8": 4.0}  # fmt: skip
    monkeypatch.setattr(engine_choice, "candidates", lambda model: names)
    monkeypatch.setattr(engine_choice, "make_engine", lambda name, model, *a: Fake(name, model))
    alive_at_measure: list[int] = []

    def measure(engine, sample, repeats=2):
        gc.collect()
        alive_at_measure.append(len(ALIVE))
        return speeds[engine.name], engine.probabilities(sample)

    monkeypatch.setattr(engine_choice, "measure", measure)
    model = make_model(tmp_path / "model")
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING,
                          progress=False)  # fmt: skip
    assert tag(out) == "openvino-fp32"
    assert max(alive_at_measure) <= 2  # the one measured and the fastest so far
