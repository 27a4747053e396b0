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

The 0.98 assumes a network that is sure of real roofs. One that is rarely sure of anything
(trained briefly, or its passes averaged by test-time augmentation) would lose every
building to it, so the default is lowered to the 90th percentile of the building
probability over the scene's building pixels where that is lower
(:func:`scene_peak_threshold`). On 28 of 30 saved building models of the real scenes
(Inria, Zanzibar, Kampala, Atlanta) that percentile is 0.98 or more, so nothing changes
there; Dubai's two briefly trained six-class models are at 0.87-0.97; the demo trained for
3 minutes on a busy machine (building IoU 0.945) kept none of its 167 buildings at 0.98.

Road centre lines have their own filter: a line that ends (or stands alone) with a mean road
probability under :data:`ROAD_CONFIDENCE` is dropped.

``classify`` records the probability raster in the class raster's
:data:`PROBABILITIES_TAG` (its path relative to the class raster's folder when it lies in it
or below, else absolute), so that ``vectorize(classified)`` finds it while it is still there.
It writes one by default, beside the class raster (``<its stem>_probabilities.tif``); with
``probabilities=False`` (``--no-probabilities``) none, and ``classify --vector`` then
vectorizes with a temporary one, gone afterwards.

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
    "GROW_CONFIDENCE",
    "PEAK_CONFIDENCE",
    "PEAK_PERCENTILE",
    "PROBABILITIES_TAG",
    "ROAD_CONFIDENCE",
    "check_confidence",
    "check_min_peak",
    "grow_objects",
    "probabilities_tag",
    "probability_bands",
    "scene_peak_threshold",
    "tagged_probabilities",
    "zonal_confidence",
]

log = logging.getLogger(__name__)

#: Default ``min_peak_confidence`` of ``vectorize``: a building whose most confident pixel
#: has a lower building probability is dropped (only with a probability raster).
PEAK_CONFIDENCE = 0.98
#: The default peak threshold is lowered to this percentile of the building probability over
#: the pixels classified building when that is lower: a model whose probabilities are low
#: throughout (a short training, test-time augmentation averaging the passes of a weak model)
#: would otherwise lose every building. See :func:`scene_peak_threshold`.
PEAK_PERCENTILE = 90.0
#: Default ``min_road_confidence`` of ``vectorize``: a road centre line that ends (or stands
#: alone) and whose mean road probability along it is lower is dropped (only with a
#: probability raster); lines between two junctions stay, as they hold the network together.
#: The Las Vegas road scenes of ``benchmarks/recipe.py``, five saved models on the default
#: 4 m labels (benchmarks/README, twenty-second round): the unsure ends are false aisles and
#: strokes on the watermark; quality 0.631 -> 0.662, APLS 0.610 -> 0.634 on average (APLS up
#: on all five, quality down on one, -0.025); with four more on 8 m labels, 0.85 gave half
#: the gain (quality +0.025 against +0.053). Dropping unsure lines between junctions as well
#: cut the network (APLS -0.072 on one model).
ROAD_CONFIDENCE = 0.9
#: Class raster tag naming the probability raster the same ``classify`` run wrote.
PROBABILITIES_TAG = "GEOUNET_PROBABILITIES"
#: The ``grow_confidence`` of ``vectorize`` measured on the real scenes (off by default): with
#: a probability raster, building outlines take in the background pixels connected to them
#: whose building probability is at least this (hysteresis's low threshold; the arg-max
#: traces at 0.5 for two classes, and the peak filter keeps an outline only with a sure
#: pixel), so small sheds and roofs the network is only half sure of come out whole enough
#: to match their outline; blobs under the smallest area kept do not grow. 24 saved models
#: of ``benchmarks/recipe.py`` vectorized again (benchmarks/README, thirty-fifth round),
#: object F1 against the arg-max outlines: Zanzibar +0.046 (9 models, 8 up, 1 down), Inria
#: +0.027 (2 up), Kampala +0.005 (4 up, 5 down: its touching roofs), Atlanta -0.007 (1 down,
#: 1 equal), Dubai 0; the demo -0.022 (synthetic roofs the arg-max traces whole). Letting
#: every blob grow lifted Atlanta's small false blobs over the smallest area kept (10 -> 24
#: polygons). Opt-in until the whole protocol has run with it.
GROW_CONFIDENCE = 0.2


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


