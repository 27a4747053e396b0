"""Compare a classified raster with a truth raster: per-class pixel metrics, streamed.

The truth is read on the prediction's grid (resampled with nearest neighbour when its grid
or CRS differ), window by window, into a confusion matrix; nodata in either is ignored.

Example:
    Not run as a doctest: it needs a classified raster and a truth raster on disk.

    >>> report = evaluate_rasters("classified.tif", "truth.tif")     # doctest: +SKIP
    >>> report["per_class"]["iou"]["building"]                        # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geounet.core.classes import parse_classes, parse_classes_tag
from geounet.core.errors import CRSMismatchError, LabelError
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.evaluation.metrics import (
    ConfusionAccumulator,
    mean_iou,
    per_class_metrics,
    pixel_accuracy,
)
from geounet.io.raster import RasterInfo, atomic_output, iter_windows, open_raster

__all__ = ["class_names_of", "evaluate_rasters", "write_report"]


def class_names_of(info: RasterInfo) -> dict[int, str] | None:
    """The ``{index: name}`` stored in a classified raster's ``CLASSES`` tag, if any."""
    with rasterio.open(info.path) as src:
        tag = src.tags().get("CLASSES")
    if not tag:
        return None
    return parse_classes_tag(tag, info.path)


def _lut(truth_values: Mapping[int, int] | None) -> np.ndarray | None:
    if truth_values is None:
        return None
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for value, index in truth_values.items():
        lut[int(value)] = int(index)
    return lut


def _overlaps(a: RasterInfo, b: RasterInfo) -> bool:
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    return ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1


def evaluate_rasters(
    pred: PathLike,
    truth: PathLike,
    *,
    classes: Mapping[int, str] | None = None,
    truth_values: Mapping[int, int] | None = None,
    block: int = 1024,
) -> dict[str, Any]:
    """Per-class precision, recall, F1 and IoU of a classified raster against a truth raster.

    Args:
        pred: Classified raster (class indices, 255 nodata), e.g. written by ``classify``.
        truth: Truth raster. By default it holds the same class indices; otherwise give
            ``truth_values`` = ``{truth value: class index}`` (e.g. ``{0: 0, 255: 1}``).
        classes: ``{index: name}``; default: the prediction's ``CLASSES`` tag.
        truth_values: Mapping of truth values to class indices; unmapped values are ignored.
        block: Window size used to stream.

    Returns:
        ``{"classes", "pixel_accuracy", "miou", "per_class" (dict of metric -> {class: value}),
        "confusion_matrix" (list of lists, rows truth), "pixels"}``.

    Raises:
        CRSMismatchError: The rasters do not overlap.
        LabelError: Class names unknown (no ``CLASSES`` tag and no ``classes``).
    """
    pinfo = open_raster(pred, allow_no_crs=True)
    tinfo = open_raster(truth, allow_no_crs=True)
    names = parse_classes(classes, integer_values=True) if classes else class_names_of(pinfo)
    if names:
        names = {0: "background", **names}
    if not names:
        raise LabelError(
            f"{pinfo.path}: no class names (no CLASSES tag); pass classes={{index: name}} "
            "(--classes 0=background,1=building)."
        )
    same_grid = (tinfo.crs, tinfo.transform, tinfo.width, tinfo.height) == (
        pinfo.crs,
        pinfo.transform,
        pinfo.width,
        pinfo.height,
    )
    comparable = tinfo.crs == pinfo.crs or None in (tinfo.crs, pinfo.crs)
    if not same_grid and comparable and not _overlaps(pinfo, tinfo):
        raise CRSMismatchError(
            f"{pinfo.path} (extent {pinfo.bounds}) and {tinfo.path} (extent {tinfo.bounds}) "
            "do not overlap; give the truth raster of the same area."
        )
    n = max(names) + 1
    acc = ConfusionAccumulator(n)
    lut = _lut(truth_values)
    with rasterio.open(pinfo.path) as psrc, rasterio.open(tinfo.path) as tsrc:
        tds = tsrc
        if not same_grid:
            tds = WarpedVRT(
                tsrc,
                crs=pinfo.crs or tsrc.crs,
                transform=pinfo.transform,
                width=pinfo.width,
                height=pinfo.height,
                resampling=Resampling.nearest,
                nodata=tinfo.nodata if tinfo.nodata is not None else IGNORE_INDEX,
            )
        for win in iter_windows(pinfo.height, pinfo.width, block):
            p = psrc.read(1, window=win)
            t = tds.read(1, window=win)
            if tinfo.nodata is not None:
                t = np.where(t == tinfo.nodata, IGNORE_INDEX, t)
            t = lut[t.astype(np.int64)] if lut is not None else t
            p = np.where(p >= n, IGNORE_INDEX, p)
            t = np.where(t >= n, IGNORE_INDEX, t)
            acc.update(p.astype(np.int64), t.astype(np.int64))
        if tds is not tsrc:
            tds.close()
    cm = acc.matrix
    labels = [names.get(i, f"class_{i}") for i in range(n)]
    table = per_class_metrics(cm, labels)
    return {
        "prediction": str(pinfo.path),
        "truth": str(tinfo.path),
        "classes": labels,
        "pixel_accuracy": float(pixel_accuracy(cm)),
        "miou": float(mean_iou(cm)),
        "per_class": json.loads(table.to_json()),
        "confusion_matrix": cm.tolist(),
        "pixels": int(cm.sum()),
    }


def write_report(report: Mapping[str, Any], path: PathLike, *, overwrite: bool = False) -> Path:
    """Write an evaluation report as indented JSON (atomically)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    return Path(path)
