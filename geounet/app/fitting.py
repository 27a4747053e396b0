"""What ``UnetClassifier`` needs around the network and the fit loop.

The training labels' object sizes and split share (recorded in the model for ``vectorize``),
the start of a fine-tuning run, class weights, the loaders of a fit (validation, or every chip
for ``refit_on_all``), the saved state of an interrupted fit and the JSON form of its metrics.
Kept apart from :mod:`geounet.app.classifier` so that the class reads as the user's surface.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from geounet.core.errors import BandMismatchError, InvalidParameterError
from geounet.core.types import PathLike
from geounet.data.augment import AugmentOptions
from geounet.model.files import ModelConfig, load_model, reset_head
from geounet.model.resume import read_fit_key
from geounet.vectorizing.sizes import object_sizes

__all__ = [
    "FIT_STATE_DIR",
    "SIZE_CHIPS",
    "SPLIT_CHIPS",
    "SPLIT_OBJECTS",
    "all_chips_loader",
    "describe_weights",
    "display_figure",
    "fine_tune_start",
    "fit_state_dir",
    "json_records",
    "json_table",
    "label_object_sizes",
    "no_refit_with_ddp",
    "resolve_class_weights",
    "resume_plan",
    "valid_loader",
]

#: Label chips read at most to measure the training objects' sizes (spread evenly).
SIZE_CHIPS = 2000
#: Of those, label chips whose buildings are split to measure the labels' split share (in a
#: fixed shuffled order).
SPLIT_CHIPS = 500
#: Buildings measured for the split share: chips are read until this many are (seconds).
SPLIT_OBJECTS = 1000
#: The class whose split share is measured: ``vectorize``'s default building class.
BUILDING = "building"


def label_object_sizes(data: Any) -> dict[str, dict[str, float]]:
    """Area distribution of the objects of each class in ``data``'s label chips.

    Reads the label chips of both splits (at most :data:`SIZE_CHIPS`, spread evenly); see
    :func:`geounet.vectorizing.sizes.object_sizes`. Imagery without a CRS is measured in
    square pixels (the unit ``vectorize`` works in there); empty when the imagery has a CRS
    but no pixel size in metres. The ``building`` class also gets ``split_objects`` and
    ``split_share`` (:func:`geounet.vectorizing.instances.label_split_share`, on at most
    :data:`SPLIT_CHIPS` of the chips and about :data:`SPLIT_OBJECTS` buildings): whether
    ``vectorize`` splits touching buildings by default.
    """
    gsd = getattr(data, "gsd_m", None)
    if not gsd and getattr(data, "crs", None) is None:
        gsd = 1.0  # no CRS: pixel units
    sets = [getattr(data, n, None) for n in ("train_ds", "valid_ds")]
    chips = [(ds, i) for ds in sets if ds is not None for i in range(len(ds))]
    if not gsd or not chips:
        return {}
    pick = _spread(len(chips), SIZE_CHIPS)
    names = {i: n for i, n in enumerate(data.classes) if i > 0}
    labels = (ds.read_label(i) for ds, i in (chips[k] for k in pick))
    sizes = object_sizes(labels, names, pixel_area_m2=float(gsd) ** 2)
    building = [i for i, n in names.items() if n == BUILDING]
    if building and BUILDING in sizes:
        from geounet.vectorizing.instances import label_split_share  # scikit-image: only here

        few = np.random.default_rng(0).permutation(pick[_spread(len(pick), SPLIT_CHIPS)])
        labels = (ds.read_label(i) for ds, i in (chips[k] for k in few))
        share = label_split_share(labels, building[0], (gsd, gsd), most=SPLIT_OBJECTS)
        sizes[BUILDING].update(share)
    return sizes


def _spread(n: int, most: int) -> np.ndarray:
    """At most ``most`` indices of ``range(n)``, spread evenly (the first and last included)."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).astype(int))


def fine_tune_start(path: PathLike, config: ModelConfig) -> tuple[nn.Module, ModelConfig]:
    """Load a saved model to fine-tune on data described by ``config``."""
    network, saved = load_model(path)
    if saved.in_channels != config.in_channels:
        raise BandMismatchError(
            f"{path}: the model reads {saved.in_channels} band(s) but the data has "
            f"{config.in_channels}; fine-tune on data with the same bands."
        )
    if saved.class_names != config.class_names:
        warnings.warn(
            f"{path}: the model's classes {saved.class_names} differ from the data's "
            f"{config.class_names}; the classification head is re-initialised.",
            stacklevel=3,
        )
        reset_head(network, config.n_classes)
    config.arch, config.backbone = saved.arch, saved.backbone
    config.unet_kwargs = dict(saved.unet_kwargs)
    config.encoder_weights = f"fine-tuned from {Path(path).name}"
    return network.train(), config


