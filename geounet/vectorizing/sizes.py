"""Object sizes of label masks: the smallest polygon area vectorize keeps, and whether it splits.

The training labels tell how small the objects of a class really are. :func:`object_sizes`
measures the 4-connected regions of each class in label chips (regions touching a chip's
border are left out: their size is unknown; the others are weighted for the chance that a
chip sees them whole); :func:`min_area_from_sizes` turns the distribution into the
``min_area_m2`` that ``vectorize`` uses when none is given: the 10th percentile
(:data:`MIN_AREA_PERCENTILE`) of the training objects' areas. The model folder's
``geounet.json`` keeps the distribution (``object_sizes``) and ``classify`` writes the value
into the class raster (tag :data:`MIN_AREA_TAG`).

Why the 10th percentile (``benchmarks/separation.py``, small efficientnet-lite0 models trained
a few CPU-minutes on part of a scene, building F1 on the rest, touching buildings separated):
specks are the commonest false positives of a briefly trained model, and object F1 rose with
``min_area_m2`` up to about the 25th percentile, but a larger threshold also drops that share
of the real buildings. On ``oam_kampala`` (training-label percentiles p5 5.6, p10 7.1 m²)
F1 went from 0.429 at 5.6 m² to 0.453 at 7.1 m² (a second model: 0.333 to 0.345); on
``oam_zanzibar`` (p5 8.0, p10 20.8 m²) from 0.202 to 0.240. The fixed 5 m² before: 0.429,
0.333 and 0.175.

With the building probabilities at hand ``vectorize`` also drops the buildings the network
was never sure of (the peak filter, :mod:`geounet.vectorizing.confidence`), and those were
most of the specks: buildings then keep half the percentile
(:data:`FILTERED_MIN_AREA_FACTOR`, :func:`filtered_min_area`). Measured by vectorizing the
saved models of ``benchmarks/recipe.py`` runs again (the nineteenth round of
``benchmarks/README.md``), object F1 against the whole percentile: ``oam_zanzibar`` +0.026
over 19 models (15 up, 4 down; the six of today's defaults +0.035, all up: small sheds the
network found whole), ``inria_austin`` +0.005 (6 models), ``oam_kampala`` -0.005 (6; the
percentile is 5.9 m² there already), ``spacenet_atlanta_pan`` -0.009 (2; 8 polygons for 14
buildings become 15 and 13). Without the filter a lower threshold brings the specks back
(the fourteenth round: -0.004 to -0.022), so the whole percentile stays there.

The training labels also tell whether touching buildings should be split. Vector labels are
burnt with a gap between touching polygons, so each whole region of a label chip is one
labelled building; :func:`~geounet.vectorizing.instances.label_split_share` splits them as
``vectorize`` would split a prediction and records the share of their area that comes apart
(``split_share`` beside the sizes, from at least :data:`MIN_SPLIT_OBJECTS` objects;
``classify`` writes it into tag :data:`LABEL_SPLIT_TAG`). Labels that draw each roof apart are
rarely cut: ``oam_kampala`` 0 %, ``oam_zanzibar`` 1.2 %, ``spacenet_atlanta_pan`` 2.3 %,
``inria_austin`` 4.9 %. Dubai's six-class masks draw whole blocks as one building: 21 %, and
a network trained on them marks blocks, which the split cuts into several polygons each
(724 polygons for 313 buildings, object F1 0.079; not split: 421 and 0.243, the
twenty-seventh round of ``benchmarks/README.md``). So from :data:`MAX_LABEL_SPLIT_SHARE`
(10 %, twice Inria's share and half Dubai's) ``vectorize`` keeps touching buildings whole by
default (:func:`separate_from_tag`).

Example:
    >>> import numpy as np
    >>> lab = np.zeros((12, 12), np.uint8); lab[2:4, 2:4] = 1; lab[5:10, 5:10] = 1
    >>> sizes = object_sizes([lab], {1: "building"}, pixel_area_m2=0.25)
    >>> sizes["building"]["count"], sizes["building"]["p5_m2"], sizes["building"]["p75_m2"]
    (2, 1.0, 6.25)
    >>> min_area_from_sizes({"building": {"count": 40, "p10_m2": 7.04}})
    {'building': 7.0}
    >>> min_area_from_sizes(sizes)          # two objects are too few to tell
    {}
    >>> filtered_min_area(7.0)              # buildings, when the peak filter runs
    3.5
    >>> separate_from_tag('{"building": 0.21}', "building")   # labels of whole blocks
    (False, 0.21)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from geounet.core.types import IGNORE_INDEX

__all__ = [
    "FILTERED_MIN_AREA_FACTOR",
    "LABEL_SPLIT_TAG",
    "MAX_LABEL_SPLIT_SHARE",
    "MIN_AREA_FALLBACK_M2",
    "MIN_AREA_PERCENTILE",
    "MIN_AREA_TAG",
    "MIN_SPLIT_OBJECTS",
    "PERCENTILES",
    "filtered_min_area",
    "min_area_from_sizes",
    "min_area_from_tag",
    "object_sizes",
    "separate_from_tag",
    "split_shares_from_sizes",
    "whole_regions",
]

#: Percentiles of the object areas recorded per class.
PERCENTILES = (5, 10, 25, 50, 75)
#: The percentile of the training objects' areas used as the default ``min_area_m2``.
MIN_AREA_PERCENTILE = 10
#: ``min_area_m2`` when the training labels say nothing (no model, or fewer objects).
MIN_AREA_FALLBACK_M2 = 5.0
#: Fewest whole objects of a class for its percentile to be trusted.
MIN_OBJECTS = 5
#: Share of the default ``min_area_m2`` that buildings keep when the peak filter runs.
FILTERED_MIN_AREA_FACTOR = 0.5
#: Tag of a classified raster: JSON ``{class name: min_area_m2}`` from the training labels.
MIN_AREA_TAG = "GEOUNET_MIN_AREA_M2"
#: Tag of a classified raster: JSON ``{class name: share}``, the share of the training
#: labels' building area that the watershed split would cut (:func:`split_shares_from_sizes`).
LABEL_SPLIT_TAG = "GEOUNET_LABEL_SPLIT_SHARE"
#: Touching buildings are not split by default when the split cuts at least this share of the
#: training labels' own building area (labels that draw a block as one building).
MAX_LABEL_SPLIT_SHARE = 0.1
#: Fewest whole training objects for their split share to be trusted.
MIN_SPLIT_OBJECTS = 20
#: 4-connectivity.
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def whole_regions(lab: np.ndarray, value: int) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
    """The 4-connected regions of ``value`` that lie whole inside the chip ``lab``.

    Returns ``(regions, boxes, pixels, weights)``: the region label array and, for each region
    not touching the array border, ``(its label in regions, its bounding box as a pair of
    slices)``, its size in pixels and its sampling weight.

    A chip sees an ``h`` x ``w`` object whole in only ``(H - h - 1)(W - w - 1)`` of its
    ``H W`` positions, so larger objects are undercounted; each is weighted by the inverse
    of that fraction (the Miles-Lantuejoul edge correction).
    """
    from scipy import ndimage  # not at import: `geounet classify` reads only the tag helpers

    regions, n = ndimage.label(lab == value, structure=_CROSS)
    if n == 0:
        return regions, [], np.empty(0, dtype=np.int64), np.empty(0)
    counts = np.bincount(regions.ravel(), minlength=n + 1)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    counts[edge] = 0
    counts[0] = 0
    keep = np.flatnonzero(counts[1:] > 0)
    found = ndimage.find_objects(regions)
    boxes = [(k + 1, found[k]) for k in keep]
    hw = np.array([[sl[0].stop - sl[0].start, sl[1].stop - sl[1].start] for sl in found])
    h, w = lab.shape
    seen = (h - hw[keep, 0] - 1) * (w - hw[keep, 1] - 1) / (h * w)
    return regions, boxes, counts[keep + 1], 1.0 / seen


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: Iterable[float]) -> list:
    """Percentiles of ``values`` where each counts ``weights`` times (lower value at ties)."""
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(weights[order])
    return [float(v[min(np.searchsorted(cum, q / 100 * cum[-1]), len(v) - 1)]) for q in qs]


def object_sizes(
    labels: Iterable[np.ndarray], classes: Mapping[int, str], *, pixel_area_m2: float
) -> dict[str, dict[str, float]]:
    """Area distribution of the objects of each class in label chips.

    Args:
        labels: Label arrays ``(H, W)`` of class indices (255 = no label).
        classes: ``{class index: name}`` of the classes to measure (background left out).
        pixel_area_m2: Area of one pixel in square metres.

    Returns:
        ``{name: {"count", "p5_m2", "p10_m2", "p25_m2", "p50_m2", "p75_m2"}}`` for each class
        with at least one whole object. Regions touching a chip border are not counted; the
        others are weighted for the chance that a chip sees them whole, so the percentiles
        estimate those of the labelled objects themselves.
    """
    found: dict[int, list[tuple]] = {v: [] for v in classes if v != IGNORE_INDEX}
    for lab in labels:
        for value in found:
            found[value].append(whole_regions(np.asarray(lab), value)[2:])
    out: dict[str, dict[str, float]] = {}
    for value, parts in found.items():
        areas = np.concatenate([a for a, _ in parts]) * float(pixel_area_m2)
        if areas.size == 0:
            continue
        weights = np.concatenate([w for _, w in parts])
        stats: dict[str, float] = {"count": int(areas.size)}
        for q, a in zip(PERCENTILES, _weighted_percentiles(areas, weights, PERCENTILES)):
            stats[f"p{q}_m2"] = round(a, 3)
        out[classes[value]] = stats
    return out


def min_area_from_sizes(sizes: Mapping[str, Mapping[str, Any]] | None) -> dict[str, float]:
    """``{class name: min_area_m2}``: the 10th percentile of each class's object areas.

    Classes with fewer than :data:`MIN_OBJECTS` whole objects are left out. Values are
    rounded to 0.1 m².
    """
    key = f"p{MIN_AREA_PERCENTILE}_m2"
    return {
        name: round(float(s[key]), 1)
        for name, s in (sizes or {}).items()
        if key in s and s.get("count", 0) >= MIN_OBJECTS
    }


def filtered_min_area(min_area_m2: float) -> float:
    """The default ``min_area_m2`` of buildings when the peak filter also drops unsure ones.

    :data:`FILTERED_MIN_AREA_FACTOR` of the default, rounded to 0.1 m² (see the module
    docstring for why and what it measured).
    """
    return round(float(min_area_m2) * FILTERED_MIN_AREA_FACTOR, 1)


def min_area_from_tag(tag: str | None, names: Iterable[str], building: str) -> float | None:
    """The ``min_area_m2`` a classified raster's :data:`MIN_AREA_TAG` gives, or None.

    The building class's value when it has one, else the smallest value of the raster's
    classes ``names``. A missing or unreadable tag gives None.
    """
    if not tag:
        return None
    try:
        values = {str(k): float(v) for k, v in json.loads(tag).items()}
    except (ValueError, TypeError, AttributeError):
        return None
    values = {k: v for k, v in values.items() if k in set(names) and np.isfinite(v) and v >= 0}
    if not values:
        return None
    return values.get(building, min(values.values()))


def split_shares_from_sizes(sizes: Mapping[str, Mapping[str, Any]] | None) -> dict[str, float]:
    """``{class name: split_share}`` of the classes whose training labels measured one.

    The share (``split_share`` of :func:`~geounet.vectorizing.instances.label_split_share`)
    is kept when at least :data:`MIN_SPLIT_OBJECTS` whole objects measured it.
    """
    return {
        name: float(s["split_share"])
        for name, s in (sizes or {}).items()
        if "split_share" in s and s.get("split_objects", 0) >= MIN_SPLIT_OBJECTS
    }


def separate_from_tag(tag: str | None, building: str) -> tuple[bool, float | None]:
    """``(separate, share)``: whether ``vectorize`` splits touching buildings by default.

    ``share`` is the building class's value in a classified raster's :data:`LABEL_SPLIT_TAG`
    (None when the tag is missing, unreadable or has no such class: then split). Touching
    buildings are split unless the split cut at least :data:`MAX_LABEL_SPLIT_SHARE` of the
    training labels' own building area: labels that draw a city block as one building teach
    the network blocks, and splitting its blocks at their necks makes several polygons of
    each labelled building.
    """
    try:
        share = float(json.loads(tag)[building]) if tag else None
    except (ValueError, TypeError, KeyError, AttributeError):
        share = None
    if share is None or not np.isfinite(share):
        return True, None
    return share < MAX_LABEL_SPLIT_SHARE, share
