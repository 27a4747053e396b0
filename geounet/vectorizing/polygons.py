"""Trace class polygons window by window, merge them across window seams, clean them.

Tracing (:class:`PolygonTracer`) works in pixel coordinates with
``rasterio.features.shapes`` (4-connected regions, as GDAL polygonizes them). A polygon that
touches a seam between two windows is kept aside; at the end all such pieces of a class are
unioned, so an object cut by seams comes out as one feature, with exactly the outline a
single pass would have traced (pixel coordinates are exact in floating point). The
cleaning helpers (:func:`fill_small_holes`, :func:`simplify_polygons`) work on arrays of
polygons in any units.

Example:
    >>> import numpy as np
    >>> data = np.zeros((6, 8), np.uint8); data[1:5, 2:7] = 1
    >>> tracer = PolygonTracer([1], height=6, width=8)
    >>> geoms, values = tracer.trace(data[:, :4], row=0, col=0)   # touches the seam: kept
    >>> len(geoms)
    0
    >>> _ = tracer.trace(data[:, 4:], row=0, col=4)
    >>> geoms, values = tracer.merged()
    >>> geoms[0].area, values.tolist()
    (20.0, [1])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import rasterio.features
import shapely

from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX

__all__ = [
    "PolygonTracer",
    "fill_small_holes",
    "largest_polygon",
    "polygons_from_shapes",
    "simplify_polygons",
]


def polygons_from_shapes(
    items: Sequence[tuple[dict, float]], offset: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Turn ``rasterio.features.shapes`` output into shapely polygons and values, in bulk.

    Builds all rings from one coordinate array (five times faster than one
    ``shapely.geometry.shape`` call per feature). ``offset`` (x, y) is added to every
    coordinate (cheaper than a transform in ``shapes``; integers stay exact).
    """
    if not items:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    rings: list = []
    ring_poly: list[int] = []
    for i, (geom, _) in enumerate(items):
        coords = geom["coordinates"]
        rings.extend(coords)
        ring_poly.extend([i] * len(coords))
    lengths = np.fromiter(map(len, rings), dtype=np.int64, count=len(rings))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(rings))
    xy = np.fromiter(flat, dtype=np.float64, count=2 * int(lengths.sum())).reshape(-1, 2)
    if offset != (0.0, 0.0):
        xy += offset
    lr = shapely.linearrings(xy, indices=np.repeat(np.arange(len(rings)), lengths))
    polys = shapely.polygons(lr, indices=np.asarray(ring_poly))
    values = np.fromiter((v for _, v in items), dtype=np.float64, count=len(items))
    return polys, values.astype(np.int64)


class PolygonTracer:
    """Trace polygons of some class values window by window and merge them across seams.

    Args:
        values: Raster values to trace (one polygon layer each), each in ``0..254``; others
            are ignored.
        height: Raster height.
        width: Raster width.

    Raises:
        InvalidParameterError: A value is outside ``0..254`` (255 is nodata; a negative value
            would index the lookup table from its end).
    """

    def __init__(self, values: Sequence[int], height: int, width: int) -> None:
        self.height, self.width = height, width
        bad = sorted({int(v) for v in values if not 0 <= v < IGNORE_INDEX})
        if bad:
            raise InvalidParameterError(
                f"class values {bad} cannot be traced: class values are 0..254 (255 is nodata, "
                "negative values are no classes). Give classes={value: name} with values in "
                "0..254, or recode the class raster to 0..254 with 255 as nodata."
            )
        self.lut = np.zeros(IGNORE_INDEX + 1, dtype=bool)
        self.lut[list(values)] = True
        self._seam: list[tuple[np.ndarray, np.ndarray]] = []

    def _mask(self, data: np.ndarray) -> np.ndarray:
        values = np.flatnonzero(self.lut)
        if values.size == 1:  # one class: a comparison is ten times faster than the lookup
            return data == values[0]
        if data.dtype == np.uint8 or (data.min() >= 0 and data.max() < self.lut.size):
            return self.lut[data]
        return np.isin(data, np.flatnonzero(self.lut))

    def trace(self, data: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        """Trace one window; return the polygons that touch no seam (pixel coordinates).

        Polygons touching a seam are kept for :meth:`merged`.
        """
        mask = self._mask(data)
        if not mask.any():
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        h, w = data.shape
        items = list(rasterio.features.shapes(data, mask=mask, connectivity=4))
        geoms, values = polygons_from_shapes(items, offset=(float(col), float(row)))
        b = shapely.bounds(geoms)
        on_seam = (
            ((b[:, 0] == col) & (col > 0))
            | ((b[:, 2] == col + w) & (col + w < self.width))
            | ((b[:, 1] == row) & (row > 0))
            | ((b[:, 3] == row + h) & (row + h < self.height))
        )
        if on_seam.any():
            self._seam.append((geoms[on_seam], values[on_seam]))
        return geoms[~on_seam], values[~on_seam]

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """Union the pieces cut by seams, class by class, into whole objects."""
        if not self._seam:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        geoms = np.concatenate([g for g, _ in self._seam])
        values = np.concatenate([v for _, v in self._seam])
        self._seam = []
        out_g, out_v = [], []
        for value in np.unique(values):
            out_g.append(_union_with_holes(geoms[values == value]))
            out_v.append(np.full(len(out_g[-1]), value, dtype=np.int64))
        return np.concatenate(out_g), np.concatenate(out_v)


def _union_with_holes(pieces: np.ndarray) -> np.ndarray:
    """The union of one class's seam pieces, as Polygons.

    A piece's holes lie inside its window (a gap that reaches the window's edge is outside the
    piece, not a hole), where no other piece reaches: they are holes of the union as they are.
    So only the outer rings are unioned, and each piece's holes put back into the polygon of
    the union that holds them. The same polygons as the union of the pieces themselves (WKB
    for WKB on 61 layers of real class rasters cut into small windows), at a fraction of its
    cost when a scene-wide class has thousands of holes: ``benchmarks/vectorize_quality.py
    --parts holes_speed``, 4 000² pixels of one class with 2 % of its pixels missing, 21.5 and
    25.6 s -> 7.5 and 7.6 s for all of ``vectorize``.
    """
    shells = shapely.polygons(shapely.get_exterior_ring(pieces))
    parts = shapely.get_parts(shapely.union_all(shells))  # pieces meeting at a corner: apart
    parts = parts[shapely.get_type_id(parts) == 3]
    # the union keeps a vertex where each seam crossed an edge; GDAL traces none
    parts = shapely.simplify(parts, 0, preserve_topology=False)
    holes, _ = _holes(pieces)
    if not holes.size or not parts.size:
        return parts
    inside = shapely.point_on_surface(shapely.polygons(holes))
    part, hole = shapely.STRtree(inside).query(parts, predicate="contains")
    out = parts.copy()
    order = np.argsort(part, kind="stable")
    part, hole = part[order], hole[order]
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]]) if part.size else part
    for a, b in zip(starts, np.r_[starts[1:], part.size].astype(int)):
        p = parts[part[a]]
        rings = [*shapely.get_rings(p)[1:], *holes[hole[a:b]]]
        out[part[a]] = shapely.polygons(shapely.get_exterior_ring(p), rings)
    return out


