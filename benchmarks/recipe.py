"""The analyst's protocol on real imagery: label part of an area, train with defaults, map the rest.

For each labelled real scene in ``../shared/data`` the area is split into a training part and a
test part (windowed GeoTIFF crops that keep the transform, written under ``--out``), then the
library is run with its defaults only::

    data = prepare_data(train_image, train_labels, classes=...)
    model = UnetClassifier(data)
    model.fit()
    model.classify(test_image, "classified.tif")  # the probabilities beside it by default
    vectorize("classified.tif")  # uses the probabilities classify named in the class raster

and the test part is scored: pixel IoU per class and mIoU (confusion matrix of the class raster
against the labels rasterized onto the test grid by the library's own label reader), building
object F1 (one-to-one matching at IoU >= 0.5, the SpaceNet metric, with
:func:`geounet.evaluation.metrics.match_polygons`), predicted and true building counts, and the
training minutes, and whether touching buildings were split (``separated``: ``vectorize``'s
default follows ``label_split_share``, the share of the training buildings the split would
cut; see :mod:`geounet.vectorizing.sizes`). The probabilities are what ``vectorize`` drops
unsure buildings with (as ``geounet classify --vector`` does); ``classify`` writes them by
default, here under names of their own so that saved runs stay comparable: the trained model
(``SCENE/model``), class rasters and probability rasters (``SCENE/probabilities_NN.tif``)
stay under ``--out`` to compare runs afterwards.

Scenes (``--scene NAME`` runs one):

========================  ============================================================
``inria_austin``          top half trains, bottom half tests (mask 0 / 255: ``{255: "building"}``)
``oam_zanzibar``          left two thirds train, right third tests (OSM polygons)
``oam_kampala``           top half trains, bottom half tests (dense, touching roofs)
``spacenet_atlanta_pan``  top half trains, bottom half tests (16-bit panchromatic)
``dubai_multiclass``      tiles 1-3 train, tile 4 tests (six-class colour masks, no CRS)
``vegas_roads_rgb``       top half trains, bottom half tests (SpaceNet-3 road centre lines,
                          RGB + alpha, lon/lat grid)
``vegas_roads_pan``       the same tile in 16-bit panchromatic (9 centre lines)
========================  ============================================================

True buildings: the vector labels reprojected and clipped to the test part (pieces under
2 m² dropped), or, for label rasters, the 4-connected building regions of the test part.

Road scenes train on the centre lines themselves (``prepare_data`` buffers them by its
default ``line_width_m``, 4 m: the SpaceNet road-mask convention) and are scored on the
centre lines ``vectorize`` draws against the true ones clipped to the test part, in the local
UTM zone: length-based completeness, correctness and quality within 3 m
(:func:`geounet.evaluation.metrics.line_completeness_correctness`) and APLS
(:func:`geounet.evaluation.apls.apls`), with the road pixel IoU; no building figures.

The last line printed is one JSON object ``{"scenes": {name: {...}}, ...}``.

Usage::

    python benchmarks/recipe.py                        # every scene
    python benchmarks/recipe.py --scene oam_kampala
    python benchmarks/recipe.py --scene oam_kampala --epochs 1   # smoke run, not the protocol
    python benchmarks/recipe.py --scene inria_austin --seed 2    # fit(seed=2): one more draw
    python benchmarks/recipe.py --scene inria_austin --seed 1 --prepare stride=64  # a variant
    python benchmarks/recipe.py --scene inria_austin --seed 1 --chip-views 2000  # fit's plan
    python benchmarks/recipe.py --scene oam_kampala --model "decoder_channels=(128,64,32,16,8)"
    python benchmarks/recipe.py --scene oam_zanzibar --seed 1 --fit checkpoint=False
    python benchmarks/recipe.py --scene oam_zanzibar --seed 1 --vectorize grow_confidence=0.2

A single run moves object F1 by 0.05-0.20 on these small test parts; compare a variant with
the defaults over the same seeds (``--seed``) before calling it a gain. ``--prepare KEY=VALUE``
(repeatable) passes one more keyword to ``prepare_data``; the values are read as Python
literals (``stride=64``, ``val_fraction=0.1``, ``separate_touching=None``,
``augment={'grayscale': 0.25}`` for augmentation options); ``--model KEY=VALUE`` the same to
``UnetClassifier`` (``decoder_channels=(128,64,32,16,8)``), ``--fit KEY=VALUE`` to ``fit``
(``checkpoint=False``, ``refit_on_all=True``); ``--chip-views N`` plans ``fit()``
for about N chip views instead of the library's ``TARGET_CHIP_VIEWS``.

``--label-area`` gives the training part the other way an analyst can: the whole image and
its whole labels with a polygon of the training part as ``prepare_data(label_area=)``. The
labelled pixels and the chips are the same; the statistics cover the whole image, and the
default ``val_strip="auto"`` puts the validation strip away from the part to map (Zanzibar:
at the left, so the labels beside the right third train).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio import features
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geounet.app.classifier import UnetClassifier
from geounet.core.errors import GeounetError
from geounet.data.labels import open_labels
from geounet.data.prepare import prepare_data
from geounet.evaluation.apls import apls
from geounet.evaluation.metrics import (
    confusion_matrix,
    line_completeness_correctness,
    match_polygons,
    mean_iou,
    per_class_metrics,
)
from geounet.io.raster import open_raster
from geounet.model import schedule
from geounet.vectorizing.pipeline import vectorize

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
MIN_TRUTH_AREA = 2.0  # m² (pixels² without a CRS): slivers of buildings cut by the test edge
ROAD_BUFFER_M = 3.0  # tolerance of the road centre-line scores (SpaceNet roads: about 3 m)
DUBAI_CLASSES = {
    "#3C1098": "building",
    "#8429F6": "land",
    "#6EC1E4": "road",
    "#FEDD3A": "vegetation",
    "#E2A929": "water",
    "#9B9B9B": "unlabeled",
}


@dataclass
class Scene:
    """One benchmark scene, cut into training and test parts.

    Attributes:
        train_images: Images to train on.
        train_labels: Their labels (one per image).
        test_images: Images to map.
        test_labels: Their labels (one per image).
        classes: ``classes=`` of ``prepare_data``.
        allow_no_crs: The imagery has no CRS.
        vector_truth: True building polygons come from the vector labels (else from the raster).
        whole: The whole image, its labels and the training window, for the analyst's other
            way of giving the training part (``--label-area``): the whole image with a
            polygon of the labelled part (None: the scene has no single image to cut).
        objects: What the mapped part is scored on beside its pixels: ``"building"``
            polygons (object F1, counts) or ``"road"`` centre lines (completeness,
            correctness, quality, APLS; the labels are the true lines).
    """

    train_images: list[Path]
    train_labels: list[Path]
    test_images: list[Path]
    test_labels: list[Path]
    classes: Any
    allow_no_crs: bool = False
    vector_truth: bool = False
    whole: tuple[Path, Path, Window] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    objects: str = "building"


def crop(src_path: Path, dst: Path, window: Window) -> Path:
    """Write ``window`` of a raster as a GeoTIFF that keeps its georeferencing."""
    with rasterio.open(src_path) as src:
        profile = src.profile.copy()
        profile.update(
            driver="GTiff",
            width=int(window.width),
            height=int(window.height),
            transform=src.window_transform(window),
            tiled=False,
            compress="deflate",
        )
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        data = src.read(window=window)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def train_window(image: Path, how: str) -> tuple[Window, Window]:
    """The training and test windows of an image: its ``"top"`` half or ``"left"`` two thirds."""
    with rasterio.open(image) as src:
        w, h = src.width, src.height
    if how == "top":
        return Window(0, 0, w, h // 2), Window(0, h // 2, w, h - h // 2)
    cut = round(w * 2 / 3)
    return Window(0, 0, cut, h), Window(cut, 0, w - cut, h)


def area_file(image: Path, window: Window, dst: Path) -> Path:
    """Write the outline of ``window`` of ``image`` as a GeoPackage polygon (its labelled area)."""
    with rasterio.open(image) as src:
        box = shapely.box(*rasterio.windows.bounds(window, src.transform))
        crs = src.crs
    dst.parent.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(geometry=[box], crs=crs).to_file(dst)
    return dst


def _halves(folder: Path, out: Path, how: str) -> tuple[Path, Path, Path | None, Path | None]:
    """Crop ``image.tif`` (and ``buildings_mask.tif`` when present) into train / test parts."""
    image = folder / "image.tif"
    train_win, test_win = train_window(image, how)
    mask = folder / "buildings_mask.tif"
    out.mkdir(parents=True, exist_ok=True)
    tr = crop(image, out / "train.tif", train_win)
    te = crop(image, out / "test.tif", test_win)
    if not mask.exists():
        return tr, te, None, None
    return (
        tr,
        te,
        crop(mask, out / "train_mask.tif", train_win),
        crop(mask, out / "test_mask.tif", test_win),
    )


def scene_inria(data: Path, out: Path) -> Scene:
    """Inria Austin: top half trains, bottom half tests; the mask's 255 is building."""
    folder = data / "inria_austin"
    tr, te, trm, tem = _halves(folder, out, "top")
    assert trm is not None and tem is not None
    whole = (folder / "image.tif", folder / "buildings_mask.tif", _train(folder, "top"))
    return Scene([tr], [trm], [te], [tem], {255: "building"}, whole=whole)


