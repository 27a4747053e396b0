"""What ``evaluate`` compares: a class raster or a vector file, read into one shape.

A vector file holds one layer per class (named after the class, as ``vectorize`` writes them)
or layers with a ``class`` field (class names, or raster values of the classes). A file with a
single layer without that field is one class: the class its layer is named after, else by its
geometry: polygons are ``building_class``, lines ``road_class``.

Example:
    Not run as a doctest: it needs a class raster on disk.

    >>> source = open_source("classified.tif")                 # doctest: +SKIP
    >>> source.kind, source.crs                                 # doctest: +SKIP
    ('raster', CRS.from_epsg(32616))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from rasterio.crs import CRS

from geounet.core.errors import InputNotFoundError, InvalidParameterError, LabelError
from geounet.core.types import PathLike
from geounet.evaluation.pixels import bounds_in
from geounet.io.raster import RasterInfo, open_raster
from geounet.io.vectors import VECTOR_FORMATS

__all__ = ["CLASS_FIELD", "VECTOR_EXTENSIONS", "Source", "layer_kind", "open_source"]

#: Extensions read as vector files (everything else is opened as a raster).
VECTOR_EXTENSIONS = (*VECTOR_FORMATS, ".json")
#: Attribute that names the class of each feature in a single-layer vector file.
CLASS_FIELD = "class"


@dataclass
class Source:
    """One side of an evaluation (prediction or truth).

    Attributes:
        path: The file.
        kind: ``"raster"`` or ``"vector"``.
        info: The raster's description (rasters only).
        layers: ``{class name: GeoDataFrame}`` in the file's CRS (vectors only).
    """

    path: Path
    kind: str
    info: RasterInfo | None = None
    layers: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)

    @property
    def crs(self) -> CRS | None:
        """The CRS of the raster or of the first vector layer."""
        if self.info is not None:
            return self.info.crs
        crs = next((g.crs for g in self.layers.values() if g.crs is not None), None)
        return CRS.from_user_input(crs) if crs is not None else None

    def bounds(self, crs: CRS | None) -> tuple[float, float, float, float] | None:
        """The extent in ``crs`` (None for an empty vector file)."""
        if self.info is not None:
            return bounds_in(self.info.bounds, self.info.crs, crs)
        frames = [g for g in self.layers.values() if not g.empty]
        if not frames:
            return None
        b = np.array([bounds_in(tuple(g.total_bounds), _crs(g), crs) for g in frames])
        return (
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            float(b[:, 2].max()),
            float(b[:, 3].max()),
        )


def _crs(gdf: gpd.GeoDataFrame) -> CRS | None:
    return CRS.from_user_input(gdf.crs) if gdf.crs is not None else None


def open_source(
    path: PathLike,
    *,
    building_class: str = "building",
    road_class: str = "road",
    classes: Mapping[int, str] | None = None,
    allow_no_crs: bool = False,
) -> Source:
    """Open a class raster or read a vector file's class layers.

    Args:
        path: Raster (GeoTIFF...) or vector file (extensions :data:`VECTOR_EXTENSIONS`).
        building_class: Class of a single polygon layer without a ``class`` field.
        road_class: Class of a single line layer without a ``class`` field.
        classes: ``{raster value: name}`` to name integer ``class`` attributes.
        allow_no_crs: Accept a raster without a CRS (compared pixel for pixel).

    Raises:
        InputNotFoundError: The file does not exist.
        InvalidRasterError: Not a usable raster.
        MissingCRSError: A raster without a CRS and ``allow_no_crs`` is False.
        LabelError: A vector file without features' CRS, or that cannot be read.
    """
    p = Path(path)
    if p.suffix.lower() not in VECTOR_EXTENSIONS:
        return Source(p, "raster", info=open_raster(p, allow_no_crs=allow_no_crs))
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file; check the path (cwd is {Path.cwd()}).")
    layers: dict[str, gpd.GeoDataFrame] = {}
    read = _read_layers(p)
    for name, frame in read.items():
        if frame.crs is None:
            raise LabelError(
                f"{p}: layer {name!r} has no CRS, so it cannot be placed against the other "
                "file; assign one (ogr2ogr -a_srs EPSG:XXXX) and run again."
            )
        if len(read) > 1 and CLASS_FIELD not in frame:  # a layer per class, named after it
            layers[name] = frame[["geometry"]]
            continue
        for cls, part in _split_classes(p, name, frame, building_class, road_class, classes):
            layers[cls] = pd.concat([layers[cls], part]) if cls in layers else part
    return Source(p, "vector", layers=layers)


def _read_layers(p: Path) -> dict[str, gpd.GeoDataFrame]:
    try:
        if p.suffix.lower() == ".parquet":
            return {p.stem: gpd.read_parquet(p)}
        names = [str(n) for n, _ in pyogrio.list_layers(p)]
        return {n: gpd.read_file(p, layer=n, engine="pyogrio") for n in names}
    except Exception as exc:  # pyogrio / arrow raise many types for unreadable files
        raise LabelError(
            f"{p}: cannot read it as a vector file ({exc}); give a GeoPackage, GeoJSON, "
            "Shapefile, FlatGeobuf or GeoParquet file."
        ) from exc


def layer_kind(gdf: gpd.GeoDataFrame) -> str | None:
    """``"polygon"``, ``"line"``, ``"point"`` or None (empty or mixed) for a layer."""
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)] if geoms.size else geoms
    if geoms.size == 0:
        return None
    ids = set(shapely.get_type_id(geoms).tolist()) - {7}  # collections are mixed
    kinds = {1: "line", 2: "line", 5: "line", 3: "polygon", 6: "polygon", 0: "point", 4: "point"}
    found = {kinds.get(i) for i in ids}
    return found.pop() if len(found) == 1 else None


def _split_classes(
    p: Path,
    layer: str,
    gdf: gpd.GeoDataFrame,
    building_class: str,
    road_class: str,
    classes: Mapping[int, str] | None,
) -> list[tuple[str, gpd.GeoDataFrame]]:
    """``(class name, features)`` pairs of one layer (see the module notes)."""
    frame = gdf[["geometry"]].copy() if CLASS_FIELD not in gdf else gdf[[CLASS_FIELD, "geometry"]]
    if CLASS_FIELD in gdf:
        values = gdf[CLASS_FIELD]
        names = values.map(lambda v: _class_name(p, v, classes))
        return [(str(n), frame[names == n][["geometry"]]) for n in pd.unique(names)]
    known = set((classes or {}).values()) | {building_class, road_class}
    if layer in known:
        return [(layer, frame)]
    kind = layer_kind(gdf)
    if kind is None and gdf.empty:
        return []
    if kind not in ("polygon", "line"):
        raise LabelError(
            f"{p}: layer {layer!r} holds {kind or 'mixed'} geometries and no {CLASS_FIELD!r} "
            "field, so its class is unknown; give one layer per class named after it, or a "
            f"{CLASS_FIELD!r} field with class names."
        )
    return [(building_class if kind == "polygon" else road_class, frame)]


def _class_name(p: Path, value: Any, classes: Mapping[int, str] | None) -> str:
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return value
    try:
        key = int(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"{p}: the {CLASS_FIELD!r} field holds {value!r}, neither a class name nor an "
            "integer raster value; give class names such as 'building'."
        ) from None
    if classes and key in classes:
        return classes[key]
    raise LabelError(
        f"{p}: the {CLASS_FIELD!r} field holds the value {key}, but no class name is known "
        "for it; pass classes={value: name} (--classes 1=building,2=road)."
    )
