"""End-to-end jobs that the command line calls: one function per command.

These functions only compose the library (``prepare_data``, ``UnetClassifier``,
``classify_raster``, ``vectorize``, ``evaluate_rasters``); they hold no algorithm of their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geounet.app.scene_outputs import classify_and_vectorize
from geounet.core.errors import (
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    ModelFileError,
)
from geounet.core.paths import default_model_dir
from geounet.core.types import DEFAULT_BACKBONE, PathLike
from geounet.inference.options import ClassifyOptions
from geounet.io.remote import is_remote

__all__ = [
    "classify_and_vectorize",
    "classify_scene",
    "default_output",
    "describe",
    "fit_and_save",
    "metric_rows",
    "resolve_model",
    "train_model",
]


def resolve_model(model: PathLike | None) -> Path:
    """The model folder to use: ``model``, else ``$GEOUNET_MODEL``, else the demo's model.

    Raises:
        ModelFileError: No model given and none found, with how to get one.
    """
    if model is not None:
        return Path(model)
    found = default_model_dir()
    if found is None:
        raise ModelFileError(
            "no model given and no default model found; pass --model DIR (a folder written by "
            "`geounet train` or UnetClassifier.save), set GEOUNET_MODEL, or run `geounet demo` "
            "once to train the demo model."
        )
    return found


def default_output(image: PathLike, suffix: str = "_classified.tif") -> Path:
    """``<image stem>_classified.tif`` beside the image (in the working folder when remote)."""
    from geounet.io.remote import gdal_path, is_remote

    if is_remote(image):
        return Path.cwd() / (gdal_path(image).stem + suffix)
    p = Path(image)
    return p.with_name(p.stem + suffix)


def classify_scene(
    image: PathLike,
    *,
    model: PathLike | None = None,
    out: PathLike | None = None,
    vector: PathLike | None = None,
    device: str | None = None,
    options: ClassifyOptions | None = None,
) -> dict[str, Path]:
    """Classify one scene with a saved model, and optionally vectorize the result.

    Args:
        image: Input raster: a path, an ``http(s)://``/``s3://``/``gs://``/``az://`` URL or a
            STAC Item (then ``options.asset`` names the asset).
        model: Model folder (default: see :func:`resolve_model`).
        out: Output class raster (default: ``<image stem>_classified.tif`` beside the image).
        vector: Also write polygons / centre lines to this vector file.
        device: ``"cpu"``, ``"cuda"``... (default: CUDA when present).
        options: How to classify (:class:`~geounet.inference.options.ClassifyOptions`; its
            ``overwrite`` also applies to ``vector``).

    Returns:
        ``{"classified": path[, "vector": path, "vector_files": paths]}``, as
        :func:`~geounet.app.scene_outputs.classify_and_vectorize` names them.

    Raises:
        OutputExistsError: An output (class raster, probabilities, vector file) exists and
            ``options.overwrite`` is False; raised before the network runs.
    """
    from geounet.io.remote import is_remote
    from geounet.model.saved import SavedModel

    if not is_remote(image) and not Path(image).exists():
        raise InputNotFoundError(f"{image}: no such file; check the path.")
    clf = SavedModel.open(resolve_model(model), device=device)  # torch only if it runs
    out_path = Path(out) if out else default_output(image)
    return classify_and_vectorize(clf, image, out_path, vector=vector, options=options)[0]


def train_model(
    inputs: Sequence[PathLike],
    out: PathLike,
    *,
    labels: Sequence[PathLike] | None = None,
    classes: Mapping[Any, str] | None = None,
    backbone: str = DEFAULT_BACKBONE,
    encoder_weights: str | None = "imagenet",
    start_from: PathLike | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 8,
    chip_size: int = 256,
    overwrite: bool = False,
    ddp: bool = False,
    augment: bool | Mapping[str, Any] = True,
    fit_options: Mapping[str, Any] | None = None,
    **prepare_options: Any,
) -> dict[str, Any]:
    """Train a U-Net from a chip folder or from images + labels and save the model folder.

    Args:
        inputs: One chip folder, or image paths (then ``labels`` is required).
        out: Model folder to write.
        labels: Label rasters or vector files, one per image.
        classes: Class mapping passed to ``prepare_data``.
        backbone: Encoder name (``efficientnet-lite0`` works offline).
        encoder_weights: ``"imagenet"``, None or a local weights file.
        start_from: A saved model folder to fine-tune (``UnetClassifier(pretrained_path=)``:
            its network and weights; ``backbone`` and ``encoder_weights`` are then unused).
        epochs: Maximum epochs (early stopping may end sooner; None: as ``fit`` plans from
            the data and the device).
        lr: Learning rate (default: found with the LR finder).
        batch_size: Training batch size.
        chip_size: Chip size when chipping images.
        overwrite: Replace an existing model folder.
        ddp: Distributed data parallel in the processes started by ``torchrun`` (``fit(...,
            ddp=True)``; ``batch_size`` chips per process and step); only rank 0 writes the
            model folder. Needs a chip folder (every process reads it).
        augment: The training augmentation, as ``prepare_data(augment=)`` takes it (True: the
            recipe's; False: off; a mapping of some
            :class:`~geounet.data.augment.AugmentOptions` fields).
        fit_options: More :meth:`~geounet.app.classifier.UnetClassifier.fit` keywords
            (``refit_on_all``, ``time_budget_s``, ``seed``...).
        **prepare_options: More ``prepare_data`` keywords (when chipping images).

    Returns:
        ``{"model": path, "metrics": {...}, "written": bool, "epochs": int, "stopped_by": str,
        "kept_epoch": int}`` (``written``: False on the ranks other than 0 of a distributed
        run; ``epochs``, ``stopped_by`` and ``kept_epoch``: how many epochs the training ran,
        what ended it and which epoch gave the weights kept).

    Raises:
        InvalidParameterError: ``ddp`` with images instead of a chip folder; labels or
            chipping options with a chip folder.
    """
    from geounet.data.prepare import prepare_data

    chip_folder = len(inputs) == 1 and not is_remote(inputs[0]) and Path(inputs[0]).is_dir()
    if ddp and not chip_folder:
        raise InvalidParameterError(
            f"{', '.join(map(str, inputs))}: distributed training (--ddp) reads a chip folder, "
            "which every process shares; chip the images first (geounet prepare IMAGE --labels "
            "LABELS --out CHIPS), then run torchrun ... -m geounet train CHIPS --ddp."
        )
    chipping = [
        f"{key} (--{key.replace('_', '-')})"
        for key in ["labels"] * bool(labels) + sorted(set(prepare_options) - {"allow_no_crs"})
    ]
    if chip_folder and chipping:
        raise InvalidParameterError(
            f"{inputs[0]} is a chip folder: it was chipped and split already, so "
            f"{', '.join(chipping)} cannot change it; give the images (with --labels) to "
            "chip them again with these options, or drop them."
        )
    if chip_folder:
        data = prepare_data(inputs[0], batch_size=batch_size, augment=augment)
    else:
        data = prepare_data(
            list(inputs),
            labels=list(labels) if labels else None,
            classes=classes,
            chip_size=chip_size,
            batch_size=batch_size,
            augment=augment,
            **prepare_options,
        )
    fit_kw = {**(fit_options or {}), **({"ddp": True} if ddp else {})}
    clf = fit_and_save(
        data, out, backbone=backbone, encoder_weights=encoder_weights, epochs=epochs, lr=lr,
        overwrite=overwrite, fit_options=fit_kw, start_from=start_from,
    )  # fmt: skip
    run = clf.history.attrs
    return {"model": Path(out), "metrics": clf.config.metrics, "written": clf.writes_files,
            "epochs": run.get("epochs"), "stopped_by": run.get("stopped_by"),
            "kept_epoch": run.get("kept_epoch")}  # fmt: skip


def fit_and_save(
    data: Any,
    out: PathLike,
    *,
    backbone: str | None,
    encoder_weights: str | None,
    epochs: int | None = None,
    lr: float | None = None,
    overwrite: bool = False,
    fit_options: Mapping[str, Any] | None = None,
    start_from: PathLike | None = None,
) -> Any:
    """Build a U-Net on ``data`` (or start from a saved one), fit it, save the folder ``out``.

    Args:
        data: A :class:`~geounet.data.prepare.GeoData`.
        out: Model folder to write.
        backbone: Encoder name (see :class:`~geounet.app.classifier.UnetClassifier`).
        encoder_weights: ``"imagenet"``, None or a local weights file.
        epochs: Maximum epochs (early stopping may end sooner; None: as ``fit`` plans).
        lr: Learning rate (default: as ``fit`` chooses).
        overwrite: Replace an existing model folder.
        fit_options: More :meth:`~geounet.app.classifier.UnetClassifier.fit` keywords
            (``early_stopping``, ``time_budget_s``, ``progress``...).
        start_from: A saved model folder to fine-tune instead of a new network.

    Returns:
        The trained :class:`~geounet.app.classifier.UnetClassifier`.
    """
    from geounet.app.classifier import UnetClassifier

    if start_from is not None:
        clf = UnetClassifier(data, pretrained_path=start_from)
    else:
        clf = UnetClassifier(data, backbone=backbone, encoder_weights=encoder_weights)
    clf.fit(epochs, lr=lr, **dict(fit_options or {}))
    clf.save(out, overwrite=overwrite)
    return clf


def describe(path: PathLike) -> list[tuple[str, str]]:
    """Rows ``(field, value)`` describing a raster, a vector file, a model or a chip folder.

    A raster may be remote (a URL, an ``s3://``/``gs://``/``az://`` URI, a STAC Item):
    only its header is read, with range requests. A vector file (labels, or what
    ``vectorize`` wrote) gets a row per layer: geometry type, feature count, CRS, fields.
    """
    if is_remote(path):
        return _describe_raster(path)
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file or folder; check the path.")
    if p.is_dir() and (p / "geounet.json").exists():
        return _describe_json(p / "geounet.json", "model folder")
    if p.is_dir() and (p / "manifest.json").exists():
        return _describe_json(p / "manifest.json", "chip folder")
    try:
        return _describe_raster(p)
    except InvalidRasterError as err:
        vector = _describe_vector(p)
        if vector is not None:
            return vector
        if p.is_dir():
            raise InvalidRasterError(
                f"{p}: a folder that is neither a model folder (geounet.json) nor a chip folder "
                "(manifest.json); give one of those, a raster or a vector file."
            ) from err
        raise InvalidRasterError(
            f"{err} It is not a vector file GDAL can read either (a GeoPackage, GeoJSON, "
            "Shapefile...)."
        ) from err


def _describe_vector(path: Path) -> list[tuple[str, str]] | None:
    """Rows for a vector file, one per layer; None when GDAL reads no vector layer in it."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        infos = [pyogrio.read_info(path, layer=name, force_total_bounds=True) for name in layers]
    except (DataSourceError, DataLayerError, OSError):  # not a vector file either
        return None
    if not layers:
        return None
    rows = [("kind", "vector"), ("path", str(path)), ("layers", str(len(layers)))]
    for name, info in zip(layers, infos, strict=True):
        fields = ", ".join(str(f) for f in info["fields"]) or "none"
        crs = info.get("crs") or "none"
        rows.append((f"layer {name}", f"{info['features']} {info['geometry_type']}, crs {crs}"))
        bounds = info.get("total_bounds")
        if bounds is not None and info["features"]:
            digits = 6 if max(abs(float(v)) for v in bounds) <= 360 else 3  # degrees or metres
            rows.append(("  bounds", ", ".join(f"{v:.{digits}f}" for v in bounds)))
        rows.append(("  fields", fields))
    return rows


def _describe_json(path: Path, kind: str) -> list[tuple[str, str]]:
    meta = json.loads(path.read_text())
    rows = [("kind", kind), ("path", str(path.parent))]
    for key in ("arch", "backbone", "in_channels", "chip_size", "source_dtype"):
        if key in meta:
            rows.append((key, str(meta[key])))
    if "gsd_m" in meta:
        gsd = meta["gsd_m"]
        rows.append(("pixel size", "none (no CRS)" if gsd is None else f"{gsd:.3g} m"))
    if "classes" in meta:
        rows.append(("classes", ", ".join(f"{c['name']} ({c['color']})" for c in meta["classes"])))
    if "band_names" in meta:
        rows.append(("bands", _model_bands_row(meta)))
    if "chips" in meta:
        splits: dict[str, int] = {}
        for chip in meta["chips"]:
            splits[chip["split"]] = splits.get(chip["split"], 0) + 1
        rows.append(("chips", ", ".join(f"{k}: {v}" for k, v in sorted(splits.items()))))
    for key, value in metric_rows(meta.get("metrics")):
        rows.append((f"metric {key}", f"{value:.4g}"))
    return rows + _vectorize_defaults(meta.get("object_sizes"), meta.get("gsd_m") is not None)


def _model_bands_row(meta: Mapping[str, Any]) -> str:
    """``red, green, blue (bands 1, 2, 3 of 4-band images)``: what a scene must give the model."""
    names = ", ".join(meta["band_names"])
    bands, count = meta.get("bands"), meta.get("source_band_count")
    if not bands or not count:
        return names
    return f"{names} (bands {', '.join(map(str, bands))} of {count}-band images)"


def metric_rows(metrics: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """The validation figures worth a line: mIoU, accuracy, then each class's IoU.

    Example:
        >>> metric_rows({"miou": 0.6, "per_class": {"building": {"iou": 0.5, "f1": 0.7}}})
        [('miou', 0.6), ('iou building', 0.5)]
    """
    rows = [(k, float(v)) for k, v in (metrics or {}).items() if isinstance(v, int | float)]
    for name, figures in ((metrics or {}).get("per_class") or {}).items():
        if isinstance(figures, Mapping) and isinstance(figures.get("iou"), int | float):
            rows.append((f"iou {name}", float(figures["iou"])))
    return rows


def _vectorize_defaults(sizes: Any, metres: bool) -> list[tuple[str, str]]:
    """Rows saying what the training labels set for ``vectorize``: smallest area, the split."""
    from geounet.vectorizing.sizes import (
        MAX_LABEL_SPLIT_SHARE,
        min_area_from_sizes,
        split_shares_from_sizes,
    )

    rows = []
    unit = "m²" if metres else "px²"
    areas = min_area_from_sizes(sizes)
    if areas:
        text = ", ".join(f"{k} {v:g} {unit}" for k, v in areas.items())
        half = " (buildings: half that with probabilities)" if "building" in areas else ""
        rows.append(("vectorize min area", text + half))
    share = split_shares_from_sizes(sizes).get("building")
    if share is not None:
        what = "kept whole" if share >= MAX_LABEL_SPLIT_SHARE else "split"
        text = f"{what} (the split would cut {share:.1%} of the labelled buildings' area)"
        rows.append(("vectorize touching buildings", text))
    return rows


def _grid_rows(info: Any) -> list[tuple[str, str]]:
    """What else decides how the pixels are read: masks, a rotated or north-down grid."""
    import math

    import rasterio

    from geounet.io.raster import mask_source

    rows = []
    with rasterio.open(info.path) as src:
        masked_by = mask_source(src, info.alpha_band)
    if masked_by == "alpha":
        rows.append(("mask", f"alpha band {info.alpha_band} (transparent pixels are nodata)"))
    elif masked_by == "mask":
        rows.append(("mask", "a mask band (its masked pixels are nodata)"))
    t = info.transform
    if t.b or t.d:
        angle = math.degrees(math.atan2(t.d, t.a))
        rows.append(("grid", f"rotated or sheared ({angle:.1f} degrees): labels follow it"))
    elif t.e > 0:
        rows.append(("grid", "north down (rows run south to north)"))
    return rows


def _describe_raster(path: PathLike) -> list[tuple[str, str]]:
    from geounet.evaluation.scores import class_names_of
    from geounet.io.raster import open_raster

    info = open_raster(path, allow_no_crs=True)
    crs = info.crs.to_string() if info.crs else "none (pixel coordinates)"
    rows = [
        ("kind", "raster"),
        ("path", str(info.path)),
        ("size", f"{info.width} x {info.height} pixels"),
        ("bands", f"{info.count} ({', '.join(info.band_names)})"),
        ("dtype", info.dtype),
        ("crs", crs),
        ("pixel size", f"{info.gsd_m:.3f} m" if info.crs else f"{info.gsd_m:.3f} px"),
        ("bounds", ", ".join(f"{v:.3f}" for v in info.bounds)),
        ("nodata", str(info.nodata)),
    ]
    rows += _grid_rows(info)
    names = class_names_of(info)
    if names:
        rows.append(("classes", ", ".join(f"{k}={v}" for k, v in sorted(names.items()))))
    return rows
