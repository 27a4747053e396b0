"""``evaluate``: pixel, building and road accuracy of a map in one call, with reports.

The prediction and the truth may each be a class raster or a vector file
(:mod:`geounet.evaluation.inputs`). Pixel metrics are computed on the raster's grid (vector
features are burnt into it, road centre lines as :data:`ROAD_HALF_WIDTH_M` wide corridors on
each side); object metrics on vectors (a class raster is vectorized with
:func:`geounet.vectorizing.pipeline.vectorize`), measured in metres in the prediction's local
metric CRS, and only where the raster side lies and has data (a truth file of a whole town
scores a map of one tile on that tile, less its nodata border; the result's notes say how many
features were left out). Different CRSs are reprojected; extents that do not overlap are
refused; nodata and 255 are never scored.

Example:
    Not run as a doctest: it needs a classified raster and its truth on disk.

    >>> result = evaluate("classified.tif", "truth.gpkg", report="r.html")  # doctest: +SKIP
    >>> result["buildings"]["f1"], result["miou"]                           # doctest: +SKIP
    (0.81, 0.87)
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import shapes

from geounet.core.classes import inferred_name, special_class
from geounet.core.errors import (
    CRSMismatchError,
    InvalidParameterError,
    LabelError,
    OutputExistsError,
)
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.evaluation.errormap import ErrorMap
from geounet.evaluation.inputs import Source, layer_kind, open_source
from geounet.evaluation.objects import building_scores, road_scores, to_metric
from geounet.evaluation.outcomes import building_outcomes, explain_missed
from geounet.evaluation.pixels import (
    Blocks,
    Grid,
    RasterBlocks,
    VectorBlocks,
    check_overlap,
    lookup_table,
    stream_confusion,
    uint8_values,
)
from geounet.evaluation.scores import (
    class_indices,
    pixel_report,
    raster_pair_grid,
    require_class_names,
)
from geounet.io.raster import RasterInfo, RasterWriter, WriterOptions, local_metric_crs
from geounet.io.vectors import write_layers
from geounet.vectorizing.pipeline import vectorize

__all__ = ["PIXEL_KEYS", "ROAD_HALF_WIDTH_M", "EvaluateOptions", "evaluate"]

#: Keys of the pixel metrics in a result (None when neither input is a raster).
PIXEL_KEYS = ("pixel_accuracy", "miou", "kappa", "per_class", "confusion_matrix", "pixels")

#: Half width (m) of the corridor burnt for a road centre line in pixel metrics (the
#: SpaceNet road-mask convention: 2 m on each side).
ROAD_HALF_WIDTH_M = 2.0
#: Pieces of polygons cut by the edge of the scored area smaller than this (m²) are dropped:
#: a building a map's edge cuts to a sliver is not one the map could draw.
MIN_CUT_AREA_M2 = 2.0
#: The area a raster holds data is traced on it read at most this many pixels a side.
VALID_AREA_PX = 4096


@dataclass(frozen=True)
class EvaluateOptions:
    """The settings of one evaluation (see :func:`evaluate` for their meaning)."""

    building_class: str = "building"
    road_class: str = "road"
    iou_threshold: float = 0.5
    road_buffer_m: float = 3.0
    truth_values: Mapping[int, int] | None = None
    block: int = 1024

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise InvalidParameterError(
                f"iou_threshold={self.iou_threshold} must lie in (0, 1]; SpaceNet uses 0.5."
            )
        if not self.road_buffer_m > 0:
            raise InvalidParameterError(
                f"road_buffer_m={self.road_buffer_m} must be > 0 (metres); SpaceNet uses 3-4."
            )
        if int(self.block) != self.block or self.block < 16:
            raise InvalidParameterError(f"block={self.block} must be an integer >= 16.")


def evaluate(
    pred: PathLike,
    truth: PathLike,
    *,
    classes: Mapping[int, str] | Sequence[str] | str | None = None,
    building_class: str = "building",
    road_class: str = "road",
    iou_threshold: float = 0.5,
    road_buffer_m: float = 3.0,
    report: PathLike | None = None,
    error_map: PathLike | None = None,
    objects: PathLike | None = None,
    truth_values: Mapping[int, int] | None = None,
    overwrite: bool = False,
    block: int = 1024,
    allow_no_crs: bool = False,
) -> dict[str, Any]:
    """Score a map against the truth: pixels, buildings (SpaceNet F1) and roads (APLS).

    Args:
        pred: Class raster (e.g. from ``classify``) or vector file (e.g. from ``vectorize``).
        truth: Class raster or vector file (a layer per class or a ``class`` field).
        classes: ``{raster value: name}`` (a list of names means 1, 2, ...); default: the
            ``CLASSES`` tag of the prediction (or of the truth) raster.
        building_class: Class scored as buildings (object F1).
        road_class: Class scored as roads (completeness, correctness, quality, APLS).
        iou_threshold: Smallest IoU of a building match.
        road_buffer_m: Tolerance of the road length metrics and APLS node snapping (m).
        report: Single-file HTML report to write.
        error_map: GeoTIFF of error codes to write (true/false positive, false negative...).
        objects: Vector file to write the scored buildings to, a layer each for the
            ``matched``, ``missed`` and ``false_positive`` ones, in the prediction's CRS
            (:mod:`geounet.evaluation.outcomes`; a class raster's misses say what it holds
            under them). Nothing is written when no buildings are scored (a note says why).
        truth_values: ``{truth raster value: class index}`` for a truth raster that does not
            hold class indices (e.g. ``{0: 0, 255: 1}``).
        overwrite: Replace existing report / error map.
        block: Window size in pixels of the streamed pixel comparison.
        allow_no_crs: Accept rasters without a CRS: compared pixel for pixel, no object
            metrics (they need map units).

    Returns:
        ``{"prediction", "truth", "classes", "settings"}``; the pixel metrics of
        :func:`geounet.evaluation.scores.evaluate_rasters` (``"pixel_accuracy"``,
        ``"miou"``, ``"kappa"``, ``"per_class"``, ``"confusion_matrix"``, ``"pixels"``; None
        when neither input is a raster); ``"buildings"`` as
        :func:`geounet.evaluation.objects.building_scores` and ``"roads"`` as
        :func:`geounet.evaluation.objects.road_scores` (None when the truth lacks the class);
        ``"errors"``: pixels per error code; ``"notes"``: what was skipped and why;
        ``"objects"`` (only when ``objects`` is given): the files written (one, or one per
        layer for formats of one layer a file), or None.

    Raises:
        CRSMismatchError: The inputs do not overlap.
        LabelError: Class names unknown, or a vector layer that names no class.
        OutputExistsError: ``report`` / ``error_map`` / ``objects`` exists and ``overwrite``
            is False.
        MissingCRSError: A raster has no CRS and ``allow_no_crs`` is False.
    """
    opts = EvaluateOptions(
        building_class, road_class, iou_threshold, road_buffer_m, truth_values, block
    )
    _check_outputs([report, error_map, objects], overwrite)
    kinds = {"building_class": building_class, "road_class": road_class}
    p = open_source(pred, **kinds, allow_no_crs=allow_no_crs)
    t = open_source(truth, **kinds, allow_no_crs=allow_no_crs)
    names = _class_names(classes, p, t, opts)
    p, t = _layers_as_classes(p, names), _layers_as_classes(t, names)
    opts, notes = _mask_truth(t, names, opts)
    special = _special_classes(opts, list(names.values()))
    if special != opts:  # a raster's ``Buildings``: a plain polygon layer is its buildings
        kinds = {"building_class": special.building_class, "road_class": special.road_class}
        p, t = (s if s.info else open_source(s.path, **kinds) for s in (p, t))
        opts = special
    _check_extents(p, t)
    result: dict[str, Any] = {
        "prediction": str(p.path),
        "truth": str(t.path),
        "classes": [names[i] for i in sorted(names)],
        "settings": {k: v for k, v in vars(opts).items() if k != "block"},
        "notes": notes,
    }
    errors = _pixel_part(p, t, names, opts, error_map, overwrite, result)
    scored = _object_part(p, t, names, opts, result)
    if objects is not None:
        _write_objects(objects, scored, p, names, opts, overwrite, result)
    if report is not None:
        from geounet.evaluation.report import write_html_report

        write_html_report(result, report, preview=errors, overwrite=overwrite)
        result["report"] = str(report)
    return result


def _check_outputs(paths: list[PathLike | None], overwrite: bool) -> None:
    for path in paths:
        if path is not None and Path(path).exists() and not overwrite:
            raise OutputExistsError(
                f"{path}: output already exists; pass overwrite=True (--overwrite) to replace "
                "it or choose another name."
            )


def _class_names(classes: Any, p: Source, t: Source, opts: EvaluateOptions) -> dict[int, str]:
    """``{class index: name}`` from ``classes``, a raster's tag, or the vector layers."""
    names = class_indices(classes, None)
    rasters = [s for s in (p, t) if s.info is not None]
    if t.info is not None and opts.truth_values is not None:
        rasters = [s for s in rasters if s is not t]  # its values are not class indices
    for s in rasters:
        names = names or class_indices(None, s.info)
    if names:
        return names
    if p.info is not None or t.info is not None:
        return require_class_names(None, (p.info or t.info))  # type: ignore[arg-type]
    found = list(dict.fromkeys([*p.layers, *t.layers]))
    first = [n for n in (opts.building_class, opts.road_class) if n in found]
    ordered = first + [n for n in found if n not in first and n != "background"]
    return {0: "background", **{i: n for i, n in enumerate(ordered, start=1)}}


