"""The training loop, kept apart from the network: fit, validation, LR finder, freezing.

:class:`Trainer` trains any segmentation network that maps ``(N, C, H, W)`` images to
``(N, K, H, W)`` logits, from loaders that yield ``(image, mask)`` pairs (or dicts with
``"image"`` and ``"mask"``). It uses AdamW with a one-cycle schedule (optionally a lower
learning rate for a pretrained encoder than for the decoder), gradient clipping, and one
validation score, the mIoU, for both the best checkpoint and early stopping
(:class:`~geounet.model.schedule.StopRule`: never during the schedule's warm-up), and
optionally a moving average of the weights (:mod:`geounet.model.averaging`). On CUDA it
trains in mixed precision (bfloat16 where supported, else float16 with a gradient scaler)
and channels-last; on the CPU in float32 channels-last. The run's plan, the LR suggestion
and the stop rule live in :mod:`geounet.model.schedule`.

Example:
    Not run as a doctest: it needs a network and data loaders.

    >>> trainer = Trainer(net, build_loss(), n_classes=2)         # doctest: +SKIP
    >>> history = trainer.fit(train_dl, valid_dl, epochs=10, lr=1e-3)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from geounet.core.errors import InvalidParameterError
from geounet.core.threads import THREADS_ENV, available_cores
from geounet.evaluation.metrics import ConfusionAccumulator, mean_iou, pixel_accuracy
from geounet.model.averaging import WeightAverage, check_decay
from geounet.model.resume import clear_fit_state, load_fit_state, save_fit_state
from geounet.model.schedule import (
    WARMUP,
    LossSmoother,
    LRFindResult,
    StopRule,
    annealed_point,
    suggest_lr,
)

__all__ = [
    "CHECKPOINTS",
    "HISTORY_COLUMNS",
    "STATE_EVERY_S",
    "EpochResult",
    "Trainer",
    "configure_cpu_threads",
    "default_device",
    "encoder_parameters",
    "freeze_encoder_norms",
    "reseed_loader",
    "seed_everything",
    "set_encoder_trainable",
    "state_copy",
    "unpack_batch",
]

#: Values of ``Trainer.fit(checkpoint=)``: the best epoch, the best annealed epoch, the last.
CHECKPOINTS = (True, "annealed", False)
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_miou",
    "accuracy",
    "lr",
    "seconds",
]
#: Shortest time between two saves of a fit run's state (for ``resume``): the weights and
#: the optimiser's moments of a large network are hundreds of MB.
STATE_EVERY_S = 30.0
#: Epochs trained before the progress bar's total is projected from the time budget.
PROJECT_AFTER_EPOCHS = 3


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else the CPU."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidParameterError(
                f"device={device!r} is not a torch device (use 'cpu', 'cuda' or 'cuda:1')."
            ) from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_cpu_threads() -> int:
    """Use as many torch threads as CPU cores this process may run on.

    Nothing is changed when the user chose a count (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
    ``GEOUNET_NUM_THREADS`` or an earlier ``torch.set_num_threads`` that differs from torch's
    default). Containers often report more cores than their CPU quota allows; the affinity
    mask and the cgroup quota are honoured.

    Returns:
        The torch thread count now in use.
    """
    if any(os.environ.get(k) for k in THREADS_ENV):
        if os.environ.get("GEOUNET_NUM_THREADS"):
            torch.set_num_threads(max(1, int(os.environ["GEOUNET_NUM_THREADS"])))
        return torch.get_num_threads()
    cores = available_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loaders."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def reseed_loader(loader: Any, seed: int) -> None:
    """Restart a loader's random streams from ``seed`` (shuffling, and augmentation if known).

    The loader's own ``generator`` (a seeded ``torch.Generator``, as ``prepare_data`` gives
    the training loader) is re-seeded; a dataset with a ``reseed(seed)`` method gets it called.
    Loaders without a generator shuffle with torch's global generator, which
    :func:`seed_everything` seeds.
    """
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    reseed = getattr(getattr(loader, "dataset", None), "reseed", None)
    if callable(reseed):
        reseed(seed)


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, mask)`` from a ``(image, mask, ...)`` tuple or a dict ``{"image", "mask"}``."""
    if isinstance(batch, dict):
        return batch["image"], batch["mask"]
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise InvalidParameterError(
        f"a training batch must be (image, mask) or a dict with 'image' and 'mask'; got "
        f"{type(batch).__name__}."
    )


