"""The fit loop: loss falls, early stopping, best checkpoint, time budget, LR finder, seeds."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from model_fakes import make_fake_data

from geounet.core.errors import InvalidParameterError
from geounet.model.losses import build_loss
from geounet.model.schedule import (
    DEFAULT_BUDGET_S,
    FINE_TUNE_LR_CAP,
    LR_BOUNDS,
    MAX_EPOCHS,
    MIN_EPOCHS,
    StopRule,
    plan_training,
    smooth_losses,
    suggest_lr,
)
from geounet.model.training import (
    HISTORY_COLUMNS,
    Trainer,
    configure_cpu_threads,
    freeze_encoder_norms,
    reseed_loader,
    seed_everything,
    set_encoder_trainable,
    unpack_batch,
)
from geounet.model.unet_classic import ClassicUNet

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_trainer(seed: int = 0, **net_kw) -> tuple[Trainer, object]:
    seed_everything(seed)
    data = make_fake_data(size=96, chip=32)
    net = ClassicUNet(3, 2, base_channels=4, depth=2, **net_kw)
    return Trainer(net, build_loss("ce+dice"), 2, "cpu"), data


def test_loss_falls_and_history_columns():
    trainer, data = tiny_trainer()
    before, _ = trainer.evaluate(data.train_dl)
    hist = trainer.fit(data.train_dl, data.valid_dl, 6, 1e-2, progress=False)
    after, _ = trainer.evaluate(data.train_dl)
    assert list(hist.columns) == HISTORY_COLUMNS
    assert list(hist["epoch"]) == list(range(1, len(hist) + 1))
    assert after < before
    assert hist["valid_miou"].between(0, 1).all() and (hist["seconds"] > 0).all()


def test_best_checkpoint_by_miou_is_restored():
    trainer, data = tiny_trainer()
    hist = trainer.fit(data.train_dl, data.valid_dl, 5, 1e-2, early_stopping=None, progress=False)
    from geounet.evaluation.metrics import mean_iou

    _, cm = trainer.evaluate(data.valid_dl)
    assert mean_iou(cm) == pytest.approx(hist["valid_miou"].max())
    assert (trainer.best_confusion == cm).all()
    assert hist.attrs["stopped_by"] == "epochs"
    best = int(hist["valid_miou"].to_numpy().argmax()) + 1  # the first epoch of the best score
    assert hist.attrs["kept_epoch"] == trainer.best_epochs == best


def test_annealed_checkpoint_keeps_the_best_epoch_at_a_low_rate():
    trainer, data = tiny_trainer()
    hist = trainer.fit(
        data.train_dl, data.valid_dl, 10, 1e-2, early_stopping=None, checkpoint="annealed",
        progress=False,
    )  # fmt: skip
    # 10 epochs without a budget: epoch i ends at i / 10 of the schedule, and the rate is a
    # tenth of its peak from 0.846 on, so only epochs 9 and 10 may be kept
    late = hist["valid_miou"].to_numpy()[8:]
    assert trainer.best_epochs == 9 + int(late.argmax())
    from geounet.evaluation.metrics import mean_iou

    _, cm = trainer.evaluate(data.valid_dl)
    assert mean_iou(cm) == pytest.approx(late.max())


def test_annealed_best_lets_earlier_epochs_give_way_but_keeps_them_without_later_ones():
    from geounet.model.training import _Best

    net = torch.nn.Linear(1, 1)
    best = _Best(True, keep_from=0.8)
    for epoch, (score, progress) in enumerate([(0.9, 0.3), (0.5, 0.85), (0.6, 1.0)], 1):
        best.offer(score, epoch, net, None, progress)
    assert (best.epoch, best.score) == (3, 0.6)  # 0.9 came at the peak rate
    early = _Best(True, keep_from=0.8)
    for epoch, score in enumerate([0.4, 0.7, 0.5], 1):
        early.offer(score, epoch, net, None, 0.2 * epoch)
    assert early.epoch == 2  # the run ended before 0.8: the best epoch is kept as usual
    trainer, data = tiny_trainer()
    with pytest.raises(InvalidParameterError, match="checkpoint='last'"):
        trainer.fit(data.train_dl, data.valid_dl, 1, 1e-2, checkpoint="last", progress=False)


def test_early_stopping_when_validation_miou_stalls_but_not_in_warm_up():
    trainer, data = tiny_trainer(batchnorm=False, dropout=0.0)
    hist = trainer.fit(data.train_dl, data.valid_dl, 20, 1e-12, early_stopping=2, progress=False)
    # 1e-12 learns nothing: the mIoU is flat from epoch 1. Warm-up is epochs 1-5 (25 % of
    # 20), a stop needs 20 % of the schedule (4 epochs) without improvement after it, and
    # the rate annealed to a tenth of its peak (84.6 %: epoch 17 is the first past it).
    assert len(hist) == 17 and hist.attrs["stopped_by"] == "early stopping"
    assert trainer.best_epochs == 1  # the checkpoint watches the same score: epoch 1 kept


def test_stop_rule_never_fires_during_warm_up():
    rule = StopRule(patience=1, warmup=0.3, min_span=0.0, min_progress=0.0)
    falling = [rule.update(1.0 - i / 100, i / 100) for i in range(30)]  # 30 epochs of warm-up
    assert not any(falling)
    assert rule.update(0.5, 0.30) is True  # first epoch after warm-up without improvement


def test_stop_rule_counts_from_the_last_improvement_and_needs_a_span():
    rule = StopRule(patience=2, warmup=0.1, min_span=0.25, min_progress=0.0)
    assert not rule.update(0.5, 0.2)  # improves after warm-up
    assert not rule.update(0.4, 0.3) and not rule.update(0.4, 0.4)  # 2 stale, span 0.2
    assert rule.update(0.4, 0.45)  # span 0.25 reached
    assert not StopRule(patience=None).update(0.0, 0.9)  # None: never


def test_stop_rule_waits_until_the_rate_has_annealed_to_a_tenth_of_its_peak():
    rule = StopRule(patience=1, warmup=0.25, min_span=0.0)  # a tenth of the peak at 0.846
    assert not rule.update(0.9, 0.3)  # best score, right after the warm-up
    stale = [rule.update(0.5, p / 100) for p in range(31, 84)]
    assert not any(stale)  # no improvement for 53 epochs, but the rate is still high
    assert rule.update(0.5, 0.85)


def test_plan_training_follows_the_data_and_the_device():
    assert plan_training(4, "cpu") == (MAX_EPOCHS, DEFAULT_BUDGET_S["cpu"])  # small area
    assert plan_training(60, "cpu")[0] == 100  # 6000 chip views
    assert plan_training(100_000, "cuda") == (MIN_EPOCHS, DEFAULT_BUDGET_S["cuda"])


def test_frozen_encoder_norms_keep_their_statistics_and_still_learn_scale_and_shift():
    seed_everything(0)
    data = make_fake_data(size=96, chip=32)
    net = ClassicUNet(3, 2, base_channels=4, depth=2)
    enc_bn = [m for m in net.down.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    dec_bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m not in enc_bn]
    assert enc_bn and dec_bn
    before = [(m.running_mean.clone(), m.weight.detach().clone()) for m in enc_bn]
    dec_before = [m.running_mean.clone() for m in dec_bn]
    trainer = Trainer(net, build_loss("ce"), 2, "cpu", encoder_norms_frozen=True)
    trainer.fit(data.train_dl, None, 2, 1e-2, progress=False)
    for m, (mean, weight) in zip(enc_bn, before):
        assert torch.equal(m.running_mean, mean)  # statistics kept
        assert not torch.equal(m.weight.detach(), weight)  # scale still trained
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(dec_bn, dec_before))
    trainer.train_mode()
    assert all(not m.training for m in enc_bn) and all(m.training for m in dec_bn)
    assert freeze_encoder_norms(torch.nn.Conv2d(1, 1, 1)) == 0  # no encoder: left alone


def test_encoder_gets_a_lower_learning_rate(monkeypatch):
    seed_everything(0)
    data = make_fake_data(size=96, chip=32)
    net = ClassicUNet(3, 2, base_channels=4, depth=2)
    trainer = Trainer(net, build_loss("ce"), 2, "cpu", encoder_lr_ratio=0.25)
    seen = []
    real_step = Trainer.train_step

    def step(self, batch, optimizer):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return real_step(self, batch, optimizer)

    monkeypatch.setattr(Trainer, "train_step", step)
    trainer.fit(data.train_dl, None, 3, 1e-2, progress=False)
    enc = {id(p) for p in trainer.network.down.parameters()}
    opt_groups = trainer._optimizer(1.0).param_groups
    assert {id(p) for p in opt_groups[1]["params"]} == enc
    assert all(e == pytest.approx(d * 0.25) for d, e in seen)
    assert max(d for d, _ in seen) == pytest.approx(1e-2, rel=0.05)
    with pytest.raises(InvalidParameterError, match="encoder_lr_ratio"):
        Trainer(net, build_loss("ce"), 2, "cpu", encoder_lr_ratio=0.0)


def test_time_budget_stops_and_anneals():
    trainer, data = tiny_trainer()
    t0 = time.perf_counter()
    hist = trainer.fit(
        data.train_dl, data.valid_dl, 10_000, 1e-2, time_budget_s=1.5, progress=False
    )
    assert time.perf_counter() - t0 < 30
    assert 1 <= len(hist) < 10_000
    assert hist["lr"].iloc[-1] < 1e-2  # the one-cycle schedule followed the clock
    assert hist["train_loss"].notna().all()  # no validation-only epoch after the budget
    # with the clock as the schedule early stopping may come first; without it, the clock ends
    assert hist.attrs["stopped_by"] in ("time budget", "early stopping")
    alone = trainer.fit(
        data.train_dl, None, 10_000, 1e-2, time_budget_s=0.5, early_stopping=None, progress=False
    )
    assert alone.attrs["stopped_by"] == "time budget"


def test_the_progress_bar_ends_where_the_time_budget_ends(monkeypatch):
    """Under a time budget the bar's total follows the epochs the budget holds, not the
    10 000 planned, and ends full."""
    from geounet.model import training

    totals: list[tuple[float, int]] = []

    class Recorder(training.tqdm):
        def update(self, n=1):
            super().update(n)
            totals.append((self.total, self.n))

        def close(self):
            totals.append((self.total, self.n))
            super().close()

    monkeypatch.setattr(training, "tqdm", Recorder)
    trainer, data = tiny_trainer()
    hist = trainer.fit(
        data.train_dl, None, 10_000, 1e-2, time_budget_s=1.0, early_stopping=None, progress=True
    )
    assert len(hist) >= training.PROJECT_AFTER_EPOCHS + 1
    after = [total for total, n in totals if n >= training.PROJECT_AFTER_EPOCHS]
    assert after and all(total < 10_000 for total in after)  # projected from the pace
    assert totals[-1] == (len(hist), len(hist))


def test_the_bars_projection_ignores_the_first_epochs_start_up():
    """The first epoch carries the start-up (a GPU's kernel selection): the projection waits
    for three epochs and takes the pace of those after the first."""
    from geounet.model import training

    trainer, _ = tiny_trainer()
    now = [0.0]
    trainer.clock = lambda: now[0]
    loop = training._Loop(trainer, 100, 1e-3, 100.0, 0.3)
    now[0], loop.first_end = 10.0, 10.0  # the first epoch: 10 s
    assert loop.expected_epochs(1, 500) == 500  # too early to project
    now[0] = 11.0
    assert loop.expected_epochs(2, 500) == 500
    now[0] = 12.0  # then 1 s an epoch: 88 s left hold 88 more
    assert loop.expected_epochs(3, 500) == 3 + 88
    assert loop.expected_epochs(3, 50) == 50  # never beyond the plan
    assert training._Loop(trainer, 100, 1e-3, None, 0.3).expected_epochs(3, 500) == 500


def test_deterministic_on_cpu_for_a_seed():
    results = []
    for _ in range(2):
        trainer, data = tiny_trainer(seed=3)
        seed_everything(7)
        hist = trainer.fit(data.train_dl, data.valid_dl, 2, 5e-3, progress=False)
        results.append((hist.drop(columns="seconds"), trainer.network.state_dict()))
    (h1, s1), (h2, s2) = results
    assert h1.equals(h2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_adamw_one_cycle_and_gradient_clipping(monkeypatch):
    trainer, data = tiny_trainer()
    lrs, norms = [], []
    real_step, real_clip = Trainer.train_step, torch.nn.utils.clip_grad_norm_

    def step(self, batch, optimizer):
        assert isinstance(optimizer, torch.optim.AdamW)
        lrs.append(optimizer.param_groups[0]["lr"])
        return real_step(self, batch, optimizer)

    def clip(params, max_norm, *a, **k):
        params = list(params)
        real_clip(params, max_norm, *a, **k)
        norms.append(float(torch.norm(torch.stack([p.grad.norm() for p in params]))))
        return torch.tensor(0.0)

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    trainer.fit(data.train_dl, None, 8, 1e-2, early_stopping=None, progress=False)
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-2) and lrs[0] < 1e-3 and lrs[-1] < 1e-3
    assert 0 < peak < len(lrs) - 1  # warm up, then anneal
    assert norms and max(norms) <= 1.0 + 1e-4  # grad_clip=1.0


def test_reseed_loader_restarts_the_shuffle():
    ds = torch.utils.data.TensorDataset(torch.arange(20))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(1)
    )

    def order():
        return torch.cat([b[0] for b in loader]).tolist()

    first = order()
    assert order() != first  # the generator moved on
    reseed_loader(loader, 1)
    assert order() == first


def test_lr_find_suggests_and_restores_weights():
    trainer, data = tiny_trainer()
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    result = trainer.lr_find(data.train_dl, num_iter=20, progress=False)
    assert len(result.lrs) == len(result.losses) > 5
    ratios = np.asarray(result.lrs[1:]) / np.asarray(result.lrs[:-1])
    assert result.lrs[0] == pytest.approx(1e-7) and np.allclose(ratios, (1e7) ** (1 / 19))
    assert np.isfinite(result.losses).all() and min(result.losses) < result.losses[0]
    candidates = {result.steepest, result.minimum / 10, result.extra["divergence"] / 10, 1e-3}
    assert result.suggestion in candidates | {*LR_BOUNDS}  # the rule: the scripted tests below
    assert all(torch.equal(v, trainer.network.state_dict()[k]) for k, v in before.items())


def test_lr_find_smooths_as_smooth_losses_reads_its_raw_losses(monkeypatch):
    """The sweep's smoothed losses are ``smooth_losses`` of the same steps' raw losses, cut at
    the same step (a jump past 4 times the lowest smoothed loss ends both)."""
    raw = [2.0, 1.9, 1.7, 1.4, 1.0, 0.8, 0.7, 0.9, 3.0, 40.0, 50.0, 60.0]
    steps = iter(raw)
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch, optimizer: next(steps))
    trainer, data = tiny_trainer()
    swept = trainer.lr_find(data.train_dl, num_iter=len(raw), smoothing=0.5, progress=False)
    expected = smooth_losses(raw, 0.5)
    assert swept.losses == pytest.approx(expected)
    assert len(expected) == 10  # stopped at 40.0: the smoothed 21.0 passes 4 x 0.87


# The sweep's rule, checked on scripted loss curves: each training step returns loss(lr), and
# smoothing=1 turns the moving average off. 71 steps from 1e-7 to 1 put ten learning rates
# in each decade, at 10 ** (-7 + i / 10).


def _sweep(monkeypatch, loss_of_log_lr) -> object:
    def step(self, batch, optimizer):
        return float(loss_of_log_lr(math.log10(optimizer.param_groups[0]["lr"])))

    monkeypatch.setattr(Trainer, "train_step", step)
    trainer, data = tiny_trainer()
    return trainer.lr_find(data.train_dl, num_iter=71, smoothing=1.0, progress=False)


def _descent_then_rise(centre: float, bottom: float, slope: float = 0.0):
    """A drop of 2 around ``centre`` (steepest there), the minimum at ``bottom``, then a steep
    rise that makes the sweep diverge; ``slope`` adds a gentle fall before the bottom."""

    def loss(x: float) -> float:
        rise = 50 * (x - bottom) ** 2 if x > bottom else 0.0
        return 3 - math.tanh(2 * (x - centre)) - slope * (x + 7) + rise

    return loss


def test_lr_find_picks_the_steepest_descent_below_the_minimum(monkeypatch):
    result = _sweep(monkeypatch, _descent_then_rise(centre=-3.5, bottom=-2.0))
    assert result.steepest == pytest.approx(10**-3.5, rel=1e-6)
    assert result.minimum == pytest.approx(1e-2, rel=1e-6)
    assert result.suggestion == pytest.approx(10**-3.5, rel=1e-6)
    assert len(result.lrs) < 71 and result.losses[-1] > 4 * min(result.losses)  # diverged


def test_lr_find_steepest_far_below_the_minimum_gives_a_tenth_of_it(monkeypatch):
    result = _sweep(monkeypatch, _descent_then_rise(centre=-6.0, bottom=-2.0, slope=0.02))
    assert result.steepest == pytest.approx(1e-6, rel=1e-6)  # three decades below 1e-2
    assert result.minimum == pytest.approx(1e-2, rel=1e-6)
    assert result.suggestion == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize(("centre", "bottom", "bound"), [(-6.5, -5.5, 0), (-1.5, -0.5, 1)])
def test_lr_find_suggestion_is_kept_within_the_bounds(monkeypatch, centre, bottom, bound):
    result = _sweep(monkeypatch, _descent_then_rise(centre=centre, bottom=bottom))
    assert result.steepest == pytest.approx(10**centre, rel=1e-6)  # outside the bounds
    assert result.suggestion == LR_BOUNDS[bound]


def test_lr_find_with_too_few_finite_losses_falls_back(monkeypatch):
    result = _sweep(monkeypatch, lambda x: 1.0 if x < -6.75 else float("nan"))
    assert len(result.lrs) == 3 and result.suggestion == 1e-3 and result.extra["fallback"]


def _curve(centre: float, bottom: float, n: int = 61) -> tuple[list[float], list[float]]:
    """A synthetic smoothed sweep from 1e-6 to 1: steepest at ``centre``, minimum at
    ``bottom``, then a steep rise (divergence)."""
    xs = np.linspace(-6, 0, n)
    loss = [
        3 - math.tanh(2 * (x - centre)) + (60 * (x - bottom) ** 2 if x > bottom else 0) for x in xs
    ]
    return list(10**xs), loss


def test_lr_suggestion_stays_well_below_divergence():
    # steepest at 10^-2.5, but the loss doubles just past 10^-2.3: divergence bounds it
    lrs, losses = _curve(centre=-2.5, bottom=-2.4)
    r = suggest_lr(lrs, losses)
    assert r.steepest == pytest.approx(10**-2.5, rel=1e-6)
    assert r.suggestion == pytest.approx(r.extra["divergence"] / 10)
    assert r.suggestion < r.steepest / 3  # a decade below where the loss blows up


def test_lr_suggestion_is_capped_for_fine_tuning_and_bounded():
    lrs, losses = _curve(centre=-2.0, bottom=-1.0)
    assert suggest_lr(lrs, losses).suggestion == pytest.approx(1e-2)  # steepest, the bound
    assert suggest_lr(lrs, losses, cap=FINE_TUNE_LR_CAP).suggestion == FINE_TUNE_LR_CAP
    lrs, losses = _curve(centre=-5.6, bottom=-5.4)
    assert suggest_lr(lrs, losses, cap=FINE_TUNE_LR_CAP).suggestion == LR_BOUNDS[0]
    assert suggest_lr(lrs[:4], losses[:4], cap=2e-4).suggestion == 2e-4  # fallback, capped


def test_lr_suggestion_of_a_sweep_cut_before_divergence_falls_back():
    # a time limit stopped the sweep at 1e-4, still descending: its steepest point (tiny)
    # says nothing about a good rate, so the fine-tuning default is used
    lrs, losses = _curve(centre=-2.5, bottom=-2.0)
    r = suggest_lr(lrs[:21], losses[:21], cap=FINE_TUNE_LR_CAP)
    assert r.extra["fallback"] and r.suggestion == FINE_TUNE_LR_CAP
    assert r.steepest < 1e-4


def test_lr_find_sweep_keeps_to_its_time_limit():
    trainer, data = tiny_trainer()
    t0 = time.perf_counter()
    result = trainer.lr_find(data.train_dl, num_iter=10_000, time_limit_s=0.5, progress=False)
    assert time.perf_counter() - t0 < 5 and 0 < len(result.lrs) < 10_000


def test_freeze_keeps_encoder_weights():
    trainer, data = tiny_trainer()
    set_encoder_trainable(trainer.network, False)
    enc = {k: v.clone() for k, v in trainer.network.down.state_dict().items() if "weight" in k}
    trainer.fit(data.train_dl, None, 1, 1e-2, progress=False)
    after = trainer.network.down.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in enc.items())
    set_encoder_trainable(trainer.network, True)
    assert all(p.requires_grad for p in trainer.network.parameters())


def test_channels_last_on_cpu_and_batch_forms():
    trainer, _ = tiny_trainer()
    w = trainer.network.down[0][0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4)
    assert unpack_batch({"image": x, "mask": y})[0] is x
    assert unpack_batch((x, y, "extra"))[1] is y
    with pytest.raises(InvalidParameterError):
        unpack_batch(x)


def test_bad_fit_arguments():
    trainer, data = tiny_trainer()
    with pytest.raises(InvalidParameterError):
        trainer.fit(data.train_dl, data.valid_dl, 0, 1e-3, progress=False)
    set_encoder_trainable(trainer.network, False)
    for p in trainer.network.parameters():
        p.requires_grad_(False)
    with pytest.raises(InvalidParameterError, match="frozen"):
        trainer.fit(data.train_dl, data.valid_dl, 1, 1e-3, progress=False)


def test_spin_waiting_is_limited_unless_the_user_chose(monkeypatch):
    """``limit_spin_waiting`` sets GOMP_SPINCOUNT only with no user choice and torch not loaded."""
    from geounet.core.threads import SPIN_COUNT, WAIT_ENV, limit_spin_waiting

    for key in WAIT_ENV:
        monkeypatch.delenv(key, raising=False)
    assert limit_spin_waiting() is False  # torch is loaded here: too late, hands off
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delitem(sys.modules, "torch")
    assert limit_spin_waiting() is True and os.environ["GOMP_SPINCOUNT"] == str(SPIN_COUNT)
    for key, value in (("GOMP_SPINCOUNT", "5"), ("OMP_WAIT_POLICY", "ACTIVE")):
        for other in WAIT_ENV:
            monkeypatch.delenv(other, raising=False)
        monkeypatch.setenv(key, value)
        assert limit_spin_waiting() is False and os.environ[key] == value
        assert "GOMP_SPINCOUNT" not in os.environ or key == "GOMP_SPINCOUNT"


def test_import_geounet_limits_spin_waiting_before_torch_loads():
    """A fresh process: ``import geounet`` sets it, torch then loads; a user's value stays."""
    code = (
        "import os, sys, geounet; assert 'torch' not in sys.modules; "
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10000", "None"]
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["None", "PASSIVE"]


def test_cpu_threads_respect_the_user(monkeypatch):
    n = torch.get_num_threads()
    try:
        monkeypatch.setenv("GEOUNET_NUM_THREADS", "1")
        assert configure_cpu_threads() == 1
        monkeypatch.delenv("GEOUNET_NUM_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(n)
        assert configure_cpu_threads() == n  # user's OMP setting: hands off
    finally:
        torch.set_num_threads(n)