def largest_polygon(geoms: np.ndarray) -> np.ndarray:
    """Each geometry as one non-empty Polygon: its largest polygon part, or None if it has none.

    Simplification and repair can split a polygon into a MultiPolygon (or a
    GeometryCollection); a feature must stay one polygon, so the largest part is kept.

    Example:
        >>> two = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 0, 5, 3)])
        >>> largest_polygon(np.array([two, shapely.Polygon(), None]))[0].area
        9.0
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.full(len(geoms), None, dtype=object)
    if len(geoms) == 0:
        return out
    single = (shapely.get_type_id(geoms) == 3) & ~shapely.is_empty(geoms)
    out[single] = geoms[single]
    rest = np.flatnonzero(~single & ~shapely.is_missing(geoms))
    if rest.size:
        parts, owner = shapely.get_parts(geoms[rest], return_index=True)
        ok = (shapely.get_type_id(parts) == 3) & ~shapely.is_empty(parts)
        parts, owner = parts[ok], owner[ok]
        order = np.lexsort((-shapely.area(parts), owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]] if order.size else order
        out[rest[owner[first]]] = parts[first]
    return out


def _not_clean(geoms: np.ndarray) -> np.ndarray:
    """Positions of entries that are not one valid, non-empty Polygon."""
    poly = shapely.get_type_id(geoms) == 3
    return np.flatnonzero(~poly | shapely.is_empty(geoms) | ~shapely.is_valid(geoms))


def fill_small_holes(geoms: np.ndarray, min_hole_area: float | np.ndarray) -> np.ndarray:
    """Fill the interior rings of polygons whose area is below ``min_hole_area``.

    ``min_hole_area`` is one value or one per polygon. Entries that are not Polygons are
    returned unchanged.
    """
    out = geoms.copy()
    limit = np.broadcast_to(np.asarray(min_hole_area, dtype=float), geoms.shape)
    holes, owner = _holes(geoms)
    if not owner.size:
        return out
    small = shapely.area(shapely.polygons(holes)) < limit[owner]
    for i in np.unique(owner[small]):  # only the polygons that lose a hole are rebuilt
        lo, hi = np.searchsorted(owner, [i, i + 1])  # owner is sorted
        kept = holes[lo:hi][~small[lo:hi]]
        out[i] = shapely.polygons(shapely.get_exterior_ring(geoms[i]), kept if kept.size else None)
    return out


def _holes(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(interior rings, index of the polygon of each)`` of an array of polygons, in order."""
    n = np.maximum(shapely.get_num_interior_rings(geoms), 0)
    owner = np.repeat(np.arange(len(geoms)), n)
    if not owner.size:
        return np.empty(0, dtype=object), owner
    first = np.repeat(np.cumsum(n) - n, n)
    return shapely.get_interior_ring(geoms[owner], np.arange(owner.size) - first), owner


def simplify_polygons(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification that keeps every polygon one valid, non-empty Polygon.

    The plain algorithm runs first (several times faster); the results it leaves invalid,
    empty or split into several parts are redone with the topology-preserving variant, and
    the input itself is kept where that fails too.

    Example:
        >>> stairs = shapely.Polygon([(0, 0), (4, 0), (4, 1), (3, 1), (3, 2), (0, 2)])
        >>> simplify_polygons(np.array([stairs]), 0.6)[0].geom_type
        'Polygon'
    """
    if not tolerance or len(geoms) == 0:
        return geoms.copy()
    out = shapely.simplify(geoms, tolerance, preserve_topology=False)
    bad = _not_clean(out)
    if bad.size:
        out[bad] = shapely.simplify(geoms[bad], tolerance, preserve_topology=True)
        bad = bad[_not_clean(out[bad])]
        out[bad] = geoms[bad]
    return out
