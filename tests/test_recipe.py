"""The default training recipe of UnetClassifier.fit: planned length, LR sweep, refit on all."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from model_fakes import make_fake_data

from geounet.app.classifier import ENCODER_LR_RATIO, UnetClassifier
from geounet.app.fitting import all_chips_loader
from geounet.model import schedule
from geounet.model.schedule import FINE_TUNE_LR_CAP

TINY = {"backbone": None, "base_channels": 4, "depth": 2, "seed": 0}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_fake_data(size=128, chip=32)


def test_fit_without_epochs_follows_the_plan_and_the_budget(data, monkeypatch):
    monkeypatch.setattr(schedule, "DEFAULT_BUDGET_S", {"cpu": 4.0})
    monkeypatch.setattr(schedule, "TARGET_CHIP_VIEWS", 10 * len(data.train_dl.dataset))
    model = UnetClassifier(data, **TINY)
    t0 = time.perf_counter()
    hist = model.fit(progress=False)
    assert time.perf_counter() - t0 < 120  # 4 s budget (+ the last epoch; loose: shared CPUs)
    assert 1 <= len(hist) <= schedule.MIN_EPOCHS  # 10 planned, raised to MIN_EPOCHS
    r = model.lr_find_result
    assert r is not None and len(r.lrs) <= 16 and r.lrs[0] == pytest.approx(1e-5)


def test_scratch_network_has_one_rate_and_no_fine_tune_cap(data):
    model = UnetClassifier(data, **TINY)  # the classic U-Net: no pretrained encoder
    assert model._trainer.encoder_lr_ratio == 1.0
    model.lr_find(num_iter=8, plot=False, progress=False)
    assert model.lr_find_result.extra.get("cap", 1e-2) > FINE_TUNE_LR_CAP


def test_pretrained_encoder_gets_the_cap_and_a_lower_rate(data, tmp_path):
    UnetClassifier(data, **TINY).save(tmp_path / "start")
    model = UnetClassifier(data, pretrained_path=tmp_path / "start")  # fine-tuning
    assert model._trainer.encoder_lr_ratio == ENCODER_LR_RATIO
    groups = model._trainer._optimizer(1.0).param_groups
    assert [g["lr"] for g in groups] == [1.0, ENCODER_LR_RATIO]
    model.lr_find(num_iter=12, plot=False, progress=False)
    assert model.lr_find_result.suggestion <= FINE_TUNE_LR_CAP


def test_refit_on_all_trains_again_on_every_chip_for_the_picked_epochs(data, monkeypatch):
    import geounet.model.training as training

    # the first run reports another reason than the refit, as an early stop would: pandas
    # drops attrs that differ when it concatenates the two histories
    reasons = iter(["early stopping", "epochs"])
    monkeypatch.setattr(training, "_stopped_by", lambda *args: next(reasons))
    model = UnetClassifier(data, **TINY)
    hist = model.fit(4, 1e-2, early_stopping=None, progress=False, refit_on_all=True)
    picked = model._trainer.best_epochs
    first, again = hist.iloc[:4], hist.iloc[4:]
    assert len(again) == picked >= 1
    assert first["valid_miou"].notna().all() and again["valid_miou"].isna().all()
    assert list(hist["epoch"]) == list(range(1, 5 + picked))
    assert hist.attrs["stopped_by"] == "early stopping"  # the first run's, validation judged
    assert model.history.attrs == {
        "stopped_by": "early stopping",
        "epochs": 4 + picked,
        "kept_epoch": 4 + picked,  # the refit's last epoch gave the weights kept
    }
    # the validation score reported is the first run's best (the refit has no held-out data)
    assert model.config.metrics["miou"] == pytest.approx(first["valid_miou"].max())
    seen = []
    loader = all_chips_loader(data)
    for _, y in loader:
        seen.append(len(y))
    assert sum(seen) == len(data.train_dl.dataset) + len(data.valid_dl.dataset)
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.network.parameters())
    assert isinstance(next(iter(loader))[0], torch.Tensor)
