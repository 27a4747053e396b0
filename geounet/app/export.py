"""Model exports for the tools GIS analysts use: ONNX (QGIS Deepness), ArcGIS Pro, TorchScript.

Every export bakes geounet's own normalisation into what it writes, so the exported model gives
geounet's result:

- ``onnx``: one input ``image [B, C, H, W]`` (dynamic batch, square tiles of ``tile_size``) and
  one output ``probabilities [B, K, H, W]`` (softmax). For a model trained on 8-bit imagery the
  input is what QGIS's Deepness plugin feeds, the bands divided by 255 (``x`` in [0, 1]); the
  graph computes ``x * 255 -> (x - mean) / std -> network -> softmax``. Models trained on other
  data types get a raw-value input (``x`` in the source's units) and a warning, since Deepness
  reads only 8-bit rasters. ``metadata_props`` hold what Deepness reads (each value a JSON
  string): ``model_type``, ``class_names``, ``resolution`` (cm per pixel), ``tiles_size``,
  ``tiles_overlap`` (percent), ``seg_thresh``, ``seg_small_segment``; plus ``geounet_model``
  (the model's own ``geounet.json``) for provenance.
- ``dlpk``: an ArcGIS Pro deep-learning package, a zip of an Esri model definition
  (``<name>.emd``), the model folder (``model.safetensors`` + ``geounet.json``) and the Python
  raster function ``GeounetClassifier.py`` (:mod:`geounet.app.arcgis`), which runs the same
  normalisation and network call as ``geounet classify`` (geounet must be installed in Pro's
  Python environment).
- ``torchscript``: a traced module with the same graph as the ONNX export, raw values in
  (the source's units), probabilities out, for deployments with plain torch.

Example:
    Not run as a doctest: it needs a saved model folder.

    >>> export_model("models/buildings", "onnx", "buildings.onnx")  # doctest: +SKIP
    PosixPath('buildings.onnx')
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from geounet.app.arcgis import HALO, block_size
from geounet.core.classes import hex_to_rgb
from geounet.core.errors import InvalidParameterError, ModelFileError
from geounet.core.types import PathLike, check_choice, import_optional
from geounet.inference.blending import MULTIPLE
from geounet.io.write import atomic_output
from geounet.model.files import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_model
from geounet.model.onnx_export import cpu_copy, export_onnx

__all__ = ["EXPORT_FORMATS", "DeployedNetwork", "ExportFormat", "export_model", "onnx_metadata"]

ExportFormat = Literal["onnx", "dlpk", "torchscript"]
#: The formats :func:`export_model` writes.
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "dlpk", "torchscript")
#: The file name of the ArcGIS raster function inside a .dlpk (its class has the same name).
ARCGIS_FUNCTION = "GeounetClassifier.py"
_SUFFIX = {"onnx": ".onnx", "dlpk": ".dlpk", "torchscript": ".pt"}


class DeployedNetwork(nn.Module):
    """The network with geounet's normalisation in front and a softmax behind.

    Args:
        network: The trained network (eval mode).
        mean: Per-band training mean, in source units.
        std: Per-band training standard deviation, in source units.
        input_scale: Factor applied to the input first (255 for Deepness' ``x / 255`` input,
            1 for raw values).
    """

    def __init__(
        self, network: nn.Module, mean: list[float], std: list[float], input_scale: float
    ) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        std_t = torch.tensor(std, dtype=torch.float32).clamp_min(1e-6).view(1, -1, 1, 1)
        self.register_buffer("std", std_t)
        self.input_scale = float(input_scale)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` input -> ``[B, K, H, W]`` class probabilities."""
        x = (image * self.input_scale - self.mean) / self.std
        return torch.softmax(self.network(x), dim=1)


def _load(model: Any) -> tuple[nn.Module, ModelConfig]:
    """A model folder, or an object with ``network`` and ``config`` (a ``UnetClassifier``)."""
    if isinstance(model, (str, Path)):
        return load_model(model)
    if hasattr(model, "network") and hasattr(model, "config"):
        return model.network, model.config
    raise InvalidParameterError(
        f"cannot export {type(model).__name__}: give a model folder (written by `geounet train` "
        "or UnetClassifier.save) or a UnetClassifier."
    )


