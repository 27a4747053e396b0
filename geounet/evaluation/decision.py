"""Calibrated class decisions: per-class weights on the probabilities, chosen on validation.

A network trained on a small labelled area can be under-confident on a class: on the
validation chips its building probability may sit below 0.5 on small or dim roofs, and the most
probable class misses them. :class:`DecisionSample` keeps a sample of validation pixels
(probabilities and labels) and :meth:`DecisionSample.calibrate` picks, per class, the weight its
probability gets before the arg-max (:data:`DECISION_GRID`; background fixed at 1) that gives
the best validation mIoU, by coordinate ascent. The weights are kept only when they raise the
validation mIoU by :data:`MIN_GAIN` or more over the plain arg-max, so a well-calibrated model
keeps the most probable class. For two classes, a building weight ``w`` is a probability
threshold of ``1 / (1 + w)`` (``w = 2``: 0.33).

Example:
    >>> import numpy as np
    >>> s = DecisionSample(2)
    >>> p1 = np.array([0.2, 0.3, 0.4, 0.45, 0.6, 0.1, 0.05, 0.02], np.float32)
    >>> probs = np.stack([1 - p1, p1])[None, :, None, :]  # one chip, 1 x 8 (4 sampled)
    >>> labels = np.array([[[0, 1, 1, 1, 1, 0, 0, 0]]])
    >>> s.add(probs, labels)
    >>> result = s.calibrate()
    >>> result.weights, round(result.miou_before, 3), round(result.miou_after, 3)
    ([1.0, 2.0], 0.583, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geounet.core.types import IGNORE_INDEX
from geounet.evaluation.metrics import mean_iou

__all__ = ["DECISION_GRID", "MIN_GAIN", "Calibration", "DecisionSample"]

#: The weights tried for each class's probability (background stays at 1).
DECISION_GRID = (0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)
#: Calibrated weights are kept only when they raise the validation mIoU by this much.
MIN_GAIN = 0.005
#: Every ``SAMPLE_STEP``-th row and column of each validation chip is sampled.
SAMPLE_STEP = 2
#: At most this many validation pixels are kept (the first ones).
MAX_PIXELS = 1_000_000
#: Rounds of coordinate ascent over the classes.
ROUNDS = 2


@dataclass
class Calibration:
    """What :meth:`DecisionSample.calibrate` found.

    Attributes:
        weights: Per class, the weight of its probability; None when the plain arg-max is
            kept (no gain of :data:`MIN_GAIN`, or no labelled pixels).
        miou_before: Validation mIoU of the plain arg-max (on the sampled pixels).
        miou_after: Validation mIoU with ``weights`` (``miou_before`` when None).
        pixels: Sampled validation pixels.
    """

    weights: list[float] | None
    miou_before: float
    miou_after: float
    pixels: int

    def to_json(self) -> dict[str, object]:
        """The record kept in the model's metrics."""
        return {
            "weights": self.weights,
            "miou_argmax": round(self.miou_before, 5),
            "miou_weighted": round(self.miou_after, 5),
            "pixels": self.pixels,
        }


class DecisionSample:
    """Sampled validation pixels (probabilities and labels) to calibrate class decisions on.

    Args:
        n_classes: Number of classes (background first).
    """

    def __init__(self, n_classes: int) -> None:
        self.n_classes = int(n_classes)
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self.pixels = 0

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: ``probs (B, K, H, W)`` softmax, ``labels (B, H, W)`` (255 ignored)."""
        if self.pixels >= MAX_PIXELS:
            return
        p = probs[:, :, ::SAMPLE_STEP, ::SAMPLE_STEP]
        y = np.asarray(labels)[:, ::SAMPLE_STEP, ::SAMPLE_STEP].reshape(-1)
        p = np.moveaxis(p, 1, -1).reshape(-1, self.n_classes)
        keep = (y != IGNORE_INDEX) & (y < self.n_classes)
        keep &= np.cumsum(keep) <= MAX_PIXELS - self.pixels
        self._probs.append(p[keep].astype(np.float16))
        self._labels.append(y[keep].astype(np.int64))
        self.pixels += int(keep.sum())

    def _miou(self, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
        k = self.n_classes
        pred = np.argmax(probs * weights, axis=1)
        cm = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
        return mean_iou(cm)

    def calibrate(self) -> Calibration:
        """The per-class weights of best validation mIoU (see the module docs)."""
        if not self.pixels:
            return Calibration(None, float("nan"), float("nan"), 0)
        probs = np.concatenate(self._probs).astype(np.float32)
        labels = np.concatenate(self._labels)
        weights = np.ones(self.n_classes, np.float32)
        before = best = self._miou(probs, labels, weights)
        for _ in range(ROUNDS):
            for c in range(1, self.n_classes):
                for w in DECISION_GRID:
                    trial = weights.copy()
                    trial[c] = w
                    score = self._miou(probs, labels, trial)
                    if score > best + 1e-9:
                        best, weights = score, trial
        if best < before + MIN_GAIN:
            return Calibration(None, before, before, self.pixels)
        return Calibration([float(w) for w in weights], before, best, self.pixels)