def _layers_as_classes(s: Source, names: dict[int, str]) -> Source:
    """A vector file's layers named as the classes they hold: ``buildings`` is ``building``.

    A layer per class is matched by the same spelling rules as ``prepare_data``'s class names
    (:func:`~geounet.core.classes.inferred_name`); one that matches no class stays as it is.
    """
    if s.info is not None:
        return s
    classes = list(names.values())
    layers: dict[str, gpd.GeoDataFrame] = {}
    for name, gdf in s.layers.items():
        same = [c for c in classes if inferred_name(c) == inferred_name(name)]
        key = name if name in classes or len(same) != 1 else same[0]
        layers[key] = pd.concat([layers[key], gdf]) if key in layers else gdf
    return dataclasses.replace(s, layers=layers)


def _mask_truth(
    t: Source, names: dict[int, str], opts: EvaluateOptions
) -> tuple[EvaluateOptions, list[str]]:
    """A 0 / 255 mask as truth (Inria's, many a GIS export): 255 is the one class.

    Read so, as ``prepare_data`` reads such a mask, when the prediction has one class besides
    the background; refused with the fix otherwise (255 would be "not scored": no truth at all).
    """
    if t.info is None or opts.truth_values is not None or class_indices(None, t.info):
        return opts, []
    if uint8_values(t.info) != {0, 255}:
        return opts, []
    if len(names) != 2:
        raise LabelError(
            f"{t.path}: the truth holds the values 0 and 255 only (a mask), but the "
            f"prediction has {len(names)} classes ({', '.join(names.values())}), and 255 "
            "means 'not scored'. Say which class 255 marks: --truth-values 0=0,255=N "
            "(truth_values={0: 0, 255: N}) with N its class index."
        )
    note = (
        f"truth {t.path.name}: a 0 / 255 mask, 255 read as '{names[1]}' (as prepare_data reads "
        "such masks); give --truth-values to read it otherwise"
    )
    return dataclasses.replace(opts, truth_values={0: 0, 255: 1}), [note]


