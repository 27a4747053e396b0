"""fit(resume=True): an interrupted training run continues from its last epoch, not from zero,
and on the CPU ends with the same weights as a run that was never interrupted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geounet.app import classifier as classifier_module
from geounet.app.classifier import UnetClassifier
from geounet.app.fitting import FIT_STATE_DIR
from geounet.core.errors import InvalidParameterError
from geounet.data.prepare import prepare_data
from geounet.model import training
from geounet.model.resume import STATE_FILE, STATE_JSON

pytestmark = pytest.mark.usefixtures("one_thread")
FIT = {"epochs": 4, "lr": 1e-3, "progress": False, "early_stopping": None}


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": 96,
        "height": 96,
        "dtype": "uint8",
        "crs": "EPSG:32616",
        "transform": from_origin(500000, 3700000, 0.5, 0.5),
    }
    labels = np.zeros((96, 96), np.uint8)
    labels[10:50, 20:70] = 1
    image = rng.integers(30, 120, (3, 96, 96)).astype(np.uint8)
    image[:, labels == 1] += 100
    with rasterio.open(folder / "img.tif", "w", count=3, **profile) as dst:
        dst.write(image)
    with rasterio.open(folder / "lab.tif", "w", count=1, **profile) as dst:
        dst.write(labels[None])
    out = folder / "chips"
    prepare_data(
        folder / "img.tif",
        folder / "lab.tif",
        classes=["building"],
        chip_size=32,
        stride=16,
        out_dir=out,
    )
    return out


@pytest.fixture(autouse=True)
def save_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The state is saved at most every 30 s; here after every epoch."""
    monkeypatch.setattr(training, "STATE_EVERY_S", 0.0)


def classifier(chips: Path, seed: int = 0) -> UnetClassifier:
    data = prepare_data(chips, batch_size=4)
    return UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=seed)


def weights(model: UnetClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> list[int]:
    """Make the training loop raise KeyboardInterrupt when epoch ``epoch`` starts."""
    calls: list[int] = []
    original = training._Loop.epoch

    def epoch_or_interrupt(self, *args, **kwargs):
        calls.append(len(calls) + 1)
        if epoch and len(calls) == epoch:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(training._Loop, "epoch", epoch_or_interrupt)
    return calls


@pytest.mark.parametrize(
    ("average", "checkpoint"),
    [(None, True), (0.9, True), (None, "annealed")],
    ids=["last-step", "weight-average", "annealed-checkpoint"],
)
def test_interrupted_fit_resumes_and_matches_an_uninterrupted_run(
    chips, monkeypatch, average, checkpoint
):
    monkeypatch.setattr(classifier_module, "WEIGHT_AVERAGE", average)
    monkeypatch.setattr(classifier_module, "CHECKPOINT", checkpoint)
    # epochs from half the schedule on may be kept: the run is interrupted after one of them
    monkeypatch.setattr(training, "annealed_point", lambda warmup: 0.5)
    whole = classifier(chips)
    whole.fit(seed=0, **FIT)
    expected = weights(whole)
    assert not (chips / FIT_STATE_DIR).exists()  # a run that ends removes its state

    interrupted = classifier(chips)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(seed=0, **FIT)
    saved = json.loads((chips / FIT_STATE_DIR / STATE_JSON).read_text())
    assert saved["epochs_done"] == 2 and (chips / FIT_STATE_DIR / STATE_FILE).is_file()
    assert (saved["average"] is None) == (average is None)
    assert saved["best"]["late"] is True  # epoch 2 ended at half the schedule: kept, saved

    calls = interrupt_at(monkeypatch, 0)
    resumed = classifier(chips, seed=123)  # a new session: other initial weights
    history = resumed.fit(resume=True, progress=False, early_stopping=None)  # as saved
    assert len(calls) == 2  # epochs 3 and 4 only: it continued, it did not restart
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["train_loss"].tolist()[:2] == saved_losses(saved)
    for k, v in expected.items():
        assert torch.equal(v, resumed.network.state_dict()[k]), k
    assert not (chips / FIT_STATE_DIR).exists()


def saved_losses(saved: dict) -> list[float]:
    return [row["train_loss"] for row in saved["rows"]]


def test_resume_without_a_saved_run_or_with_other_settings_is_refused(chips, monkeypatch):
    with pytest.raises(InvalidParameterError, match="without resume=True"):
        classifier(chips).fit(resume=True, progress=False)
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        classifier(chips).fit(seed=0, **FIT)
    interrupt_at(monkeypatch, 0)
    with pytest.raises(InvalidParameterError, match="same data and settings"):
        classifier(chips).fit(resume=True, **{**FIT, "epochs": 6})
    with pytest.raises(InvalidParameterError, match="refit_on_all"):
        classifier(chips).fit(resume=True, refit_on_all=True, progress=False)
    classifier(chips).fit(seed=0, **FIT)  # a new run replaces the stale state, then ends
    assert not (chips / FIT_STATE_DIR).exists()
