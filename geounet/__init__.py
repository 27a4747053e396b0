"""geounet: geospatial semantic segmentation that just works on real scenes.

Chip GeoTIFFs and their labels (:func:`prepare_data`), train a U-Net with a pretrained
backbone (:class:`UnetClassifier`), classify whole scenes of any size without seams and
turn the result into building polygons and road centre lines (:func:`vectorize`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geounet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

__all__ = ["__version__"]