def _special_classes(opts: EvaluateOptions, names: list[str]) -> EvaluateOptions:
    """``opts`` scoring ``Buildings`` / ``Roads`` (a model trained so) as buildings / roads."""
    return dataclasses.replace(
        opts,
        building_class=special_class(names, opts.building_class),
        road_class=special_class(names, opts.road_class),
    )


def _check_extents(p: Source, t: Source) -> None:
    """Refuse inputs that share no area (or cannot be placed against each other)."""
    if p.info is not None and t.info is not None:
        raster_pair_grid(p.info, t.info)
        return
    if (p.crs is None) != (t.crs is None):
        raise CRSMismatchError(
            f"{p.path if p.crs is None else t.path} has no CRS, so it cannot be placed "
            "against the other file; assign one (gdal_edit.py -a_srs EPSG:XXXX)."
        )
    crs = p.crs or t.crs
    a, b = p.bounds(crs), t.bounds(crs)
    if a is not None and b is not None:
        check_overlap(a, b, str(p.path), str(t.path))


def _metric_crs(p: Source, t: Source) -> CRS | None:
    """The prediction's CRS in metres (its UTM zone when geographic)."""
    crs = p.crs or t.crs
    bounds = p.bounds(crs) or t.bounds(crs)
    if crs is None or bounds is None:
        return crs
    return local_metric_crs(crs, bounds)


