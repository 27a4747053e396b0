"""ArcGIS Pro Python raster function that runs a geounet model (shipped in a .dlpk).

:func:`geounet.app.export.export_model` copies this file into the deep-learning package as
``GeounetClassifier.py``; the package's ``.emd`` names it as its ``InferenceFunction``. ArcGIS
Pro's *Classify Pixels Using Deep Learning* tool then calls, in this order:
``initialize(model=<emd path or JSON>, device=...)`` -> ``getParameterInfo()`` ->
``getConfiguration(**scalars)`` -> ``updateRasterInfo(**kwargs)`` -> ``updatePixels(...)`` per
block. Each block arrives padded by ``padding`` pixels of real neighbouring imagery on every
side; the function classifies the padded block with geounet's own normalisation and network
call (:func:`geounet.inference.classify.predict_array`, the code behind ``geounet classify``)
and returns the class values of the block without its padding. The blocks are sized so that
a padded block and ``predict_array``'s thin mirrored halo (:data:`HALO`) fill exactly one
tile: one network pass per block (blending inside each block, as before, cost up to four),
every kept pixel at least ``padding`` real pixels from the tile's edge.
Pixels the input masks as NoData stay NoData (value 255 and a cleared output mask).

geounet must be installed in Pro's Python environment (clone ``arcgispro-py3`` in Pro's
Package Manager, then in its Python Command Prompt: ``pip install "geounet[weights]"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from geounet.inference.blending import MIN_HALO as HALO  # light: numpy and geounet.core only

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
        """The tool's parameters: ``raster``, ``model``, padding, batch size, bands to read."""
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
            {
                "name": "bands",
                "dataType": "string",
                "value": "",
                "required": False,
                "displayName": "Bands",
                "description": "The raster's bands the model reads, in the model's order, "
                "1-based (e.g. 3,2,1 for a blue, green, red raster and a red, green, blue "
                "model); empty: the package's (its training bands by position)",
            },
        ]

    def getConfiguration(self, **scalars: Any) -> dict[str, Any]:  # noqa: N802
        """Block size, padding and bands ArcGIS must hand :meth:`updatePixels`."""
        self.padding = int(scalars.get("padding", self.padding))
        self.batch_size = max(1, int(scalars.get("batch_size", self.batch_size)))
        inner = block_size(self.tile_size, self.padding)
        if inner < 1:
            raise ValueError(
                f"padding {self.padding} leaves no block in a tile of {self.tile_size} pixels: "
                f"give a padding under {self.tile_size // 2 - HALO} (the model's is the "
                "package's ModelPadding)."
            )
        return {
            "extractBands": extract_bands(scalars.get("bands"), self.emd),
            "padding": self.padding,
            "tx": inner,
            "ty": inner,
            "inputMask": True,
            "fixedTileSize": 1,
            "batch_size": self.batch_size,
            "inheritProperties": 2 | 4 | 8,
        }

    def updateRasterInfo(self, **kwargs: Any) -> dict[str, Any]:  # noqa: N802
        """One unsigned 8-bit band of class values, 255 as NoData, the classes as its table.

        The raster attribute table (value, class name, colour) is what ArcGIS Pro shows in
        the legend and what *Classify Pixels* writes with the output.
        """
        check_cell_size(kwargs.get("raster_info"), self.emd)
        info = kwargs["output_info"]
        info["bandCount"] = 1
        info["pixelType"] = "u1"
        info["noData"] = np.array([NODATA])
        rows = [
            {
                "attributes": {
                    "OID": i + 1,
                    "Value": c["Value"],
                    "Class": c["Name"],
                    "Red": c["Color"][0],
                    "Green": c["Color"][1],
                    "Blue": c["Color"][2],
                }
            }
            for i, c in enumerate(self.emd.get("Classes", []))
        ]
        info["rasterAttributeTable"] = json.dumps({"features": rows})
        return kwargs

    def updateKeyMetadata(self, names: Any, bandIndex: int, **keyMetadata: Any) -> dict[str, Any]:  # noqa: N802, N803
        """The output is thematic (classes, not measurements)."""
        if bandIndex == -1:
            keyMetadata["datatype"] = "Thematic"
        return keyMetadata

    def _load(self) -> Any:
        if self.model is None:
            from types import SimpleNamespace

            from geounet.model.files import load_model

            network, config = load_model(self.folder)
            device = torch_device(getattr(self, "device", None))
            network = network.to(device).eval()
            self.model = SimpleNamespace(network=network, config=config, device=device)
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
        check_values(pixels, valid, dtype)
        options = ClassifyOptions(  # the padding is the context: one tile, no blending
            tile_size=self.tile_size, overlap=0, batch_size=self.batch_size, progress=False
        )
        p = self.padding
        _, h, w = pixels.shape
        # Whole rows and columns of NoData along the block's outer edges: beyond the raster's
        # edge. Left out, so that predict_array mirrors the edge as geounet classify does.
        t, b, left, right = (0, 0, 0, 0) if valid is None else outer_nodata(valid)
        rows, cols = slice(t, h - b), slice(left, w - right)
        classes = np.full((h, w), NODATA, np.uint8)
        if t < h - b and left < w - right:
            inner = pixels[:, rows, cols].astype(dtype, copy=False)
            inner_valid = None if valid is None else valid[rows, cols]
            classes[rows, cols] = predict_array(model, inner, options, valid=inner_valid)[0]
        core = classes[p : h - p, p : w - p]
        pixelBlocks["output_pixels"] = core[None].astype(np.uint8)
        pixelBlocks["output_mask"] = (core != NODATA)[None].astype(np.uint8)
        return pixelBlocks