def _train(folder: Path, how: str) -> Window:
    return train_window(folder / "image.tif", how)[0]


def _vector_scene(data: Path, out: Path, name: str, how: str) -> Scene:
    tr, te, _, _ = _halves(data / name, out, how)
    labels = data / name / "buildings.geojson"
    whole = (data / name / "image.tif", labels, _train(data / name, how))
    return Scene([tr], [labels], [te], [labels], ["building"], vector_truth=True, whole=whole)


def scene_zanzibar(data: Path, out: Path) -> Scene:
    """OAM Zanzibar: left two thirds train, right third tests."""
    return _vector_scene(data, out, "oam_zanzibar", "left")


def scene_kampala(data: Path, out: Path) -> Scene:
    """OAM Kampala: top half trains, bottom half tests."""
    return _vector_scene(data, out, "oam_kampala", "top")


def scene_atlanta(data: Path, out: Path) -> Scene:
    """SpaceNet Atlanta panchromatic: top half trains, bottom half tests."""
    return _vector_scene(data, out, "spacenet_atlanta_pan", "top")


def _road_scene(data: Path, out: Path, name: str) -> Scene:
    tr, te, _, _ = _halves(data / name, out, "top")
    lines = data / name / "roads.geojson"
    whole = (data / name / "image.tif", lines, _train(data / name, "top"))
    return Scene(
        [tr], [lines], [te], [lines], ["road"], vector_truth=True, whole=whole, objects="road"
    )