def _pixel_part(
    p: Source,
    t: Source,
    names: dict[int, str],
    opts: EvaluateOptions,
    error_map: PathLike | None,
    overwrite: bool,
    result: dict[str, Any],
) -> np.ndarray | None:
    """Add the pixel metrics and ``["errors"]`` to ``result``; return the error preview."""
    result.update(dict.fromkeys(PIXEL_KEYS), errors=None)
    if p.info is None and t.info is None:
        result["notes"].append("pixel metrics: both inputs are vectors (no grid to compare on)")
        if error_map is not None:
            result["notes"].append("error map not written: it needs a raster input")
        return None
    grid = raster_pair_grid(p.info, t.info) if p.info and t.info else Grid.of(p.info or t.info)
    n = max(names) + 1
    lut = lookup_table(opts.truth_values)
    with ExitStack() as stack:
        pb = _blocks(p, grid, names, n, None, stack)
        tb = _blocks(t, grid, names, n, lut, stack)
        errors = stack.enter_context(ErrorMap(grid, error_map, overwrite=overwrite))
        cm = stream_confusion(pb, tb, grid, n, opts.block, on_block=errors)
    labels = [names.get(i, f"class_{i}") for i in range(n)]
    result.update(pixel_report(cm, labels))
    result["errors"] = errors.summary()
    if error_map is not None:
        result["error_map"] = str(error_map)
    return errors.preview


def _blocks(
    s: Source,
    grid: Grid,
    names: dict[int, str],
    n: int,
    lut: np.ndarray | None,
    stack: ExitStack,
) -> Blocks:
    if s.info is not None:
        return RasterBlocks(s.info, grid, stack, n, lut)
    index = {name: i for i, name in names.items()}
    geoms, values = [], []
    for name, gdf in s.layers.items():
        if name not in index:
            raise LabelError(
                f"{s.path}: layer {name!r} is not one of the classes {list(index)}; rename "
                "the layer (or its 'class' values), or pass classes={value: name}."
            )
        gs = _areas(gdf.geometry, grid)
        geoms.append(np.asarray(gs.values, dtype=object))
        values.append(np.full(len(gs), index[name]))
    g = np.concatenate(geoms) if geoms else np.empty(0, dtype=object)
    v = np.concatenate(values) if values else np.empty(0, dtype=np.int64)
    return VectorBlocks(g, v, grid)


def _areas(gs: gpd.GeoSeries, grid: Grid) -> gpd.GeoSeries:
    """Features in the grid's CRS; lines become corridors of :data:`ROAD_HALF_WIDTH_M`."""
    if layer_kind(gpd.GeoDataFrame(geometry=gs)) == "line":
        metric = to_metric(gs)
        gs = metric.buffer(ROAD_HALF_WIDTH_M, cap_style="flat").set_crs(metric.crs)
    return gs.to_crs(grid.crs) if grid.crs is not None else gs


def _object_part(
    p: Source, t: Source, names: dict[int, str], opts: EvaluateOptions, result: dict
) -> tuple[gpd.GeoSeries, gpd.GeoSeries] | None:
    """Fill ``result["buildings"]`` and ``result["roads"]``; the buildings scored, if any."""
    result["buildings"] = result["roads"] = None
    wanted = [n for n in (opts.building_class, opts.road_class) if n in names.values()]
    if not wanted:
        result["notes"].append(
            f"object metrics: neither {opts.building_class!r} nor {opts.road_class!r} is a class"
        )
        return None
    truth = _features(t, names, opts, True, result["notes"])
    pred = _features(p, names, opts, False, result["notes"])
    if truth is None or pred is None:
        return None
    crs = _metric_crs(p, t)
    area = _scored_area(p, t, crs)
    b, r = opts.building_class, opts.road_class
    scored = None
    if b in truth:
        tb, pb = to_metric(truth[b], crs), to_metric(pred.get(b, _empty(truth[b])), crs)
        tb, pb = _buildings(tb, "truth", result), _buildings(pb, "prediction", result)
        tb, pb = _inside(tb, area, "true buildings", result, pb), _inside(pb, area, "", result)
        result["buildings"] = building_scores(tb, pb, opts.iou_threshold)
        scored = (tb, pb)
    if r in truth and _lines_or_empty(truth[r], pred.get(r), result["notes"]):
        tr, pr = to_metric(truth[r], crs), to_metric(pred.get(r, _empty(truth[r])), crs)
        tr, pr = _inside(tr, area, "true roads", result, pr), _inside(pr, area, "", result)
        result["roads"] = road_scores(tr, pr, opts.road_buffer_m)
    return scored


def _write_objects(
    out: PathLike,
    scored: tuple[gpd.GeoSeries, gpd.GeoSeries] | None,
    p: Source,
    names: dict[int, str],
    opts: EvaluateOptions,
    overwrite: bool,
    result: dict,
) -> None:
    """Write the scored buildings as layers (``result["objects"]``: the files, or None)."""
    result["objects"] = None
    if scored is None:
        result["notes"].append(f"objects: no buildings were scored, so {out} was not written")
        return
    layers = building_outcomes(*scored, opts.iou_threshold)
    crs = p.crs or scored[0].crs
    layers = {k: g.to_crs(crs) if g.crs is not None else g for k, g in layers.items()}
    value = next((i for i, n in names.items() if n == opts.building_class), None)
    if p.info is not None and value is not None:
        layers["missed"] = explain_missed(layers["missed"], p.info, value, opts.building_class)
    written = write_layers(layers, out, overwrite=overwrite)
    result["objects"] = [str(f) for f in written]


def _buildings(gs: gpd.GeoSeries, side: str, result: dict) -> gpd.GeoSeries:
    """One building per polygon: empty rows dropped, multi-part features split into parts.

    A layer dissolved in a GIS (all buildings one MultiPolygon) or an outline drawn in two
    parts would otherwise count as one building; a note says what was done.
    """
    empty = (gs.isna() | gs.is_empty).to_numpy()
    parts = gs[~empty].explode(index_parts=False)
    multi = int((gs[~empty].geom_type == "MultiPolygon").sum())
    said = []
    if empty.any():
        said.append(f"{int(empty.sum())} empty geometries ignored")
    if multi:
        said.append(f"{multi} multi-part features split into their parts")
    if said:
        result["notes"].append(
            f"buildings of the {side}: {' and '.join(said)} ({len(parts)} buildings scored)"
        )
    return parts


def _scored_area(p: Source, t: Source, crs: CRS | None) -> Any:
    """The area both inputs cover, in ``crs``; None when both are vectors.

    That is the raster's extent less its nodata (of two rasters, where both have data): a
    vector side is scored there only, as the pixel metrics never score nodata. Two vector
    files have no extent of their own: all is scored.
    """
    areas = []
    for s in (p, t):
        if s.info is not None:
            valid = shapely.segmentize(_valid_area(s.info), _edge_step(s.info.bounds))
            areas.append(to_metric(gpd.GeoSeries([valid], crs=s.info.crs), crs).iloc[0])
    return shapely.intersection_all(areas) if areas else None


def _valid_area(info: RasterInfo) -> Any:
    """The part of a raster that holds data (not its nodata), in its CRS.

    Traced on the raster read at most :data:`VALID_AREA_PX` pixels a side (nearest
    neighbour), so a large scene costs one small read; its whole extent when it has no
    nodata value or none of it.
    """
    step = max(1, math.ceil(max(info.height, info.width) / VALID_AREA_PX))
    whole = shapely.box(*info.bounds)
    if info.nodata is None:
        return whole
    shape = (math.ceil(info.height / step), math.ceil(info.width / step))
    with rasterio.open(info.path) as src:
        valid = src.read(1, out_shape=shape, resampling=Resampling.nearest) != info.nodata
    if valid.all():
        return whole
    transform = info.transform @ Affine.scale(info.width / shape[1], info.height / shape[0])
    parts = [
        shapely.geometry.shape(g) for g, _ in shapes(valid.view(np.uint8), valid, 4, transform)
    ]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _edge_step(bounds: tuple[float, float, float, float]) -> float:
    """Vertex spacing of an extent's edges before reprojection (64 a side)."""
    return max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 64 or 1.0


