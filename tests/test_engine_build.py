"""Building an engine from its cache costs only what that engine needs (issue 13).

An OpenVINO engine reads the cached ONNX export itself (no ONNX Runtime session on the side)
and keeps its compiled network in the cache; a cached int8 copy loads without the float32
session and without reading tiles of the scene for calibration.
"""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geounet.inference import engine_choice
from geounet.inference.engine_choice import INT8_FILE, ONNX_FILE, OPENVINO_CACHE, make_engine
from geounet.inference.engines import TorchEngine

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
HAS_OV = HAS_ORT and importlib.util.find_spec("openvino") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason='needs pip install "geounet[onnx]"')
needs_ov = pytest.mark.skipif(not HAS_OV, reason='needs pip install "geounet[openvino]"')
SHAPE = (3, 64, 64)


def _model() -> SimpleNamespace:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 2, 1)).eval()  # fmt: skip
    return SimpleNamespace(network=net, device=torch.device("cpu"))


def _tiles(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *SHAPE)).astype(np.float32)


def _counted_tiles(calls: list[int]) -> np.ndarray:
    """Four calibration tiles; each call is counted in ``calls``."""
    calls.append(1)
    return _tiles(4)


@pytest.fixture()
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the ONNX Runtime engines ``make_engine`` creates."""
    made: list[str] = []
    real = engine_choice.OnnxEngine

    def counting(path: Path, name: str = "onnx-fp32") -> object:
        made.append(name)
        return real(path, name)

    monkeypatch.setattr(engine_choice, "OnnxEngine", counting)
    return made


@needs_ov
def test_openvino_needs_no_onnxruntime_session_and_caches_its_compiled_network(tmp_path, sessions):
    model = _model()
    for _ in range(2):  # exported, then loaded from the cache
        engine = make_engine("openvino-fp32", model, tmp_path, SHAPE, _tiles)
        assert engine.name == "openvino-fp32"
    assert sessions == []
    assert any((tmp_path / OPENVINO_CACHE).iterdir())
    x = _tiles()
    np.testing.assert_allclose(
        engine.probabilities(x), TorchEngine(model).probabilities(x), atol=1e-4
    )


@needs_ov
def test_openvino_rebuilds_an_unreadable_export(tmp_path):
    model = _model()
    (tmp_path / ONNX_FILE).write_bytes(b"not an onnx file")
    engine = make_engine("openvino", model, tmp_path, SHAPE, _tiles)
    x = _tiles()
    np.testing.assert_allclose(
        engine.probabilities(x), TorchEngine(model).probabilities(x), atol=1e-4
    )


@needs_ort
def test_a_cached_int8_copy_loads_without_float32_session_or_calibration_tiles(tmp_path, sessions):
    model, samples = _model(), []
    sample = partial(_counted_tiles, samples)

    make_engine("onnx-int8", model, tmp_path, SHAPE, sample)
    assert (tmp_path / INT8_FILE).is_file() and len(samples) == 1
    sessions.clear()
    engine = make_engine("onnx-int8", model, tmp_path, SHAPE, sample)
    assert engine.name == "onnx-int8"
    assert sessions == ["onnx-int8"] and len(samples) == 1
    assert engine.probabilities(_tiles()).shape == (2, 2, 64, 64)


@needs_ov
def test_openvino_int8_runs_the_cached_int8_copy_without_onnxruntime(tmp_path, sessions):
    model, samples = _model(), []
    sample = partial(_counted_tiles, samples)

    onnx_int8 = make_engine("onnx-int8", model, tmp_path, SHAPE, sample)
    sessions.clear()
    engine = make_engine("openvino-int8", model, tmp_path, SHAPE, sample)
    assert engine.name == "openvino-int8"
    assert sessions == [] and len(samples) == 1  # the same int8 copy, not quantized again
    x = _tiles()
    np.testing.assert_allclose(engine.probabilities(x), onnx_int8.probabilities(x), atol=0.05)


def test_a_released_engine_serves_the_next_job_and_only_one_job_at_a_time(monkeypatch, tmp_path):
    """The idle pool: a second job of the same kind takes the first job's engine; two jobs
    at once get two engines; at most IDLE_ENGINES are kept; torch engines are not pooled."""
    built: list[object] = []

    class FakeEngine:
        def __init__(self, name: str) -> None:
            self.name = name
            built.append(self)

    monkeypatch.setattr(engine_choice, "_build_engine", lambda name, *a: FakeEngine(name))
    folder = tmp_path / "key"

    def make(name: str = "onnx-fp32", where: Path = folder) -> object:
        return engine_choice.make_engine(name, None, where, (3, 8, 8), lambda: None)

    first = make()
    second = make()  # the first is still in use: a job of its own
    assert first is not second and len(built) == 2
    engine_choice.release_engine(first)
    assert make() is first and len(built) == 2  # taken out of the pool again
    engine_choice.release_engine(first)
    engine_choice.release_engine(second)  # the same key: the later release is kept
    assert make() is second and make() is not first
    for k in range(engine_choice.IDLE_ENGINES + 1):
        engine_choice.release_engine(make("openvino-fp32", tmp_path / str(k)))
    assert len(engine_choice._IDLE) == engine_choice.IDLE_ENGINES
    assert ("openvino-fp32", str(tmp_path / "0")) not in engine_choice._IDLE  # oldest gone
    engine_choice.clear_idle_engines()
    assert not engine_choice._IDLE
    torch_engine = object()
    engine_choice.release_engine(torch_engine)  # not built here: let go
    assert not engine_choice._IDLE


@needs_ort
def test_the_next_job_takes_the_engine_of_the_last_one(tmp_path, sessions):
    """``job_engine``: one ONNX Runtime session for two jobs in a row; a failed job's goes."""
    from geounet.inference.blending import TilePlan
    from geounet.inference.engine import job_engine
    from geounet.inference.options import ClassifyOptions

    model = _model()
    model.config = SimpleNamespace(in_channels=3, stats={"mean": [0.0] * 3, "std": [1.0] * 3})
    model.model_dir = tmp_path
    opts = ClassifyOptions(engine="onnx", tile_size=SHAPE[1], overlap=0)
    plan = TilePlan.build(SHAPE[2], SHAPE[1], tile_size=SHAPE[1], overlap=0, blend=opts.blend)

    def job() -> object:
        return job_engine(model, plan, range(1), lambda: None, opts)

    with job() as first:
        pass
    with job() as second:
        assert second is first
    assert sessions == ["onnx-fp32"]
    with pytest.raises(RuntimeError), job() as third:
        assert third is first
        raise RuntimeError("the job failed")
    with job() as fourth:
        assert fourth is not first  # the failed job's engine was let go
    assert sessions == ["onnx-fp32", "onnx-fp32"]
