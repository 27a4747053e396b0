"""Pure window geometry: tile grids with overlap, mirror-padding amounts and core ranges.

No IO and no torch here: everything is integers and numpy arrays, so it is easy to test with
property tests and to reuse from inference, chipping and vectorizing.

Tile count formula (per axis, ``stride = tile - overlap``)::

    n(L) = 1                                  if L <= tile
    n(L) = ceil((L - tile) / stride) + 1      otherwise

Starts are ``0, stride, 2*stride, ...`` and the last tile is moved back so that it ends flush
with the border (``start = L - tile``): every pixel is covered, no window leaves the raster
when ``L >= tile``, and consecutive tiles overlap by at least ``overlap`` pixels.

Example:
    >>> tile_starts(1000, 256, 64)
    [0, 192, 384, 576, 744]
    >>> tile_count(1000, 256, 64)
    5
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from geounet.core.errors import InvalidParameterError

__all__ = [
    "Tile",
    "core_ranges",
    "pad_amounts",
    "tile_count",
    "tile_grid",
    "tile_starts",
]


@dataclass(frozen=True)
class Tile:
    """A rectangular window in pixel coordinates (row/col offsets and size)."""

    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """The ``(rows, cols)`` slices of this tile in the full array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    @property
    def row_end(self) -> int:
        """One past the last row of the tile."""
        return self.row + self.height

    @property
    def col_end(self) -> int:
        """One past the last column of the tile."""
        return self.col + self.width


def _check_tile_params(tile: int, overlap: int) -> None:
    if tile < 1:
        raise InvalidParameterError(f"tile size must be >= 1 pixel, got {tile}.")
    if overlap < 0 or overlap >= tile:
        raise InvalidParameterError(
            f"overlap must be in [0, tile size) = [0, {tile}), got {overlap}; "
            "use a smaller overlap or a larger tile."
        )


def tile_count(length: int, tile: int, overlap: int = 0) -> int:
    """Number of tiles along one axis of ``length`` pixels (see the module formula)."""
    _check_tile_params(tile, overlap)
    if length < 1:
        raise InvalidParameterError(f"axis length must be >= 1 pixel, got {length}.")
    if length <= tile:
        return 1
    return math.ceil((length - tile) / (tile - overlap)) + 1


def tile_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Start offsets of the tiles along one axis, the last one flush with the border.

    Args:
        length: Axis length in pixels (>= 1).
        tile: Tile size in pixels.
        overlap: Minimum overlap between consecutive tiles in pixels.

    Returns:
        Sorted, distinct start offsets. When ``length <= tile`` the single start is 0 and
        the tile runs past the border (the caller pads).
    """
    n = tile_count(length, tile, overlap)
    if n == 1:
        return [0]
    stride = tile - overlap
    return [i * stride for i in range(n - 1)] + [length - tile]


def tile_grid(height: int, width: int, tile: int, overlap: int = 0) -> list[Tile]:
    """All tiles of size ``tile`` x ``tile`` covering a ``height`` x ``width`` raster.

    Tiles are listed row by row (top to bottom, left to right), which is the order
    streamed writers need. Count: ``tile_count(height) * tile_count(width)``.
    """
    rows = tile_starts(height, tile, overlap)
    cols = tile_starts(width, tile, overlap)
    return [Tile(r, c, tile, tile) for r in rows for c in cols]


def core_ranges(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Partition ``[0, length)`` among tiles: each pixel belongs to the nearest tile centre.

    Used for ``blend="none"`` (centre crop): every output pixel is taken from exactly one tile,
    the one in whose centre part it lies. For non-overlapping tiles this is the tile itself.

    Returns:
        One non-empty ``(begin, end)`` range per start of :func:`tile_starts`, contiguous,
        covering ``[0, length)``, each inside its tile.

    Raises:
        InvalidParameterError: If ``starts`` is empty.
    """
    if not starts:
        raise InvalidParameterError("core_ranges needs at least one tile start.")
    bounds = [0]
    for a, b in itertools.pairwise(starts):
        # the overlap of tile a and tile b is [b, a + tile); cut it in the middle
        bounds.append((b + min(a + tile, length) + 1) // 2)
    bounds.append(length)
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def pad_amounts(
    row: int, col: int, height: int, width: int, raster_height: int, raster_width: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Split a window that may run past the raster into an in-bounds read and padding.

    Args:
        row: Window row offset (may be negative).
        col: Window column offset (may be negative).
        height: Window height.
        width: Window width.
        raster_height: Raster height.
        raster_width: Raster width.

    Returns:
        ``((r0, c0, r1, c1), (top, bottom, left, right))``: the in-bounds part to read (end
        exclusive) and how many pixels to add on each side to get back to the window size.

    Raises:
        InvalidParameterError: If the window does not intersect the raster at all.

    Example:
        >>> pad_amounts(-2, 5, 10, 10, 100, 12)
        ((0, 5, 8, 12), (2, 0, 0, 3))
    """
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, raster_height), min(col + width, raster_width)
    if r1 <= r0 or c1 <= c0:
        raise InvalidParameterError(
            f"window (row={row}, col={col}, {height}x{width}) lies outside the "
            f"{raster_height}x{raster_width} raster."
        )
    return (r0, c0, r1, c1), (r0 - row, row + height - r1, c0 - col, col + width - c1)