def _encoder(network: nn.Module) -> nn.Module:
    """``network.encoder`` (smp) or the contracting path (classic)."""
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        encoder = getattr(network, "down", None)
    if encoder is None:
        raise InvalidParameterError(f"{type(network).__name__} has no encoder to (un)freeze.")
    return encoder


def encoder_parameters(network: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of the encoder: ``network.encoder`` (smp) or the contracting path (classic)."""
    return _encoder(network).parameters()


def freeze_encoder_norms(network: nn.Module) -> int:
    """Put the encoder's batch-norm layers in evaluation mode (call after ``network.train()``).

    They then normalise with their pretrained running statistics and keep them: a few
    small batches of one scene would otherwise pull the statistics an ImageNet encoder was
    trained with towards that scene. Their scale and shift still learn. A network without an
    encoder is left as it is.

    Returns:
        How many layers were frozen.
    """
    try:
        encoder = _encoder(network)
    except InvalidParameterError:
        return 0
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()
    return len(norms)


def set_encoder_trainable(network: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) the encoder's weights."""
    for p in encoder_parameters(network):
        p.requires_grad_(trainable)


@dataclass
class EpochResult:
    """What one epoch produced."""

    train_loss: float
    valid_loss: float
    valid_miou: float
    accuracy: float
    lr: float
    seconds: float
    confusion: np.ndarray | None = None


class Trainer:
    """Train a segmentation network.

    Args:
        network: Maps ``(N, C, H, W)`` float images to ``(N, K, H, W)`` logits.
        loss_fn: ``loss_fn(logits, target)`` -> scalar tensor (targets ``int64``, 255 ignored).
        n_classes: ``K``.
        device: Torch device; default CUDA when available, else the CPU.
        weight_decay: AdamW weight decay.
        grad_clip: Maximum gradient norm (None: no clipping).
        mixed_precision: Mixed precision on CUDA (ignored on the CPU).
        channels_last: Channels-last memory format (faster convolutions on CPU and GPU).
        encoder_lr_ratio: The encoder's learning rate as a share of the decoder's (1: the
            same; below 1 for a pretrained encoder, whose features need smaller steps).
        encoder_norms_frozen: Keep the encoder's batch-norm statistics as they are (for a
            pretrained encoder; :func:`freeze_encoder_norms`).
        weight_average: Decay of an exponential moving average of the weights
            (:class:`~geounet.model.averaging.WeightAverage`, e.g. 0.99: about the last 100
            steps); :meth:`fit` then validates, checkpoints and keeps the averaged weights.
            None: the weights of the last step.
    """

    def __init__(
        self,
        network: nn.Module,
        loss_fn: nn.Module,
        n_classes: int,
        device: str | torch.device | None = None,
        *,
        weight_decay: float = 1e-2,
        grad_clip: float | None = 1.0,
        mixed_precision: bool = True,
        channels_last: bool = True,
        encoder_lr_ratio: float = 1.0,
        encoder_norms_frozen: bool = False,
        weight_average: float | None = None,
    ) -> None:
        if weight_average is not None:
            check_decay(weight_average, "weight_average")
        self.weight_average = weight_average
        if not 0 < encoder_lr_ratio <= 1:
            raise InvalidParameterError(
                f"encoder_lr_ratio={encoder_lr_ratio} must lie in (0, 1]; use 1 for one rate."
            )
        self.encoder_lr_ratio = float(encoder_lr_ratio)
        self.encoder_norms_frozen = bool(encoder_norms_frozen)
        self.device = default_device(device)
        self.network = network.to(self.device)
        self.loss_fn = loss_fn.to(self.device)
        self.n_classes = int(n_classes)
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)
        cuda = self.device.type == "cuda"
        self.amp_dtype: torch.dtype | None = None
        if cuda and mixed_precision:
            bf16 = torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        #: Validation confusion matrix of the weights kept by the last :meth:`fit`.
        self.best_confusion: np.ndarray | None = None
        #: Epochs of the last :meth:`fit` up to the weights it kept (all when no checkpoint).
        self.best_epochs: int = 0

    # ------------------------------------------------------------------ steps
    def clock(self) -> float:
        """Seconds on the clock that times :meth:`fit` (the distributed trainer: rank 0's)."""
        return time.perf_counter()

    def train_mode(self) -> None:
        """The network in training mode (the encoder's batch norms frozen when asked)."""
        self.network.train()
        if self.encoder_norms_frozen:
            freeze_encoder_norms(self.network)

    def _to_device(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = unpack_batch(batch)
        nb = self.device.type == "cuda"
        x = x.to(self.device, torch.float32, non_blocking=nb).contiguous(
            memory_format=self.memory_format
        )
        return x, y.to(self.device, torch.int64, non_blocking=nb)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp_dtype is None:
            return self.network(x)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return self.network(x)

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        """AdamW; with ``encoder_lr_ratio < 1`` the encoder is a second group at a lower rate.

        Each group carries ``lr_scale`` (its share of the peak rate); group 0 is the decoder.
        """
        params = [p for p in self.network.parameters() if p.requires_grad]
        if not params:
            raise InvalidParameterError("every parameter is frozen; call unfreeze() first.")
        groups = [{"params": params, "lr_scale": 1.0}]
        if self.encoder_lr_ratio < 1:
            try:
                enc = {id(p) for p in encoder_parameters(self.network)}
            except InvalidParameterError:
                enc = set()
            head = [p for p in params if id(p) not in enc]
            body = [p for p in params if id(p) in enc]
            if head and body:
                groups = [
                    {"params": head, "lr_scale": 1.0},
                    {"params": body, "lr_scale": self.encoder_lr_ratio},
                ]
        for g in groups:
            g["lr"] = lr * g["lr_scale"]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=self.weight_decay)

    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> float:
        """One optimisation step; returns the batch loss."""
        x, y = self._to_device(batch)
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self._forward(x).float(), y)
        if not torch.isfinite(loss):
            return float("nan")
        self.step(loss, optimizer)
        return float(loss.detach())

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward pass of ``loss`` (scaled in float16), gradient clipping, optimiser step."""
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], self.grad_clip
            )
        self.scaler.step(optimizer)
        self.scaler.update()

    @torch.inference_mode()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits of a batch of normalised images, in evaluation mode."""
        self.network.eval()
        x = x.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        return self._forward(x).float()

    @torch.inference_mode()
    def evaluate(self, loader: Iterable[Any]) -> tuple[float, np.ndarray]:
        """Mean loss and confusion matrix (rows truth, columns prediction) over ``loader``."""
        was_training = self.network.training
        self.network.eval()
        acc = ConfusionAccumulator(self.n_classes)
        total, count = 0.0, 0
        for batch in loader:
            x, y = self._to_device(batch)
            logits = self._forward(x).float()
            total += float(self.loss_fn(logits, y)) * len(x)
            count += len(x)
            acc.update(logits.argmax(1).cpu().numpy(), y.cpu().numpy())
        self.network.train(was_training)
        return (total / count if count else float("nan")), acc.matrix

    # -------------------------------------------------------------------- fit
    def fit(
        self,
        train_dl: Any,
        valid_dl: Any | None,
        epochs: int,
        lr: float,
        *,
        early_stopping: int | None = 10,
        checkpoint: bool | str = True,
        time_budget_s: float | None = None,
        progress: bool = True,
        start_epoch: int = 1,
        warmup: float = WARMUP,
        state_dir: Path | None = None,
        resume: bool = False,
    ) -> pd.DataFrame:
        """Train for up to ``epochs`` epochs; returns this run's history.

        One score drives both the best checkpoint and early stopping: the validation mIoU
        (without validation: minus the training loss). The loss is not watched: with a small
        validation set it jumps while the mIoU still climbs.

        Args:
            train_dl: Training loader (shuffled).
            valid_dl: Validation loader, or None (then the training loss is the score).
            epochs: Maximum number of epochs.
            lr: Peak learning rate of the one-cycle schedule (of the decoder; the encoder
                gets ``encoder_lr_ratio`` of it).
            early_stopping: Patience in epochs of :class:`StopRule` (None or 0: never stop
                early); it never stops during the warm-up.
            checkpoint: Restore, at the end, the weights of the epoch with the best score
                (True); ``"annealed"``: of the best epoch once the annealing has brought the
                learning rate to a tenth of its peak (:func:`~geounet.model.schedule.
                annealed_point`, as for the stop rule), the epochs before being validated but
                not kept; False: keep the last weights.
            time_budget_s: Stop after this many seconds of wall-clock time (the current
                epoch is cut short and validated); the one-cycle schedule then follows the
                elapsed share of the budget, so the learning rate still anneals to its end.
            progress: Show a progress bar with live loss and mIoU.
            start_epoch: Number of the first epoch in the history.
            warmup: Share of the schedule that raises the learning rate to ``lr``.
            state_dir: Save the whole state of the run there after every epoch
                (:mod:`geounet.model.resume`); removed when the run ends normally.
            resume: Continue the run saved in ``state_dir`` (same loaders and settings)
                with its next epoch, instead of starting again.

        Returns:
            A DataFrame with columns :data:`HISTORY_COLUMNS`, one row per epoch (with
            ``resume``, the saved epochs too); ``attrs["stopped_by"]`` says what ended the
            run: ``"epochs"``, ``"early stopping"`` or ``"time budget"``;
            ``attrs["kept_epoch"]``, which of its epochs (1-based) gave the weights kept.

        Raises:
            InvalidParameterError: Bad settings, an empty loader, or ``resume`` without a
                state saved with the same settings.
        """
        _check_fit(epochs, lr, warmup, checkpoint, len(train_dl))
        loop = _Loop(self, epochs * len(train_dl), lr, time_budget_s, warmup)
        keep_from = annealed_point(warmup) if checkpoint == "annealed" else 0.0
        rule, best = StopRule(early_stopping, warmup), _Best(bool(checkpoint), keep_from)
        rows: list[dict[str, Any]] = []
        run = {"loop": loop, "rule": rule, "best": best, "rows": rows}
        key = {
            "epochs": epochs,
            "lr": lr,
            "batches": len(train_dl),
            "start": start_epoch,
            "checkpoint": checkpoint,
            "early_stopping": early_stopping,
            "budget": time_budget_s,
            "average": self.weight_average,
        }
        first = load_fit_state(state_dir, self, run, key, train_dl) if resume else 0
        saver = _StateSaver(state_dir, fresh=not resume)
        bar = tqdm(total=epochs, desc="fit", unit="epoch", disable=not progress, leave=True)
        bar.update(first)
        try:
            for i in range(first, epochs):
                result = loop.epoch(train_dl, valid_dl, bar)
                if result is None:  # the budget ran out before this epoch trained a batch
                    break
                rows.append({"epoch": start_epoch + i, **_row(result)})
                _show(bar, result, first + loop.expected_epochs(i + 1 - first, epochs - first))
                score = result.valid_miou if valid_dl is not None else -result.train_loss
                weights = self.network if loop.average is None else loop.average
                best.offer(score, i + 1, weights, result.confusion, loop.progress)
                stop = rule.update(score, loop.progress) or loop.out_of_time
                saver.after_epoch(self, run, key, train_dl, last=stop or i + 1 == epochs)
                if stop:
                    break
        finally:
            _close(bar, loop.out_of_time)
        if state_dir is not None:
            clear_fit_state(state_dir)
        self.best_confusion, self.best_epochs = best.restore(self.network, len(rows), loop.average)
        history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        history.attrs["stopped_by"] = _stopped_by(loop.out_of_time, len(rows), epochs)
        history.attrs["kept_epoch"] = self.best_epochs
        return history

    # ---------------------------------------------------------------- lr_find
    def lr_find(
        self,
        train_dl: Any,
        *,
        start_lr: float = 1e-7,
        end_lr: float = 1.0,
        num_iter: int = 100,
        smoothing: float = 0.05,
        diverge: float = 4.0,
        progress: bool = True,
        cap: float | None = None,
        time_limit_s: float | None = None,
    ) -> LRFindResult:
        """Sweep the learning rate exponentially and suggest one; the weights are restored.

        The loss is smoothed with an exponential moving average (bias-corrected); the sweep
        stops when the smoothed loss exceeds ``diverge`` times its minimum, or after
        ``time_limit_s`` seconds. The suggestion is read conservatively by
        :func:`suggest_lr` (at most ``cap``).
        """
        if not 0 < start_lr < end_lr or num_iter < 5:
            raise InvalidParameterError("lr_find needs 0 < start_lr < end_lr and num_iter >= 5.")
        saved = state_copy(self.network)
        optimizer = self._optimizer(start_lr)
        gamma = (end_lr / start_lr) ** (1.0 / (num_iter - 1))
        lrs, losses, smoother = [], [], LossSmoother(smoothing, diverge)
        batches = _cycle(train_dl)
        self.train_mode()
        t0 = time.perf_counter()
        try:
            for i in tqdm(range(num_iter), desc="lr_find", disable=not progress, leave=False):
                if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
                    break
                lr = start_lr * gamma**i
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                loss = self.train_step(next(batches), optimizer)
                if not math.isfinite(loss):
                    break
                lrs.append(lr)
                losses.append(smoother.add(loss))
                if smoother.diverged:
                    break
        finally:
            self.network.load_state_dict(saved)
        return suggest_lr(lrs, losses, cap=cap)


