"""Pixel, map and metric coordinates of one raster, for geometry measured in metres.

Vectorizing traces features in pixel coordinates (exact, so pieces from neighbouring windows
share their edges bit for bit), measures and simplifies them in metres, and writes them in
the raster's CRS. :class:`MetricFrame` does the conversions: for a projected CRS the metric
frame is the map frame scaled to metres; for a geographic CRS (EPSG:4326), or a projected one
off scale at the raster (Web Mercator away from the equator), it is the local UTM zone of
:func:`geounet.io.raster.local_metric_crs`.

Example:
    >>> from affine import Affine
    >>> from rasterio.crs import CRS
    >>> f = MetricFrame.from_grid(CRS.from_epsg(32616), Affine(0.5, 0, 1000, 0, -0.5, 2000), 10, 10)
    >>> f.pixel_to_metric(np.array([[0.0, 0.0], [2.0, 4.0]])).tolist()
    [[1000.0, 2000.0], [1001.0, 1998.0]]
    >>> f.pixel_m
    (0.5, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS  # noqa: N811
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import array_bounds

from geounet.io.raster import local_metric_crs

__all__ = ["MetricFrame"]


@dataclass(frozen=True)
class MetricFrame:
    """Conversions between pixel, metric and map coordinates of a raster grid.

    Attributes:
        crs: The raster's CRS (the map frame); None for pixel coordinates.
        transform: Pixel (col, row) -> map (x, y).
        metric_crs: The CRS the metric frame is measured in.
        scale: Metres per map unit when the map CRS is projected (1 for metres).
        pixel_m: Width and height of a pixel in metres (at the grid centre).
    """

    crs: CRS | None
    transform: Affine
    metric_crs: CRS | None
    scale: float
    pixel_m: tuple[float, float]
    _to_metric: Transformer | None = None
    _to_map: Transformer | None = None

    @classmethod
    def from_grid(cls, crs: CRS | None, transform: Affine, height: int, width: int) -> MetricFrame:
        """Build the frame of a ``height`` x ``width`` grid.

        Without a CRS (``allow_no_crs``) the map units of ``transform`` stand in for metres.
        """
        fwd = inv = None
        scale = 1.0
        if crs is None:
            a, b, _, d, e, _ = transform[:6]
            return cls(None, transform, None, scale, (math.hypot(a, d), math.hypot(b, e)))
        metric = local_metric_crs(crs, array_bounds(height, width, transform))
        pcrs = ProjCRS.from_user_input(crs.to_wkt())
        if metric != crs:  # geographic, or off scale here (Web Mercator away from the equator)
            fwd = Transformer.from_crs(pcrs, metric.to_wkt(), always_xy=True)
            inv = Transformer.from_crs(metric.to_wkt(), pcrs, always_xy=True)
        elif pcrs.axis_info:
            scale = float(pcrs.axis_info[0].unit_conversion_factor)
        frame = cls(crs, transform, metric, scale, (1.0, 1.0), fwd, inv)
        cx, cy = width / 2, height / 2
        pts = frame.pixel_to_metric(np.array([[cx, cy], [cx + 1, cy], [cx, cy + 1]]))
        size = np.hypot(*(pts[1:] - pts[0]).T)
        return cls(crs, transform, metric, scale, (float(size[0]), float(size[1])), fwd, inv)

    @property
    def pixel_size(self) -> float:
        """Mean pixel size in metres."""
        return (self.pixel_m[0] + self.pixel_m[1]) / 2

    def pixel_to_map(self, xy: np.ndarray) -> np.ndarray:
        """``(n, 2)`` pixel (col, row) coordinates -> map coordinates."""
        a, b, c, d, e, f = self.transform[:6]
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    def map_to_metric(self, xy: np.ndarray) -> np.ndarray:
        """``(n, 2)`` map coordinates -> metres."""
        if self._to_metric is None:
            return xy * self.scale
        return np.column_stack(self._to_metric.transform(xy[:, 0], xy[:, 1]))

    def metric_to_map(self, xy: np.ndarray) -> np.ndarray:
        """``(n, 2)`` metric coordinates -> map coordinates."""
        if self._to_map is None:
            return xy / self.scale
        return np.column_stack(self._to_map.transform(xy[:, 0], xy[:, 1]))

    def pixel_to_metric(self, xy: np.ndarray) -> np.ndarray:
        """``(n, 2)`` pixel (col, row) coordinates -> metres."""
        return self.map_to_metric(self.pixel_to_map(xy))

    def geoms_to_metric(self, geoms: np.ndarray) -> np.ndarray:
        """Geometries in pixel coordinates -> metric frame."""
        return shapely.transform(geoms, self.pixel_to_metric)

    def geoms_to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Geometries in the metric frame -> the raster's CRS."""
        return shapely.transform(geoms, self.metric_to_map)
