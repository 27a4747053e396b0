"""A saved model folder opened for inference: its description now, PyTorch only when needed.

:meth:`SavedModel.open` reads and checks ``geounet.json`` and the safetensors header of the
weights; the PyTorch network is built on first use of :attr:`SavedModel.network`. A
classification by an engine cached for these weights (ONNX Runtime, OpenVINO:
:mod:`geounet.inference.engine_choice`) uses none of it, so it never imports torch: 480 MiB
less resident memory with a CUDA build of torch, and a second or two less start-up. The
device type is known without torch when no GPU can be present (:func:`gpu_possible`). This is
what ``geounet classify`` runs; :meth:`geounet.app.classifier.UnetClassifier.from_model` is the
training-capable model of the Python API.

Example:
    Not run as a doctest: it needs a model folder.

    >>> model = SavedModel.open("models/buildings")   # doctest: +SKIP
    >>> model.config.class_names, model.device_type   # doctest: +SKIP
    (['background', 'building'], 'cpu')
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geounet.core.types import PathLike
from geounet.model.files import ModelConfig, load_network, read_config, weights_file

if TYPE_CHECKING:
    import torch

__all__ = ["SavedModel", "gpu_possible", "load_for_inference"]


def gpu_possible() -> bool:
    """False only when no GPU can be used by torch here, found without importing torch.

    On Linux: ``CUDA_VISIBLE_DEVICES`` hides every device, or neither an NVIDIA driver
    (``/proc/driver/nvidia``) nor a ROCm one (``/dev/kfd``) is loaded. Elsewhere True (torch
    is then asked).
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists()
    return True


def load_for_inference(config: ModelConfig, weights: Path, device: Any) -> Any:
    """The network of ``weights`` on ``device``, in evaluation mode and channels-last."""
    import torch

    network = load_network(config, weights).to(device)  # load_network gives it in eval mode
    return network.to(memory_format=torch.channels_last)


class SavedModel:
    """A model folder for inference (the object :mod:`geounet.inference` takes).

    Attributes:
        config: The model's :class:`~geounet.model.files.ModelConfig`.
        model_dir: The folder (the engine cache goes to ``model_dir/.engines``).
    """

    def __init__(
        self, config: ModelConfig, weights: Path, device: str | torch.device | None = None
    ) -> None:
        self.config = config
        self.model_dir = weights.parent
        self._weights: Path | None = weights
        self._device_request = device
        self._device: torch.device | None = None
        self._network: Any = None

    @classmethod
    def open(cls, path: PathLike, device: str | torch.device | None = None) -> SavedModel:
        """Open the model folder ``path`` (checked now; the weights are read on first use).

        Args:
            path: The model folder (``geounet.json`` + ``model.safetensors``).
            device: ``"cpu"``, ``"cuda"``...; default CUDA when available, else the CPU.

        Raises:
            ModelFileError: Missing, invalid or pickle-based model files.
        """
        return cls(read_config(path), weights_file(path), device)

    @property
    def device_type(self) -> str:
        """``"cpu"``, ``"cuda"``...: without importing torch when no GPU can be present."""
        if self._device is None and self._device_request is None and not gpu_possible():
            return "cpu"
        if self._device is None and isinstance(self._device_request, str):
            return self._device_request.split(":")[0]
        return self.device.type

    @property
    def device(self) -> torch.device:
        """The torch device (imports torch)."""
        if self._device is None:
            from geounet.model.training import configure_cpu_threads, default_device

            self._device = default_device(self._device_request)
            if self._device.type == "cpu":
                configure_cpu_threads()
        return self._device

    @property
    def network(self) -> Any:
        """The PyTorch network, read on first use (evaluation mode, channels-last)."""
        if self._network is None:
            assert self._weights is not None
            self._network = load_for_inference(self.config, self._weights, self.device)
            self._weights = None
        return self._network

    @property
    def unloaded_weights(self) -> Path | None:
        """The weights file while the network is not built yet, else None."""
        return self._weights

    def __repr__(self) -> str:
        c = self.config
        return f"SavedModel({str(self.model_dir)!r}, classes={c.class_names})"
