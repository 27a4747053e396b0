"""Class raster -> GIS features: clean polygons per class and connected road centre lines.

:func:`vectorize` streams a class raster (as written by ``classify``, or any label raster
with ``classes`` given) window by window: every area class becomes polygons
(:mod:`geounet.vectorizing.polygons`; touching buildings are split apart,
:mod:`geounet.vectorizing.instances`, and regularized, :mod:`geounet.vectorizing.regularize`;
objects smaller than the model's training objects are dropped,
:mod:`geounet.vectorizing.sizes`), the road class becomes centre lines
(:mod:`geounet.vectorizing.skeleton`, :mod:`geounet.vectorizing.centerlines`). All distances
and areas are in metres, also for rasters in
EPSG:4326 (measured in the local UTM zone). The layers are written to ``out`` in the format its
extension names (:mod:`geounet.io.vectors`), each in the raster's CRS.

Example:
    Not run as a doctest: it needs a classified raster on disk.

    >>> layers = vectorize("classified.tif", "features.gpkg")      # doctest: +SKIP
    >>> layers["building"].columns.tolist()                         # doctest: +SKIP
    ['class', 'area_m2', 'perimeter_m', 'geometry']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window

from geounet.core.classes import parse_classes, parse_classes_tag, special_class
from geounet.core.errors import InvalidParameterError, InvalidRasterError, MissingCRSError
from geounet.core.types import PathLike
from geounet.io.geo import MetricFrame
from geounet.io.raster import RasterInfo, iter_windows, open_raster
from geounet.io.vectors import check_outputs, layer_paths, write_layers
from geounet.vectorizing.centerlines import network_lines, road_network
from geounet.vectorizing.confidence import (
    GROW_CONFIDENCE,
    PEAK_CONFIDENCE,
    PROBABILITIES_TAG,
    ROAD_CONFIDENCE,
    check_confidence,
    check_min_peak,
    grow_objects,
    probability_bands,
    scene_peak_threshold,
    tagged_probabilities,
    zonal_confidence,
)
from geounet.vectorizing.instances import (
    MIN_SEPARATION_M,
    SeparationOptions,
    split_polygons,
)
from geounet.vectorizing.polygons import (
    PolygonTracer,
    fill_small_holes,
    largest_polygon,
    simplify_polygons,
)
from geounet.vectorizing.regularize import regularize_buildings
from geounet.vectorizing.sizes import (
    LABEL_SPLIT_TAG,
    MIN_AREA_FALLBACK_M2,
    MIN_AREA_TAG,
    filtered_min_area,
    min_area_from_tag,
    separate_from_tag,
)
from geounet.vectorizing.skeleton import SkeletonCollector

__all__ = ["ROAD_HALO_PX", "ROAD_HOLE_M2", "vectorize"]

#: Halo (pixels) read around each window for road skeletons; the skeleton is the one of a
#: single pass for roads narrower than about twice this.
ROAD_HALO_PX = 128
#: Holes in the road mask smaller than this (m², or ``min_area_m2`` if larger) are filled
#: before thinning, so that specks inside a road do not become small loops.
ROAD_HOLE_M2 = 30.0
_SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")
#: Fewest buildings for a warning that the peak filter dropped most of them.
UNSURE_WARN_MIN = 10


@dataclass
class _Options:
    min_area_m2: float
    simplify_m: float
    building: int | None  # value regularized as buildings
    prob_bands: dict[int, int] | None = None  # value -> band of the probability raster
    separate: int | None = None  # value split into instances (touching buildings)
    separation: SeparationOptions = field(default_factory=SeparationOptions)
    class_reader: _WindowReader | None = None  # class raster reader (for separation)
    building_prob: _WindowReader | None = None  # building probability (0-1) reader
    size: tuple[int, int] = (0, 0)  # raster height, width
    geoms: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    traced: list[np.ndarray] = field(default_factory=list)
    min_peak: float = 0.0  # buildings whose peak probability is lower are dropped
    min_road: float = 0.0  # road lines that end, with a lower mean probability, are dropped
    peak_levels: np.ndarray | None = None  # building pixels per probability level (0-255)
    sized: tuple[int | None, float] = (None, 0.0)  # (building value, its own min area m²)
    label_split: tuple[bool, float | None] = (True, None)  # (separate, labels' split share)
    grow: tuple[int | None, int, float] = (None, 256, 0.0)  # (building, level, min blob px)


def vectorize(
    classified: PathLike,
    out: PathLike | None = None,
    *,
    classes: Mapping[int, str] | Sequence[str] | str | None = None,
    building_class: str = "building",
    road_class: str = "road",
    min_area_m2: float | None = None,
    simplify_m: float = 0.5,
    regularize: bool = True,
    separate: bool | None = None,
    min_separation_m: float = MIN_SEPARATION_M,
    road_centerlines: bool = True,
    spur_length_m: float | None = None,
    gap_m: float | None = None,
    probabilities: PathLike | None = None,
    min_peak_confidence: float | None = None,
    min_road_confidence: float | None = None,
    grow_confidence: float | None = None,
    overwrite: bool = False,
    window_size: int = 2048,
    allow_no_crs: bool = False,
) -> dict[str, gpd.GeoDataFrame]:
    """Turn a class raster into one vector layer per class.

    Background (index 0 of a geounet class raster, or a class named ``"background"``) and
    nodata are never vectorized. Every other class becomes polygons with ``class``,
    ``area_m2`` and ``perimeter_m``; the building class is regularized (right angles,
    dominant orientation); the road class becomes centre lines with ``length_m`` (or
    polygons with ``road_centerlines=False``). With a probability raster each feature also
    gets ``mean_confidence`` (0-1), each polygon ``peak_confidence`` (its most confident
    pixel), and buildings the network was never sure of are dropped (``min_peak_confidence``).

    Args:
        classified: Single-band integer class raster. Class names come from its ``CLASSES``
            tag (written by ``classify``) unless ``classes`` is given.
        out: Vector file to write (``.gpkg`` default, ``.geojson``, ``.shp``, ``.fgb``,
            ``.parquet``); None returns the layers only.
        classes: ``{raster value: class name}`` for label rasters without geounet metadata
            (a list of names means the values 1, 2, ...; ``"1=building,2=road"`` as on the
            command line; see :func:`geounet.core.classes.parse_classes`).
        building_class: Name of the class regularized as buildings (the default also finds
            ``Buildings``, ``buildings``...: :func:`~geounet.core.classes.special_class`).
        road_class: Name of the class turned into centre lines (likewise ``Roads``...).
        min_area_m2: Objects smaller than this are dropped; holes smaller are filled. None
            (default): the value ``classify`` recorded from the model's training labels
            (the 10th percentile of the building class's object areas, tag
            ``GEOUNET_MIN_AREA_M2``; see :mod:`geounet.vectorizing.sizes`), else 5 m²; for
            buildings half that when the peak filter runs (``min_peak_confidence``), which
            drops the unsure specks the size threshold had to drop alone
            (:data:`~geounet.vectorizing.sizes.FILTERED_MIN_AREA_FACTOR`). Each layer's
            ``attrs["min_area_m2"]`` says which value was used.
        simplify_m: Simplification tolerance in metres (0: exact pixel outlines).
        regularize: Regularize buildings.
        separate: Split touching buildings into one polygon each (marker-controlled
            watershed of each building outline, on its distance to the outline, times the
            building probability when ``probabilities`` is given; see
            :mod:`geounet.vectorizing.instances`). None (default): split, unless the model's
            training labels draw blocks of buildings as one (the split would cut at least
            :data:`~geounet.vectorizing.sizes.MAX_LABEL_SPLIT_SHARE` of their building
            area, tag ``GEOUNET_LABEL_SPLIT_SHARE`` written by ``classify``): splitting the
            network's blocks then makes several polygons of each building it learnt. The
            building layer's ``attrs["separate"]`` says whether it was split and
            ``attrs["label_split_share"]`` the share the decision read (None: no tag).
        min_separation_m: Smallest width of a building split off, and smallest distance
            between the centres of two buildings split apart.
        road_centerlines: Roads as centre lines (else polygons).
        spur_length_m: Dead-end branches shorter than this are pruned from the road network
            (default: twice the typical road width measured on the mask).
        gap_m: Breaks in the road network up to this long are bridged, where two dead ends
            face each other or a dead end points at another road (default:
            :data:`~geounet.vectorizing.centerlines.GAP_WIDTHS` road widths, at least the
            spur length; 0 bridges nothing). The road layer's ``attrs`` give the road width,
            spur length and gap used.
        probabilities: Probability raster written by ``classify`` (uint8 0-255, one band
            per class, same grid). None (default): the one the class raster's
            ``GEOUNET_PROBABILITIES`` tag names (``classify`` writes them beside the class
            raster by default and names them there), when that file is still there; else
            none.
        min_peak_confidence: With probabilities, buildings whose most confident pixel has a
            lower building probability are dropped (hysteresis: traced at 0.5, kept with a
            seed at this). None: :data:`~geounet.vectorizing.confidence.PEAK_CONFIDENCE`
            (0.98, measured on real scenes: object F1 +0.02 to +0.05, see
            :mod:`geounet.vectorizing.confidence`), or the 90th percentile of the building
            probability over the scene's building pixels when that is lower (a model rarely
            sure of anything keeps its buildings:
            :func:`~geounet.vectorizing.confidence.scene_peak_threshold`); a value given is
            used as it is; 0 keeps them all. Each layer's ``attrs["min_peak_confidence"]``
            says which value was used (None: no probabilities, nothing dropped) and
            ``attrs["unsure_removed"]`` how many buildings it dropped.
        min_road_confidence: With probabilities, road centre lines that end (or stand
            alone) and whose mean road probability is lower are dropped; lines between two
            junctions stay, as they hold the network together. None:
            :data:`~geounet.vectorizing.confidence.ROAD_CONFIDENCE` (0.9, measured on the
            Las Vegas road scenes: quality and APLS up); 0 keeps them all. The road layer's
            ``attrs["min_road_confidence"]`` says which value was used (None: no
            probabilities) and ``attrs["unsure_removed"]`` how many lines it dropped.
        grow_confidence: With probabilities, building outlines take in the background
            pixels connected to them whose building probability is at least this
            (hysteresis: the class raster's buildings grown down to this level; the class
            raster itself is not changed, nor the scene's peak threshold). None (default):
            no growth. Blobs under the buildings' smallest area kept do not grow. 0.2
            (:data:`~geounet.vectorizing.confidence.GROW_CONFIDENCE`) raised object F1 on
            Zanzibar (+0.046) and Inria (+0.027), Kampala +0.005, Atlanta -0.007, the
            synthetic demo -0.022. Growth follows connectivity within each block of
            ``window_size``. The building layer's
            ``attrs["grow_confidence"]`` says which value was used (None: none).
        overwrite: Replace existing outputs.
        window_size: Block size in pixels streamed at a time; memory follows it, not the
            raster size.
        allow_no_crs: Accept a class raster without a CRS: the layers are then in its pixel
            (transform) coordinates, without a CRS, and measured in those units, not metres.

    Returns:
        ``{class name: GeoDataFrame}`` in the raster's CRS; when written, each frame's
        ``attrs["path"]`` names its file.

    Raises:
        InvalidRasterError: Not a single-band integer raster.
        MissingCRSError: The raster has no CRS and ``allow_no_crs`` is False.
        InputNotFoundError: ``classified`` (or ``probabilities``) does not exist.
        InvalidParameterError: A bad parameter, ``min_peak_confidence`` or
            ``min_road_confidence`` without probabilities, a ``building_class`` /
            ``road_class`` other than the default that names no class, or a probability
            raster on another grid.
        OutputExistsError: ``out`` exists and ``overwrite`` is False.

    Example:
        Not run as a doctest: it needs a classified raster on disk.

        >>> layers = vectorize("classified.tif", "features.gpkg")      # doctest: +SKIP
        >>> sorted(layers)                                              # doctest: +SKIP
        ['building', 'road']
    """
    _check_parameters(min_area_m2, simplify_m, (spur_length_m, gap_m), window_size)
    info = _open_class_raster(classified, allow_no_crs)
    _check_class_raster(info)
    tags = _tags(info)  # read once: the defaults that classify recorded
    class_map = _class_map(info, tags, classes, window_size)
    building_class, road_class = _class_names(class_map, info, building_class, road_class)
    if out is not None:
        check_outputs(out, list(class_map.values()), overwrite=overwrite)
    probabilities, (min_peak, min_road, adaptive) = _probabilities(
        info, tags, probabilities, min_peak_confidence, min_road_confidence
    )
    min_area_m2, building_min_area = _min_areas(
        tags, class_map, building_class, min_area_m2, filtered=bool(min_peak)
    )
    by_name = {n: v for v, n in class_map.items()}
    road = by_name.get(road_class) if road_centerlines else None
    frame = MetricFrame.from_grid(info.crs, info.transform, info.height, info.width)
    peak_class = by_name.get(building_class)
    opts = _Options(min_area_m2, simplify_m, peak_class if regularize else None)
    _set_filters(opts, (min_peak, min_road, adaptive), (peak_class, building_min_area))
    opts.grow = _grow_level(grow_confidence, probabilities, peak_class, info, frame, opts.sized[1])
    _split_touching(opts, _separate(tags, separate, building_class), by_name.get(building_class))
    opts.separation, opts.size = SeparationOptions(min_separation_m), (info.height, info.width)
    with ExitStack() as stack:
        src = stack.enter_context(rasterio.open(info.path))
        prob = _open_readers(stack, src, probabilities, info, class_map, opts, allow_no_crs)
        tracer = PolygonTracer([v for v in class_map if v != road], info.height, info.width)
        skel = _skeleton_collector(road, info, frame, min_area_m2)
        _stream(src, prob, window_size, tracer, skel, frame, opts)
        layers = _polygon_layers(class_map, road, frame, opts, prob, window_size, peak_class)
        if skel is not None:
            name = class_map[skel.value]
            layers[name] = _road_layer(skel, name, frame, opts, prob, (spur_length_m, gap_m))
    layers = _in_order(layers, class_map, opts, building_class, (min_area_m2, min_peak))
    if out is not None:
        _write(layers, out, overwrite, allow_no_crs)
    return layers


def _write(
    layers: dict[str, gpd.GeoDataFrame], out: PathLike, overwrite: bool, allow_no_crs: bool
) -> None:
    """Write the layers; each frame's ``attrs["path"]`` names its file."""
    write_layers(layers, out, overwrite=overwrite, allow_no_crs=allow_no_crs)
    for gdf, path in zip(layers.values(), layer_paths(out, list(layers))):
        gdf.attrs["path"] = str(path)


def _set_filters(
    opts: _Options,
    thresholds: tuple[float | None, float | None, bool],
    sized: tuple[int | None, float],
) -> None:
    """The peak and road-line filters' thresholds, and the buildings' value and smallest area.

    ``thresholds`` is ``(min_peak, min_road, adaptive)``: with ``adaptive`` (the default peak
    threshold) the building pixels are counted per probability level while streaming, for
    :func:`~geounet.vectorizing.confidence.scene_peak_threshold`.
    """
    min_peak, min_road, adaptive = thresholds
    opts.min_peak, opts.min_road, opts.sized = min_peak or 0.0, min_road or 0.0, sized
    if adaptive and min_peak and sized[0] is not None:
        opts.peak_levels = np.zeros(256, np.int64)


def _grow_level(
    grow_confidence: float | None,
    probabilities: PathLike | None,
    building: int | None,
    info: RasterInfo,
    frame: MetricFrame,
    min_area_m2: float,
) -> tuple[int | None, int, float]:
    """``(building value, uint8 level, smallest blob in px)`` of the growth; value None: none.

    Blobs under the buildings' smallest area kept (``min_area_m2``) do not grow.
    """
    if grow_confidence is not None:
        if isinstance(grow_confidence, bool) or not 0 < float(grow_confidence) <= 1:
            raise InvalidParameterError(
                f"grow_confidence={grow_confidence!r} is not allowed: give a probability above "
                f"0 and at most 1 (off by default; {GROW_CONFIDENCE} was measured on real scenes)."
            )
        if probabilities is None:
            raise InvalidParameterError(
                f"grow_confidence={grow_confidence} needs the building probabilities, and "
                f"{info.path} names none that still exists: pass probabilities= "
                "(--probabilities) with the raster classify wrote beside it, or leave "
                "grow_confidence out."
            )
    if grow_confidence is None or building is None:
        return None, 256, 0.0
    px = frame.pixel_m[0] * frame.pixel_m[1]
    return building, max(1, math.ceil(float(grow_confidence) * 255)), min_area_m2 / px


def _split_touching(
    opts: _Options, decided: tuple[bool, float | None], building: int | None
) -> None:
    """Set ``opts`` to split the touching buildings of class value ``building``, if decided.

    ``decided`` is ``(separate, the training labels' split share or None)``.
    """
    opts.separate = building if decided[0] else None
    opts.label_split = decided


def _in_order(
    layers: dict[str, gpd.GeoDataFrame],
    class_map: dict[int, str],
    opts: _Options,
    building_class: str,
    used: tuple[float, float | None],
) -> dict[str, gpd.GeoDataFrame]:
    """The layers in class order, each with the ``min_area_m2`` and ``min_peak_confidence`` used.

    ``used`` is ``(min_area_m2, min_peak_confidence)``; buildings have their own area, and
    say whether they were split (``separate``) and the ``label_split_share`` that decided it.
    """
    min_area_m2, min_peak = used
    min_peak = None if min_peak is None else opts.min_peak  # the scene's, when lowered
    out = {n: layers[n] for n in class_map.values()}
    for name, gdf in out.items():
        area = opts.sized[1] if name == building_class else min_area_m2
        gdf.attrs.update(min_area_m2=float(area), min_peak_confidence=min_peak)
        if name == building_class:
            gdf.attrs.update(separate=opts.label_split[0], label_split_share=opts.label_split[1])
            grown = None if opts.grow[0] is None else round(opts.grow[1] / 255, 3)
            gdf.attrs["grow_confidence"] = grown
    return out


def _open_readers(
    stack: ExitStack,
    src: rasterio.io.DatasetReader,
    probabilities: PathLike | None,
    info: RasterInfo,
    class_map: dict[int, str],
    opts: _Options,
    allow_no_crs: bool,
) -> rasterio.io.DatasetReader | None:
    """Open the probability raster (if any) and set the block readers of the separation."""
    if opts.separate is not None:
        opts.class_reader = _WindowReader(src, 1, None)
    if probabilities is None:
        return None
    prob = stack.enter_context(rasterio.open(_check_prob_grid(probabilities, info, allow_no_crs)))
    opts.prob_bands = probability_bands(prob, class_map)
    if opts.separate is not None:
        opts.building_prob = _WindowReader(prob, opts.prob_bands[opts.separate], 1 / 255)
    return prob


def _probabilities(
    info: RasterInfo,
    tags: dict[str, str],
    probabilities: PathLike | None,
    min_peak: float | None,
    min_road: float | None,
) -> tuple[PathLike | None, tuple[float | None, float | None, bool]]:
    """The probability raster to use and the thresholds of the peak and road-line filters.

    The raster is the one given, else the one the class raster's tag names; the thresholds
    are None without one. The flag says the peak threshold is the default, which the scene
    may lower (:func:`~geounet.vectorizing.confidence.scene_peak_threshold`).
    """
    given = {"min_peak_confidence": min_peak, "min_road_confidence": min_road}
    if min_peak is not None:
        check_min_peak(min_peak)
    if min_road is not None:
        check_confidence(min_road, "min_road_confidence", ROAD_CONFIDENCE, "every road line")
    if probabilities is None:
        probabilities = tagged_probabilities(info.path, tags.get(PROBABILITIES_TAG))
    name, value = next(((k, v) for k, v in given.items() if v is not None), (None, None))
    if probabilities is None and name is not None:
        what = "building" if name == "min_peak_confidence" else "road"
        raise InvalidParameterError(
            f"{name}={value} needs the {what} probabilities, and {info.path} "
            "names none that still exists: pass probabilities= (--probabilities) with the "
            "raster classify wrote beside it (by default <its stem>_probabilities.tif), or "
            f"leave {name} out."
        )
    if probabilities is None:
        return None, (None, None, False)
    peak = float(PEAK_CONFIDENCE if min_peak is None else min_peak)
    road = float(ROAD_CONFIDENCE if min_road is None else min_road)
    return probabilities, (peak, road, min_peak is None)


def _min_areas(
    tags: dict[str, str],
    class_map: dict[int, str],
    building_class: str,
    min_area_m2: float | None,
    *,
    filtered: bool,
) -> tuple[float, float]:
    """``(min_area_m2 of every class, of buildings)``: as given, else the defaults.

    The default's building value is :func:`~geounet.vectorizing.sizes.filtered_min_area`
    when the peak filter runs (``filtered``).
    """
    if min_area_m2 is not None:
        return min_area_m2, min_area_m2
    default = _default_min_area(tags, class_map, building_class)
    return default, filtered_min_area(default) if filtered else default


def _separate(
    tags: dict[str, str], separate: bool | None, building_class: str
) -> tuple[bool, float | None]:
    """``(separate, share)``: as given, else from the class raster's label-split tag."""
    default, share = separate_from_tag(tags.get(LABEL_SPLIT_TAG), building_class)
    return (default if separate is None else bool(separate)), share


def _default_min_area(
    tags: dict[str, str], class_map: dict[int, str], building_class: str
) -> float:
    """``min_area_m2`` from the class raster's training-size tag, else the fallback."""
    value = min_area_from_tag(tags.get(MIN_AREA_TAG), class_map.values(), building_class)
    return MIN_AREA_FALLBACK_M2 if value is None else value


def _check_parameters(
    min_area_m2: float | None,
    simplify_m: float,
    road_lengths: tuple[float | None, float | None],
    window_size: int,
) -> None:
    checks = [("simplify_m", simplify_m)]
    if min_area_m2 is not None:
        checks.append(("min_area_m2", min_area_m2))
    for name, value in checks:
        if not value >= 0:
            raise InvalidParameterError(f"{name}={value} must be >= 0 (metres).")
    for name, value in zip(("spur_length_m", "gap_m"), road_lengths):
        if value is not None and not value >= 0:
            raise InvalidParameterError(f"{name}={value} must be >= 0 (metres) or None.")
    if int(window_size) != window_size or window_size < 16:
        raise InvalidParameterError(f"window_size={window_size} must be an integer >= 16.")


def _open_class_raster(path: PathLike, allow_no_crs: bool) -> RasterInfo:
    """Open the class raster; one without a CRS only when asked (features need a map frame)."""
    try:
        return open_raster(path, allow_no_crs=allow_no_crs)
    except MissingCRSError:
        raise MissingCRSError(
            f"{path}: the class raster has no coordinate reference system, so its features "
            "could not be placed on a map nor measured in metres. Assign the CRS of the "
            "image it was classified from (gdal_edit.py -a_srs EPSG:XXXX) and run again, or "
            "pass allow_no_crs=True (--allow-no-crs) for features in pixel coordinates."
        ) from None


def _tags(info: RasterInfo) -> dict[str, str]:
    """The class raster's tags (class names, probabilities, sizes and split of its labels)."""
    with rasterio.open(info.path) as src:
        return dict(src.tags())


def _check_class_raster(info: RasterInfo) -> None:
    if info.count != 1 or not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise InvalidRasterError(
            f"{info.path}: vectorize needs a single-band integer class raster (as written by "
            f"classify); this one has {info.count} band(s) of {info.dtype}. Give the class "
            "raster, not the image or the probabilities."
        )


def _class_map(
    info: RasterInfo, tags: dict[str, str], classes: Mapping[int, str] | None, window: int
) -> dict:
    """``{raster value: class name}`` of the classes to vectorize (no background, no nodata).

    ``tags`` are the raster's (its ``CLASSES`` tag names them when ``classes`` is None).
    """
    if classes is not None:
        mapping = parse_classes(classes, integer_values=True) or {}
        if info.nodata is not None and info.nodata in mapping:
            raise InvalidParameterError(
                f"classes maps {int(info.nodata)}, the nodata value of {info.path}; nodata "
                "pixels are never vectorized. Remove it, or unset the raster's nodata."
            )
    else:
        if tags.get("CLASSES"):
            mapping = parse_classes_tag(tags["CLASSES"], info.path)
        else:
            with rasterio.open(info.path) as src:
                mapping = _scan_values(src, info, window)
        mapping.pop(0, None)
    mapping = {v: n for v, n in mapping.items() if n != "background" and v != info.nodata}
    if len(set(mapping.values())) != len(mapping):
        raise InvalidParameterError(f"class names must be unique, got {list(mapping.values())}.")
    return mapping


def _class_names(
    class_map: dict[int, str], info: RasterInfo, building_class: str, road_class: str
) -> tuple[str, str]:
    """The building and road classes of a class raster.

    A name given must exist; the defaults ``building`` and ``road`` also find a class
    spelled otherwise (a model trained on ``Buildings``:
    :func:`~geounet.core.classes.special_class`).
    """
    names = list(class_map.values())
    found = []
    for arg, name, default in (
        ("building_class", building_class, "building"),
        ("road_class", road_class, "road"),
    ):
        if name != default and name not in names:
            raise InvalidParameterError(
                f"{arg}={name!r} is not a class of {info.path}; its classes are {names}. "
                "Give one of these names, or classes={value: name} for a plain label raster."
            )
        found.append(special_class(names, name) if name == default else name)
    return found[0], found[1]


def _scan_values(src: rasterio.io.DatasetReader, info: RasterInfo, window: int) -> dict:
    found: set[int] = set()
    for win in iter_windows(info.height, info.width, window):
        found.update(np.unique(src.read(1, window=win)).tolist())
    found.discard(0)
    mapping = {v: f"class_{v}" for v in sorted(found) if v != info.nodata}
    warnings.warn(
        f"{info.path} has no CLASSES tag and no classes= was given: vectorizing every value "
        f"but 0 and nodata as {list(mapping.values())}. Pass classes={{value: name}} to name "
        "them.",
        UserWarning,
        stacklevel=3,
    )
    return mapping


def _check_prob_grid(path: PathLike, info: RasterInfo, allow_no_crs: bool) -> PathLike:
    p = open_raster(path, allow_no_crs=allow_no_crs)
    same = (p.width, p.height) == (info.width, info.height) and p.crs == info.crs
    if not same or not p.transform.almost_equals(info.transform):
        raise InvalidParameterError(
            f"{path}: the probability raster is not on the grid of {info.path} "
            f"({p.width}x{p.height} {p.crs} vs {info.width}x{info.height} {info.crs}); give "
            "the probabilities written by the same classify run."
        )
    return p.path


def _skeleton_collector(
    road: int | None, info: RasterInfo, frame: MetricFrame, min_area_m2: float
) -> SkeletonCollector | None:
    if road is None:
        return None
    px_area = frame.pixel_m[0] * frame.pixel_m[1]
    return SkeletonCollector(
        road,
        info.height,
        info.width,
        frame.pixel_m,
        min_object_px=int(np.ceil(min_area_m2 / px_area)),
        max_hole_px=int(np.ceil(max(min_area_m2, ROAD_HOLE_M2) / px_area)),
    )


def _shapes_input(data: np.ndarray) -> np.ndarray:
    """Data in a type ``rasterio.features.shapes`` accepts."""
    if data.dtype.name in _SHAPES_DTYPES:
        return data
    return data.astype(np.int16 if data.dtype == np.int8 else np.int32)


def _stream(
    src: rasterio.io.DatasetReader,
    prob: rasterio.io.DatasetReader | None,
    window: int,
    tracer: PolygonTracer,
    skel: SkeletonCollector | None,
    frame: MetricFrame,
    opts: _Options,
) -> None:
    """One pass over the raster: polygons traced per window, road skeleton with a halo."""
    h, w = src.height, src.width
    halo = ROAD_HALO_PX if skel is not None and max(h, w) > window else 0
    for win in iter_windows(h, w, window):
        r0, c0, r1, c1 = win.row_off, win.col_off, win.row_off + win.height, win.col_off + win.width
        e0, f0 = max(r0 - halo, 0), max(c0 - halo, 0)
        ext = src.read(1, window=Window(f0, e0, min(c1 + halo, w) - f0, min(r1 + halo, h) - e0))
        argmax = core = _shapes_input(ext[r0 - e0 : r1 - e0, c0 - f0 : c1 - f0])
        if opts.building_prob is not None:
            opts.building_prob.load(win)
        value, level, min_px = opts.grow
        if value is not None and prob is not None:
            levels = _building_levels(prob, win, value, opts)
            core = core if levels is None else grow_objects(core, levels, value, level, min_px)
        if opts.class_reader is not None:
            opts.class_reader.load(win, core)
        if opts.peak_levels is not None and prob is not None:  # the scene's level: arg-max pixels
            _count_peak_levels(prob, win, argmax, opts)
        _finish(*tracer.trace(core, r0, c0), frame, opts)
        if skel is not None:
            conf = None
            if prob is not None and opts.prob_bands:
                conf = prob.read(opts.prob_bands[skel.value], window=win) / 255.0
            skel.add(ext, e0, f0, (r0, c0, r1, c1), conf)
    _finish(*tracer.merged(), frame, opts)


def _count_peak_levels(
    prob: rasterio.io.DatasetReader, win: Window, core: np.ndarray, opts: _Options
) -> None:
    """Add the window's building pixels to ``opts.peak_levels`` by their probability (0-255)."""
    value = opts.sized[0]
    data = None if value is None else _building_levels(prob, win, value, opts)
    if data is None:
        return
    levels = np.clip(data[core == value], 0, 255).astype(np.int64)
    opts.peak_levels += np.bincount(levels, minlength=256)[:256]


def _building_levels(
    prob: rasterio.io.DatasetReader, win: Window, value: int, opts: _Options
) -> np.ndarray | None:
    """The window's probability of class ``value`` (uint8), read once per window.

    The separation's block when it holds that class, else a read; None without such a band.
    """
    reader = opts.building_prob
    if reader is not None and reader.data is not None and opts.separate == value:
        return reader.data
    if opts.prob_bands and value in opts.prob_bands:
        return prob.read(opts.prob_bands[value], window=win)
    return None


def _finish(geoms: np.ndarray, values: np.ndarray, frame: MetricFrame, opts: _Options) -> None:
    """Split touching buildings, clean traced polygons (pixel coordinates), keep them in metres."""
    if len(geoms) == 0:
        return
    if opts.separate is not None and (values == opts.separate).any():
        geoms, values = _split_buildings(geoms, values, frame, opts)
    regularize = values == opts.building if opts.building is not None else False
    value, area = opts.sized
    min_area: float | np.ndarray = opts.min_area_m2
    if value is not None:  # buildings under the peak filter keep a smaller size
        min_area = np.where(values == value, area, opts.min_area_m2)
    cleaned, keep = clean_polygons(geoms, frame, min_area, opts.simplify_m, regularize)
    opts.geoms.append(cleaned)
    opts.values.append(values[keep])
    if opts.prob_bands is not None:
        opts.traced.append(geoms[keep])


def _split_buildings(
    geoms: np.ndarray, values: np.ndarray, frame: MetricFrame, opts: _Options
) -> tuple[np.ndarray, np.ndarray]:
    """Replace each traced building outline by its instances (touching buildings apart)."""
    sel = values == opts.separate
    pieces, _ = split_polygons(
        geoms[sel],
        opts.separate,
        opts.class_reader,
        frame.pixel_m,
        opts.separation,
        size=opts.size,
        prob=opts.building_prob,
    )
    geoms = np.concatenate([geoms[~sel], pieces])
    values = np.concatenate([values[~sel], np.full(len(pieces), opts.separate, values.dtype)])
    return geoms, values


class _WindowReader:
    """Blocks of one band for :func:`split_polygons` (class values, or probabilities).

    The window being traced is served from memory; other blocks (objects merged across
    seams) are read from the file. ``scale`` turns the uint8 probabilities into 0-1.
    """

    def __init__(self, src: rasterio.io.DatasetReader, band: int, scale: float | None) -> None:
        self.src, self.band, self.scale = src, band, scale
        self.data: np.ndarray | None = None
        self.origin = (0, 0)

    def load(self, win: Window, data: np.ndarray | None = None) -> None:
        """Hold the window that is being traced (read unless ``data`` is given)."""
        self.data = self.src.read(self.band, window=win) if data is None else data
        self.origin = (int(win.row_off), int(win.col_off))

    def __call__(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        a, b = r0 - self.origin[0], c0 - self.origin[1]
        d = self.data
        inside = d is not None and a >= 0 and b >= 0
        if inside and r1 - r0 + a <= d.shape[0] and c1 - c0 + b <= d.shape[1]:
            block = d[a : a + r1 - r0, b : b + c1 - c0]
        else:
            block = self.src.read(self.band, window=Window(c0, r0, c1 - c0, r1 - r0))
        return block if self.scale is None else block.astype(np.float32) * self.scale


def clean_polygons(
    geoms_px: np.ndarray,
    frame: MetricFrame,
    min_area_m2: float | np.ndarray,
    simplify_m: float,
    regularize: np.ndarray | bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill small holes, drop small objects, simplify or regularize, in metres.

    Args:
        geoms_px: Traced polygons in pixel coordinates, as :class:`PolygonTracer` gives them
            (without collinear vertices).
        frame: The raster's metric frame.
        min_area_m2: Objects smaller than this are dropped; holes smaller than this filled
            (one value, or one per polygon).
        simplify_m: Douglas-Peucker tolerance; 0 keeps the pixel outline.
        regularize: Per polygon (or for all): regularize it as a building.

    Returns:
        ``(polygons in the metric frame, indices of the kept inputs)``.
    """
    # canonical rings (fixed start; traced and seam-merged outlines have no collinear
    # points): an object gives the same result whether or not window seams cut it
    canon = shapely.normalize(geoms_px)
    odd = (shapely.get_type_id(canon) != 3) | shapely.is_empty(canon)
    canon[odd] = largest_polygon(shapely.make_valid(shapely.normalize(geoms_px[odd])))
    metric = fill_small_holes(frame.geoms_to_metric(canon), min_area_m2)
    keep = np.flatnonzero(shapely.area(metric) >= min_area_m2)  # None (no polygon): NaN
    metric = metric[keep]
    reg = np.broadcast_to(np.asarray(regularize, dtype=bool), geoms_px.shape)[keep]
    out = np.empty(len(metric), dtype=object)
    out[~reg] = simplify_polygons(metric[~reg], simplify_m)
    if reg.any():
        out[reg] = regularize_buildings(
            metric[reg], pixel_m=frame.pixel_size, simplify_m=simplify_m
        )
    return out, keep


def _polygon_layers(
    class_map: dict[int, str],
    road: int | None,
    frame: MetricFrame,
    opts: _Options,
    prob: rasterio.io.DatasetReader | None,
    window: int,
    peak_class: int | None,
) -> dict[str, gpd.GeoDataFrame]:
    """One frame per polygon class; with probabilities, confidences and the peak filter."""
    empty = np.empty(0, dtype=object)
    geoms = np.concatenate(opts.geoms) if opts.geoms else empty
    values = np.concatenate(opts.values) if opts.values else np.empty(0, np.int64)
    conf = peak = None
    dropped = 0
    if prob is not None and opts.prob_bands is not None:
        traced = np.concatenate(opts.traced) if opts.traced else empty
        conf, peak = zonal_confidence(prob, opts.prob_bands, traced, values, window)
        if opts.peak_levels is not None:  # the default: lowered where the scene is rarely sure
            opts.min_peak = scene_peak_threshold(opts.peak_levels, opts.min_peak)
        unsure = (values == peak_class) & (peak < opts.min_peak)
        dropped = int(unsure.sum())
        _warn_if_mostly_unsure(dropped, int((values == peak_class).sum()), opts)
        geoms, values, conf, peak = (a[~unsure] for a in (geoms, values, conf, peak))
    layers = {}
    for value, name in class_map.items():
        if value == road:
            continue
        sel = values == value
        g = geoms[sel]
        data = {"class": [name] * len(g), "area_m2": shapely.area(g)}
        data["perimeter_m"] = shapely.length(g)
        if conf is not None and peak is not None:
            data["mean_confidence"] = conf[sel]
            data["peak_confidence"] = peak[sel]
        layers[name] = _frame(data, frame.geoms_to_map(g), frame, "Polygon")
        layers[name].attrs["unsure_removed"] = dropped if value == peak_class else 0
    return layers


def _warn_if_mostly_unsure(dropped: int, found: int, opts: _Options) -> None:
    """Warn when the peak filter drops most buildings: the model is rarely sure of any."""
    if found >= UNSURE_WARN_MIN and dropped > found / 2:
        warnings.warn(
            f"{dropped} of {found} buildings were dropped because the network was never "
            f"sure of them (no pixel at min_peak_confidence={opts.min_peak:.3g}); a model trained "
            "briefly is rarely sure of anything. Train longer, or pass a lower "
            "min_peak_confidence (--min-peak-confidence; 0 keeps them all).",
            UserWarning,
            stacklevel=4,
        )


def _frame(data: dict, geoms: np.ndarray, frame: MetricFrame, kind: str) -> gpd.GeoDataFrame:
    gdf = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=frame.crs), crs=frame.crs)
    gdf.attrs["geometry_type"] = kind
    return gdf


def _road_layer(
    skel: SkeletonCollector,
    name: str,
    frame: MetricFrame,
    opts: _Options,
    prob: rasterio.io.DatasetReader | None,
    lengths: tuple[float | None, float | None],
) -> gpd.GeoDataFrame:
    """The road centre lines; ``lengths`` are ``(spur_length_m, gap_m)`` (None: defaults)."""
    idx, half, conf = skel.result()
    spur, gap = lengths
    g = road_network(
        idx, half, frame, width=skel.width, spur_length_m=spur, gap_m=gap, confidence=conf,
        min_confidence=opts.min_road if prob is not None else 0.0,
    )  # fmt: skip
    lines, mean_conf = network_lines(g, opts.simplify_m)
    data: dict[str, Any] = {"class": [name] * len(lines), "length_m": shapely.length(lines)}
    if prob is not None:
        data["mean_confidence"] = mean_conf
    gdf = _frame(data, frame.geoms_to_map(lines), frame, "LineString")
    keys = ("spur_length_m", "road_width_m", "gap_m", "unsure_removed")
    gdf.attrs.update({k: g.graph[k] for k in keys})
    gdf.attrs["min_road_confidence"] = opts.min_road if prob is not None else None
    return gdf