def outer_nodata(valid: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns without data at the top, bottom, left and right of a padded block.

    ArcGIS fills what lies beyond the raster's edge (padding, or a last block reaching past
    it) with NoData: whole rows or columns of the block, from its outer edge inwards. Their
    output is NoData whatever the context, so leaving them out changes only how the valid
    pixels next to them are padded.

    Example:
        >>> valid = np.ones((6, 6), bool)
        >>> valid[:3] = False
        >>> valid[:, 5] = False
        >>> outer_nodata(valid)
        (3, 0, 0, 1)
    """

    def leading(has_data: np.ndarray) -> int:
        found = np.flatnonzero(has_data)
        return int(found[0]) if found.size else has_data.size

    rows, cols = valid.any(axis=1), valid.any(axis=0)
    return leading(rows), leading(rows[::-1]), leading(cols), leading(cols[::-1])


def extract_bands(text: Any, emd: dict[str, Any]) -> tuple[int, ...]:
    """The 0-based bands ArcGIS extracts: the tool's *Bands* argument, else the package's.

    Example:
        >>> extract_bands("3, 2, 1", {"ExtractBands": [0, 1, 2]})
        (2, 1, 0)
        >>> extract_bands("", {"ExtractBands": [0, 1, 2]})
        (0, 1, 2)
    """
    packaged = tuple(int(b) for b in emd.get("ExtractBands", ()))
    if text is None or not str(text).strip():
        return packaged
    items = [s.strip() for s in str(text).split(",")]
    bands = [int(s) for s in items if s.isdigit() and int(s) >= 1]
    if len(bands) != len(items) or (packaged and len(bands) != len(packaged)):
        raise ValueError(
            f"Bands {text!r}: give {len(packaged) or 'the'} band numbers of the raster, "
            "1-based and in the model's order, separated by commas (e.g. 3,2,1), or leave it "
            f"empty for the package's bands {[b + 1 for b in packaged]}."
        )
    return tuple(b - 1 for b in bands)


def block_size(tile_size: int, padding: int) -> int:
    """The side of the blocks ArcGIS hands over (0 or less: no block fits the tile).

    The block, its padding and the mirrored halo ``predict_array`` adds at overlap 0
    (:data:`HALO`) fill one tile.

    Example:
        >>> block_size(512, 32), block_size(128, 48)
        (416, 0)
    """
    return tile_size - 2 * (HALO + padding)


#: Cells further than this ratio from the model's pixel size are refused (``geounet classify``
#: resamples them; a raster function gets ArcGIS's blocks at the raster's own cell size).
MAX_CELL_RATIO = 1.25


def raster_cell_m(raster_info: Any) -> float | None:
    """The raster's cell size in ground metres, from ArcGIS's ``raster_info``; None if unknown.

    ``cellSize`` is in the units of ``spatialReference`` (a WKID); a geographic or
    off-scale grid (Web Mercator away from the equator) is measured on the ellipsoid at the
    extent's centre, as ``geounet`` measures its training images.

    Example:
        >>> info = {"cellSize": (0.5, 0.5), "spatialReference": 32616,
        ...         "extent": (500000.0, 3700000.0, 500100.0, 3700100.0)}
        >>> raster_cell_m(info)
        0.5
    """
    try:
        from affine import Affine
        from rasterio.crs import CRS

        from geounet.io.raster import pixel_size_m

        cx, cy = (float(v) for v in raster_info["cellSize"])
        xmin, ymin, xmax, ymax = (float(v) for v in raster_info["extent"])
        wkid = int(raster_info["spatialReference"])
        crs = CRS.from_epsg(wkid) if wkid < 100000 else CRS.from_user_input(f"ESRI:{wkid}")
        width, height = max(1, round((xmax - xmin) / cx)), max(1, round((ymax - ymin) / cy))
        return pixel_size_m(crs, Affine(cx, 0, xmin, 0, -cy, ymax), height, width)
    except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError):
        return None  # ArcGIS's description of the raster not understood: no check


def check_cell_size(raster_info: Any, emd: dict[str, Any]) -> None:
    """Refuse a raster whose cells are more than 25 % off the model's pixel size.

    Raises:
        ValueError: The cell size (in metres) and the model's differ by more than
            :data:`MAX_CELL_RATIO`; the message names both and the way to resample.
    """
    model_m = emd.get("ModelPixelSizeMetres")
    cell_m = raster_cell_m(raster_info) if model_m else None
    if not cell_m or not model_m:
        return
    ratio = cell_m / float(model_m)
    if 1 / MAX_CELL_RATIO <= ratio <= MAX_CELL_RATIO:
        return
    raise ValueError(
        f"the raster's cells are {cell_m:.3g} m but the model was trained on {float(model_m):.3g} "
        f"m imagery ({ratio:.2g} times): it would see objects at a scale it never learnt. "
        f"Resample the raster to {float(model_m):.3g} m first (Resample tool, or the tool's "
        "Cell Size environment), as geounet classify does on the fly."
    )


def torch_device(device: Any) -> str:
    """ArcGIS's ``device`` (a GPU id, -1 or None for the CPU) as a torch device name.

    Example:
        >>> torch_device(-1), torch_device(None)
        ('cpu', 'cpu')
    """
    try:
        index = int(device)
    except (TypeError, ValueError):
        return "cpu"
    if index < 0:
        return "cpu"
    import torch

    return f"cuda:{index}" if torch.cuda.is_available() else "cpu"


def check_values(pixels: np.ndarray, valid: np.ndarray | None, dtype: np.dtype) -> None:
    """Refuse values the model's input type cannot hold (cast, 1020 would become 252).

    Raises:
        ValueError: A valid pixel lies outside the range of ``dtype``.

    Example:
        >>> check_values(np.array([[[300.0]]]), None, np.dtype("uint8"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the raster's values reach 300 but the model was trained on uint8 ...
    """
    if dtype.kind not in "iu" or pixels.size == 0:
        return
    values = pixels if valid is None else pixels[:, valid]
    if values.size == 0:
        return
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    vmin, vmax = float(values.min()), float(values.max())
    if vmin >= lo and vmax <= hi:
        return
    seen = vmax if vmax > hi else vmin
    raise ValueError(
        f"the raster's values reach {seen:g} but the model was trained on {dtype} imagery "
        f"({lo}-{hi}): give it imagery of that kind (e.g. 8-bit, or stretched to {lo}-{hi} "
        "with Copy Raster), or export a model trained on imagery like this raster."
    )
