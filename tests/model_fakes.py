"""Test helpers for the model stage: a tiny synthetic scene and a GeoData-like object.

``FakeGeoData`` has the attributes :class:`geounet.app.classifier.UnetClassifier` reads from a
:class:`geounet.data.prepare.GeoData` (loaders of normalised chips, classes, bands, statistics...),
built from in-memory tensors so the model tests do not depend on chipping.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from geounet.core.classes import ClassSpec, make_classes


def synthetic_scene(
    size: int = 128, bands: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 ``(bands, size, size)`` image with bright rectangles ("buildings") and labels.

    Returns:
        ``(image, labels)``; labels are 0 (background) / 1 (building) as uint8.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint8)
    for _ in range(size * size // 300):
        h, w = rng.integers(4, 12, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        labels[r : r + h, c : c + w] = 1
    base = rng.normal(70, 12, size=(bands, size, size))
    bright = np.linspace(150, 110, bands).reshape(bands, 1, 1)
    image = np.where(labels[None] == 1, bright + rng.normal(0, 12, base.shape), base)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def chips(image: np.ndarray, labels: np.ndarray, chip: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping chips ``(N, bands, chip, chip)`` and ``(N, chip, chip)``."""
    _, h, w = image.shape
    xs, ys = [], []
    for r in range(0, h - chip + 1, chip):
        for c in range(0, w - chip + 1, chip):
            xs.append(image[:, r : r + chip, c : c + chip])
            ys.append(labels[r : r + chip, c : c + chip])
    return np.stack(xs), np.stack(ys)


@dataclass
class RawChips:
    """The reads of a ``ChipDataset``: raw chips, all valid, and their labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def read_valid(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chip ``i``: image, validity, label."""
        return self.images[i], np.ones(self.images.shape[2:], bool), self.labels[i]

    def read_label(self, i: int) -> np.ndarray:
        """Label chip ``i``."""
        return self.labels[i]


@dataclass
class FakeGeoData:
    """The parts of ``GeoData`` the classifier uses."""

    train_dl: Any
    valid_dl: Any
    train_ds: RawChips
    valid_ds: RawChips
    class_specs: list[ClassSpec]
    bands: list[int]
    band_names: list[str]
    stats: dict[str, list[float]]
    chip_size: int
    gsd_m: float | None = 0.5
    source_dtype: str = "uint8"
    class_weights: list[float] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.class_specs]

    @property
    def n_bands(self) -> int:
        """Number of bands."""
        return len(self.bands)


def make_fake_data(
    bands: int = 3,
    chip: int = 32,
    size: int = 128,
    batch_size: int = 4,
    seed: int = 0,
    image: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: dict[int, str] | None = None,
) -> FakeGeoData:
    """A FakeGeoData from a synthetic scene (or the given one): top 3/4 train, bottom valid."""
    if image is None or labels is None:
        image, labels = synthetic_scene(size, bands, seed)
    bands = image.shape[0]
    mean = image.reshape(bands, -1).mean(1)
    std = image.reshape(bands, -1).std(1) + 1e-6
    norm = (image - mean[:, None, None]) / std[:, None, None]
    split = (image.shape[1] * 3 // 4) // chip * chip
    xt, yt = chips(norm[:, :split], labels[:split], chip)
    xv, yv = chips(norm[:, split:], labels[split:], chip)

    def loader(x: np.ndarray, y: np.ndarray, shuffle: bool) -> DataLoader:
        ds = TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y).long())
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle)

    p2, p98 = np.percentile(image.reshape(bands, -1), [2, 98], axis=1)
    specs = make_classes(classes or {1: "building"})
    counts = np.bincount(labels.ravel(), minlength=len(specs))[: len(specs)].astype(float)
    freq = counts / counts.sum()
    weights = (np.median(freq) / np.maximum(freq, 1e-9)).tolist()  # median frequency
    return FakeGeoData(
        train_dl=loader(xt, yt, True),
        valid_dl=loader(xv, yv, False),
        train_ds=RawChips(*chips(image[:, :split], labels[:split], chip)),
        valid_ds=RawChips(*chips(image[:, split:], labels[split:], chip)),
        class_specs=specs,
        bands=list(range(1, bands + 1)),
        band_names=[f"band {i}" for i in range(1, bands + 1)],
        stats={
            "mean": mean.tolist(),
            "std": std.tolist(),
            "p2": p2.tolist(),
            "p98": p98.tolist(),
        },
        chip_size=chip,
        source_dtype=str(image.dtype),
        class_weights=weights,
    )


class _Exploit:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def write_crafted_pickle(path: Path, marker: Path, *, torch_format: bool = False) -> Path:
    """Write a pickle whose loading would create ``marker``."""
    payload = {"state_dict": _Exploit(marker)}
    if torch_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


def tiny_config(**kw: Any) -> Any:
    """A tiny paper U-Net config (3 bands, one class); ``kw`` overrides fields."""
    from geounet.model.files import ModelConfig

    base = dict(
        arch="unet-classic",
        backbone=None,
        in_channels=3,
        classes=make_classes({1: "building"}),
        bands=[1, 2, 3],
        band_names=["red", "green", "blue"],
        stats={"mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 1.0]},
        chip_size=32,
        gsd_m=0.3,
        source_dtype="uint8",
        unet_kwargs={"base_channels": 4},
    )
    base.update(kw)
    return ModelConfig(**base)
