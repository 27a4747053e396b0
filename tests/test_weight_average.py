"""Trainer(weight_average=...): a moving average of the weights is validated, checkpointed and
kept; the training itself goes on from the last step's weights."""

from __future__ import annotations

import pytest
import torch
from model_fakes import make_fake_data

from geounet.core.errors import InvalidParameterError
from geounet.evaluation.metrics import mean_iou
from geounet.model import training
from geounet.model.averaging import WeightAverage
from geounet.model.losses import build_loss
from geounet.model.training import Trainer, seed_everything
from geounet.model.unet_classic import ClassicUNet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_average_follows_the_decay_with_a_warm_up_and_copies_integer_buffers():
    net = torch.nn.BatchNorm1d(2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    avg = WeightAverage(net, decay=0.9)
    expected = {k: v.float().clone() for k, v in start.items() if v.is_floating_point()}
    for step in range(1, 40):
        with torch.no_grad():
            net.weight.add_(1.0)
            net.running_mean.add_(0.5)
            net.num_batches_tracked += 1
        d = min(0.9, (1 + step) / (10 + step))
        assert avg.current_decay() == pytest.approx(d)
        avg.update(net)
        for k in expected:
            expected[k] = d * expected[k] + (1 - d) * net.state_dict()[k].float()
    state = avg.state_dict()
    for k, v in expected.items():
        assert torch.allclose(state[k], v), k
    assert state["num_batches_tracked"].item() == 39  # copied, not averaged
    assert state["num_batches_tracked"].dtype == torch.int64
    assert avg.updates == 39 and avg.describe() == {"decay": 0.9, "updates": 39}
    # the weights lag behind the last step: an average, not the last value
    assert float(state["weight"][0]) < float(net.weight.detach()[0])

    again = WeightAverage(net, decay=0.9)
    again.load(avg.tensors(), avg.updates)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(InvalidParameterError, match="another network"):
        again.load({"weight": torch.zeros(2)}, 1)
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(InvalidParameterError, match="between 0 and 1"):
            WeightAverage(net, decay=bad)
        with pytest.raises(InvalidParameterError, match="weight_average"):
            Trainer(net, build_loss("ce"), 2, "cpu", weight_average=bad)


class Recorder:
    """Records the average a fit made, and the weights each validation saw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.averages: list[WeightAverage] = []
        self.validated: list[tuple[dict, dict]] = []
        made = self.averages

        class Kept(WeightAverage):
            def __init__(self, *a, **k) -> None:
                super().__init__(*a, **k)
                made.append(self)

        monkeypatch.setattr(training, "WeightAverage", Kept)
        real_eval = Trainer.evaluate
        seen = self.validated

        def evaluate(trainer, loader):
            net = {k: v.clone() for k, v in trainer.network.state_dict().items()}
            seen.append((net, made[-1].state_dict() if made else {}))
            return real_eval(trainer, loader)

        monkeypatch.setattr(Trainer, "evaluate", evaluate)


def _trainer(**kw) -> tuple[Trainer, object]:
    seed_everything(0)
    data = make_fake_data(size=96, chip=32)
    net = ClassicUNet(3, 2, base_channels=4, depth=2)
    return Trainer(net, build_loss("ce+dice"), 2, "cpu", **kw), data


def test_fit_validates_and_keeps_the_average_and_trains_on_from_the_last_step(monkeypatch):
    rec = Recorder(monkeypatch)
    trainer, data = _trainer(weight_average=0.8)
    steps: list[dict] = []  # the live weights before each step
    after: list[dict] = []  # and after it
    real_step = Trainer.train_step

    def step(self, batch, optimizer):
        steps.append({k: v.clone() for k, v in self.network.state_dict().items()})
        loss = real_step(self, batch, optimizer)
        after.append({k: v.clone() for k, v in self.network.state_dict().items()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", step)
    hist = trainer.fit(
        data.train_dl, data.valid_dl, 4, 1e-2, early_stopping=None, checkpoint=False, progress=False
    )
    (avg,) = rec.averages
    assert avg.updates == len(steps) == 4 * len(data.train_dl)
    for net, averaged in rec.validated:  # every validation saw the average
        assert all(torch.equal(net[k], v) for k, v in averaged.items())
    # every step starts from the last step's weights, across validations, not the average
    for before, previous in zip(steps[1:], after[:-1]):
        assert all(torch.equal(before[k], v) for k, v in previous.items())
    first_of_epoch_2 = steps[len(data.train_dl)]
    _, avg_1 = rec.validated[0]
    assert any(not torch.equal(first_of_epoch_2[k], avg_1[k]) for k in avg_1)
    # without a checkpoint the network ends with the final average
    final = trainer.network.state_dict()
    assert all(torch.equal(final[k], v) for k, v in avg.state_dict().items())
    assert len(hist) == 4


def test_the_best_checkpoint_is_the_average_that_scored_best(monkeypatch):
    rec = Recorder(monkeypatch)
    trainer, data = _trainer(weight_average=0.8)
    hist = trainer.fit(data.train_dl, data.valid_dl, 5, 1e-2, early_stopping=None, progress=False)
    best = int(hist["valid_miou"].to_numpy().argmax())
    _, averaged = rec.validated[best]
    final = trainer.network.state_dict()
    assert all(torch.equal(final[k], v) for k, v in averaged.items())
    _, cm = trainer.evaluate(data.valid_dl)
    assert mean_iou(cm) == pytest.approx(hist["valid_miou"].max())
