"""Inference engines: what turns a batch of normalised tiles into class probabilities.

An :class:`Engine` takes ``float32 [B, C, h, w]`` normalised tiles (nodata already at the
training mean, as geounet's tile pipeline feeds them) and returns ``float32 [B, K, h, w]``
softmax probabilities. The engines:

========================  ====================================================================
name                      what runs
========================  ====================================================================
``torch-fp32``            PyTorch eager, channels-last, float32 (on CUDA: ``torch-cuda-fp16``,
                          float16 autocast)
``torch-bf16``            PyTorch eager, channels-last, bfloat16 autocast (CPUs with BF16)
``onnx-fp32``             ONNX Runtime (CPU) on an ONNX export of the bare network
``onnx-int8``             ONNX Runtime on a statically quantized (QDQ, int8) copy of that export
``openvino-fp32``         OpenVINO (CPU) on the same ONNX export, float32
``openvino-bf16``         OpenVINO with a bfloat16 inference precision (CPUs with BF16)
``openvino-int8``         OpenVINO on the int8 (QDQ) copy: its int8 kernels (VNNI, AMX)
========================  ====================================================================

The ONNX export is of the network alone; normalisation, mirror padding, nodata and blending
stay in geounet's pipeline, so every engine sees the same input. Exports and the choice among
engines live in :mod:`geounet.inference.engine_choice`.

Example:
    >>> import numpy as np, torch
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(network=torch.nn.Conv2d(3, 2, 1), device="cpu")
    >>> engine = TorchEngine(model)
    >>> engine.name, engine.probabilities(np.zeros((1, 3, 8, 8), np.float32)).shape
    ('torch-fp32', (1, 2, 8, 8))
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from geounet.core.threads import engine_threads
from geounet.core.types import ENGINE_CHOICES, EngineChoice, import_optional

__all__ = [
    "CPU_TILES_PER_CALL",
    "ENGINE_CHOICES",
    "ENGINE_FAMILIES",
    "ENGINE_NAMES",
    "Engine",
    "EngineChoice",
    "OnnxEngine",
    "OpenVinoEngine",
    "TorchEngine",
    "cpu_has_bf16",
    "device_type",
    "openvino_has_bf16",
    "run_engine",
]

#: The families a user names, and the variant each means when named alone.
ENGINE_FAMILIES: dict[str, str] = {
    "torch": "torch-fp32",
    "onnx": "onnx-fp32",
    "openvino": "openvino-fp32",
}
#: Every engine variant.
ENGINE_NAMES: tuple[str, ...] = tuple(c for c in ENGINE_CHOICES if "-" in c)


class Engine(Protocol):
    """Normalised tiles in, class probabilities out.

    Attributes:
        name: The engine variant, e.g. ``"onnx-fp32"`` (one of :data:`ENGINE_NAMES`).
    """

    name: str

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``float32 [B, C, h, w]`` normalised tiles -> ``float32 [B, K, h, w]`` softmax."""
        ...


#: Tiles per network call on the CPU. One: on 2 cores, a batch of 4 ResNet34 U-Net tiles of
#: 512 x 512 ran no faster than the same tiles one at a time (PyTorch eager channels-last:
#: 1.16-1.28 s vs 1.14-1.18 s; OpenVINO: 23.7 vs 23.9 s for a 4096 x 4096 scene) and held
#: 360-510 MiB more of activations. A GPU runs the whole batch in one call.
CPU_TILES_PER_CALL = 1


def device_type(model: Any) -> str:
    """``"cpu"``, ``"cuda"``...: the type of the device ``model`` runs on.

    A model with a ``device_type`` attribute (a saved model opened for inference,
    :class:`geounet.model.saved.SavedModel`) tells it without importing torch.
    """
    kind = getattr(model, "device_type", None)
    return kind if isinstance(kind, str) else _kind(model.device)


def _kind(device: Any) -> str:
    """``"cuda"`` of ``torch.device("cuda:1")`` or of ``"cuda:1"``, without importing torch."""
    return str(getattr(device, "type", None) or device).split(":")[0]


