"""Prediction and truth as class indices on one grid, streamed block by block.

Pixel metrics compare two class maps pixel for pixel, so both are brought onto one grid (the
raster's; the prediction's when both are rasters): a raster on another grid or in another CRS
is read through a nearest-neighbour ``WarpedVRT``; vector features are burnt into each block
(:class:`VectorBlocks`). Every reader returns class indices with :data:`IGNORE_INDEX` (255)
for pixels that are not scored: nodata, outside the footprint, values that are no class.
The value lookup of a truth raster (``{truth value: class index}``) is applied to the raw
values *before* the validity mask, so a value that happens to equal the fill or the nodata of
another file never becomes a class.

Example:
    >>> grid = Grid(None, Affine.identity(), 4, 2)
    >>> [(w.col_off, w.row_off, w.width, w.height) for w in grid.windows(2)]
    [(0, 0, 2, 2), (2, 0, 2, 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geounet.core.errors import CRSMismatchError
from geounet.core.types import IGNORE_INDEX
from geounet.evaluation.metrics import ConfusionAccumulator
from geounet.io.raster import RasterInfo, iter_windows, window_bounds

__all__ = [
    "Blocks",
    "Grid",
    "RasterBlocks",
    "VectorBlocks",
    "bounds_in",
    "check_overlap",
    "lookup_table",
    "stream_confusion",
    "uint8_values",
]

#: Largest raw value a truth lookup table covers (uint16 range); others are not scored.
_LUT_SIZE = 65536


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (None for pixel coordinates), transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, info: RasterInfo) -> Grid:
        """The grid of an opened raster."""
        return cls(info.crs, info.transform, info.width, info.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the grid's CRS."""
        return window_bounds(self.transform, Window(0, 0, self.width, self.height))

    def windows(self, block: int) -> Iterator[Window]:
        """Windows of at most ``block`` x ``block`` pixels, row by row."""
        return iter_windows(self.height, self.width, block)


class Blocks(Protocol):
    """Anything that yields class indices (255: not scored) for a window of the grid."""

    def read(self, win: Window) -> np.ndarray:
        """``(h, w)`` int64 class indices of ``win``."""
        ...


def lookup_table(values: Mapping[int, int] | None) -> np.ndarray | None:
    """``{raw value: class index}`` as an array indexed by raw value (255 where unmapped)."""
    if values is None:
        return None
    lut = np.full(_LUT_SIZE, IGNORE_INDEX, dtype=np.int64)
    for value, index in values.items():
        lut[int(value)] = int(index)
    return lut


def uint8_values(info: RasterInfo, block: int = 2048) -> set[int]:
    """The values of an 8-bit raster's first band that are data (not nodata, not masked).

    Read block by block (one pass over the raster); an empty set for other data types.
    """
    if info.dtype != "uint8":
        return set()
    counts = np.zeros(256, np.int64)
    with rasterio.open(info.path) as src:
        for win in iter_windows(src.height, src.width, block):
            raw, valid = src.read(1, window=win), src.read_masks(1, window=win) != 0
            counts += np.bincount(raw[valid].ravel(), minlength=256)
    if info.nodata is not None and not np.isnan(info.nodata) and 0 <= info.nodata <= 255:
        counts[int(info.nodata)] = 0
    return {int(v) for v in np.flatnonzero(counts)}


