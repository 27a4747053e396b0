"""The hash of a network's weights, from the network or straight from its saved file.

Cached engines (:mod:`geounet.inference.engine_choice`) are keyed by this hash. A model folder
read lazily (:meth:`geounet.app.classifier.UnetClassifier.from_model`) has no network yet: its
hash comes from ``model.safetensors`` tensor by tensor (:func:`file_digest`), and equals the hash
of the loaded network (:func:`state_digest` of its ``state_dict``), so an engine cached by either
is found by the other without building the network.

Example:
    >>> import torch
    >>> state_digest({"w": torch.ones(2)}.items())
    '242a966195b62685'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geounet.core.types import PathLike

if TYPE_CHECKING:
    import torch

__all__ = ["file_digest", "state_digest"]


def state_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A 16-hex-digit BLAKE2b hash of named tensors (names, dtypes, shapes, values), by name.

    The memory layout does not count (channels-last and contiguous weights hash alike).
    """
    import torch

    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        t = tensor.detach().to("cpu")
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        flat = t.contiguous().reshape(-1).clone()  # one stride, whatever the memory format
        h.update(flat.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _array_digest(tensors: Iterable[tuple[str, np.ndarray]]) -> str:
    """:func:`state_digest` of numpy arrays given in name order, consumed one at a time.

    The same bytes as :func:`state_digest` hashes, dtypes named as torch names them.
    """
    h = hashlib.blake2b(digest_size=8)
    for name, array in tensors:
        h.update(f"{name}:torch.{array.dtype.name}:{tuple(array.shape)};".encode())
        h.update(np.ascontiguousarray(array).tobytes() if array.size else b"")
    return h.hexdigest()


@lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    from safetensors import SafetensorError, safe_open

    try:  # numpy: no torch import (a cached ONNX Runtime / OpenVINO engine never needs it)
        with safe_open(path, framework="np") as f:  # one tensor in memory at a time
            names = sorted(f.keys())
            return _array_digest((name, f.get_tensor(name)) for name in names)
    except (SafetensorError, TypeError, ValueError):  # bfloat16 and other non-numpy dtypes
        pass
    with safe_open(path, framework="pt") as f:
        names = sorted(f.keys())

        def tensors() -> Iterable[tuple[str, torch.Tensor]]:
            for name in names:
                yield name, f.get_tensor(name)

        return state_digest(tensors())


def file_digest(weights: PathLike) -> str:
    """:func:`state_digest` of the tensors of a safetensors file, without building a network.

    Remembered per file (path, size and modification time) for the life of the process.
    """
    path = os.fspath(Path(weights).resolve())
    stat = os.stat(path)
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)