class _Loop:
    """One fit run's state: optimiser, schedule, clock (keeps :meth:`Trainer.fit` short)."""

    def __init__(
        self, trainer: Trainer, total_steps: int, lr: float, budget: float | None, warmup: float
    ) -> None:
        self.t, self.budget = trainer, budget
        self.total = max(total_steps, 10)  # OneCycleLR needs a few steps per phase
        self.opt = trainer._optimizer(lr)
        peaks = [lr * g["lr_scale"] for g in self.opt.param_groups]
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=peaks, total_steps=self.total, pct_start=warmup
        )
        self.start = self.t.clock()
        self.valid_seconds = 0.0
        self.first_end: float | None = None  # the clock when the first epoch ended
        self.out_of_time = False
        decay = trainer.weight_average
        self.average = WeightAverage(trainer.network, decay) if decay is not None else None

    @property
    def progress(self) -> float:
        """Share of the schedule done (0-1); with a budget it follows the clock."""
        return min(self.schedule.last_epoch / self.total, 1.0)

    def _tick(self) -> None:
        """Advance the schedule by one step, or to the elapsed share of the time budget."""
        target = self.schedule.last_epoch + 1
        if self.budget:
            share = (self.t.clock() - self.start) / self.budget
            target = max(target, math.ceil(share * self.total))
        target = min(target, self.total)
        while self.schedule.last_epoch < target:
            self.schedule.step()

    def expected_epochs(self, done: int, planned: int) -> int:
        """Epochs this run will train: ``planned``, or fewer where its time budget ends first.

        The progress bar's total. Projected once :data:`PROJECT_AFTER_EPOCHS` epochs are done,
        from the pace of those after the first (which carries the start-up: data loader
        workers, a GPU's kernel selection), so that the total does not jump from epoch to epoch.
        """
        if not self.budget or done < PROJECT_AFTER_EPOCHS or self.first_end is None:
            return planned
        now = self.t.clock()
        pace = (now - self.first_end) / (done - 1)
        left = max(self.budget - (now - self.start), 0.0)
        return min(planned, done + math.ceil(left / max(pace, 1e-9)))

    def _time_left(self) -> bool:
        if not self.budget:
            return True
        return self.t.clock() - self.start + self.valid_seconds < self.budget

    def epoch(self, train_dl: Any, valid_dl: Any | None, bar: Any) -> EpochResult | None:
        """Train one pass (or until the budget ends) and validate; None if nothing trained."""
        t0 = self.t.clock()
        self.t.train_mode()
        lr = self.opt.param_groups[0]["lr"]
        total, count, steps = 0.0, 0, 0
        for batch in train_dl:
            if not self._time_left():
                self.out_of_time = True
                break
            steps += 1
            loss = self.t.train_step(batch, self.opt)
            if self.average is not None:
                self.average.update(self.t.network)
            if math.isfinite(loss):
                total, count = total + loss, count + 1
            lr = self.opt.param_groups[0]["lr"]
            if self.schedule.last_epoch < self.total:
                self._tick()
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
        if steps == 0 and self.out_of_time:
            return None
        train_loss = total / count if count else float("nan")
        v0 = self.t.clock()
        if valid_dl is not None:
            valid_loss, cm = self._validate(valid_dl)
            miou, accuracy = mean_iou(cm), pixel_accuracy(cm)
        else:
            valid_loss, cm, miou, accuracy = float("nan"), None, float("nan"), float("nan")
        self.valid_seconds = self.t.clock() - v0
        if self.budget and self.t.clock() - self.start >= self.budget:
            self.out_of_time = True
        if self.first_end is None:
            self.first_end = self.t.clock()
        return EpochResult(train_loss, valid_loss, miou, accuracy, lr, self.t.clock() - t0, cm)

    def _validate(self, valid_dl: Any) -> tuple[float, np.ndarray]:
        """Validation loss and confusion matrix of the weights fit keeps (the average)."""
        if self.average is None:
            return self.t.evaluate(valid_dl)
        network = self.t.network
        live = state_copy(network)
        network.load_state_dict(self.average.state_dict())
        try:
            return self.t.evaluate(valid_dl)
        finally:
            network.load_state_dict(live)


