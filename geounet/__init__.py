"""geounet: geospatial semantic segmentation that just works on real scenes.

Chip GeoTIFFs and their labels (:func:`prepare_data`), train a U-Net with a pretrained
backbone (:class:`UnetClassifier`), classify whole scenes of any size without seams and
turn the result into building polygons and road centre lines (:func:`vectorize`).

Example:
    >>> from geounet import prepare_data, UnetClassifier, vectorize
"""

from __future__ import annotations

import importlib
from typing import Any

from geounet.core.threads import limit_spin_waiting
from geounet.core.version import __version__

limit_spin_waiting()  # before torch loads: a machine shared with other work does not stall it

__all__ = [
    "GeoData",
    "UnetClassifier",
    "__version__",
    "classify_raster",
    "evaluate",
    "evaluate_rasters",
    "prepare_data",
    "vectorize",
]

# Heavy modules (torch, geopandas) load on first use, so `import geounet` and the CLI's
# --help stay fast.
_LAZY = {
    "prepare_data": "geounet.data.prepare",
    "GeoData": "geounet.data.prepare",
    "UnetClassifier": "geounet.app.classifier",
    "classify_raster": "geounet.inference.classify",
    "vectorize": "geounet.vectorizing.pipeline",
    "evaluate": "geounet.evaluation.evaluate",
    "evaluate_rasters": "geounet.evaluation.scores",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # resolve once; later lookups skip this hook
        return value
    raise AttributeError(f"module 'geounet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
