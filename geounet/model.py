"""Build the network from a config; save and load model folders (geounet.json + safetensors).

A model folder holds ``model.safetensors`` (weights) and ``geounet.json`` (everything needed to
rebuild the network and to use it on a new scene: architecture, bands, classes, normalisation
statistics, chip size, ground sample distance, metrics). Nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from geounet.classes import ClassSpec, classes_from_json, classes_to_json

__all__ = ["SCHEMA_VERSION", "ModelConfig"]

SCHEMA_VERSION = 1


@dataclass
class ModelConfig:
    """Everything about a model except its weights.

    Attributes:
        arch: ``"unet"`` (segmentation-models-pytorch U-Net) or ``"unet-classic"`` (2015 paper).
        backbone: smp encoder name (``"resnet34"``, ``"timm-tf_efficientnet_lite0"``...) or None.
        in_channels: Number of input bands.
        classes: Class list in index order (index 0 = background).
        bands: 1-based source band indices the model reads, in order.
        band_names: A name per band.
        stats: Normalisation statistics ``{"mean", "std", "p2", "p98"}`` (lists per band).
        chip_size: Training chip size in pixels.
        gsd_m: Ground sample distance of the training data in metres (None if unknown).
        source_dtype: Data type of the training imagery (``"uint8"``, ``"uint16"``...).
        unet_kwargs: Extra keyword arguments given to the network constructor.
        metrics: Validation metrics at save time.
        history: Per-epoch training history records.
    """

    arch: str
    backbone: str | None
    in_channels: int
    classes: list[ClassSpec]
    bands: list[int]
    band_names: list[str]
    stats: dict[str, list[float]]
    chip_size: int
    gsd_m: float | None = None
    source_dtype: str | None = None
    unet_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        """Number of output classes (background included)."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (classes as ``{value, name, color}`` dicts)."""
        d = asdict(self)
        d["classes"] = classes_to_json(self.classes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_json` (unknown keys are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        kw["classes"] = classes_from_json(d["classes"])
        return cls(**kw)