class _StateSaver:
    """Saves a fit run's state after an epoch, at most every :data:`STATE_EVERY_S` seconds.

    A new run (``fresh``) first removes the state of an older one, so that a later resume
    cannot continue that one. A folder that cannot be written (read-only chips) only costs
    the ability to resume: a warning, then no more saving.
    """

    def __init__(self, folder: Path | None, *, fresh: bool) -> None:
        self.folder, self.last = folder, time.perf_counter()
        if folder is not None and fresh:
            clear_fit_state(folder)

    def after_epoch(
        self,
        trainer: Trainer,
        run: dict[str, Any],
        key: dict[str, Any],
        train_dl: Any,
        *,
        last: bool,
    ) -> None:
        """Save now unless saved less than STATE_EVERY_S ago (never after the last epoch)."""
        if self.folder is None or last or time.perf_counter() - self.last < STATE_EVERY_S:
            return
        try:
            save_fit_state(self.folder, trainer, run, key, train_dl)
        except OSError as exc:
            warnings.warn(
                f"{self.folder}: cannot save the training state ({exc}); this run will not be "
                "resumable. Train from a writable chip folder to be able to resume.",
                UserWarning,
                stacklevel=4,
            )
            self.folder = None
        self.last = time.perf_counter()


def _check_fit(epochs: int, lr: float, warmup: float, checkpoint: Any, batches: int) -> None:
    """Refuse settings :meth:`Trainer.fit` cannot train with, saying what is allowed."""
    if epochs < 1 or lr <= 0 or not math.isfinite(lr) or not 0 < warmup < 1:
        raise InvalidParameterError(
            f"fit needs epochs >= 1, lr > 0 and 0 < warmup < 1; got {epochs}, {lr}, {warmup}."
        )
    if batches == 0:
        raise InvalidParameterError("the training loader is empty; prepare more chips.")
    if checkpoint not in CHECKPOINTS:
        raise InvalidParameterError(
            f"checkpoint={checkpoint!r}: expected True (the best epoch), 'annealed' (the "
            "best epoch at a low learning rate) or False (the last weights)."
        )