def run_engine(engine: Engine, batch: np.ndarray) -> np.ndarray:
    """``engine.probabilities`` of ``batch``, :data:`CPU_TILES_PER_CALL` tiles a call on a CPU."""
    device = getattr(engine, "device", None)  # ONNX Runtime and OpenVINO engines run on the CPU
    on_gpu = device is not None and _kind(device) != "cpu"
    n = max(len(batch), 1) if on_gpu else CPU_TILES_PER_CALL
    if len(batch) <= n:
        return engine.probabilities(batch)
    return np.concatenate([engine.probabilities(batch[k : k + n]) for k in range(0, len(batch), n)])


def cpu_has_bf16() -> bool:
    """True when this CPU runs bfloat16 natively (AVX-512 BF16 or AMX), as oneDNN reports."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _softmax(logits: np.ndarray, copy: bool = True) -> np.ndarray:
    """Softmax over axis 1 in float32 (no torch: ONNX Runtime and OpenVINO need none).

    ``copy=False`` works in place on a float32 array the caller owns.
    """
    x = (
        np.array(logits, dtype=np.float32, copy=True)
        if copy
        else logits.astype(np.float32, copy=False)
    )
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


class TorchEngine:
    """PyTorch eager on the model's own network (channels-last; bf16 autocast optional).

    Args:
        model: Object with ``network`` and ``device``; the network should be prepared with
            :func:`geounet.inference.engine.prepare_network` (eval mode, channels-last).
        bf16: Run under bfloat16 autocast on the CPU.
    """

    def __init__(self, model: Any, bf16: bool = False) -> None:
        import torch

        self.model = model
        self.device = torch.device(model.device)
        self.bf16 = bool(bf16)
        if self.device.type == "cuda":
            self.name = "torch-cuda-fp16"  # float16 autocast on CUDA, float32 accumulation
        else:
            self.name = "torch-bf16" if self.bf16 else "torch-fp32"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """See :class:`Engine`."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            out = torch.softmax(self.model.network(x).float(), dim=1)
        return out.cpu().numpy()


class OnnxEngine:
    """ONNX Runtime (CPU execution provider) on an exported network.

    Args:
        path: The ONNX file (input: normalised tiles; output: logits).
        name: ``"onnx-fp32"`` or ``"onnx-int8"``.

    Raises:
        DependencyNotFoundError: ``onnxruntime`` is not installed (``pip install
            "geounet[onnx]"``).
    """

    def __init__(self, path: str | os.PathLike[str], name: str = "onnx-fp32") -> None:
        ort = import_optional("onnxruntime", extra="onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = engine_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.name = name
        self.path = Path(path)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """See :class:`Engine`."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return _softmax(self.session.run(None, {self.input: x})[0], copy=False)  # a fresh array


class OpenVinoEngine:
    """OpenVINO (CPU plugin) on the exported ONNX network: float32, bfloat16 or int8.

    Args:
        path: The ONNX file of the bare network (its int8 QDQ copy for ``int8``).
        bf16: Infer in bfloat16 (on CPUs with BF16), else float32.
        cache_dir: OpenVINO's cache of compiled networks (``CACHE_DIR``): a later build of
            the same network loads the compiled one (0.1 s instead of 0.6-0.9 s for a
            ResNet34 or EfficientNet-Lite0 U-Net). None: compiled every time.
        int8: ``path`` is the quantized copy (the engine's name says so); its quantized
            operations run in int8, the rest in float32 (0.062 s per ResNet34 U-Net tile of
            512 x 512 on 2 cores, against 0.093 s for ONNX Runtime on the same file).

    Raises:
        DependencyNotFoundError: ``openvino`` is not installed (``pip install
            "geounet[openvino]"``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bf16: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        int8: bool = False,
    ) -> None:
        ov = import_optional("openvino", extra="openvino")
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": engine_threads(),
        }
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.name = "openvino-int8" if int8 else "openvino-bf16" if bf16 else "openvino-fp32"
        self.path = Path(path)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """See :class:`Engine`."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        result = self.request.infer({0: x}, share_inputs=True)  # no copy of the input
        return _softmax(result[self.output])  # a copy: the request reuses its output memory


def openvino_has_bf16() -> bool:
    """True when OpenVINO is installed and its CPU plugin reports BF16 support."""
    try:
        import openvino as ov
    except ImportError:
        return False
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps
