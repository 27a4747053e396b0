"""Vector labels rasterized window by window onto an image grid.

Features are reprojected to the image CRS, repaired with ``shapely.make_valid``, polygons are
filled and lines and points are buffered by ``line_width_m / 2`` metres, measured in a local
metric CRS (the UTM zone when the image CRS is geographic, e.g. EPSG:4326). Only features
whose bounding box touches a window are rasterized for it (STR-tree query), so reading stays
cheap on big scenes. Where features of different classes overlap, the later class wins.

Example:
    Not run as a doctest: it needs a vector file and an opened image.

    >>> src = VectorLabels("roads.geojson", image_info, line_width_m=4)   # doctest: +SKIP
    >>> src.bind(make_classes({1: "road"}))                                # doctest: +SKIP
    >>> src.read(0, 0, 256, 256).shape                                     # doctest: +SKIP
    (256, 256)
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geounet.core.classes import ClassSpec, inferred_name
from geounet.core.errors import InputNotFoundError, LabelError, MissingCRSError
from geounet.core.types import PathLike
from geounet.data.labels.common import (
    LabelSource,
    no_overlap_error,
    norm_value,
    overlaps,
    to_image_crs,
)
from geounet.io.raster import RasterInfo, local_metric_crs, window_bounds

__all__ = ["VectorLabels"]


class VectorLabels(LabelSource):
    """Vector labels rasterized window by window onto one image's grid.

    Args:
        path: A vector file (first layer).
        image: The image the labels belong to.
        label_field: Attribute holding each feature's class, or None (one class for all).
        line_width_m: Width of lines (and diameter of points) in metres; for images without
            a CRS, in pixels.
        allow_no_crs: Take a file without a CRS to be in the image's CRS (with a warning);
            without it such a file is refused.
        separate: Name of a class (case-insensitive, e.g. ``"building"``) whose touching
            polygons are parted in what :meth:`read` returns: pixels where two of its
            features meet or overlap (4-neighbours burnt by different features) become
            background, a gap of about 2 pixels, as the U-Net paper does for touching
            cells. A network trained on such masks leaves a gap between touching roofs,
            so they vectorize as separate polygons. None: features are burnt as they are.

    Raises:
        InputNotFoundError: The file does not exist.
        LabelError: Unreadable, no features, only empty geometries, or ``label_field`` is not
            one of its fields.
        MissingCRSError: The file has no CRS, the image has one and ``allow_no_crs`` is False.
        CRSMismatchError: The features do not overlap the image.
    """

    reads_by_band = True  # rasterization burns pixel centres, whatever the window

    def __init__(
        self,
        path: PathLike,
        image: RasterInfo,
        *,
        label_field: str | None = None,
        line_width_m: float = 4.0,
        allow_no_crs: bool = False,
        separate: str | None = None,
        layer: str | None = None,
    ) -> None:
        import pyogrio

        self.path, self.image = Path(path), image
        self.separate, self._sep = separate, None
        self.allow_no_crs = allow_no_crs
        self.label_field, self.line_width_m = label_field, float(line_width_m)
        if not self.path.exists():
            raise InputNotFoundError(f"{self.path}: label file not found; check the path.")
        self.layer = self._choose_layer(layer)
        try:
            meta = pyogrio.read_info(self.path, layer=self.layer, force_total_bounds=True)
        except Exception as exc:
            raise LabelError(f"{self.path}: not a vector file GDAL can read ({exc}).") from exc
        fields = [str(f) for f in meta["fields"]]
        if label_field is not None and label_field not in fields:
            raise LabelError(
                f"{self.path}: label_field={label_field!r} is not a field of the file; "
                f"fields: {', '.join(fields) or '(none)'}. Pass one of them as label_field."
            )
        self._fields = fields
        self._gdf = self._read(meta)
        self._tree: shapely.STRtree | None = None

    @property
    def name(self) -> str:
        """What names the class of a file of one class: its layer, else the file's stem."""
        return self.layer or self.path.stem

    def _choose_layer(self, layer: str | None) -> str | None:
        """The layer to read: the one named, else the file's only layer with geometries.

        A file of several such layers (a GeoPackage of buildings and roads) is refused rather
        than read from its first layer, which GDAL lists in no order the user chose.
        """
        import pyogrio

        try:
            listed = pyogrio.list_layers(self.path)
        except Exception as exc:
            raise LabelError(f"{self.path}: not a vector file GDAL can read ({exc}).") from exc
        names = [str(n) for n, kind in listed if kind is not None]
        if layer is not None and layer not in [str(n) for n, _ in listed]:
            raise LabelError(
                f"{self.path}: it has no layer {layer!r}; layers: {', '.join(names)}. Name one "
                f'of them: "{self.path}|layername=NAME" (quoted in a shell).'
            )
        if layer is not None or len(names) <= 1:
            return layer
        raise LabelError(
            f"{self.path}: it holds {len(names)} layers ({', '.join(names)}) and geounet reads "
            f'one: name it as QGIS writes a layer\'s source, "{self.path}|layername={names[0]}" '
            "(quoted in a shell), or give each layer's file for the images it labels."
        )

    def _read(self, meta: dict[str, Any]) -> Any:
        import geopandas as gpd

        vcrs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
        if not meta.get("features", 0):
            raise LabelError(
                f"{self.path}: the vector file holds no features, so it labels nothing; give "
                "the file (or layer) with the label polygons or lines."
            )
        if vcrs is None and self.image.crs is not None and not self.allow_no_crs:
            raise MissingCRSError(
                f"{self.path}: the vector file has no CRS, so its features cannot be placed on "
                f"the image {self.image.path}. Assign one (ogr2ogr -a_srs EPSG:XXXX out.gpkg "
                "in.gpkg), or pass allow_no_crs=True (--allow-no-crs) to take the image's CRS "
                f"({self.image.crs.to_string()})."
            )
        if vcrs is None and self.image.crs is not None:
            warnings.warn(
                f"{self.path}: the vector file has no CRS; assuming the image's CRS "
                f"({self.image.crs.to_string()}).",
                UserWarning,
                stacklevel=4,
            )
            vcrs = self.image.crs
        bbox = None
        total = meta.get("total_bounds")
        if meta.get("features", 0) and total is not None and all(map(math.isfinite, total)):
            lb = to_image_crs(vcrs, self.image, total) if vcrs else tuple(total)
            if not overlaps(lb, self.image.bounds):
                raise no_overlap_error(self.path, self.image, lb)
            if vcrs is not None and self.image.crs is not None:
                bbox = transform_bounds(self.image.crs, vcrs, *self.image.bounds, densify_pts=21)
        cols = [self.label_field] if self.label_field else []
        gdf = gpd.read_file(self.path, engine="pyogrio", layer=self.layer, bbox=bbox, columns=cols)
        if gdf.crs is None and vcrs is not None:
            gdf = gdf.set_crs(vcrs, allow_override=True)
        if self.image.crs is not None and gdf.crs is not None and gdf.crs != self.image.crs:
            gdf = gdf.to_crs(self.image.crs)
        empty = gdf.geometry.isna() | gdf.geometry.is_empty
        if bbox is None and len(gdf) and empty.all():
            raise LabelError(
                f"{self.path}: every one of its {len(gdf)} features has an empty geometry, so "
                "it labels nothing; give a file whose features have polygons or lines."
            )
        gdf = gdf[~empty]
        if self.label_field:
            gdf = gdf[gdf[self.label_field].notna()]
        if gdf.empty:
            warnings.warn(
                f"{self.path}: no label feature lies over the image {self.image.path}; all of "
                "it is background.",
                UserWarning,
                stacklevel=4,
            )
        return gdf

    @property
    def fields(self) -> list[str]:
        """The attribute fields of the file."""
        return list(self._fields)

    def feature_count(self) -> int:
        """Features over the image with a geometry (and a ``label_field`` value)."""
        return len(self._gdf) if self._gdf is not None else len(self._geoms)

    def found_values(self) -> list[Any]:
        """The distinct ``label_field`` values (empty without a label field).

        Text values that differ only in case or in spaces around them (``"Building"``,
        ``"building "``) are one value, spelled as most features spell it: hand-typed
        attribute tables mix them, and they name one class.
        """
        if not self.label_field:
            return []
        counts = Counter(norm_value(v) for v in self._gdf[self.label_field].tolist())
        spelled: dict[str, Any] = {}  # most features' spelling; on a tie the lower-case one
        for value, _ in sorted(counts.items(), key=lambda kv: (-kv[1], _unlike(kv[0]))):
            spelled.setdefault(self._key(value), value.strip() if isinstance(value, str) else value)
        return sorted(spelled.values(), key=lambda v: (isinstance(v, str), v))

    def _key(self, value: Any) -> Any:
        return str(norm_value(value)).strip().casefold()

    def _keys(self, classes: Sequence[ClassSpec]) -> dict[Any, int]:
        keys: dict[Any, int] = {}
        for i, c in enumerate(classes):
            for key in {self._key(c.name), self._key(c.value)}:
                if keys.setdefault(key, i) != i:
                    other = classes[keys[key]]
                    raise LabelError(
                        f"{self.path}: classes {other.name!r} (value {other.value!r}) and "
                        f"{c.name!r} (value {c.value!r}) are spelled alike: label values are "
                        "matched ignoring case and surrounding spaces; give the classes "
                        "names and values that differ otherwise."
                    )
        return keys

    def covered_share(self) -> float:
        """The share of the image that the features' bounding box covers (0-1).

        Small when only part of the image was labelled: the rest would be taught as
        background unless ``label_area`` leaves it out.
        """
        geoms = self._gdf.geometry.values if self._gdf is not None else self._geoms
        if len(geoms) == 0:
            return 0.0
        image = shapely.box(*self.image.bounds)
        covered = shapely.box(*shapely.total_bounds(np.asarray(geoms)))
        return float(shapely.area(shapely.intersection(image, covered)) / image.area)

    def bind(self, classes: Sequence[ClassSpec]) -> None:
        """Fix each feature's class index and build the geometry index for reading."""
        if self.label_field is None:
            if len(classes) != 2:
                raise LabelError(
                    f"{self.path}: {len(classes) - 1} classes are declared but no label_field "
                    f"says which feature is which; pass label_field= (fields: "
                    f"{', '.join(self._fields) or 'none'})."
                )
            idx = np.ones(len(self._gdf), dtype=np.uint8)
        else:
            keys = self._keys(classes)
            idx = np.array(
                [keys[self._key(v)] for v in self._gdf[self.label_field].tolist()], np.uint8
            )
        geoms = np.asarray(self._gdf.geometry.values)
        self._warn_strokes(geoms, idx, classes)
        geoms, idx = self._prepare(geoms, idx)
        order = np.argsort(idx, kind="stable")  # higher classes are burnt last and win
        names = [c.name.lower() for c in classes]
        sep = (self.separate or "").lower()
        self._sep = names.index(sep) if sep in names else None
        self._geoms, self._idx = geoms[order], idx[order]
        self._tree = shapely.STRtree(self._geoms)
        self._gdf = None  # the prepared geometries are all that is needed from now on

    def _warn_strokes(
        self, geoms: np.ndarray, idx: np.ndarray, classes: Sequence[ClassSpec]
    ) -> None:
        """Warn when points, or lines of the building class, label a class of areas.

        They are buffered to ``line_width_m``: building outlines digitised as closed lines
        would teach rings 4 m wide, points discs 4 m across.
        """
        kinds = shapely.get_type_id(geoms)
        points, lines = np.isin(kinds, (0, 4)), np.isin(kinds, (1, 2, 5))
        for i, spec in enumerate(classes):
            mine = idx == i
            n_points, n_lines = int((points & mine).sum()), int((lines & mine).sum())
            building = inferred_name(spec.name) == "building"
            n = n_points + (n_lines if building else 0)
            if not n:
                continue
            w = f"{self.line_width_m:g} m"
            lined = building and n_lines > 0
            what = (
                f"points and lines, labelled as discs and strokes {w} wide"
                if n_points and lined
                else f"lines, labelled as strokes {w} wide"
                if lined
                else f"points, labelled as discs {w} across"
            )
            fix = (
                "buildings are areas: give their outlines as polygons (closed lines become "
                "polygons with ogr2ogr -nlt POLYGON out.gpkg in.gpkg)"
                if building
                else "give polygons of what the points mark, or set line_width_m to its size"
            )
            warnings.warn(
                f"{self.path}: {n} of {int(mine.sum())} features of class {spec.name!r} are "
                f"{what} (line_width_m); {fix}.",
                UserWarning,
                stacklevel=4,
            )

    def _prepare(self, geoms: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Repair, explode, and turn lines and points into polygons of the line width.

        Whether a feature is polygonal is decided before the repair: ``make_valid`` can turn
        a self-intersecting polygon into a collection with line slivers, which are dropped
        rather than buffered to the line width.
        """
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))
        bad = ~shapely.is_valid(geoms)
        if bad.any():
            geoms = geoms.copy()
            geoms[bad] = shapely.make_valid(geoms[bad])
        feat = np.arange(len(geoms))
        while len(geoms) and np.isin(shapely.get_type_id(geoms), (4, 5, 6, 7)).any():
            geoms, j = shapely.get_parts(geoms, return_index=True)
            feat = feat[j]
        kind = shapely.get_type_id(geoms)
        is_poly = kind == 3
        is_thin = np.isin(kind, (0, 1, 2)) & ~polygonal[feat]  # slivers of repaired polygons go
        thin = self._buffer(geoms[is_thin]) if is_thin.any() else geoms[is_thin]
        out = np.concatenate([geoms[is_poly], thin])
        cls = np.concatenate([idx[feat[is_poly]], idx[feat[is_thin]]])
        keep = ~shapely.is_empty(out)
        return out[keep], cls[keep]

    def _buffer(self, geoms: np.ndarray) -> np.ndarray:
        """Buffer by half the line width, measured in metres in a local metric CRS."""
        import geopandas as gpd
        from pyproj import CRS as ProjCRS  # noqa: N811

        half = self.line_width_m / 2
        crs = self.image.crs
        if crs is None:
            return shapely.buffer(geoms, half)
        metric = local_metric_crs(crs, self.image.bounds)
        axis = ProjCRS.from_user_input(metric.to_wkt()).axis_info
        factor = axis[0].unit_conversion_factor if axis else 1.0
        series = gpd.GeoSeries(geoms, crs=crs)
        if metric != crs:
            series = series.to_crs(metric)
        series = series.buffer(half / factor)
        if metric != crs:
            series = series.to_crs(crs)
        return np.asarray(series.values)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class indices ``(height, width)`` uint8 of a window of the image grid."""
        from rasterio import features, windows

        if self._tree is None:
            raise RuntimeError("VectorLabels.read() before bind()")
        win = Window(col, row, width, height)
        tr = windows.transform(win, self.image.transform)
        box = shapely.box(*window_bounds(self.image.transform, win))  # rotated grids too
        hits = np.sort(self._tree.query(box))
        if hits.size == 0:
            return np.zeros((height, width), np.uint8)
        shapes = zip(self._geoms[hits], self._idx[hits].tolist())
        out = features.rasterize(shapes, out_shape=(height, width), transform=tr, dtype="uint8")
        if self._sep is not None:
            mine = hits[self._idx[hits] == self._sep]
            if mine.size > 1:
                ring = Window(col - 1, row - 1, width + 2, height + 2)
                wide = windows.transform(ring, self.image.transform)
                contact = contact_pixels(self._geoms[mine], wide, height + 2, width + 2)
                out[contact[1:-1, 1:-1] & (out == self._sep)] = 0
        return out


def contact_pixels(geoms: np.ndarray, transform: Any, height: int, width: int) -> np.ndarray:
    """Pixels where two of ``geoms`` meet: a 4-neighbour is burnt by another geometry.

    Each geometry is burnt with its own id (later ones win where they overlap), so both
    sides of a shared wall, and the edge of an overlap, are marked.

    Example:
        >>> from rasterio.transform import from_origin
        >>> a, b = shapely.box(0, -4, 3, 0), shapely.box(3, -4, 6, 0)  # they share x = 3
        >>> m = contact_pixels(np.array([a, b]), from_origin(0, 0, 1, 1), 4, 6)
        >>> m[0].astype(int).tolist()
        [0, 0, 1, 1, 0, 0]
    """
    from rasterio import features

    ids = features.rasterize(
        zip(geoms, range(1, len(geoms) + 1)),
        out_shape=(height, width),
        transform=transform,
        dtype="int32",
    )
    out = np.zeros(ids.shape, bool)
    up, down = (slice(1, None), slice(None)), (slice(None, -1), slice(None))
    left, right = (slice(None), slice(1, None)), (slice(None), slice(None, -1))
    for here, there in ((up, down), (down, up), (left, right), (right, left)):
        a, b = ids[here], ids[there]
        out[here] |= (a > 0) & (b > 0) & (a != b)
    return out


def _unlike(value: Any) -> tuple[bool, str]:
    """Sort key of spellings: the one in lower case without spaces around it first."""
    text = str(value)
    return text != text.strip().lower(), text