class _Best:
    """The best epoch's weights and confusion matrix (keeps :meth:`Trainer.fit` short).

    ``keep_from``: share of the schedule before which an epoch is kept only until the first
    epoch at or after it (whatever its score) replaces it.
    """

    def __init__(self, checkpoint: bool, keep_from: float = 0.0) -> None:
        self.checkpoint = checkpoint
        self.keep_from = keep_from
        self.late = keep_from <= 0.0
        self.score, self.epoch = -math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None
        self.confusion: np.ndarray | None = None

    def offer(
        self,
        score: float,
        epoch: int,
        weights: nn.Module | WeightAverage,
        cm: np.ndarray | None,
        progress: float = 1.0,
    ) -> None:
        """Keep this epoch when it scores best (every epoch without checkpointing).

        ``weights`` is what was validated: the network, or the average of its weights;
        ``progress`` the share of the schedule done after this epoch.
        """
        if not self.late and progress >= self.keep_from:
            self.late, self.score = True, -math.inf  # the earlier epochs give way
        if not self.checkpoint:
            self.epoch, self.confusion = epoch, cm
        elif math.isfinite(score) and score > self.score:
            self.score, self.epoch, self.confusion = score, epoch, cm
            self.state = state_copy(weights)

    def restore(
        self, network: nn.Module, n_epochs: int, average: WeightAverage | None = None
    ) -> tuple[np.ndarray | None, int]:
        """Load the kept weights; returns the kept confusion matrix and epoch count.

        Without a kept epoch the network keeps its last weights, or takes ``average``.
        """
        if self.checkpoint and self.state is not None:
            network.load_state_dict(self.state)
            return self.confusion, self.epoch
        if average is not None:
            network.load_state_dict(average.state_dict())
        return self.confusion, n_epochs


