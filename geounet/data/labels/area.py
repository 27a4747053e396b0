"""The labelled area: where an analyst's labels are complete, the rest of the image unlabelled.

An analyst labels part of a scene and maps the rest. Vector labels say where the objects are,
not where the analyst looked: without an outline, every unlabelled part of the image would be
taught as background. :class:`LabelledArea` reads that outline (polygons in any vector format
and CRS); :class:`AreaLabels` wraps a label source so that every pixel outside it is "no label"
(255, ignored by the loss), and :meth:`LabelledArea.box` gives the pixel box that chipping
covers. The unlabelled rest also says where the area to map lies, which places the validation
strip (:func:`geounet.data.chipping.auto_strip`).

Example:
    Not run as a doctest: it needs a vector file and an opened image.

    >>> area = LabelledArea("labelled.gpkg", image_info)                    # doctest: +SKIP
    >>> area.box(chip_size=256)                                             # doctest: +SKIP
    (0, 0, 1024, 1365)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio import features, windows
from rasterio.crs import CRS
from rasterio.windows import Window

from geounet.core.errors import CRSMismatchError, InputNotFoundError, LabelError, MissingCRSError
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.data.labels.common import LabelSource, fmt_extent, overlaps

__all__ = ["AreaLabels", "LabelledArea", "labelled_areas", "read_area"]

_POLYGONAL = (3, 6)  # shapely type ids of Polygon and MultiPolygon


def read_area(path: PathLike, crs: CRS | None, *, allow_no_crs: bool = False) -> Any:
    """The polygons of a labelled-area file, repaired and merged into one geometry in ``crs``.

    Args:
        path: A vector file of polygons (first layer).
        crs: The CRS to return the geometry in (None: the file's own coordinates).
        allow_no_crs: Take a file without a CRS to be in ``crs`` (refused otherwise when
            ``crs`` is set).

    Returns:
        One shapely (Multi)Polygon.

    Raises:
        InputNotFoundError: The file does not exist.
        LabelError: Unreadable, or no polygon in it.
        MissingCRSError: The file has no CRS while ``crs`` is set and ``allow_no_crs`` is False.
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: label_area file not found; check the path.")
    try:
        gdf = gpd.read_file(p, engine="pyogrio")
    except Exception as exc:
        raise LabelError(f"{p}: label_area is not a vector file GDAL can read ({exc}).") from exc
    if gdf.crs is None and crs is not None:
        if not allow_no_crs:
            raise MissingCRSError(
                f"{p}: the label_area file has no CRS, so it cannot be placed on the images. "
                "Assign one (ogr2ogr -a_srs EPSG:XXXX out.gpkg in.gpkg), or pass "
                "allow_no_crs=True to take the image's CRS."
            )
        gdf = gdf.set_crs(crs, allow_override=True)
    if crs is not None and gdf.crs != crs:
        gdf = gdf.to_crs(crs)
    geoms = np.asarray(gdf.geometry.dropna().values)
    geoms = shapely.make_valid(geoms[~shapely.is_empty(geoms)])
    parts = shapely.get_parts(geoms)
    while len(parts) and np.isin(shapely.get_type_id(parts), (4, 5, 6, 7)).any():
        parts = shapely.get_parts(parts)
    polys = parts[np.isin(shapely.get_type_id(parts), _POLYGONAL)]
    if not len(polys):
        raise LabelError(
            f"{p}: label_area holds no polygon ({len(gdf)} features); give a file of "
            "polygons outlining where the labels are complete."
        )
    return shapely.union_all(polys)


class LabelledArea:
    """Where the labels of one image are complete: a polygon on the image grid.

    Args:
        geometry: The labelled area in the image CRS (see :func:`read_area`).
        image: The image (a :class:`~geounet.io.raster.RasterInfo`).
        path: The file it came from (for messages).
    """

    def __init__(self, geometry: Any, image: Any, path: PathLike) -> None:
        self.geometry, self.image, self.path = geometry, image, Path(path)
        shapely.prepare(self.geometry)

    @property
    def overlaps_image(self) -> bool:
        """True when the area shares a positive area with the image."""
        return overlaps(self.geometry.bounds, self.image.bounds)

    def box(self, chip_size: int) -> tuple[int, int, int, int]:
        """``(row, col, height, width)``: the image pixels the area's bounding box covers.

        Rounded outwards, clipped to the image, and widened (inside the image) to at least
        a chip on each side, so a small area still gives a chip. ``(0, 0, 0, 0)`` when the
        area misses the image.
        """
        if not self.overlaps_image:
            return 0, 0, 0, 0
        img = self.image
        x0, y0, x1, y1 = self.geometry.bounds
        win = windows.from_bounds(x0, y0, x1, y1, img.transform)
        r0, c0 = max(0, math.floor(win.row_off + 1e-6)), max(0, math.floor(win.col_off + 1e-6))
        r1 = min(img.height, math.ceil(win.row_off + win.height - 1e-6))
        c1 = min(img.width, math.ceil(win.col_off + win.width - 1e-6))
        r0, r1 = _widen(r0, r1, chip_size, img.height)
        c0, c1 = _widen(c0, c1, chip_size, img.width)
        return r0, c0, r1 - r0, c1 - c0

    def inside(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Boolean ``(height, width)``: pixel centres of a window that lie in the area."""
        win = Window(col, row, width, height)
        tr = windows.transform(win, self.image.transform)
        return features.geometry_mask(
            [self.geometry], out_shape=(height, width), transform=tr, invert=True
        )


def _widen(a: int, b: int, size: int, length: int) -> tuple[int, int]:
    """``[a, b)`` grown evenly to at least ``size`` inside ``[0, length)`` (if it fits)."""
    if length <= size:
        return 0, length
    if b - a >= size:
        return a, b
    a = max(0, min(a - (size - (b - a)) // 2, length - size))
    return a, a + size


class AreaLabels:
    """A bound label source whose pixels outside a :class:`LabelledArea` are "no label" (255).

    What chipping reads (``read``, ``reads_by_band``); the inner source keeps its files and is
    closed by its owner.

    Args:
        inner: The bound label source (vector or raster labels of the same image).
        area: Where its labels are complete.
    """

    def __init__(self, inner: LabelSource, area: LabelledArea) -> None:
        self.inner, self.area = inner, area
        self.path, self.image = inner.path, inner.image
        self.reads_by_band = inner.reads_by_band  # the area burns pixel centres too

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class indices ``(height, width)`` uint8, 255 outside the labelled area."""
        out = self.inner.read(row, col, height, width)  # type: ignore[attr-defined]
        out[~self.area.inside(row, col, height, width)] = IGNORE_INDEX
        return out


def labelled_areas(
    path: PathLike, infos: Sequence[Any], *, allow_no_crs: bool = False
) -> list[LabelledArea]:
    """The labelled area of each image from one polygon file (read once per CRS).

    Raises:
        CRSMismatchError: The area overlaps none of the images (the message gives the
            extents).
    """
    cache: dict[str | None, Any] = {}
    areas = []
    for info in infos:
        key = info.crs.to_wkt() if info.crs else None
        if key not in cache:
            cache[key] = read_area(path, info.crs, allow_no_crs=allow_no_crs)
        areas.append(LabelledArea(cache[key], info, path))
    outside = [a for a in areas if not a.overlaps_image]
    if len(outside) == len(areas):
        extents = "; ".join(f"{i.path.name} {fmt_extent(i.bounds)}" for i in infos)
        raise CRSMismatchError(
            f"{path}: the label_area {fmt_extent(areas[0].geometry.bounds)} overlaps none of "
            f"the images ({extents}). Check that it outlines part of these images and has the "
            "right CRS."
        )
    for a in outside:
        warnings.warn(
            f"{path}: the label_area does not overlap {a.image.path}; it gives no chip.",
            UserWarning,
            stacklevel=3,
        )
    return areas
