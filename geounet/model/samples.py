"""Training and validation chips kept with a model, for choosing and calibrating engines.

A model saved after training keeps a few of its chips, normalised as the network sees them, in
``engine_samples.safetensors`` beside the weights (:data:`SAMPLES_FILE`): ``calibration``
(training chips) and ``validation`` (validation chips), float16, spread evenly over each split.
An int8 engine is calibrated on the training chips, and ``engine="auto"`` accepts an engine
only when it agrees with PyTorch float32 on the validation chips too
(:mod:`geounet.inference.engine_choice`): so the decision does not rest on the first tiles
of whatever scene the model first classified. Chips are laid side by side into tiles of the
engine's shape (:func:`mosaic`).

Example:
    >>> import numpy as np
    >>> chips = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    >>> mosaic(chips, 4, 8).shape
    (1, 1, 4, 8)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.types import PathLike
from geounet.data.normalize import normalize_valid

__all__ = [
    "SAMPLES_FILE",
    "SAMPLE_CHIPS",
    "chip_samples",
    "model_samples",
    "mosaic",
    "read_samples",
    "write_samples",
]

#: The file of kept chips in a model folder.
SAMPLES_FILE = "engine_samples.safetensors"
#: Chips kept per split (at most; fewer when the split has fewer).
SAMPLE_CHIPS = 8


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def chip_samples(
    data: Any, stats: Mapping[str, Any], n: int = SAMPLE_CHIPS
) -> dict[str, np.ndarray]:
    """Up to ``n`` chips of each split of ``data``, normalised with ``stats``, float16.

    Args:
        data: Prepared data with ``train_ds`` and ``valid_ds``
            (:class:`~geounet.data.geodata.ChipDataset`: ``read_valid(i)`` gives the raw chip,
            its validity and its label).
        stats: The model's band statistics.
        n: Chips per split.

    Returns:
        ``{"calibration": [k, C, h, w], "validation": [m, C, h, w]}`` (a split without chips
        is left out).
    """
    out: dict[str, np.ndarray] = {}
    for key, ds in (("calibration", data.train_ds), ("validation", data.valid_ds)):
        chips = []
        for i in _spread(len(ds), n):
            image, valid, _ = ds.read_valid(i)
            chips.append(normalize_valid(image, stats, valid).astype(np.float16))
        if chips:
            out[key] = np.stack(chips)
    return out


def write_samples(folder: PathLike, samples: Mapping[str, np.ndarray]) -> Path | None:
    """Write ``samples`` to ``folder/engine_samples.safetensors`` (nothing when empty)."""
    if not samples:
        return None
    from safetensors.numpy import save_file

    path = Path(folder) / SAMPLES_FILE
    save_file({k: np.ascontiguousarray(v, np.float16) for k, v in samples.items()}, str(path))
    return path


def read_samples(folder: PathLike | None) -> dict[str, np.ndarray]:
    """The kept chips of the model folder ``folder`` as float32 (empty when there are none).

    A file that cannot be read counts as none: the chips only help choose an engine.
    """
    if folder is None or not (Path(folder) / SAMPLES_FILE).is_file():
        return {}
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(Path(folder) / SAMPLES_FILE))
    except Exception:  # a truncated or foreign file: choose without it
        return {}
    return {
        k: v.astype(np.float32)
        for k, v in arrays.items()
        if k in ("calibration", "validation") and v.ndim == 4
    }


def mosaic(chips: np.ndarray, height: int, width: int) -> np.ndarray:
    """Lay ``chips [N, C, h, w]`` side by side into tiles ``[T, C, height, width]``.

    Each tile takes the next chips in order, row by row (the first chips again when they run
    out), cropped at the tile's edges; every chip is used at least once.
    """
    n, c, h, w = chips.shape
    rows, cols = math.ceil(height / h), math.ceil(width / w)
    per_tile = rows * cols
    tiles = np.empty((math.ceil(n / per_tile), c, rows * h, cols * w), chips.dtype)
    for t in range(tiles.shape[0]):
        for k in range(per_tile):
            r, q = divmod(k, cols)
            tiles[t, :, r * h : (r + 1) * h, q * w : (q + 1) * w] = chips[(t * per_tile + k) % n]
    return np.ascontiguousarray(tiles[:, :, :height, :width])


def model_samples(model: Any) -> dict[str, np.ndarray]:
    """The chips of ``model``: from the data it was trained on, else kept in its folder.

    Args:
        model: Object with ``config`` and optionally ``data`` (the prepared data it was
            trained on) or ``model_dir`` (the folder it was loaded from).

    Returns:
        As :func:`read_samples` (float32); empty when the model has neither, or their band
        count is not the model's. Chip files removed since training: a warning, then the
        folder's chips.
    """
    samples: dict[str, np.ndarray] = {}
    data = getattr(model, "data", None)
    if data is not None and hasattr(data, "train_ds"):
        try:
            samples = chip_samples(data, model.config.stats)
        except OSError as exc:
            warnings.warn(f"no training chips for choosing engines: {exc}", stacklevel=2)
    samples = samples or read_samples(getattr(model, "model_dir", None))
    bands = model.config.in_channels
    return {k: v.astype(np.float32) for k, v in samples.items() if v.shape[1] == bands}
