"""What the label sources share: value normalisation, message helpers, the base class.

Example:
    >>> norm_value(2.0), overlaps((0, 0, 2, 2), (1, 1, 3, 3))
    (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from geounet.core.classes import ClassSpec
from geounet.core.errors import CRSMismatchError
from geounet.io.raster import RasterInfo

__all__ = [
    "LabelSource",
    "fmt_extent",
    "fmt_values",
    "no_overlap_error",
    "norm_value",
    "overlaps",
    "to_image_crs",
]


def norm_value(value: Any) -> Any:
    """Normalise a label value: numpy scalars to Python, integral floats to int."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fmt_values(values: Sequence[Any]) -> str:
    """Values for a message: the first 30, then the count."""
    vals = list(values)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in vals[:30])
    return shown + (f", ... ({len(vals)} in all)" if len(vals) > 30 else "")


def fmt_extent(b: Sequence[float]) -> str:
    """``[minx, miny, maxx, maxy]`` for a message."""
    return "[" + ", ".join(f"{v:.6g}" for v in b) + "]"


def overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when two ``(minx, miny, maxx, maxy)`` boxes share a positive area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def to_image_crs(crs: CRS, image: RasterInfo, bounds: Sequence[float]) -> tuple[float, ...]:
    """``bounds`` given in ``crs``, as a box in the image CRS."""
    if image.crs is None or crs == image.crs:
        return tuple(bounds)
    return tuple(transform_bounds(crs, image.crs, *bounds, densify_pts=21))


def no_overlap_error(
    path: Path, image: RasterInfo, label_bounds: Sequence[float]
) -> CRSMismatchError:
    """The error for labels that do not overlap their image, naming both extents."""
    crs = image.crs.to_string() if image.crs else "pixel coordinates"
    return CRSMismatchError(
        f"{path}: the labels do not overlap the image {image.path} at all: label extent "
        f"{fmt_extent(label_bounds)} vs image extent {fmt_extent(image.bounds)} "
        f"(both in {crs}). "
        "Check that each label file goes with its image and that both have the right CRS."
    )


class LabelSource:
    """A label file seen on one image's grid: found values, class binding, window reads."""

    path: Path
    image: RasterInfo
    #: Whether a window read at once gives exactly the pixels of its parts read one by one
    #: (then chipping reads one row band of labels for all its chips).
    reads_by_band: bool = False

    def found_values(self) -> list[Any]:
        """Raw label values (or colours) present over the image, sorted."""
        raise NotImplementedError

    def unknown(self, classes: Sequence[ClassSpec]) -> list[Any]:
        """Values found that ``classes`` does not declare (sorted)."""
        keys = self._keys(classes)
        return [v for v in self.found_values() if self._key(v) not in keys]

    def _key(self, value: Any) -> Any:
        return norm_value(value)

    def _keys(self, classes: Sequence[ClassSpec]) -> dict[Any, int]:
        return {norm_value(c.value): i for i, c in enumerate(classes)}

    def close(self) -> None:
        """Release open files."""
