"""Calibrated class decisions (issue 12): weights chosen on validation, saved, used to classify.

An under-confident model (building probability below 0.5 on many building pixels) gets a
building weight above 1 from the validation chips; a calibrated one keeps the plain arg-max;
the weights travel in geounet.json and decide the classes of the class raster.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from model_fakes import make_fake_data

from geounet.app.classifier import UnetClassifier
from geounet.core.errors import InvalidParameterError, ModelFileError
from geounet.evaluation.decision import MIN_GAIN, Calibration, DecisionSample
from geounet.inference.blending import RowAccumulator, TileRegion
from geounet.model.files import CONFIG_FILE, read_config


def _binary(p_building: np.ndarray, labels: np.ndarray) -> DecisionSample:
    sample = DecisionSample(2)
    probs = np.stack([1 - p_building, p_building], axis=1).astype(np.float32)
    sample.add(probs, labels)
    return sample


def _separable(
    seed: int, shape: tuple[int, ...], share: float, *, building: tuple, background: tuple
) -> Calibration:
    """Calibrate on random labels (``share`` buildings) whose building probabilities lie in
    ``building`` on buildings and in ``background`` elsewhere."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape) < share).astype(np.uint8)
    p = np.where(labels == 1, rng.uniform(*building, shape), rng.uniform(*background, shape))
    return _binary(p, labels).calibrate()


def test_an_under_confident_class_gets_a_weight_that_recovers_it():
    # buildings at 0.3-0.45, background at 0.0-0.25: a threshold of 0.5 misses every building
    result = _separable(0, (4, 32, 32), 0.3, building=(0.3, 0.45), background=(0, 0.25))
    assert result.weights is not None and result.weights[0] == 1.0 and result.weights[1] > 1.5
    assert result.miou_after == pytest.approx(1.0) and result.miou_before < 0.5
    assert result.pixels == 4 * 16 * 16  # every second row and column


def test_a_calibrated_model_keeps_the_plain_argmax():
    result = _separable(1, (2, 32, 32), 0.5, building=(0.6, 1.0), background=(0, 0.4))
    assert result.weights is None and result.miou_after == result.miou_before == 1.0


def test_ignored_pixels_do_not_count_and_an_empty_sample_keeps_the_argmax():
    labels = np.full((1, 8, 8), 255, np.uint8)
    sample = _binary(np.full((1, 8, 8), 0.4), labels)
    assert sample.pixels == 0 and sample.calibrate().weights is None


def test_small_gains_are_not_taken():
    """Weights must beat the arg-max by MIN_GAIN: noise on a tiny validation set is not a gain."""
    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, :32] = 1
    p = np.where(labels == 1, 0.9, 0.1)
    p[0, 0, 0] = 0.45  # one sampled building pixel just under 0.5
    result = _binary(p, labels).calibrate()
    assert result.miou_before > 1 - MIN_GAIN and result.weights is None


def test_the_accumulator_decides_with_the_weights():
    probs = np.zeros((2, 4, 4), np.float32)
    probs[1], probs[0] = 0.4, 0.6
    region = TileRegion(row=0, col=0, r0=0, r1=4, c0=0, c1=4)
    weights = np.ones((4, 4), np.float32)
    valid = np.ones((4, 4), bool)
    for decision, expected in ((None, 0), ([1.0, 1.25], 0), ([1.0, 2.0], 1)):
        acc = RowAccumulator(2, width=4, capacity=4, decision_weights=decision)
        acc.add(region, probs, valid, weights, height=4)
        _, classes, out, _ = acc.pop(4)
        assert (classes == expected).all()
        np.testing.assert_allclose(out, probs)  # probabilities are not reweighted
    with pytest.raises(InvalidParameterError, match="decision_weights"):
        RowAccumulator(2, width=4, capacity=4, decision_weights=[1.0, 0.0])


def test_fit_can_calibrate_and_classify_uses_the_saved_weights(tmp_path, make_raster):
    model = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2, seed=0)
    model.fit(1, 1e-3, progress=False)
    assert model.config.decision_weights is None and "decision" not in model.config.metrics
    model.fit(1, 1e-3, progress=False, calibrate_decision=True)
    record = model.config.metrics["decision"]
    assert record["weights"] == model.config.decision_weights and record["pixels"] > 0
    folder = model.save(tmp_path / "m")
    image = make_raster(np.random.default_rng(2).integers(0, 256, (3, 64, 64)).astype(np.uint8))
    loaded = UnetClassifier.from_model(folder)
    assert loaded.config.decision_weights == model.config.decision_weights

    def buildings(weights: list[float] | None, name: str) -> int:
        loaded.config.decision_weights = weights
        out = loaded.classify(image, tmp_path / name, tile_size=64, overlap=16, progress=False)
        with rasterio.open(out) as src:
            return int((src.read(1) == 1).sum())

    plain = buildings(None, "plain.tif")
    assert buildings([1.0, 1e-6], "none.tif") == 0 < plain < buildings([1.0, 1e6], "all.tif")


def test_a_bad_decision_weight_in_geounet_json_is_refused(tmp_path):
    model = UnetClassifier(make_fake_data(), backbone=None, base_channels=4, depth=2, seed=0)
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    meta["decision_weights"] = [1.0, -2.0]
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="decision_weights"):
        read_config(folder)
