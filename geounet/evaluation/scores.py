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
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geounet.core.classes import parse_classes, parse_classes_tag
from geounet.core.errors import CRSMismatchError, LabelError
from geounet.core.types import PathLike
from geounet.evaluation.metrics import cohen_kappa, mean_iou, per_class_metrics, pixel_accuracy
from geounet.evaluation.pixels import (
    Grid,
    RasterBlocks,
    bounds_in,
    check_overlap,
    lookup_table,
    stream_confusion,
)
from geounet.io.raster import RasterInfo, atomic_output, open_raster

__all__ = [
    "class_indices",
    "class_names_of",
    "evaluate_rasters",
    "pixel_report",
    "raster_pair_grid",
    "require_class_names",
    "write_report",
]


def class_names_of(info: RasterInfo) -> dict[int, str] | None:
    """The ``{index: name}`` stored in a classified raster's ``CLASSES`` tag, if any."""
    with rasterio.open(info.path) as src:
        tag = src.tags().get("CLASSES")
    return parse_classes_tag(tag, info.path) if tag else None


def class_indices(
    classes: Mapping[int, str] | Sequence[str] | str | None, info: RasterInfo | None
) -> dict[int, str] | None:
    """``{class index: name}`` from ``classes`` or, when None, the raster's ``CLASSES`` tag.

    Any spelling :func:`geounet.core.classes.parse_classes` reads is accepted (a list of
    names means 1, 2, ...); index 0 is named ``background`` unless given.
    """
    if classes is None:
        return class_names_of(info) if info is not None else None
    parsed = parse_classes(classes, integer_values=True) or {}
    out = {int(k): str(v) for k, v in parsed.items()}
    out.setdefault(0, "background")
    return dict(sorted(out.items()))


def require_class_names(names: dict[int, str] | None, info: RasterInfo) -> dict[int, str]:
    """``names`` if known, else a clear error naming the raster and the fix.

    Raises:
        LabelError: ``names`` is empty or None.
    """
    if not names:
        raise LabelError(
            f"{info.path}: no class names (no CLASSES tag); pass classes={{index: name}} "
            "(--classes 0=background,1=building)."
        )
    return names


def raster_pair_grid(pinfo: RasterInfo, tinfo: RasterInfo) -> Grid:
    """The prediction's grid, after checking the truth raster can be read on it.

    Raises:
        CRSMismatchError: The rasters do not overlap (in any CRS), or one has no CRS and
            their sizes differ.
    """
    grid = Grid.of(pinfo)
    if None in (pinfo.crs, tinfo.crs):
        if (pinfo.width, pinfo.height) != (tinfo.width, tinfo.height):
            raise CRSMismatchError(
                f"{pinfo.path} ({pinfo.width}x{pinfo.height}) and {tinfo.path} "
                f"({tinfo.width}x{tinfo.height}): one has no CRS, so they can only be compared "
                "pixel for pixel, and their sizes differ. Assign both a CRS "
                "(gdal_edit.py -a_srs EPSG:XXXX) or give rasters of the same size."
            )
        return grid
    truth_bounds = bounds_in(tinfo.bounds, tinfo.crs, pinfo.crs)
    check_overlap(grid.bounds, truth_bounds, str(pinfo.path), str(tinfo.path))
    return grid


def pixel_report(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The pixel metrics of a confusion matrix as plain JSON-ready values."""
    table = per_class_metrics(cm, list(labels))
    return {
        "classes": list(labels),
        "pixel_accuracy": float(pixel_accuracy(cm)),
        "miou": float(mean_iou(cm)),
        "kappa": float(cohen_kappa(cm)),
        "per_class": json.loads(table.to_json()),
        "confusion_matrix": cm.tolist(),
        "pixels": int(cm.sum()),
    }


def evaluate_rasters(
    pred: PathLike,
    truth: PathLike,
    *,
    classes: Mapping[int, str] | Sequence[str] | None = None,
    truth_values: Mapping[int, int] | None = None,
    block: int = 1024,
    allow_no_crs: bool = False,
) -> dict[str, Any]:
    """Per-class precision, recall, F1 and IoU of a classified raster against a truth raster.

    Args:
        pred: Classified raster (class indices, 255 nodata), e.g. written by ``classify``.
        truth: Truth raster. By default it holds the same class indices; otherwise give
            ``truth_values`` = ``{truth value: class index}`` (e.g. ``{0: 0, 255: 1}``).
        classes: ``{index: name}`` (or a list of names for 1, 2, ...); default: the
            prediction's ``CLASSES`` tag.
        truth_values: Mapping of raw truth values to class indices, applied before the
            truth's nodata and footprint mask; unmapped values are not scored.
        block: Window size used to stream.
        allow_no_crs: Accept rasters without a CRS (compared pixel for pixel).

    Returns:
        ``{"prediction", "truth", "classes", "pixel_accuracy", "miou", "kappa", "per_class"
        (dict of metric -> {class: value}), "confusion_matrix" (list of lists, rows truth),
        "pixels"}``.

    Raises:
        CRSMismatchError: The rasters do not overlap.
        LabelError: Class names unknown (no ``CLASSES`` tag and no ``classes``).
        MissingCRSError: A raster has no CRS and ``allow_no_crs`` is False.
    """
    pinfo = open_raster(pred, allow_no_crs=allow_no_crs)
    tinfo = open_raster(truth, allow_no_crs=allow_no_crs)
    names = require_class_names(class_indices(classes, pinfo), pinfo)
    grid = raster_pair_grid(pinfo, tinfo)
    n = max(names) + 1
    with ExitStack() as stack:
        p = RasterBlocks(pinfo, grid, stack, n)
        t = RasterBlocks(tinfo, grid, stack, n, lookup_table(truth_values))
        cm = stream_confusion(p, t, grid, n, block)
    labels = [names.get(i, f"class_{i}") for i in range(n)]
    return {"prediction": str(pinfo.path), "truth": str(tinfo.path), **pixel_report(cm, labels)}


def _json_safe(value: Any) -> Any:
    """``value`` with NaN / infinite floats as None (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(report: Mapping[str, Any], path: PathLike, *, overwrite: bool = False) -> Path:
    """Write an evaluation result as indented, strict JSON (NaN as null), atomically."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n")
    return Path(path)