def _is_eight_bit(config: ModelConfig) -> bool:
    return (config.source_dtype or "uint8") == "uint8"


def _deployed(network: nn.Module, config: ModelConfig, raw_input: bool) -> DeployedNetwork:
    scale = 1.0 if raw_input else 255.0
    copy = cpu_copy(network)  # the caller's network stays as it is
    net = DeployedNetwork(copy, config.stats["mean"], config.stats["std"], scale)
    return net.eval()


def onnx_metadata(config: ModelConfig, tile_size: int, overlap: int) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX export, each value a JSON string (Deepness' keys).

    Args:
        config: The model configuration.
        tile_size: Tile side in pixels.
        overlap: Tile overlap in pixels.

    Returns:
        ``{key: json string}``.
    """
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {i: c.name for i, c in enumerate(config.classes)},
        "tile_size": int(tile_size),  # the key Deepness' code reads
        "tiles_size": int(tile_size),  # the key its documentation names
        "tiles_overlap": round(100 * overlap / tile_size),
        # a pixel takes its most probable class, as in geounet classify: with more than two
        # classes a threshold of 0.5 would turn pixels of no majority class to background
        "seg_thresh": 0.5 if len(config.classes) <= 2 else 0.0,
        "seg_small_segment": 0,
    }
    if config.gsd_m:
        meta["resolution"] = round(float(config.gsd_m) * 100, 3)
    out = {k: json.dumps(v) for k, v in meta.items()}
    out["geounet_model"] = json.dumps(config.to_json())
    return out


def _check_tiles(tile_size: int, overlap: int, format: str) -> None:
    if tile_size < 32 or tile_size % 32:
        raise InvalidParameterError(
            f"tile_size {tile_size} is not allowed: the U-Net needs a multiple of 32 (>= 32); "
            "use e.g. 256 or 512."
        )
    if not 0 <= overlap < tile_size:
        raise InvalidParameterError(
            f"overlap {overlap} is not allowed: it must be >= 0 and < tile_size ({tile_size})."
        )
    if format == "dlpk" and (
        tile_size < 2 * MULTIPLE or block_size(tile_size, overlap // 2) < MULTIPLE
    ):
        raise InvalidParameterError(
            f"tile_size {tile_size} with overlap {overlap} is not allowed for ArcGIS Pro: its "
            f"raster function runs one tile per block, the block padded by half the overlap "
            f"and a {HALO}-pixel halo on every side, and needs blocks of at least {MULTIPLE} "
            f"pixels (overlap <= {max(tile_size - 2 * HALO - MULTIPLE, 0)} here) and "
            f"tile_size >= {2 * MULTIPLE}; use e.g. --tile-size 512 --overlap 64."
        )


def _write_onnx(net: DeployedNetwork, config: ModelConfig, tmp: Path, tile: int, ovl: int) -> None:
    onnx = import_optional("onnx", extra="onnx")
    export_onnx(net, tmp, (config.in_channels, tile, tile))
    proto = onnx.load(str(tmp))
    for key, value in onnx_metadata(config, tile, ovl).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))


def _write_torchscript(net: DeployedNetwork, config: ModelConfig, tmp: Path, tile: int) -> None:
    example = torch.rand(1, config.in_channels, tile, tile) * 255
    extra = {"geounet.json": json.dumps(config.to_json())}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream, still loadable
        traced = torch.jit.trace(net, example)
        torch.jit.save(traced, str(tmp), _extra_files=extra)


def emd_definition(config: ModelConfig, name: str, tile_size: int, overlap: int) -> dict[str, Any]:
    """The Esri model definition (``.emd``) of a geounet model.

    Args:
        config: The model configuration.
        name: The model's name.
        tile_size: Side of the tile the raster function runs per block (the block, its
            padding and a thin mirrored halo).
        overlap: Tile overlap; ArcGIS pads each block by half of it on every side.

    Returns:
        The ``.emd`` JSON object.
    """
    return {
        "Framework": "PyTorch",
        "ModelConfiguration": "geounet",
        "ModelFile": WEIGHTS_FILE,
        "ModelType": "ImageClassification",
        "InferenceFunction": ARCGIS_FUNCTION,
        "ImageHeight": int(tile_size),
        "ImageWidth": int(tile_size),
        "ExtractBands": [b - 1 for b in config.bands],  # Esri counts bands from 0
        "BatchSize": 1,
        "ModelPadding": int(overlap // 2),
        "Classes": [
            {"Value": i, "Name": c.name, "Color": list(hex_to_rgb(c.color))}
            for i, c in enumerate(config.classes)
            if i > 0
        ],
        "ModelName": name,
        "ModelPixelSizeMetres": config.gsd_m,  # checked by the raster function (None: no CRS)
        "Version": "2024.0",
        "GeounetConfig": CONFIG_FILE,
    }


def _write_dlpk(
    network: nn.Module, config: ModelConfig, tmp: Path, name: str, tile: int, ovl: int
) -> None:
    from geounet.model.files import save_model

    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".geounet-dlpk-") as work:
        folder = Path(work) / "model"
        save_model(folder, network, config)
        emd = emd_definition(config, name, tile, ovl)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}.emd", json.dumps(emd, indent=2))
            zf.write(folder / WEIGHTS_FILE, WEIGHTS_FILE)
            zf.write(folder / CONFIG_FILE, CONFIG_FILE)
            zf.write(Path(__file__).with_name("arcgis.py"), ARCGIS_FUNCTION)


def export_model(
    model: Any,
    format: ExportFormat,
    out: PathLike | None = None,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    overwrite: bool = False,
) -> Path:
    """Export a model for QGIS (ONNX), ArcGIS Pro (.dlpk) or plain torch (TorchScript).

    Args:
        model: A model folder or a :class:`~geounet.app.classifier.UnetClassifier`.
        format: ``"onnx"``, ``"dlpk"`` or ``"torchscript"`` (see the module docs).
        out: Output file; default: ``<model folder>.onnx`` / ``.dlpk`` / ``.pt``.
        tile_size: Tile side the GIS should use (a multiple of 32).
        overlap: Tile overlap in pixels.
        overwrite: Replace an existing output.

    Returns:
        The written file (written atomically: nothing is left under ``out`` on failure).

    Raises:
        InvalidParameterError: Unknown format or bad tile settings.
        ModelFileError: The model folder cannot be read.
        DependencyNotFoundError: ``onnx``/``onnxscript`` missing for the ONNX export.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.
    """
    check_choice("format", format, EXPORT_FORMATS)
    _check_tiles(tile_size, overlap, format)
    network, config = _load(model)
    if out is None:
        if not isinstance(model, (str, Path)):
            raise InvalidParameterError("give `out`: the model object has no folder to name it.")
        out = Path(model).with_name(Path(model).name + _SUFFIX[format])  # kampala.v2 too
    out = Path(out)
    if not out.parent.is_dir():
        raise ModelFileError(
            f"{out}: the output folder {out.parent} does not exist; create it first."
        )
    raw = format == "torchscript" or not _is_eight_bit(config)
    if format == "onnx" and raw:
        warnings.warn(
            f"the model was trained on {config.source_dtype} imagery: the ONNX file takes raw "
            "values, not the 0-1 input of QGIS's Deepness plugin (which reads only 8-bit "
            "rasters); run it with onnxruntime or `geounet classify` instead.",
            UserWarning,
            stacklevel=2,
        )
    with atomic_output(out, overwrite=overwrite) as tmp:
        if format == "dlpk":
            _write_dlpk(network, config, tmp, out.stem, tile_size, overlap)
        else:
            net = _deployed(network, config, raw_input=raw)
            if format == "onnx":
                _write_onnx(net, config, tmp, tile_size, overlap)
            else:
                _write_torchscript(net, config, tmp, tile_size)
    return out
