"""ArcGIS Pro Python raster function that runs a geounet model (shipped in a .dlpk).

:func:`geounet.app.export.export_model` copies this file into the deep-learning package as
``GeounetClassifier.py``; the package's ``.emd`` names it as its ``InferenceFunction``. ArcGIS
Pro's *Classify Pixels Using Deep Learning* tool then calls, in this order:
``initialize(model=<emd path or JSON>, device=...)`` -> ``getParameterInfo()`` ->
``getConfiguration(**scalars)`` -> ``updateRasterInfo(**kwargs)`` -> ``updatePixels(...)`` per
block. Each block arrives padded by ``padding`` pixels of real neighbouring imagery on every
side; the function classifies the block with geounet's own normalisation, tiling and network
call (:func:`geounet.inference.classify.predict_array`, the code behind ``geounet classify``)
and returns the class values of the block without its padding. Pixels the input masks as
NoData stay NoData (value 255 and a cleared output mask).

geounet must be installed in Pro's Python environment (clone ``arcgispro-py3`` in Pro's
Package Manager, then in its Python Command Prompt: ``pip install "geounet[weights]"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GeounetClassifier"]

NODATA = 255


class GeounetClassifier:
    """The raster function ArcGIS Pro instantiates (the class name matches the file name)."""

    def __init__(self) -> None:
        self.name = "geounet classifier"
        self.description = (
            "Classifies pixels with a geounet U-Net (same result as geounet classify)."
        )
        self.emd: dict[str, Any] = {}
        self.folder: Path | None = None
        self.model: Any = None
        self.padding = 0
        self.tile_size = 512
        self.batch_size = 4

    def initialize(self, **kwargs: Any) -> None:
        """Read the .emd (a path or its JSON text); the model loads on the first block."""
        if "model" not in kwargs:
            return
        model = kwargs["model"]
        if os.path.isfile(str(model)):
            self.emd = json.loads(Path(model).read_text(encoding="utf-8"))
            self.folder = Path(model).resolve().parent
        else:
            self.emd = json.loads(model)
            self.folder = Path(self.emd.get("ModelFolder", ".")).resolve()
        self.padding = int(self.emd.get("ModelPadding", 0))
        self.tile_size = int(self.emd.get("ImageHeight", 512))
        self.batch_size = int(self.emd.get("BatchSize", 1))
        self.device = kwargs.get("device")

    def getParameterInfo(self) -> list[dict[str, Any]]:  # noqa: N802 - ArcGIS's name
        """The tool's parameters: ``raster`` and ``model`` first, then padding and batch size."""
        return [
            {
                "name": "raster",
                "dataType": "raster",
                "required": True,
                "displayName": "Raster",
                "description": "Input raster",
            },
            {
                "name": "model",
                "dataType": "string",
                "required": True,
                "displayName": "Input Model Definition (EMD) File",
                "description": "The geounet .emd (inside the .dlpk)",
            },
            {
                "name": "padding",
                "dataType": "numeric",
                "value": self.padding,
                "required": False,
                "displayName": "Padding",
                "description": "Context pixels around each block (half the tile overlap)",
            },
            {
                "name": "batch_size",
                "dataType": "numeric",
                "value": self.batch_size,
                "required": False,
                "displayName": "Batch Size",
                "description": "Tiles per network call",
            },
        ]

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:  # noqa: N802
        """Block size, padding and bands ArcGIS must hand :meth:`updatePixels`."""
        self.padding = int(scalars.get("padding", self.padding))
        self.batch_size = max(1, int(scalars.get("batch_size", self.batch_size)))
        inner = self.tile_size - 2 * self.padding
        return {
            "extractBands": tuple(self.emd.get("ExtractBands", ())),
            "padding": self.padding,
            "tx": inner,
            "ty": inner,
            "inputMask": True,
            "fixedTileSize": 1,
            "batch_size": self.batch_size,
            "inheritProperties": 2 | 4 | 8,
        }

    def updateRasterInfo(self, **kwargs: Any) -> dict[str, Any]:  # noqa: N802
        """One unsigned 8-bit band of class values, 255 as NoData."""
        info = kwargs["output_info"]
        info["bandCount"] = 1
        info["pixelType"] = "u1"
        info["noData"] = np.array([NODATA])
        return kwargs

    def _load(self) -> Any:
        if self.model is None:
            from types import SimpleNamespace

            from geounet.model.files import load_model

            network, config = load_model(self.folder)
            self.model = SimpleNamespace(network=network.eval(), config=config, device="cpu")
        return self.model

    def updatePixels(self, tlc: Any, shape: Any, props: Any, **pixelBlocks: Any) -> dict[str, Any]:  # noqa: N802, N803
        """Classify one padded block; return its class values without the padding."""
        from geounet.inference.classify import predict_array
        from geounet.inference.options import ClassifyOptions

        model = self._load()
        pixels = np.asarray(pixelBlocks["raster_pixels"])
        mask = pixelBlocks.get("raster_mask")
        valid = None if mask is None else np.asarray(mask).astype(bool)
        if valid is not None and valid.ndim == 3:
            valid = valid.any(axis=0)  # as GDAL: NoData only where every band is NoData
        dtype = np.dtype(model.config.source_dtype or pixels.dtype)
        options = ClassifyOptions(
            tile_size=self.tile_size,
            overlap=2 * self.padding,
            batch_size=self.batch_size,
            progress=False,
        )
        classes, _ = predict_array(model, pixels.astype(dtype, copy=False), options, valid=valid)
        p = self.padding
        h, w = classes.shape
        core = classes[p : h - p, p : w - p]
        pixelBlocks["output_pixels"] = core[None].astype(np.uint8)
        pixelBlocks["output_mask"] = (core != NODATA)[None].astype(np.uint8)
        return pixelBlocks