def _show(bar: Any, result: EpochResult, total: int) -> None:
    """One epoch on the progress bar; ``total``: the epochs expected (a budget may end first)."""
    bar.total = total
    bar.update(1)
    bar.set_postfix(
        train=f"{result.train_loss:.4f}",
        valid=f"{result.valid_loss:.4f}",
        mIoU=f"{result.valid_miou:.4f}",
    )


def _close(bar: Any, out_of_time: bool) -> None:
    """Close the bar; at a time budget's end its total becomes the epochs trained."""
    if out_of_time:
        bar.total = bar.n
    bar.close()


def _stopped_by(out_of_time: bool, n_epochs: int, planned: int) -> str:
    """What ended a run: its time budget, early stopping, or its planned epochs."""
    if out_of_time:
        return "time budget"
    return "early stopping" if n_epochs < planned else "epochs"


def _row(r: EpochResult) -> dict[str, float]:
    return {
        "train_loss": r.train_loss,
        "valid_loss": r.valid_loss,
        "valid_miou": r.valid_miou,
        "accuracy": r.accuracy,
        "lr": r.lr,
        "seconds": r.seconds,
    }


def state_copy(network: nn.Module | WeightAverage) -> dict[str, torch.Tensor]:
    """A detached copy of the state dict (kept on the network's device)."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    """Iterate over ``loader`` again and again (re-shuffling each pass)."""
    empty = True
    while True:
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise InvalidParameterError("the training loader is empty; prepare more chips.")
