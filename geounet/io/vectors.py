"""Write vector layers, one per class, in the format the output's extension names.

=================  ==============  =========================================================
extension          format          layout
=================  ==============  =========================================================
``.gpkg`` / none   GeoPackage      one file, one layer per class (``.gpkg`` is appended to a
                                   name without extension)
``.geojson``       GeoJSON         one file per class: ``<stem>_<class>.geojson``
``.shp``           ESRI Shapefile  one file set per class: ``<stem>_<class>.shp`` (+ .dbf...);
                                   long attribute names shortened (:data:`SHAPEFILE_FIELDS`)
``.fgb``           FlatGeobuf      one file per class: ``<stem>_<class>.fgb``
``.parquet``       GeoParquet      one file per class: ``<stem>_<class>.parquet`` (pyarrow)
=================  ==============  =========================================================

Every file is written under a temporary name beside its target and renamed only when all
layers were written, so an interrupted run never leaves a half-written file under a final
name; existing outputs are refused unless ``overwrite=True``. Every layer carries its CRS.

Example:
    >>> vector_output_path("features")
    PosixPath('features.gpkg')
    >>> [p.name for p in layer_paths("roads.shp", ["road", "building"])]
    ['roads_road.shp', 'roads_building.shp']
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import geopandas as gpd

from geounet.core.errors import InvalidParameterError, OutputExistsError
from geounet.core.types import PathLike, import_optional
from geounet.io.raster import atomic_output

__all__ = [
    "SHAPEFILE_FIELDS",
    "VECTOR_FORMATS",
    "layer_paths",
    "vector_output_path",
    "write_layers",
]

#: Extension -> OGR driver (``"parquet"`` is written by geopandas through pyarrow).
VECTOR_FORMATS: dict[str, str] = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".shp": "ESRI Shapefile",
    ".fgb": "FlatGeobuf",
    ".parquet": "parquet",
}
_SHP_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")
#: Attribute names shortened in shapefiles (dBASE allows 10 characters).
SHAPEFILE_FIELDS = {
    "perimeter_m": "perim_m",
    "mean_confidence": "mean_conf",
    "peak_confidence": "peak_conf",
}


def vector_output_path(out: PathLike) -> Path:
    """The path written for ``out``: ``.gpkg`` appended when it has no extension.

    Raises:
        InvalidParameterError: If the extension is not one of :data:`VECTOR_FORMATS`.
    """
    p = Path(out)
    suffix = p.suffix.lower()
    if not suffix:
        return p.with_name(p.name + ".gpkg")
    if suffix not in VECTOR_FORMATS:
        allowed = ", ".join(VECTOR_FORMATS)
        raise InvalidParameterError(
            f"{p}: unknown vector format {suffix!r}; use one of {allowed} "
            "(or no extension for a GeoPackage)."
        )
    return p


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or "layer"


def layer_paths(out: PathLike, names: Sequence[str]) -> list[Path]:
    """The file that holds each layer: ``out`` itself for GeoPackage, else ``<stem>_<name>``."""
    p = vector_output_path(out)
    if p.suffix.lower() == ".gpkg":
        return [p] * len(names)
    return [p.with_name(f"{p.stem}_{_safe_name(n)}{p.suffix}") for n in names]


def check_outputs(out: PathLike, names: Sequence[str], *, overwrite: bool = False) -> None:
    """Fail early if a file :func:`write_layers` would write exists (and the format is known).

    Raises:
        OutputExistsError: A target (or a shapefile sidecar) exists and ``overwrite`` is False.
        InvalidParameterError: Unknown extension.
        DependencyNotFoundError: ``.parquet`` without pyarrow installed.
    """
    paths = layer_paths(out, names)
    if vector_output_path(out).suffix.lower() == ".parquet":
        import_optional("pyarrow", package="pyarrow")
    if overwrite:
        return
    for p in paths:
        sides = [p.with_suffix(s) for s in _SHP_SIDECARS] if p.suffix.lower() == ".shp" else []
        for q in (p, *sides):
            if q.exists():
                raise OutputExistsError(
                    f"{q}: output already exists; pass overwrite=True (--overwrite) to replace "
                    "it or choose another name."
                )


def _write_one(gdf: gpd.GeoDataFrame, path: Path, layer: str, driver: str) -> None:
    if driver == "parquet":
        gdf.to_parquet(path, index=False)
        return
    if driver == "ESRI Shapefile":  # dBASE field names hold at most 10 characters
        gdf = gdf.rename(columns=SHAPEFILE_FIELDS)
    types = set(gdf.geom_type.dropna())
    if len(types) == 1:
        geometry_type = types.pop()
    else:  # empty layers say what they would hold in attrs; mixed types are "Unknown"
        geometry_type = "Unknown" if types else gdf.attrs.get("geometry_type", "Unknown")
    gdf.to_file(
        path, driver=driver, layer=layer, engine="pyogrio", geometry_type=geometry_type, index=False
    )


def write_layers(
    layers: Mapping[str, gpd.GeoDataFrame],
    out: PathLike,
    *,
    overwrite: bool = False,
    allow_no_crs: bool = False,
) -> list[Path]:
    """Write each GeoDataFrame as a layer named after its key, atomically.

    Args:
        layers: ``{layer name: GeoDataFrame}``; each must have a CRS.
        out: Target file; its extension picks the format (see the module table).
        overwrite: Replace existing outputs.
        allow_no_crs: Accept layers without a CRS (pixel coordinates, asked for by the user).

    Returns:
        The files written (once each, in layer order).

    Raises:
        OutputExistsError: An output exists and ``overwrite`` is False.
        InvalidParameterError: Unknown extension, or a layer without a CRS.
        DependencyNotFoundError: ``.parquet`` without pyarrow installed.

    Example:
        Not run as a doctest: it needs a GeoDataFrame and writes a file.

        >>> write_layers({"building": gdf}, "features.gpkg")    # doctest: +SKIP
        [PosixPath('features.gpkg')]
    """
    names = list(layers)
    paths = layer_paths(out, names)
    driver = VECTOR_FORMATS[paths[0].suffix.lower()] if paths else "GPKG"
    for name, gdf in layers.items():
        if gdf.crs is None and not allow_no_crs:
            raise InvalidParameterError(
                f"layer {name!r} has no CRS; every layer must carry one (or pass "
                "allow_no_crs=True to write pixel coordinates)."
            )
    check_outputs(out, names, overwrite=overwrite)
    unique = list(dict.fromkeys(paths))
    with contextlib.ExitStack() as stack:
        tmps = {p: stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in unique}
        shapefile = driver == "ESRI Shapefile"
        if shapefile:  # runs first on exit: drops the sidecars of a failed write
            stack.callback(_sidecars, tmps.values(), None)
        for (name, gdf), p in zip(layers.items(), paths):
            _write_one(gdf, tmps[p], name, driver)
        if shapefile:  # every layer written: sidecars to their final names, each .shp last
            _sidecars(tmps.values(), list(tmps))
    return unique


def _sidecars(tmps: Iterable[Path], targets: Sequence[Path] | None) -> None:
    """Move the shapefile sidecars of ``tmps`` beside ``targets``, or delete them (None)."""
    for i, tmp in enumerate(tmps):
        for ext in _SHP_SIDECARS:
            side = tmp.with_suffix(ext)
            if not side.exists():
                continue
            if targets is None:
                side.unlink()
            else:
                os.replace(side, targets[i].with_suffix(ext))
