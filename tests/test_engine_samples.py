"""Chips kept with a model: int8 calibration and the agreement check of ``engine="auto"``."""

from __future__ import annotations

import json

import numpy as np
import pytest

import geounet.inference.engine_choice as engine_choice
from geounet.inference.classify import classify_raster
from geounet.inference.engine_choice import AGREEMENT_MIN, DECISION_FILE
from geounet.inference.engines import TorchEngine
from geounet.model.samples import SAMPLES_FILE, mosaic, read_samples, write_samples
from tests.test_engines import SHAPE, TILING, make_model, scene, tag


def test_mosaic_lays_chips_side_by_side_and_uses_each():
    chips = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 1, 4, 4), np.float32)
    tiles = mosaic(chips, 4, 8)
    assert tiles.shape == (3, 1, 4, 8)
    assert [tiles[t, 0, 0, ::4].tolist() for t in range(3)] == [[0, 1], [2, 3], [4, 0]]
    cropped = mosaic(chips, 6, 6)  # 2 x 2 chips a tile, cropped to 6 x 6
    assert cropped.shape == (2, 1, 6, 6) and cropped[0, 0, 5, 5] == 3
    assert mosaic(chips, 2, 2).shape == (5, 1, 2, 2)  # tiles smaller than a chip


def test_kept_chips_are_written_read_and_an_unreadable_file_is_ignored(tmp_path):
    kept = {"calibration": np.ones((2, 3, 8, 8), np.float32), "validation": np.zeros((1, 3, 8, 8))}
    path = write_samples(tmp_path, kept)
    got = read_samples(tmp_path)
    assert path.name == SAMPLES_FILE and got["calibration"].dtype == np.float32
    assert got["calibration"].shape == (2, 3, 8, 8) and got["validation"].shape == (1, 3, 8, 8)
    path.write_bytes(b"not a safetensors file")
    assert read_samples(tmp_path) == {} and read_samples(None) == {}
    assert write_samples(tmp_path / "none", {}) is None


def kept_model(tmp_path, validation_value: float):
    model = make_model(tmp_path / "model")
    rng = np.random.default_rng(3)
    write_samples(
        tmp_path / "model",
        {
            "calibration": rng.normal(size=(4, *SHAPE)).astype(np.float32),
            "validation": np.full((2, *SHAPE), validation_value, np.float32),
        },
    )
    return model


class WrongOnValidation:
    """Torch's answer, except on the kept validation chips (all 7.0): class 2 there."""

    name = "onnx-fp32"

    def __init__(self, model) -> None:
        self.torch = TorchEngine(model)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = self.torch.probabilities(batch)
        if np.all(batch == 7.0):
            out[:] = 0
            out[:, 2] = 1
        return out


@pytest.fixture()
def fast_fake(monkeypatch):
    """``auto`` measures everything; onnx-fp32 is WrongOnValidation and the fastest."""
    monkeypatch.setattr(engine_choice, "AUTO_MIN_MEGAPIXELS", 0.0)
    monkeypatch.setattr(engine_choice, "candidates", lambda model: ["torch-fp32", "onnx-fp32"])
    real_make, real_measure = engine_choice.make_engine, engine_choice.measure
    monkeypatch.setattr(
        engine_choice,
        "make_engine",
        lambda name, model, *a: (
            WrongOnValidation(model) if name == "onnx-fp32" else real_make(name, model, *a)
        ),
    )

    def measure(engine, sample, repeats=2):
        return (10.0 if engine.name == "onnx-fp32" else 1.0), real_measure(engine, sample, 0)[1]

    monkeypatch.setattr(engine_choice, "measure", measure)


def decision(tmp_path) -> dict:
    (folder,) = (tmp_path / "model" / ".engines").iterdir()
    return json.loads((folder / DECISION_FILE).read_text())


def test_an_engine_wrong_on_the_kept_validation_chips_is_refused(make_raster, tmp_path, fast_fake):
    model = kept_model(tmp_path, 7.0)
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING, progress=False)
    made = decision(tmp_path)
    rows = {r["engine"]: r for r in made["candidates"]}
    assert rows["onnx-fp32"]["agreement"] >= AGREEMENT_MIN  # right on the scene's tiles...
    assert rows["onnx-fp32"]["validation_agreement"] < AGREEMENT_MIN  # ...not on validation
    assert not rows["onnx-fp32"]["accepted"] and tag(out) == "torch-fp32"
    assert made["validation_tiles"] == 2 and made["int8_calibration"] == "kept training chips"


def test_without_kept_chips_the_scene_alone_decides(make_raster, tmp_path, fast_fake):
    model = make_model(tmp_path / "model")
    out = classify_raster(model, scene(make_raster), tmp_path / "a.tif", **TILING, progress=False)
    made = decision(tmp_path)
    assert tag(out) == "onnx-fp32" and made["validation_tiles"] == 0
    assert made["int8_calibration"] == "scene tiles"
    assert "validation_agreement" not in made["candidates"][1]


def test_int8_is_calibrated_on_the_kept_training_chips(tmp_path):
    model = kept_model(tmp_path, 0.0)
    scene_tiles = np.full((3, *SHAPE), -1.0, np.float32)
    calibrate = engine_choice._calibration(model, SHAPE, lambda: scene_tiles)
    kept = read_samples(tmp_path / "model")["calibration"]
    np.testing.assert_array_equal(calibrate(), kept)  # 64 x 64 chips, 64 x 64 tiles
    bare = make_model(tmp_path / "bare")
    assert engine_choice._calibration(bare, SHAPE, lambda: scene_tiles)() is scene_tiles