def scene_vegas_rgb(data: Path, out: Path) -> Scene:
    """SpaceNet-3 Las Vegas, RGB + alpha, road centre lines: top half trains, bottom tests."""
    return _road_scene(data, out, "spacenet_vegas_roads_rgb")


def scene_vegas_pan(data: Path, out: Path) -> Scene:
    """SpaceNet-3 Las Vegas, 16-bit panchromatic, road centre lines: top half trains."""
    return _road_scene(data, out, "spacenet_vegas_roads_pan")


def scene_dubai(data: Path, out: Path) -> Scene:
    """Dubai six classes: tiles 1-3 train, tile 4 tests (colour masks, no CRS)."""
    root = data / "dubai_multiclass"

    def parts(tiles: list[int]) -> tuple[list[Path], list[Path]]:
        imgs = sorted(p for t in tiles for p in (root / f"tile_{t}" / "images").glob("*.jpg"))
        return imgs, [p.parent.parent / "masks" / (p.stem + ".png") for p in imgs]

    tri, trl = parts([1, 2, 3])
    tei, tel = parts([4])
    return Scene(tri, trl, tei, tel, DUBAI_CLASSES, allow_no_crs=True)


SCENES: dict[str, Callable[[Path, Path], Scene]] = {
    "inria_austin": scene_inria,
    "oam_zanzibar": scene_zanzibar,
    "oam_kampala": scene_kampala,
    "spacenet_atlanta_pan": scene_atlanta,
    "dubai_multiclass": scene_dubai,
    "vegas_roads_rgb": scene_vegas_rgb,
    "vegas_roads_pan": scene_vegas_pan,
}


