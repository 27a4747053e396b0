"""The one ONNX exporter of geounet: a torch module to an ONNX file with a dynamic batch.

Two callers share it: the model export for GIS tools (:mod:`geounet.app.export`, which wraps the
network with normalisation and a softmax first) and the ONNX Runtime / OpenVINO inference engines
(:mod:`geounet.inference.engines`, which export the bare network: normalisation and nodata
handling stay in geounet's tile pipeline). Both use torch's dynamo exporter with the batch axis
dynamic and the tile side fixed.

Example:
    >>> import torch
    >>> net = torch.nn.Conv2d(3, 2, 1)
    >>> copy = cpu_copy(net)
    >>> copy is net, copy.training, copy.weight.dtype
    (False, False, torch.float32)
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from geounet.core.types import PathLike, import_optional

__all__ = ["cpu_copy", "export_onnx"]


def cpu_copy(network: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``network`` in evaluation mode (the caller's network is untouched).

    Args:
        network: A torch module on any device.

    Returns:
        The copy.
    """
    return copy.deepcopy(network).to("cpu").float().eval()


def export_onnx(
    module: nn.Module,
    path: PathLike,
    shape: tuple[int, int, int],
    *,
    input_name: str = "image",
    output_name: str = "probabilities",
) -> Path:
    """Export ``module`` to an ONNX file with a dynamic batch axis (torch's dynamo exporter).

    Args:
        module: A CPU float32 module in evaluation mode (see :func:`cpu_copy`).
        path: The ONNX file to write (one file, no external data).
        shape: ``(channels, height, width)`` of one input tile.
        input_name: Name of the graph input.
        output_name: Name of the graph output.

    Returns:
        ``path``.

    Raises:
        DependencyNotFoundError: ``onnxscript`` (needed by the exporter) is not installed; the
            message names ``pip install "geounet[onnx]"``.
    """
    import_optional("onnx", extra="onnx")
    import_optional("onnxscript", extra="onnx")
    example = torch.rand(2, *shape)  # a batch of 1 would be fixed into the graph
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),  # whatever forward's arg is named
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return Path(path)
