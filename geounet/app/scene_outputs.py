"""Classify a scene and vectorize it with the building probabilities at hand.

What ``geounet classify --vector``, ``UnetClassifier.classify(image, out, vector)``, the demo
and the QGIS *Classify and vectorize* tool share. Apart from :mod:`geounet.app.workflows`
so that the classifier's own methods can call it (the workflows import the classifier).
"""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from geounet.core.types import PathLike
from geounet.inference.options import ClassifyOptions

__all__ = ["classify_and_vectorize"]


def classify_and_vectorize(
    clf: Any,
    image: PathLike,
    out: PathLike,
    *,
    vector: PathLike | None = None,
    options: ClassifyOptions | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Classify ``image`` with a loaded model into ``out``, then optionally vectorize it.

    Every output is checked before the network runs. With ``vector`` the building
    probabilities are at hand when vectorizing (beside ``out`` by default; in a temporary file
    when ``options.probabilities`` is False), so buildings the network was never sure of are
    dropped (:mod:`geounet.vectorizing.confidence`); with ``options.resume`` only when kept
    (a resumed run must name the same outputs as the interrupted one).

    Args:
        clf: A :class:`~geounet.app.classifier.UnetClassifier` (or an object with
            ``network``, ``config`` and ``device``).
        image: Input raster.
        out: Output class raster.
        vector: Also write polygons / centre lines to this vector file.
        options: How to classify (:class:`~geounet.inference.options.ClassifyOptions`; its
            ``overwrite`` also applies to ``vector``).

    Returns:
        ``({"classified": path[, "vector": path, "vector_files": paths]}, layers)``: the
        layers are ``{class name: GeoDataFrame}`` (empty without ``vector``); ``vector`` is
        the vector file (``.gpkg`` added to a name without extension), ``vector_files`` the
        files of a format that writes one per class (``<stem>_<class>.shp``...).
    """
    from geounet.inference.classify import classify_with_options

    opts = (options or ClassifyOptions()).for_output(out)
    if vector:  # every output is checked before any work (classify checks its rasters)
        from geounet.io.vectors import check_outputs, vector_output_path  # geopandas: here

        check_outputs(vector, clf.config.class_names[1:], overwrite=opts.overwrite)
    with ExitStack() as stack:
        if vector and opts.probabilities is None and not opts.resume:
            # beside the output, on the disk chosen for it (not /tmp, which may be in memory)
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=".geounet-", dir=Path(out).parent)
            )
            opts = dataclasses.replace(opts, probabilities=Path(tmp) / "probabilities.tif")
        result = {"classified": classify_with_options(clf, image, out, opts)}
        layers: dict[str, Any] = {}
        if vector:
            from geounet.vectorizing.pipeline import vectorize

            layers = vectorize(
                out,
                vector,
                probabilities=opts.probabilities,
                overwrite=opts.overwrite,
                allow_no_crs=opts.allow_no_crs,
            )
            result["vector"] = vector_output_path(vector)  # ".gpkg" added to a bare name
            files = list(dict.fromkeys(Path(g.attrs["path"]) for g in layers.values()))
            if files and files != [result["vector"]]:  # a file per class: <stem>_<class>.ext
                result["vector_files"] = files
    return result, layers
