"""How long and how fast to train: the run's plan, its learning rate, and when to stop.

The schedule side of :class:`~geounet.model.training.Trainer`, kept apart from the loop:
:func:`plan_training` sizes a ``fit`` from the data and the device; :func:`suggest_lr` reads
an LR finder sweep conservatively (:class:`LRFindResult`); :class:`StopRule` stops early on
the validation score, never during the warm-up nor before the annealing has brought the
learning rate low (:func:`annealed_point`).

Example:
    >>> rule = StopRule(patience=3)
    >>> rule.update(0.5, 0.1)  # in the warm-up: never a stop
    False
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_BUDGET_S",
    "FINE_TUNE_LR_CAP",
    "LR_BOUNDS",
    "MAX_EPOCHS",
    "MIN_EPOCHS",
    "STOP_LR_FRACTION",
    "TARGET_CHIP_VIEWS",
    "WARMUP",
    "LRFindResult",
    "LossSmoother",
    "StopRule",
    "annealed_point",
    "plan_training",
    "smooth_losses",
    "suggest_lr",
]

#: Bounds for a suggested learning rate (AdamW rarely trains well outside them).
LR_BOUNDS = (1e-5, 1e-2)
#: Highest suggested learning rate when a pretrained encoder is fine-tuned: larger steps
#: wash out the ImageNet features before the decoder has learnt to use them.
FINE_TUNE_LR_CAP = 1e-3
#: Share of the one-cycle schedule that warms the learning rate up (no early stop in it).
WARMUP = 0.25
#: Early stopping waits until the annealing has brought the learning rate down to this share
#: of its peak (see :class:`StopRule`).
STOP_LR_FRACTION = 0.1
#: ``fit`` without an epoch count plans about this many chip views (epochs x chips), at
#: least :data:`MIN_EPOCHS` and at most :data:`MAX_EPOCHS` epochs, on every device (on a
#: GPU a plan three times as large scored lower on the real scenes: a small labelled area is
#: learnt by heart; thirty-third round of ``benchmarks/README.md``)...
TARGET_CHIP_VIEWS = 6000
MIN_EPOCHS, MAX_EPOCHS = 20, 1500
#: ... and stops after this many seconds (the whole ``fit``, LR sweep included) per device
#: type: 14 minutes on a CPU (a 2-core machine trains ~5 000 chips of 256 px in that time,
#: and the small labelled areas of ``benchmarks/recipe.py`` were still improving at 10), 15
#: on an accelerator, where the chip-view plan usually ends the run first.
DEFAULT_BUDGET_S = {"cpu": 840.0, "cuda": 900.0, "mps": 900.0}


def plan_training(n_train_chips: int, device: torch.device | str) -> tuple[int, float]:
    """Epochs and time budget of a ``fit`` given no epoch count: the data and the device decide.

    The run plans :data:`TARGET_CHIP_VIEWS` chip views (so a small area gets many epochs and
    a large one few), kept within ``[MIN_EPOCHS, MAX_EPOCHS]``, and stops at the device's
    :data:`DEFAULT_BUDGET_S` (the one-cycle schedule then follows the clock, so the learning
    rate still anneals). Early stopping may end it sooner, never during warm-up.

    Example:
        >>> plan_training(4, "cpu")
        (1500, 840.0)
        >>> plan_training(600, "cuda")
        (20, 900.0)
    """
    n = max(int(n_train_chips), 1)
    epochs = min(max(math.ceil(TARGET_CHIP_VIEWS / n), MIN_EPOCHS), MAX_EPOCHS)
    kind = torch.device(device).type
    return epochs, DEFAULT_BUDGET_S.get(kind, DEFAULT_BUDGET_S["cpu"])


@dataclass
class StopRule:
    """Early stopping on the validation score (higher is better), never at a high rate.

    An epoch improves when its score beats the best so far by more than ``min_delta``.
    Epochs without improvement count only once the schedule's warm-up is over, and a stop
    also needs ``min_span`` of the schedule to have passed since the last improvement (or
    since the warm-up ended), so a small, noisy validation set cannot end the run a few short
    epochs after the peak learning rate. Nor can it stop before ``min_progress`` of the
    schedule, by default the point where the one-cycle cosine annealing has brought the
    learning rate down to :data:`STOP_LR_FRACTION` of its peak (:func:`annealed_point`:
    0.846 of the schedule with a 25 % warm-up): the epochs at a low rate are where the
    weights settle. On ``oam_kampala`` (1 validation chip), ``inria_austin`` (3) and
    ``oam_zanzibar`` (14) the validation mIoU at the peak rate jumped by up to 0.14 from epoch to
    epoch; a stop allowed from half the peak rate (0.625 of the schedule) fired in all three
    within a few epochs of the first one allowed, on a noisy early best.

    Args:
        patience: Epochs without improvement before stopping; None or 0: never stop.
        warmup: Share of the schedule that is warm-up (no stop before it ends).
        min_span: Share of the schedule without improvement needed to stop.
        min_delta: Smallest improvement of the score that counts.
        min_progress: Earliest share of the schedule at which a stop may happen (None:
            :func:`annealed_point` of ``warmup``).

    Example:
        >>> rule = StopRule(patience=2, warmup=0.5, min_span=0.0, min_progress=0.5)
        >>> [rule.update(s, p) for s, p in [(0.5, 0.1), (0.4, 0.3), (0.4, 0.6), (0.4, 0.7)]]
        [False, False, False, True]
    """

    patience: int | None
    warmup: float = WARMUP
    min_span: float = 0.2
    min_delta: float = 1e-4
    min_progress: float | None = None
    best: float = -math.inf
    stale: int = 0
    since: float = 0.0

    def update(self, score: float, progress: float) -> bool:
        """Record one epoch's ``score`` at ``progress`` (0-1) of the schedule; True: stop."""
        improved = math.isfinite(score) and score > self.best + self.min_delta
        if improved:
            self.best = score
        if progress < self.warmup:
            self.stale, self.since = 0, self.warmup
            return False
        if improved:
            self.stale, self.since = 0, progress
            return False
        self.stale += 1
        long_enough = progress - self.since >= self.min_span
        settled = (
            self.min_progress if self.min_progress is not None else annealed_point(self.warmup)
        )
        late_enough = progress >= settled
        return (
            bool(self.patience)
            and self.stale >= int(self.patience or 0)
            and long_enough
            and late_enough
        )


