"""The training loop, kept apart from the network: fit, validation, LR finder, freezing.

:class:`Trainer` trains any segmentation network that maps ``(N, C, H, W)`` images to
``(N, K, H, W)`` logits, from loaders that yield ``(image, mask)`` pairs (or dicts with
``"image"`` and ``"mask"``). It uses AdamW with a one-cycle schedule, gradient clipping,
early stopping on the validation loss, keeps the best weights by validation mIoU in memory
and restores them at the end. On CUDA it trains in mixed precision (bfloat16 where supported,
else float16 with a gradient scaler) and channels-last; on the CPU in float32 channels-last.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from geounet.core.errors import InvalidParameterError
from geounet.evaluation.metrics import ConfusionAccumulator, mean_iou, pixel_accuracy

__all__ = [
    "HISTORY_COLUMNS",
    "EpochResult",
    "LRFindResult",
    "Trainer",
    "configure_cpu_threads",
    "default_device",
    "encoder_parameters",
    "reseed_loader",
    "seed_everything",
    "set_encoder_trainable",
    "unpack_batch",
]

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "valid_loss",
    "valid_miou",
    "accuracy",
    "lr",
    "seconds",
]
#: Bounds for a suggested learning rate (AdamW rarely trains well outside them).
LR_BOUNDS = (1e-5, 1e-2)
_THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GEOUNET_NUM_THREADS")


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
    if any(os.environ.get(k) for k in _THREADS_ENV):
        if os.environ.get("GEOUNET_NUM_THREADS"):
            torch.set_num_threads(max(1, int(os.environ["GEOUNET_NUM_THREADS"])))
        return torch.get_num_threads()
    cores = _available_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def _available_cores() -> int:
    """Cores usable by this process: affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


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


