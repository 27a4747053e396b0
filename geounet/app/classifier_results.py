"""What ``UnetClassifier`` reports on its validation chips: metrics, figures, decision weights.

A mixin of :class:`geounet.app.classifier.UnetClassifier`, kept apart so that the class's
module holds the model and its training; the attributes it reads are the classifier's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from geounet.app.fitting import json_records, json_table, valid_loader
from geounet.core.errors import InvalidParameterError
from geounet.evaluation.decision import DecisionSample
from geounet.evaluation.metrics import mean_iou, per_class_metrics, pixel_accuracy
from geounet.model.files import ModelConfig
from geounet.model.training import Trainer, unpack_batch
from geounet.viz.plots import plot_losses, results_figure

__all__ = ["ValidationResults"]


class ValidationResults:
    """Validation metrics, training history and result figures of a classifier (a mixin)."""

    config: ModelConfig
    data: Any
    _history: pd.DataFrame
    _confusion: np.ndarray | None
    _trainer: Trainer

    def _require_data(self, use: str = "train it further") -> Any:
        """The training data, or an error naming the fix for a model loaded from a folder.

        ``use``: what the caller needs the data for, in the message.
        """
        if self.data is None:
            raise InvalidParameterError(
                "this model has no training data (it was loaded with from_model); build one "
                f"with UnetClassifier(data, pretrained_path=<model folder>) to {use}. Its "
                "validation figures are in model.config.metrics (geounet info MODEL_DIR); "
                "model.classify(scene) maps a scene with it as it is."
            )
        return self.data

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch training history of every :meth:`fit` call (a copy).

        Its ``attrs`` sum up the last call: ``"epochs"`` it ran, what ended it,
        ``"stopped_by"``, and which epoch gave the weights kept, ``"kept_epoch"`` (as
        :meth:`fit`'s own history says).
        """
        return self._history.copy()

    def plot_losses(self) -> Any:
        """Figure of training/validation loss and validation mIoU per epoch."""
        return plot_losses(self._history)

    def _calibrate_decision(self, valid: Any) -> None:
        """Choose the class decision weights on the validation chips (kept in the config).

        See :mod:`geounet.evaluation.decision`; ``valid`` None: the plain arg-max.
        """
        self.config.decision_weights, self._decision = None, None
        if valid is None:
            return
        sample = DecisionSample(self.config.n_classes)
        with torch.inference_mode():
            for batch in valid:
                x, y = unpack_batch(batch)
                probs = torch.softmax(self._trainer.predict_logits(x), dim=1)
                sample.add(probs.cpu().numpy(), y.cpu().numpy())
        self._decision = sample.calibrate()
        self.config.decision_weights = self._decision.weights

    # ----------------------------------------------------------------- metrics
    def _validation_confusion(self) -> np.ndarray:
        """The validation confusion matrix, computed once per set of weights."""
        if self._confusion is None:
            loader = valid_loader(self._require_data("score its validation chips"))
            if loader is None:
                raise InvalidParameterError("the data has no validation chips to score.")
            _, self._confusion = self._trainer.evaluate(loader)
        return self._confusion

    def _record_metrics(self) -> None:
        """Write the validation metrics and the history into the config (saved with the model)."""
        if valid_loader(self.data) is None:
            return
        cm = self._validation_confusion()
        table = per_class_metrics(cm, self.config.class_names)
        self.config.metrics = {
            "miou": mean_iou(cm),
            "accuracy": pixel_accuracy(cm),
            "per_class": json_table(table),
        }
        if getattr(self, "_decision", None) is not None:
            self.config.metrics["decision"] = self._decision.to_json()
        self.config.history = json_records(self._history)

    def confusion_matrix(self) -> pd.DataFrame:
        """Validation confusion matrix (pixels; rows = truth, columns = prediction)."""
        names = self.config.class_names
        return pd.DataFrame(
            self._validation_confusion(),
            index=pd.Index(names, name="truth"),
            columns=pd.Index(names, name="predicted"),
        )

    def per_class_metrics(self) -> pd.DataFrame:
        """Validation precision, recall, F1, IoU and support per class."""
        return per_class_metrics(self._validation_confusion(), self.config.class_names)

    def mIOU(self, ignore_background: bool = False) -> float:  # noqa: N802 - arcgis name
        """Validation mean IoU over the classes present."""
        return mean_iou(self._validation_confusion(), ignore_background=ignore_background)

    def accuracy(self) -> float:
        """Validation pixel accuracy."""
        return pixel_accuracy(self._validation_confusion())

    def show_results(self, rows: int = 4) -> Any:
        """Figure of validation chips: image | ground truth | prediction (one row each)."""
        data = self._require_data("show its predictions on chips of that data")
        loader = valid_loader(data) or data.train_dl
        images, truths, preds = [], [], []
        self.network.eval()
        with torch.inference_mode():
            for batch in loader:
                x, y = unpack_batch(batch)
                pred = self._trainer.predict_logits(x).argmax(1).cpu().numpy()
                for i in range(min(len(x), rows - len(images))):
                    images.append(x[i].cpu().numpy())
                    truths.append(y[i].cpu().numpy())
                    preds.append(pred[i])
                if len(images) >= rows:
                    break
        c = self.config
        return results_figure(images, truths, preds, c.classes, c.stats, c.band_names)