def annealed_point(warmup: float = WARMUP, fraction: float | None = None) -> float:
    """Share of a one-cycle schedule where cosine annealing brings the rate to ``fraction``.

    ``fraction`` of the peak learning rate, default :data:`STOP_LR_FRACTION`.

    Example:
        >>> annealed_point(0.25, 0.5)
        0.625
        >>> round(annealed_point(0.25), 3)
        0.846
    """
    f = STOP_LR_FRACTION if fraction is None else fraction
    return warmup + (1.0 - warmup) * math.acos(2.0 * f - 1.0) / math.pi


@dataclass
class LRFindResult:
    """An LR finder sweep.

    Attributes:
        lrs: Learning rates tried.
        losses: Smoothed training loss at each.
        suggestion: The suggested learning rate.
        steepest: Learning rate of the steepest descent of the smoothed loss.
        minimum: Learning rate of the smallest smoothed loss.
    """

    lrs: list[float]
    losses: list[float]
    suggestion: float
    steepest: float
    minimum: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossSmoother:
    """The LR sweep's reading of its losses: a bias-corrected exponential moving average.

    :meth:`add` takes one step's training loss and returns the smoothed loss; ``diverged``
    turns True once, after the first six steps, the smoothed loss exceeds ``diverge`` times
    its lowest value (the sweep stops there).

    Example:
        >>> s = LossSmoother(smoothing=0.5)
        >>> [round(s.add(x), 3) for x in (2.0, 1.0, 1.0)]
        [2.0, 1.333, 1.143]
    """

    smoothing: float = 0.05
    diverge: float = 4.0
    steps: int = field(default=0, init=False)
    average: float = field(default=0.0, init=False)
    best: float = field(default=math.inf, init=False)
    diverged: bool = field(default=False, init=False)

    def add(self, loss: float) -> float:
        """The smoothed loss after one more step's ``loss``."""
        self.average = self.smoothing * loss + (1 - self.smoothing) * self.average
        self.steps += 1
        smoothed = self.average / (1 - (1 - self.smoothing) ** self.steps)
        self.best = min(self.best, smoothed)
        self.diverged = self.steps > 6 and smoothed > self.diverge * self.best
        return smoothed