def encoder_parameters(network: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of the encoder: ``network.encoder`` (smp) or the contracting path (classic)."""
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        encoder = getattr(network, "down", None)
    if encoder is None:
        raise InvalidParameterError(f"{type(network).__name__} has no encoder to (un)freeze.")
    return encoder.parameters()


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
    ) -> None:
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

    # ------------------------------------------------------------------ steps
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
        params = [p for p in self.network.parameters() if p.requires_grad]
        if not params:
            raise InvalidParameterError("every parameter is frozen; call unfreeze() first.")
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)

    def train_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> float:
        """One optimisation step; returns the batch loss."""
        x, y = self._to_device(batch)
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self._forward(x).float(), y)
        if not torch.isfinite(loss):
            return float("nan")
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], self.grad_clip
            )
        self.scaler.step(optimizer)
        self.scaler.update()
        return float(loss.detach())

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
        early_stopping: int | None = 5,
        checkpoint: bool = True,
        time_budget_s: float | None = None,
        progress: bool = True,
        start_epoch: int = 1,
    ) -> pd.DataFrame:
        """Train for up to ``epochs`` epochs; returns this run's history.

        Args:
            train_dl: Training loader (shuffled).
            valid_dl: Validation loader, or None (then the training loss drives early
                stopping and the last weights are kept).
            epochs: Maximum number of epochs.
            lr: Peak learning rate of the one-cycle schedule.
            early_stopping: Stop when the validation loss has not improved for this many
                epochs (None or 0: never).
            checkpoint: Restore, at the end, the weights of the epoch with the best
                validation mIoU.
            time_budget_s: Stop after this many seconds of wall-clock time (the current
                epoch is cut short and validated); the one-cycle schedule then follows the
                elapsed share of the budget, so the learning rate still anneals to its end.
            progress: Show a progress bar with live loss and mIoU.
            start_epoch: Number of the first epoch in the history.

        Returns:
            A DataFrame with columns :data:`HISTORY_COLUMNS`, one row per epoch.
        """
        if epochs < 1 or lr <= 0 or not math.isfinite(lr):
            raise InvalidParameterError(f"fit needs epochs >= 1 and lr > 0; got {epochs}, {lr}.")
        n_batches = len(train_dl)
        if n_batches == 0:
            raise InvalidParameterError("the training loader is empty; prepare more chips.")
        optimizer = self._optimizer(lr)
        total = max(epochs * n_batches, 10)  # OneCycleLR needs a few steps per phase
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=0.25
        )
        loop = _Loop(self, optimizer, schedule, total, time_budget_s)
        rows: list[dict[str, Any]] = []
        best_state, best_miou, best_loss, stale = None, -math.inf, math.inf, 0
        self.best_confusion = None
        bar = tqdm(total=epochs, desc="fit", unit="epoch", disable=not progress, leave=True)
        try:
            for i in range(epochs):
                result = loop.epoch(train_dl, valid_dl, bar)
                if result is None:  # the budget ran out before this epoch trained a batch
                    break
                rows.append({"epoch": start_epoch + i, **_row(result)})
                bar.update(1)
                bar.set_postfix(
                    train=f"{result.train_loss:.4f}",
                    valid=f"{result.valid_loss:.4f}",
                    mIoU=f"{result.valid_miou:.4f}",
                )
                miou = result.valid_miou if valid_dl is not None else -result.train_loss
                if not checkpoint:
                    self.best_confusion = result.confusion
                elif math.isfinite(miou) and miou > best_miou:
                    best_miou, best_state = miou, _state_copy(self.network)
                    self.best_confusion = result.confusion
                watched = result.valid_loss if valid_dl is not None else result.train_loss
                if watched < best_loss - 1e-6:
                    best_loss, stale = watched, 0
                else:
                    stale += 1
                if (early_stopping and stale >= early_stopping) or loop.out_of_time:
                    break
        finally:
            bar.close()
        if checkpoint and best_state is not None:
            self.network.load_state_dict(best_state)
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

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
    ) -> LRFindResult:
        """Sweep the learning rate exponentially and suggest one; the weights are restored.

        The loss is smoothed with an exponential moving average (bias-corrected); the sweep
        stops when the smoothed loss exceeds ``diverge`` times its minimum. The suggestion is
        the learning rate of the steepest descent of the smoothed loss (against log LR) when
        it lies within two decades below the minimum's LR, else the minimum's LR / 10; it is
        kept within :data:`LR_BOUNDS`.
        """
        if not 0 < start_lr < end_lr or num_iter < 5:
            raise InvalidParameterError("lr_find needs 0 < start_lr < end_lr and num_iter >= 5.")
        saved = _state_copy(self.network)
        optimizer = self._optimizer(start_lr)
        gamma = (end_lr / start_lr) ** (1.0 / (num_iter - 1))
        lrs, losses, avg, best = [], [], 0.0, math.inf
        batches = _cycle(train_dl)
        self.network.train()
        try:
            for i in tqdm(range(num_iter), desc="lr_find", disable=not progress, leave=False):
                lr = start_lr * gamma**i
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss = self.train_step(next(batches), optimizer)
                if not math.isfinite(loss):
                    break
                avg = smoothing * loss + (1 - smoothing) * avg
                smoothed = avg / (1 - (1 - smoothing) ** (i + 1))
                lrs.append(lr)
                losses.append(smoothed)
                best = min(best, smoothed)
                if i > 5 and smoothed > diverge * best:
                    break
        finally:
            self.network.load_state_dict(saved)
        return _suggest(lrs, losses)


class _Loop:
    """One fit run's state: optimiser, schedule, clock (keeps :meth:`Trainer.fit` short)."""

    def __init__(
        self,
        trainer: Trainer,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        total_steps: int,
        budget: float | None,
    ) -> None:
        self.t, self.opt, self.schedule = trainer, optimizer, schedule
        self.total, self.budget = total_steps, budget
        self.start = time.perf_counter()
        self.valid_seconds = 0.0
        self.out_of_time = False

    def _tick(self) -> None:
        """Advance the schedule by one step, or to the elapsed share of the time budget."""
        target = self.schedule.last_epoch + 1
        if self.budget:
            share = (time.perf_counter() - self.start) / self.budget
            target = max(target, math.ceil(share * self.total))
        target = min(target, self.total)
        while self.schedule.last_epoch < target:
            self.schedule.step()

    def _time_left(self) -> bool:
        if not self.budget:
            return True
        return time.perf_counter() - self.start + self.valid_seconds < self.budget

    def epoch(self, train_dl: Any, valid_dl: Any | None, bar: Any) -> EpochResult | None:
        """Train one pass (or until the budget ends) and validate; None if nothing trained."""
        t0 = time.perf_counter()
        self.t.network.train()
        lr = self.opt.param_groups[0]["lr"]
        total, count, steps = 0.0, 0, 0
        for batch in train_dl:
            if not self._time_left():
                self.out_of_time = True
                break
            steps += 1
            loss = self.t.train_step(batch, self.opt)
            if math.isfinite(loss):
                total, count = total + loss, count + 1
            lr = self.opt.param_groups[0]["lr"]
            if self.schedule.last_epoch < self.total:
                self._tick()
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}", refresh=False)
        if steps == 0 and self.out_of_time:
            return None
        train_loss = total / count if count else float("nan")
        v0 = time.perf_counter()
        if valid_dl is not None:
            valid_loss, cm = self.t.evaluate(valid_dl)
            miou, accuracy = mean_iou(cm), pixel_accuracy(cm)
        else:
            valid_loss, cm, miou, accuracy = float("nan"), None, float("nan"), float("nan")
        self.valid_seconds = time.perf_counter() - v0
        if self.budget and time.perf_counter() - self.start >= self.budget:
            self.out_of_time = True
        return EpochResult(train_loss, valid_loss, miou, accuracy, lr, time.perf_counter() - t0, cm)


def _row(r: EpochResult) -> dict[str, float]:
    return {
        "train_loss": r.train_loss,
        "valid_loss": r.valid_loss,
        "valid_miou": r.valid_miou,
        "accuracy": r.accuracy,
        "lr": r.lr,
        "seconds": r.seconds,
    }


def _state_copy(network: nn.Module) -> dict[str, torch.Tensor]:
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


def _suggest(lrs: list[float], losses: list[float]) -> LRFindResult:
    """Pick a learning rate from a sweep (see :meth:`Trainer.lr_find`)."""
    lo, hi = LR_BOUNDS
    if len(lrs) < 5:
        fallback = 1e-3
        return LRFindResult(lrs, losses, fallback, fallback, fallback, {"fallback": True})
    log_lr = np.log10(np.asarray(lrs))
    loss = np.asarray(losses)
    i_min = int(np.argmin(loss))
    grads = np.gradient(loss, log_lr)
    skip = max(1, len(lrs) // 10)  # the first points of the EMA are not trustworthy
    window = grads[skip : max(i_min, skip + 1)]
    i_steep = skip + int(np.argmin(window)) if window.size else i_min
    steepest, minimum = lrs[i_steep], lrs[i_min]
    suggestion = steepest if minimum / 100 <= steepest <= minimum else minimum / 10
    suggestion = float(min(max(suggestion, lo), hi))
    return LRFindResult(lrs, losses, suggestion, float(steepest), float(minimum))
