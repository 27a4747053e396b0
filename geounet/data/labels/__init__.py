"""Labels onto the image grid: rasterize vector files, align label rasters, decode colour masks.

A *label source* turns one label file into class indices on the pixel grid of one image, window
by window, so memory never grows with the scene:

- :class:`VectorLabels` reads a vector file (GeoPackage, Shapefile, GeoJSON, FlatGeobuf...),
  reprojects it to the image CRS, repairs invalid geometries, buffers lines and points by
  ``line_width_m / 2`` metres (in a local metric CRS, also when the image CRS is geographic),
  fills polygons, and rasterizes only the features that touch the requested window.
- :class:`RasterLabels` reads a label raster on the same grid directly, or resamples it
  (nearest) onto the image grid through a ``WarpedVRT``. Integer values or colours (RGB masks,
  palette PNGs) are mapped to class indices.

Conventions (they are the documented behaviour of :func:`geounet.data.prepare.prepare_data`):

- Index 0 is ``background``; 255 (:data:`geounet.core.types.IGNORE_INDEX`) means "no label" and is
  ignored by the loss. Pixels outside the label raster, label ``nodata`` pixels and, in colour
  masks, black ``#000000`` (padding) unless it is declared as a class, become 255.
- Without ``classes``: a vector file gives one class named after the file (or one class per
  value of ``label_field``, ``Buildings``/``roads`` in any case as ``building``/``road``:
  :func:`geounet.core.classes.inferred_name`, the classes ``vectorize`` treats so); an
  integer label raster gives one class per value found (0 is background, any other value
  ``v`` is named ``class_v``, e.g. a 0/255 mask gives ``{255: "class_255"}``); an RGB mask
  gives one class per colour found, named by the colour. A file whose name says it holds
  buildings or roads alone (``buildings.geojson``, ``osm_roads.gpkg``, a 0/255
  ``buildings_mask.tif``) names its one class ``building`` or ``road``.
- Where vector features of different classes overlap, the class listed later wins.

Example:
    Not run as a doctest: it needs a vector file and an opened image.

    >>> src = VectorLabels("roads.geojson", image_info, line_width_m=4)   # doctest: +SKIP
    >>> src.bind(make_classes({1: "road"}))                                # doctest: +SKIP
    >>> src.read(0, 0, 256, 256).shape                                     # doctest: +SKIP
    (256, 256)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geounet.core.classes import (
    CANONICAL_NAMES,
    ClassSpec,
    inferred_name,
    make_classes,
    parse_classes,
)
from geounet.core.errors import InputNotFoundError, LabelError
from geounet.core.types import PathLike
from geounet.data.labels.common import LabelSource, fmt_values
from geounet.data.labels.raster import BLACK, RasterLabels
from geounet.data.labels.vector import VectorLabels
from geounet.io.raster import RasterInfo

__all__ = [
    "VECTOR_SUFFIXES",
    "LabelSource",
    "RasterLabels",
    "VectorLabels",
    "is_color_mapping",
    "is_vector_path",
    "open_labels",
    "resolve_classes",
]

#: File suffixes read as vector labels; anything else is opened as a raster.
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite")


def is_vector_path(path: PathLike) -> bool:
    """True when ``path`` has the suffix of a vector format (see :data:`VECTOR_SUFFIXES`)."""
    return Path(split_layer(path)[0]).suffix.lower() in VECTOR_SUFFIXES


def split_layer(path: PathLike) -> tuple[Path, str | None]:
    """``(file, layer)`` of a label source: ``file.gpkg|layername=buildings`` names a layer.

    That is how QGIS writes a layer's source (Layer Properties > Information), so a layer of
    a GeoPackage can be copied from there.

    Example:
        >>> split_layer("town.gpkg|layername=buildings")
        (PosixPath('town.gpkg'), 'buildings')
        >>> split_layer("roofs.geojson")
        (PosixPath('roofs.geojson'), None)
    """
    text = str(path)
    if "|" not in text:
        return Path(text), None
    file, _, rest = text.partition("|")
    options = dict(part.partition("=")[::2] for part in rest.split("|"))
    return Path(file), options.get("layername") or None


def open_labels(
    path: PathLike,
    image: RasterInfo,
    *,
    label_field: str | None = None,
    line_width_m: float = 4.0,
    colors: bool | None = None,
    allow_no_crs: bool = False,
    separate: str | None = None,
) -> VectorLabels | RasterLabels:
    """Open a label file for an image: a vector file by suffix, else a raster.

    Args:
        path: Label file.
        image: The image it labels.
        label_field: Attribute with the class (vectors only).
        line_width_m: Width given to lines and points (vectors only).
        colors: Colour-coded raster mask (True), integer values (False) or decide (None).
        allow_no_crs: Take a vector file without a CRS to be in the image's CRS (refused
            otherwise).
        separate: Class whose touching polygons are parted by a background gap (vectors
            only; see :class:`VectorLabels`).

    Returns:
        A :class:`VectorLabels` or :class:`RasterLabels`.
    """
    p, layer = split_layer(path)
    if not p.exists():
        raise InputNotFoundError(
            f"{p}: label file not found (labels for {image.path}); check the path."
        )
    if is_vector_path(p):
        return VectorLabels(
            p,
            image,
            label_field=label_field,
            line_width_m=line_width_m,
            allow_no_crs=allow_no_crs,
            separate=separate,
            layer=layer,
        )
    return RasterLabels(p, image, colors=colors)


def is_color_mapping(mapping: Mapping[Any, str] | None) -> bool | None:
    """True when every key is a ``"#RRGGBB"`` colour, False for other keys, None if unknown."""
    if not mapping:
        return None
    return all(isinstance(k, str) and k.startswith("#") for k in mapping)


def _value_name(value: Any, values: Sequence[Any]) -> str:
    """The class name of a label value: :func:`inferred_name` of a string, ``class_<v>``.

    A string keeps its own spelling when another of the ``values`` found is spelled as its
    inferred name (``"Building"`` beside ``"building"``).
    """
    if not isinstance(value, str):
        return f"class_{value}"
    name = inferred_name(value)
    return value if name != value and name in values else name


def _stem_class(stem: str) -> str | None:
    """``building`` or ``road`` when a file's name says it holds that class alone.

    One of its words is spelled so (``buildings_mask``, ``osm_roads_2020``,
    :data:`~geounet.core.classes.CANONICAL_NAMES`) and no word names the other.
    """
    named = {CANONICAL_NAMES.get(w) for w in re.split(r"[^a-z]+", stem.lower())} - {None}
    return named.pop() if len(named) == 1 else None


#: A label field with more distinct values than this, nearly one per feature, is refused as
#: an identifier when the classes are inferred from it.
MAX_INFERRED_FIELD_VALUES = 20


def _refuse_identifier_field(src: VectorLabels, found: list[Any]) -> None:
    """Refuse a ``label_field`` that numbers the features (``id``, ``osm_id``) as classes."""
    n = src.feature_count()
    if len(found) <= MAX_INFERRED_FIELD_VALUES or len(found) < n / 2:
        return
    raise LabelError(
        f"{src.path}: label_field={src.label_field!r} holds {len(found)} distinct values over "
        f"{n} features: it numbers the features rather than naming classes. Give the field "
        f"that holds the class (fields: {', '.join(src.fields) or 'none'}), leave "
        "label_field out to make every feature one class, or pass classes= to say which "
        "values are classes."
    )


def _infer(sources: Sequence[LabelSource]) -> tuple[dict[Any, str], dict[str, str]]:
    mapping: dict[Any, str] = {}
    colors: dict[str, str] = {}
    for src in sources:
        if isinstance(src, VectorLabels) and src.label_field is None:
            mapping.setdefault(1, _stem_class(src.name) or src.name)
            continue
        found = list(src.found_values())
        if isinstance(src, VectorLabels):
            _refuse_identifier_field(src, found)
        classes = [v for v in found if v not in (0, "0")]
        name = src.name if isinstance(src, VectorLabels) else src.path.stem
        stem = _stem_class(name) if len(classes) == 1 else None  # a 0/255 mask
        for v in found:
            if isinstance(src, RasterLabels) and src.colors:
                if v != BLACK:
                    mapping[v] = v
            elif v in (0, "0"):
                mapping[0] = "background"
            elif v not in mapping or mapping[v] == f"class_{v}":  # a name beats a number
                mapping[v] = stem or _value_name(v, found)
                pal = src.palette_colors() if isinstance(src, RasterLabels) else {}
                if isinstance(v, int) and v in pal:
                    colors[mapping[v]] = pal[v]
    if not mapping:
        raise LabelError(
            "no label value was found in "
            + ", ".join(str(s.path) for s in sources)
            + "; pass classes= explicitly or check the label files."
        )
    ints = sorted((k for k in mapping if not isinstance(k, str)), key=float)
    strs = sorted(k for k in mapping if isinstance(k, str))
    return {k: mapping[k] for k in [*ints, *strs]}, colors


def resolve_classes(classes: Any, sources: Sequence[LabelSource]) -> list[ClassSpec]:
    """The class list for a set of label sources: declared, or inferred from the values found.

    Args:
        classes: The ``classes`` argument of ``prepare_data`` (any spelling that
            :func:`geounet.core.classes.parse_classes` reads), or None to infer.
        sources: The opened label sources.

    Returns:
        ``[background, ...]`` (see :func:`geounet.core.classes.make_classes`).

    Raises:
        LabelError: A label file holds values the classes do not declare (the message lists
            the values found), or nothing to infer classes from.
    """
    mapping = parse_classes(classes)
    colors: dict[str, str] = {}
    if mapping is None:
        mapping, colors = _infer(sources)
    specs = make_classes(mapping, colors=colors)
    declared = ", ".join(f"{c.value!r} ({c.name})" for c in specs)
    for src in sources:
        missing = src.unknown(specs)
        if missing:
            what = "attribute values" if isinstance(src, VectorLabels) else "label values"
            raise LabelError(
                f"{src.path}: {what} {fmt_values(missing)} are not declared in classes; values "
                f"found: {fmt_values(src.found_values())}; classes declare: {declared}. Add the "
                "missing values to classes= (or fix the labels)."
            )
    return specs