def make_model(data: Any, **options: Any) -> tuple[UnetClassifier, str]:
    """``UnetClassifier(data, **options)``; lite0 only when the default backbone cannot load."""
    try:
        model = UnetClassifier(data, **options)
        return model, model.config.backbone or "unet-classic"
    except Exception as exc:
        print(f"  default backbone failed ({type(exc).__name__}: {exc}); using efficientnet-lite0")
        model = UnetClassifier(data, backbone="efficientnet-lite0", **options)
        return model, "efficientnet-lite0 (fallback)"


def truth_indices(image: Path, labels: Path, data: Any, scene: Scene) -> np.ndarray:
    """Class indices of the test part, rasterized by the library's own label reader."""
    info = open_raster(image, allow_no_crs=scene.allow_no_crs)
    colors = isinstance(scene.classes, dict) and all(str(k)[:1] == "#" for k in scene.classes)
    src = open_labels(labels, info, colors=colors)
    try:
        src.bind(list(data.class_specs))
        return src.read(0, 0, info.height, info.width)
    finally:
        src.close()


def truth_buildings(
    image: Path, labels: Path, truth: np.ndarray, building: int, scene: Scene
) -> np.ndarray:
    """True building polygons of the test part (see the module docstring)."""
    with rasterio.open(image) as src:
        crs, transform, bounds = src.crs, src.transform, src.bounds
    if scene.vector_truth:
        gdf = gpd.read_file(labels).to_crs(crs)
        geoms = shapely.intersection(shapely.make_valid(gdf.geometry.values), shapely.box(*bounds))
    else:
        mask = (truth == building).astype(np.uint8)
        geoms = np.array(
            [shapely.geometry.shape(g) for g, v in features.shapes(mask, mask, 4, transform) if v],
            dtype=object,
        )
    geoms = np.asarray(geoms, dtype=object)
    keep = ~shapely.is_empty(geoms) & (shapely.area(geoms) >= MIN_TRUTH_AREA)
    return geoms[keep]