def scene_peak_threshold(levels: np.ndarray, cap: float = PEAK_CONFIDENCE) -> float:
    """The default peak threshold for a scene: ``cap``, or the scene's own level when lower.

    ``levels`` counts the pixels classified building per building probability level (0-255,
    as the uint8 probability raster stores it). The threshold is the smaller of ``cap`` and
    the :data:`PEAK_PERCENTILE` th percentile of those probabilities: a building is dropped
    when no pixel of it is as sure as the network is on most of the scene's building pixels.
    A well-trained model is at 1.0 on most of its building pixels, so ``cap`` holds (28 of 30
    saved models of ``benchmarks/recipe.py``, twenty-second round); a model whose
    probabilities are low throughout keeps its buildings: the demo trained for 3 minutes on a
    busy machine (building IoU 0.945, building pixels at 0.71 in the median, none above
    0.965) lost all 167 of them at 0.98 (benchmarks/README, twenty-second round).

    Example:
        >>> levels = np.zeros(256, np.int64)
        >>> levels[255] = 95; levels[200] = 5  # a sure scene
        >>> scene_peak_threshold(levels)
        0.98
        >>> levels[:] = 0; levels[180:221] = 10  # probabilities 0.71-0.87 throughout
        >>> round(scene_peak_threshold(levels), 3)
        0.847
    """
    total = int(levels.sum())
    if total == 0:
        return float(cap)
    level = int(np.searchsorted(np.cumsum(levels), PEAK_PERCENTILE / 100 * total))
    return float(min(cap, level / 255))


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


def probability_bands(prob: rasterio.io.DatasetReader, class_map: dict[int, str]) -> dict[int, int]:
    """Probability band of each class: by band description (class name), else value + 1.

    Raises:
        InvalidParameterError: Neither names nor positions fit ``class_map``.
    """
    names = list(prob.descriptions)
    if all(n in names for n in class_map.values()):
        return {v: names.index(n) + 1 for v, n in class_map.items()}
    if all(0 <= v < prob.count for v in class_map):
        return {v: v + 1 for v in class_map}
    raise InvalidParameterError(
        f"{prob.name}: cannot tell which of its {prob.count} bands holds each class "
        f"{class_map}; give the probability raster written by classify with this class raster."
    )


def grow_objects(
    classes: np.ndarray, levels: np.ndarray, value: int, level: int, min_seed_px: float = 0
) -> np.ndarray:
    """Background pixels at ``level`` or more, connected to pixels of ``value``, become ``value``.

    Hysteresis on one class: ``classes`` is a block of a class raster (background 0),
    ``levels`` the class's probability on the same pixels (uint8, 0-255). A background pixel
    joins the class when its level is at least ``level`` and it is 4-connected, through
    such pixels, to a blob of the class of ``min_seed_px`` pixels or more; smaller blobs
    neither grow nor are grown into, so growth reshapes the objects the arg-max already
    holds large enough to keep and lifts no speck over the smallest area kept. Pixels of
    other classes are never taken.

    Returns:
        ``classes`` itself when nothing grows, else a grown copy.

    Example:
        >>> c = np.array([[0, 1, 0, 0], [0, 0, 0, 2]])
        >>> grow_objects(c, np.array([[60, 255, 60, 10], [10, 60, 10, 60]]), 1, 51).tolist()
        [[1, 1, 1, 0], [0, 1, 0, 2]]
        >>> grow_objects(c, np.full((2, 4), 60), 1, 51, min_seed_px=2).tolist()  # a speck
        [[0, 1, 0, 0], [0, 0, 0, 2]]
    """
    from scipy import ndimage  # here: ``classify`` reads this module and never needs scipy

    seed = classes == value
    if not seed.any():
        return classes
    if min_seed_px > 1:
        blobs, n = ndimage.label(seed)
        seed &= (np.bincount(blobs.ravel(), minlength=n + 1) >= min_seed_px)[blobs]
    low = seed | ((classes == 0) & (levels >= level))
    labels, n = ndimage.label(low)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[seed])] = True
    keep[0] = False
    grow = keep[labels] & (classes == 0)
    if not grow.any():
        return classes
    out = classes.copy()
    out[grow] = value
    return out
