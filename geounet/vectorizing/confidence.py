"""How sure the network was of each vectorized object, and where classify left its probabilities.

With the probability raster that ``classify`` writes (``probabilities=``), every polygon gets
``mean_confidence`` (its class's mean probability over its pixels) and ``peak_confidence``
(the highest), and buildings whose peak stays under :data:`PEAK_CONFIDENCE` are dropped:
a real roof has a core the network is sure of, a false positive (a speck on a road, a car,
a patch of bare ground, a shadow) is a region it only leant towards. This is hysteresis
thresholding of the building class: an object is traced at probability 0.5 and kept when it
holds a seed at 0.98.

Why 0.98 (``benchmarks/inference_options.py --vectorize probabilities=True`` on saved
models of ``benchmarks/recipe.py``, no retraining; the fourteenth round of
``benchmarks/README.md``): the threshold was chosen over 0.9-0.99 of the peak and 0.7-0.95 of
the mean on 21 models of four real scenes. At 0.98 the peak raised object F1 on every scene
(Zanzibar, Kampala, Inria, Atlanta) and lost it on one model in 21; the mean fell off a cliff
on Atlanta above 0.85, the peak only above 0.98.

``classify`` records the probability raster in the class raster's
:data:`PROBABILITIES_TAG` (its path relative to the class raster's folder when it lies in it
or below, else absolute), so that ``vectorize(classified)`` finds it while it is still there;
``geounet classify --vector`` vectorizes with a temporary one, which is gone afterwards.

Example:
    >>> probabilities_tag("out/scene_classified.tif", "out/scene_probabilities.tif")
    'scene_probabilities.tif'
    >>> check_min_peak(0.98)
    0.98
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine

from geounet.core.errors import InvalidParameterError
from geounet.core.types import PathLike
from geounet.io.raster import iter_windows

__all__ = [
    "PEAK_CONFIDENCE",
    "PROBABILITIES_TAG",
    "ROAD_CONFIDENCE",
    "check_confidence",
    "check_min_peak",
    "probabilities_tag",
    "tagged_probabilities",
    "zonal_confidence",
]

log = logging.getLogger(__name__)

#: Default ``min_peak_confidence`` of ``vectorize``: a building whose most confident pixel
#: has a lower building probability is dropped (only with a probability raster).
PEAK_CONFIDENCE = 0.98
#: Default ``min_road_confidence`` of ``vectorize``: a road centre line that ends (or stands
#: alone) and whose mean road probability along it is lower is dropped (only with a
#: probability raster); lines between two junctions stay, as they hold the network together.
#: The Las Vegas road scenes of ``benchmarks/recipe.py``, nine saved models (benchmarks/README,
#: twenty-second round): the unsure lines are false aisles and watermark strokes; quality
#: +0.051 and APLS +0.019 on average (APLS up or equal on all nine, quality down on one,
#: -0.025); 0.85: +0.024 and +0.010; dropping unsure lines between junctions as well cut
#: the network (APLS -0.072 on one model).
ROAD_CONFIDENCE = 0.9
#: Class raster tag naming the probability raster the same ``classify`` run wrote.
PROBABILITIES_TAG = "GEOUNET_PROBABILITIES"


def check_confidence(value: float, name: str, default: float, kept: str) -> float:
    """``value`` when it is a probability (0 to 1), else :class:`InvalidParameterError`.

    ``name`` is the parameter, ``default`` its default and ``kept`` what 0 keeps.
    """
    if isinstance(value, bool) or not 0 <= float(value) <= 1:
        raise InvalidParameterError(
            f"{name}={value!r} is not allowed: give a probability from 0 to 1 "
            f"(default {default}; 0 keeps {kept})."
        )
    return float(value)


def check_min_peak(value: float) -> float:
    """``min_peak_confidence`` checked (:func:`check_confidence`)."""
    return check_confidence(value, "min_peak_confidence", PEAK_CONFIDENCE, "every building")


def probabilities_tag(class_raster: PathLike, probabilities: PathLike) -> str:
    """The :data:`PROBABILITIES_TAG` value: the path relative to the class raster's folder.

    Absolute when the probabilities lie outside that folder (e.g. a temporary file).
    """
    prob = Path(probabilities).absolute()
    try:
        rel = os.path.relpath(prob, Path(class_raster).absolute().parent)
    except ValueError:  # another drive (Windows)
        return str(prob)
    return str(prob) if rel.startswith("..") else rel


def tagged_probabilities(class_raster: PathLike, tag: str | None) -> Path | None:
    """The probability raster a class raster's tag names, when it is still there (else None)."""
    if not tag or "://" in str(class_raster):
        return None
    path = Path(tag) if Path(tag).is_absolute() else Path(class_raster).parent / tag
    if not path.is_file():
        log.info("%s: its probabilities %s are gone; vectorizing without", class_raster, path)
        return None
    return path


def zonal_confidence(
    prob: rasterio.io.DatasetReader,
    bands: dict[int, int],
    traced: np.ndarray,
    values: np.ndarray,
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and peak probability (0-1) of each traced polygon's class over its pixels, streamed.

    Args:
        prob: The probability raster (uint8 0-255, one band per class).
        bands: ``{class value: band}`` of ``prob``.
        traced: Polygons in pixel coordinates (column, row) of the raster.
        values: The class value of each polygon.
        window: Block size read at a time.

    Returns:
        ``(mean, peak)``, one value per polygon (NaN and 0 for a polygon without a pixel).
    """
    n = len(traced)
    sums, counts, peaks = np.zeros(n), np.zeros(n), np.zeros(n)
    if n == 0:
        return sums, peaks
    tree = shapely.STRtree(traced)
    for win in iter_windows(prob.height, prob.width, window):
        r0, c0 = win.row_off, win.col_off
        ids = tree.query(shapely.box(c0, r0, c0 + win.width, r0 + win.height), "intersects")
        if ids.size == 0:
            continue
        labels = rasterio.features.rasterize(
            zip(traced[ids], (ids + 1).tolist()),
            out_shape=(win.height, win.width),
            transform=Affine.translation(c0, r0),
            fill=0,
            dtype="int32",
        )
        hit = labels > 0
        lab = labels[hit] - 1
        p = np.zeros(lab.size)
        for value in np.unique(values[ids]).tolist():
            sel = values[lab] == value
            p[sel] = prob.read(bands[value], window=win)[hit][sel]
        sums += np.bincount(lab, weights=p, minlength=n)
        counts += np.bincount(lab, minlength=n)
        np.maximum.at(peaks, lab, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts / 255.0, peaks / 255.0