def _to_classes(raw: np.ndarray, lut: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Raw raster values -> class indices; anything that is no class -> 255."""
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw)
        raw = np.where(finite & (raw == np.round(raw)), raw, -1)
    values = raw.astype(np.int64)
    if lut is not None:
        inside = (values >= 0) & (values < _LUT_SIZE)
        values = np.where(inside, lut[np.clip(values, 0, _LUT_SIZE - 1)], IGNORE_INDEX)
    return np.where((values >= 0) & (values < n_classes), values, IGNORE_INDEX)


def bounds_in(
    bounds: tuple[float, float, float, float], src: CRS | None, dst: CRS | None
) -> tuple[float, float, float, float]:
    """``bounds`` in ``src`` expressed in ``dst`` (unchanged when either CRS is missing)."""
    if src is None or dst is None or src == dst:
        return bounds
    return tuple(transform_bounds(src, dst, *bounds, densify_pts=21))  # type: ignore[return-value]


def check_overlap(
    a: tuple[float, float, float, float],
    b: tuple[float, float, float, float],
    a_name: str,
    b_name: str,
) -> None:
    """Refuse two extents (in one CRS) that share no area.

    Raises:
        CRSMismatchError: The extents do not overlap.
    """
    if not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]):
        raise CRSMismatchError(
            f"{a_name} (extent {tuple(round(v, 6) for v in a)}) and {b_name} (extent "
            f"{tuple(round(v, 6) for v in b)}, both in the first file's CRS) do not overlap, "
            "so there is nothing to compare; give the truth of the same area."
        )


class RasterBlocks:
    """Class indices of a raster read on ``grid`` (warped with nearest neighbour if needed).

    The raw values go through ``lut`` (or are taken as class indices) first; then pixels that
    are nodata, masked, or outside the raster's footprint become 255.
    """

    def __init__(
        self,
        info: RasterInfo,
        grid: Grid,
        stack: ExitStack,
        n_classes: int,
        lut: np.ndarray | None = None,
    ) -> None:
        self.info, self.n_classes, self.lut = info, int(n_classes), lut
        src = stack.enter_context(rasterio.open(info.path))
        self.src: Any = src
        if not _same_grid(info, grid):
            self.src = stack.enter_context(
                WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling.nearest,
                    add_alpha=True,
                )
            )

    def read(self, win: Window) -> np.ndarray:
        """``(h, w)`` int64 class indices of ``win``; 255 where not scored."""
        raw = self.src.read(1, window=win)
        classes = _to_classes(raw, self.lut, self.n_classes)
        invalid = self.src.read_masks(1, window=win) == 0
        if self.info.nodata is not None and not np.isnan(self.info.nodata):
            invalid |= raw == self.info.nodata
        classes[invalid] = IGNORE_INDEX
        return classes


def _same_grid(info: RasterInfo, grid: Grid) -> bool:
    if (info.width, info.height) != (grid.width, grid.height):
        return False
    if info.crs is None or grid.crs is None:
        return True  # pixel coordinates: aligned by position (checked by the caller)
    return info.crs == grid.crs and info.transform.almost_equals(grid.transform)


class VectorBlocks:
    """Vector features burnt into each window of ``grid`` (background 0 elsewhere).

    Args:
        geoms: Polygons (or any areal geometry) in the grid's CRS.
        values: The class index burnt for each geometry; higher indices are burnt last.
        grid: The target grid.
    """

    def __init__(self, geoms: np.ndarray, values: np.ndarray, grid: Grid) -> None:
        keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
        order = np.argsort(np.asarray(values)[keep], kind="stable")
        self.geoms = np.asarray(geoms, dtype=object)[keep][order]
        self.values = np.asarray(values, dtype=np.int64)[keep][order]
        self.grid = grid
        self.tree = shapely.STRtree(self.geoms)

    def read(self, win: Window) -> np.ndarray:
        """``(h, w)`` int64 class indices of ``win``."""
        tr = window_transform(win, self.grid.transform)
        box = shapely.box(*Grid(self.grid.crs, tr, int(win.width), int(win.height)).bounds)
        ids = np.sort(self.tree.query(box, predicate="intersects"))
        out = np.zeros((int(win.height), int(win.width)), dtype=np.int64)
        if ids.size:
            shapes = zip(self.geoms[ids], self.values[ids].tolist())
            out = rasterio.features.rasterize(
                shapes, out_shape=out.shape, transform=tr, fill=0, dtype="int32"
            ).astype(np.int64)
        return out


def stream_confusion(
    pred: Blocks,
    truth: Blocks,
    grid: Grid,
    n_classes: int,
    block: int = 1024,
    on_block: Callable[[Window, np.ndarray, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Confusion matrix (rows truth, columns prediction) of two block readers on ``grid``.

    Args:
        pred: Prediction reader.
        truth: Truth reader.
        grid: The common grid.
        n_classes: Number of classes.
        block: Window size in pixels.
        on_block: Called with ``(window, pred, truth)`` for every block (error maps).

    Returns:
        The ``(n_classes, n_classes)`` int64 matrix.
    """
    acc = ConfusionAccumulator(n_classes)
    for win in grid.windows(block):
        p, t = pred.read(win), truth.read(win)
        acc.update(p, t)
        if on_block is not None:
            on_block(win, p, t)
    return acc.matrix