def score_image(
    model: UnetClassifier,
    data: Any,
    scene: Scene,
    i: int,
    out: Path,
    vectorize_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Classify, vectorize and score one test image; returns its confusion matrix and objects.

    ``vectorize_options``: keywords for ``vectorize`` (None: its defaults).
    """
    image = scene.test_images[i]
    classified = out / f"classified_{i:02d}.tif"
    model.classify(
        image,
        classified,
        overwrite=True,
        progress=False,
        allow_no_crs=scene.allow_no_crs,
        probabilities=out / f"probabilities_{i:02d}.tif",  # vectorize uses them; kept after
    )
    names = model.config.class_names
    return score_class_raster(classified, data, scene, i, names, vectorize_options)


def score_class_raster(
    classified: Path,
    data: Any,
    scene: Scene,
    i: int,
    class_names: list[str],
    vectorize_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the class raster of test image ``i``: its confusion matrix and its objects.

    The objects are building polygons or road centre lines (``scene.objects``).
    ``vectorize_options`` are keywords for ``vectorize`` (None: its defaults).
    """
    image, labels = scene.test_images[i], scene.test_labels[i]
    with rasterio.open(classified) as src:
        pred = src.read(1)
    truth = truth_indices(image, labels, data, scene)
    pred = np.where(truth == 255, 255, pred)
    cm = confusion_matrix(pred, truth, len(class_names))
    extra = {"allow_no_crs": True} if scene.allow_no_crs else {}
    layers = vectorize(classified, **extra, **(vectorize_options or {}))
    layer = next((g for k, g in layers.items() if k.lower() == scene.objects), None)
    if scene.objects == "road":
        return {"cm": cm, **score_roads(image, labels, layer)}
    building = [c.lower() for c in class_names].index("building")
    pred_polys = np.asarray([] if layer is None else layer.geometry.values, dtype=object)
    true_polys = truth_buildings(image, labels, truth, building, scene)
    m = match_polygons(true_polys, pred_polys)
    split = None if layer is None else layer.attrs.get("separate")  # touching ones split?
    return {
        "cm": cm,
        "tp": m["tp"],
        "n_pred": len(pred_polys),
        "n_true": len(true_polys),
        "separated": split,
    }


def score_roads(image: Path, lines: Path, layer: gpd.GeoDataFrame | None) -> dict[str, Any]:
    """Predicted road centre lines against the true ones clipped to ``image``, in metres.

    Lengths within :data:`ROAD_BUFFER_M` of the other set and APLS, both in the UTM zone of
    the truth (the SpaceNet grids are lon/lat).
    """
    with rasterio.open(image) as src:
        crs, bounds = src.crs, src.bounds
    truth = gpd.read_file(lines).to_crs(crs).clip(shapely.box(*bounds))
    truth = truth[~truth.geometry.is_empty]
    utm = truth.estimate_utm_crs()
    truth_m = truth.to_crs(utm).explode(ignore_index=True).geometry
    pred = gpd.GeoSeries([], crs=crs) if layer is None else layer.geometry
    pred_m = pred.to_crs(utm).explode(ignore_index=True)
    pred_m = pred_m[pred_m.geom_type == "LineString"]
    lengths = line_completeness_correctness(truth_m, pred_m, ROAD_BUFFER_M)
    return {
        "truth_m": lengths["truth_length"],
        "pred_m": lengths["pred_length"],
        "truth_hit_m": lengths["matched_truth_length"],
        "pred_hit_m": lengths["matched_pred_length"],
        "apls": apls(truth_m, pred_m)["apls"],
        "n_lines": len(pred_m),
    }


def summarize(parts: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """The scene's figures from the scores of its test images (:func:`score_class_raster`)."""
    cm = sum(p["cm"] for p in parts)
    table = per_class_metrics(cm, class_names)
    pixels = {
        "iou": {str(k): round(float(v), 4) for k, v in table["iou"].items()},
        "miou": round(mean_iou(cm), 4),
    }
    if parts and "truth_m" in parts[0]:
        return {**pixels, **summarize_roads(parts)}
    tp, n_pred, n_true = (sum(p[k] for p in parts) for k in ("tp", "n_pred", "n_true"))
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else float("nan")
    return {
        **pixels,
        "building_f1": round(f1, 4),
        "precision": round(tp / n_pred, 4) if n_pred else None,
        "recall": round(tp / n_true, 4) if n_true else None,
        "pred_buildings": int(n_pred),
        "true_buildings": int(n_true),
        "separated": [p.get("separated") for p in parts],
    }


def summarize_roads(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Road figures over the test images (:func:`score_roads`): lengths summed, APLS averaged."""
    t, p, t_hit, p_hit = (
        sum(x[k] for x in parts) for k in ("truth_m", "pred_m", "truth_hit_m", "pred_hit_m")
    )

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "road_completeness": ratio(t_hit, t),
        "road_correctness": ratio(p_hit, p),
        "road_quality": ratio(p_hit, p + t - t_hit),
        "apls": round(float(np.mean([x["apls"] for x in parts])), 4),
        "road_length_m": {"pred": round(p, 1), "true": round(t, 1)},
        "road_lines": int(sum(x["n_lines"] for x in parts)),
    }


def run_scene(
    name: str,
    data_root: Path,
    out: Path,
    epochs: int | None,
    *,
    seed: int | None = None,
    prepare: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    fit_options: dict[str, Any] | None = None,
    label_area: bool = False,
    vectorize_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole protocol on one scene; returns its figures.

    ``seed`` is passed to ``fit`` (None: unseeded), ``prepare`` to ``prepare_data``,
    ``model_options`` to ``UnetClassifier``, ``fit_options`` to ``fit`` and
    ``vectorize_options`` to ``vectorize`` (variants of the defaults; None: the defaults).
    ``label_area``: see :func:`training_inputs`.
    """
    scene = SCENES[name](data_root, out)
    t0 = time.perf_counter()
    images, labels, area = training_inputs(scene, out, label_area)
    data = prepare_data(
        images,
        labels,
        classes=scene.classes,
        allow_no_crs=scene.allow_no_crs,
        **area,
        **(prepare or {}),
    )
    prep_s = time.perf_counter() - t0
    model, backbone = make_model(data, **(model_options or {}))
    t1 = time.perf_counter()
    fit_args = {**(fit_options or {}), **({} if seed is None else {"seed": seed})}
    history = model.fit(**fit_args) if epochs is None else model.fit(epochs, **fit_args)
    train_min = (time.perf_counter() - t1) / 60
    model.save(out / "model", overwrite=True)  # kept to score other inference options later
    n = len(scene.test_images)
    parts = [score_image(model, data, scene, i, out, vectorize_options) for i in range(n)]
    return {
        **summarize(parts, model.config.class_names),
        "train_minutes": round(train_min, 2),
        "prepare_seconds": round(prep_s, 1),
        "epochs": len(history),
        "stopped_by": history.attrs.get("stopped_by"),  # epochs, early stopping, time budget
        "kept_epoch": history.attrs.get("kept_epoch"),  # the epoch of the weights kept
        "chips": {k: int(v) for k, v in data.manifest.get("chip_counts", {}).items()},
        "backbone": backbone,
        # the share of the training buildings the split would cut: vectorize's default
        "label_split_share": model.config.object_sizes.get("building", {}).get("split_share"),
    }


def training_inputs(
    scene: Scene, out: Path, label_area: bool
) -> tuple[list[str], list[str], dict[str, str]]:
    """``prepare_data``'s images, labels and ``label_area`` keyword for the training part.

    Without ``label_area``: the cropped training part. With it: the whole image and its whole
    labels, with a polygon of the training part as ``label_area`` (the analyst who labelled
    part of a scene): the same pixels are labelled, the statistics cover the whole image and
    ``val_strip="auto"`` sees where the rest lies.
    """
    if not label_area:
        return [str(p) for p in scene.train_images], [str(p) for p in scene.train_labels], {}
    if scene.whole is None:
        raise SystemExit("--label-area: this scene has no single image to cut")
    image, labels, window = scene.whole
    area = area_file(image, window, out / "label_area.gpkg")
    return [str(image)], [str(labels)], {"label_area": str(area)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", choices=sorted(SCENES), help="run one scene")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--out", type=Path, default=None, help="folder for crops and outputs")
    p.add_argument("--epochs", type=int, default=None, help="smoke runs only: fit(epochs)")
    p.add_argument("--seed", type=int, default=None, help="fit(seed=SEED) (default: unseeded)")
    p.add_argument(
        "--prepare",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more prepare_data keyword, a Python literal (repeatable): stride=64",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more UnetClassifier keyword (repeatable): decoder_channels=(128,64,32,16,8)",
    )
    p.add_argument(
        "--fit",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more fit keyword (repeatable): checkpoint=False",
    )
    p.add_argument(
        "--vectorize",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more vectorize keyword (repeatable): grow_confidence=0.2",
    )
    p.add_argument(
        "--label-area",
        action="store_true",
        help="train on the whole image with the training part as prepare_data(label_area=)",
    )
    p.add_argument(
        "--chip-views",
        type=int,
        default=None,
        metavar="N",
        help="a variant of fit()'s plan: about N chip views instead of TARGET_CHIP_VIEWS",
    )
    return p.parse_args(argv)


def parse_overrides(items: list[str], option: str = "--prepare") -> dict[str, Any]:
    """``["stride=64", "split='rows'"]`` -> ``{"stride": 64, "split": "rows"}``.

    A value that is not a Python literal is taken as a string (``split=rows``).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"{option} {item!r}: expected KEY=VALUE, e.g. stride=64")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


@contextlib.contextmanager
def planned_chip_views(views: int | None) -> Iterator[int]:
    """``fit()`` plans about ``views`` chip views inside the block (None: the library's plan).

    Sets :data:`geounet.model.schedule.TARGET_CHIP_VIEWS`, which ``plan_training`` reads at
    each ``fit``, and restores it on leaving; yields the count in force. A plan larger than
    the library's raises :data:`~geounet.model.schedule.MAX_EPOCHS` in proportion, so the
    smallest areas (Kampala's 3 training chips, capped at 1 500 epochs) get the larger plan too.
    """
    if views is not None and views < 1:
        raise SystemExit(f"--chip-views {views}: expected a positive count")
    before, cap = schedule.TARGET_CHIP_VIEWS, schedule.MAX_EPOCHS
    schedule.TARGET_CHIP_VIEWS = before if views is None else int(views)
    schedule.MAX_EPOCHS = max(cap, math.ceil(cap * schedule.TARGET_CHIP_VIEWS / before))
    try:
        yield schedule.TARGET_CHIP_VIEWS
    finally:
        schedule.TARGET_CHIP_VIEWS, schedule.MAX_EPOCHS = before, cap


def busy_warning(load: float, cpus: int) -> str | None:
    """A warning when the machine is busy before training starts (None when it is not).

    Training takes every core; on 2 cores a second process slowed its epochs several-fold
    (twenty-second round of ``benchmarks/README.md``), and a run cut by the time budget then
    trains fewer epochs than the same run alone.
    """
    if load < 0.5 * cpus:
        return None
    return (
        f"warning: the machine is busy (load {load:.1f} on {cpus} cores); a run that ends on "
        "its time budget (stopped_by) trains fewer epochs than it would alone."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the protocol and print the figures; the last line is one JSON object."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.data.is_dir():
        print(f"{args.data}: the shared data folder is missing", file=sys.stderr)
        return 2
    prepare = parse_overrides(args.prepare)
    model_options = parse_overrides(args.model, "--model")
    fit_options = parse_overrides(args.fit, "--fit")
    vectorize_options = parse_overrides(args.vectorize, "--vectorize")
    if "seed" in fit_options:
        raise SystemExit("--fit seed=...: use --seed")
    out = args.out or Path(tempfile.mkdtemp(prefix="geounet-recipe-"))
    names = [args.scene] if args.scene else list(SCENES)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if warning := busy_warning(load, os.cpu_count() or 1):
        print(warning, file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    with planned_chip_views(args.chip_views) as views:
        for name in names:
            print(f"== {name}", flush=True)
            try:
                r = run_scene(
                    name,
                    args.data,
                    out / name,
                    args.epochs,
                    seed=args.seed,
                    prepare=prepare,
                    model_options=model_options,
                    fit_options=fit_options,
                    label_area=args.label_area,
                    vectorize_options=vectorize_options,
                )
            except GeounetError as exc:
                r = {"error": str(exc)}
            results[name] = r
            print("  " + json.dumps(r), flush=True)
    summary = {
        "scenes": results,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "load_at_start": round(load, 2),
        "smoke_epochs": args.epochs,
        "seed": args.seed,
        "prepare": prepare,
        "model": model_options,
        "fit": fit_options,
        "vectorize": vectorize_options,
        "chip_views": views,
        "label_area": args.label_area,
        "out": str(out),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
