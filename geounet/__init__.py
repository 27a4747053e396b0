"""geounet: geospatial semantic segmentation that just works on real scenes.

Chip GeoTIFFs and their labels (:func:`prepare_data`), train a U-Net with a pretrained
backbone (:class:`UnetClassifier`), classify whole scenes of any size without seams and
turn the result into building polygons and road centre lines (:func:`vectorize`).

Example:
    >>> from geounet import prepare_data, UnetClassifier, vectorize   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("geounet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "GeoData",
    "UnetClassifier",
    "__version__",
    "classify_raster",
    "evaluate_rasters",
    "prepare_data",
    "vectorize",
]

# Heavy modules (torch, geopandas) load on first use, so `import geounet` and the CLI's
# --help stay fast.
_LAZY = {
    "prepare_data": "geounet.data",
    "GeoData": "geounet.data",
    "UnetClassifier": "geounet.classifier",
    "classify_raster": "geounet.inference",
    "vectorize": "geounet.vectorizing",
    "evaluate_rasters": "geounet.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # resolve once; later lookups skip this hook
        return value
    raise AttributeError(f"module 'geounet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