def describe_weights(weights: str | PathLike | None) -> str | None:
    """How the model's config names its starting weights: ``"imagenet"``, None or a file name."""
    if weights is None or weights == "imagenet":
        return weights  # type: ignore[return-value]
    return Path(weights).name


def resolve_class_weights(
    class_weights: str | Sequence[float] | None, data: Any, n_classes: int
) -> list[float] | None:
    """The loss's class weights: None, ``"auto"`` (``data.class_weights``) or one per class.

    Raises:
        InvalidParameterError: Another string, or not ``n_classes`` finite non-negative numbers.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights != "auto":
            raise InvalidParameterError(
                f"class_weights={class_weights!r}: use 'auto', a list of {n_classes} numbers "
                "or None."
            )
        class_weights = data.class_weights
    weights = [float(w) for w in np.asarray(class_weights, dtype=float).ravel()]
    if len(weights) != n_classes or any(not np.isfinite(w) or w < 0 for w in weights):
        raise InvalidParameterError(
            f"class_weights needs {n_classes} finite non-negative numbers, got {weights}."
        )
    return weights


def all_chips_loader(data: Any) -> DataLoader:
    """A shuffled loader over the training and the validation chips (both augmented)."""
    train = data.train_dl
    valid = copy.copy(data.valid_dl.dataset)
    if hasattr(valid, "augment"):  # the training chips' options (the defaults if they had none)
        valid.augment = getattr(train.dataset, "augment", None) or AugmentOptions()
    both = ConcatDataset([train.dataset, valid])
    size = train.batch_size or 1
    return DataLoader(
        both,
        batch_size=size,
        shuffle=True,
        generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63),
        drop_last=len(both) > size and len(both) % size == 1,  # no batch of 1 for BatchNorm
    )


#: Folder, in the chip folder, holding the state of the last unfinished fit run.
FIT_STATE_DIR = ".geounet_fit_state"


def fit_state_dir(data: Any) -> Path | None:
    """Where a fit run on ``data`` saves its state: in its chip folder (None without one)."""
    chip_dir = getattr(data, "chip_dir", None)
    return Path(chip_dir) / FIT_STATE_DIR if chip_dir is not None else None


def resume_plan(
    state: Path | None,
    epochs: int | None,
    lr: float | None,
    budget: float | None,
    refit_on_all: bool,
) -> tuple[int, float, float | None]:
    """Epochs, learning rate and budget of a resumed run: as given, else as saved.

    Raises:
        InvalidParameterError: Nothing saved to resume, or ``refit_on_all``.
    """
    key = read_fit_key(state) if state is not None else None
    if key is None or refit_on_all:
        why = (
            "resume=True cannot be combined with refit_on_all=True"
            if refit_on_all
            else f"{state or 'this data'}: no interrupted fit run was saved here"
        )
        raise InvalidParameterError(f"{why}; call fit() without resume=True.")
    epochs = key["epochs"] if epochs is None else epochs
    lr = key["lr"] if lr is None else lr
    return epochs, lr, key["budget"] if budget is None else budget


def no_refit_with_ddp(what: str) -> None:
    """Refuse a fit option that distributed training does not support."""
    raise InvalidParameterError(
        f"fit(ddp=True) cannot be combined with {what} (a distributed run saves no run "
        "state, trains once and does not calibrate); call fit(ddp=True) without it."
    )


def valid_loader(data: Any) -> Any | None:
    """The validation loader, or None when there is none or it is empty."""
    loader = getattr(data, "valid_dl", None) if data is not None else None
    try:
        return loader if loader is not None and len(loader) > 0 else None
    except TypeError:
        return loader


def json_table(df: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """``{row: {column: value}}`` of a metrics table, missing values as None (for JSON)."""
    return {
        str(idx): {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
        for idx, row in df.iterrows()
    }


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A training history as JSON records: epochs as integers, missing values as None."""
    return [
        {k: (None if pd.isna(v) else (int(v) if k == "epoch" else float(v))) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def display_figure(fig: Any) -> None:
    """Show a figure in a Jupyter notebook; do nothing elsewhere."""
    ipython = sys.modules.get("IPython")
    if ipython is None or getattr(ipython, "get_ipython", lambda: None)() is None:
        return
    from IPython.display import display

    display(fig)