def smooth_losses(
    raw: Sequence[float], smoothing: float = 0.05, diverge: float = 4.0
) -> list[float]:
    """A sweep's raw losses as the sweep would have smoothed them, cut where it would stop.

    Example:
        >>> smooth_losses([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0], 1.0)
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0]
    """
    smoother, out = LossSmoother(smoothing, diverge), []
    for loss in raw:
        out.append(smoother.add(float(loss)))
        if smoother.diverged:
            break
    return out


def suggest_lr(
    lrs: Sequence[float], losses: Sequence[float], cap: float | None = None
) -> LRFindResult:
    """A conservative learning rate from an LR finder sweep (smoothed loss against LR).

    The candidate is the learning rate of the steepest descent of the loss (against log LR)
    before its minimum, or a tenth of the minimum's LR when the steepest point lies more than
    two decades below it (a steep drop at the very start of a sweep is noise). The suggestion
    is that candidate, but at most a tenth of the divergence point (the first LR past the
    minimum where the loss doubles) and at most ``cap``, kept within :data:`LR_BOUNDS`. A
    sweep that never diverged (cut short by its time limit, or too few points) says nothing
    about where training breaks: it gives 1e-3 (or ``cap`` when lower), flagged
    ``extra["fallback"]``.

    Example:
        >>> import numpy as np
        >>> lrs = list(10 ** np.linspace(-6, 0, 61))
        >>> losses = [2 - np.tanh(2 * (np.log10(x) + 3)) + 40 * max(np.log10(x) + 1.5, 0) ** 2
        ...           for x in lrs]
        >>> r = suggest_lr(lrs, losses)
        >>> f"{r.steepest:.0e} {r.suggestion:.0e}"
        '1e-03 1e-03'
        >>> f"{suggest_lr(lrs, losses, cap=3e-4).suggestion:.0e}"
        '3e-04'
    """
    lo, hi = LR_BOUNDS
    hi = min(hi, cap) if cap is not None else hi
    fallback = min(1e-3, hi)
    if len(lrs) < 5:
        return LRFindResult(
            list(lrs), list(losses), fallback, fallback, fallback, {"fallback": True}
        )
    log_lr = np.log10(np.asarray(lrs, dtype=float))
    loss = np.asarray(losses, dtype=float)
    i_min = int(np.argmin(loss))
    grads = np.gradient(loss, log_lr)
    skip = max(1, len(lrs) // 10)  # the first points of the EMA are not trustworthy
    window = grads[skip : max(i_min, skip + 1)]
    i_steep = skip + int(np.argmin(window)) if window.size else i_min
    steepest, minimum = float(lrs[i_steep]), float(lrs[i_min])
    candidate = steepest if minimum / 100 <= steepest <= minimum else minimum / 10
    above = np.flatnonzero(loss[i_min:] > 2 * loss[i_min])
    if not above.size:  # no divergence seen: the sweep ended too early to tell
        extra = {"fallback": True, "divergence": math.inf, "cap": hi}
        return LRFindResult(list(lrs), list(losses), fallback, steepest, minimum, extra)
    divergence = float(lrs[i_min + above[0]])
    suggestion = float(min(max(min(candidate, divergence / 10), lo), max(hi, lo)))
    extra = {"divergence": divergence, "cap": hi}
    return LRFindResult(list(lrs), list(losses), suggestion, steepest, minimum, extra)