def _inside(
    gs: gpd.GeoSeries, area: Any, what: str, result: dict, pred: gpd.GeoSeries | None = None
) -> gpd.GeoSeries:
    """``gs`` cut to ``area``: outside features dropped, and slivers the cut leaves too.

    Features across the edge are cut; polygon pieces under :data:`MIN_CUT_AREA_M2` dropped.
    A truth that covers more than the map (an OpenStreetMap extract of a whole town against
    a classified tile) is scored where the map is; ``what`` names ``gs`` in the note that
    says how many features were left out ("": no note). Two vector files have no area
    (``area`` None): all is scored, and a note says how many true features lie beyond the
    ``pred`` features' extent.
    """
    if area is None and what and pred is not None and not gs.empty and not pred.empty:
        beyond = int((~gs.intersects(shapely.box(*pred.total_bounds))).sum())
        if beyond:
            result["notes"].append(
                f"object metrics: {beyond} of {len(gs)} {what} lie beyond the prediction's "
                "features (their bounding box) and count as missed; to score only the area "
                "a map covers, give its class raster as the prediction"
            )
    if area is None or gs.empty:
        return gs
    # an OpenStreetMap outline may cross itself: GEOS cannot cut it as it is
    valid = gs.make_valid(method="structure", keep_collapsed=False)
    cut = valid.clip(area, keep_geom_type=True)
    polygon = cut.geom_type.str.contains("Polygon").to_numpy()
    cut = cut[~cut.is_empty.to_numpy() & (~polygon | (cut.area.to_numpy() >= MIN_CUT_AREA_M2))]
    if what and len(cut) < len(gs):
        result["notes"].append(
            f"object metrics on the area both inputs cover: {len(gs) - len(cut)} of {len(gs)} "
            f"{what} lie outside it and are not scored"
        )
    return cut


def _empty(like: gpd.GeoSeries) -> gpd.GeoSeries:
    return gpd.GeoSeries([], crs=like.crs)


def _lines_or_empty(truth: gpd.GeoSeries, pred: gpd.GeoSeries | None, notes: list) -> bool:
    for side, gs in (("truth", truth), ("prediction", pred)):
        if gs is None or gs.empty:
            continue
        if layer_kind(gpd.GeoDataFrame(geometry=gs)) != "line":
            notes.append(
                f"road metrics: the {side}'s roads are not centre lines; give lines "
                "(geounet vectorize writes them) to score completeness and APLS"
            )
            return False
    return True


def _features(
    s: Source, names: dict[int, str], opts: EvaluateOptions, is_truth: bool, notes: list
) -> dict[str, gpd.GeoSeries] | None:
    """``{class name: geometries}`` of one side (a raster is vectorized)."""
    if s.info is None:
        return {name: gdf.geometry for name, gdf in s.layers.items()}
    if s.info.crs is None:
        notes.append(f"object metrics: {s.path} has no CRS, so it cannot be vectorized")
        return None
    wanted = (opts.building_class, opts.road_class)
    keep = {i: n for i, n in names.items() if i != 0 and n in wanted}
    if not keep:
        return {}
    with tempfile.TemporaryDirectory(prefix="geounet_evaluate_") as tmp:
        path = s.info.path
        if is_truth and opts.truth_values is not None:  # raw values -> class indices first
            path = _class_raster(s.info, opts, max(names) + 1, Path(tmp) / "truth_classes.tif")
        layers = vectorize(
            path,
            classes=keep,
            building_class=_named(opts.building_class, keep, "building"),
            road_class=_named(opts.road_class, keep, "road"),
            window_size=max(opts.block, 256),
        )
    return {name: gdf.geometry for name, gdf in layers.items()}


def _named(name: str, classes: dict[int, str], default: str) -> str:
    """``name`` if it is one of ``classes`` (vectorize refuses an absent non-default name)."""
    return name if name in classes.values() else default


def _class_raster(info: RasterInfo, opts: EvaluateOptions, n: int, out: Path) -> Path:
    """Write the truth raster's class indices (through ``truth_values``) on its own grid."""
    grid = Grid.of(info)
    options = WriterOptions(nodata=IGNORE_INDEX)
    with ExitStack() as stack:
        blocks = RasterBlocks(info, grid, stack, n, lookup_table(opts.truth_values))
        writer = stack.enter_context(
            RasterWriter(
                out, grid.width, grid.height, 1, "uint8", grid.crs, grid.transform, options
            )
        )
        for win in grid.windows(opts.block):
            writer.write(blocks.read(win).astype(np.uint8), int(win.row_off), int(win.col_off))
    return out
