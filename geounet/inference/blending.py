"""Tile plans and the rolling band of blend accumulators used by tiled inference.

A :class:`TilePlan` lays a grid of overlapping tiles over a raster that is virtually padded by
a halo of mirrored pixels on every side (the U-Net paper's overlap-tile strategy), and knows
which weight each tile pixel gets. A :class:`RowAccumulator` holds the blended class
probabilities of only the few rows that tiles still touch: after a row of tiles is added, the
rows above the next row of tiles are final and are popped (and written) at once, so memory
depends on the tile size and the band's width, never on the raster's height. A raster wider
than :data:`STRIP_COLUMNS` is run as column strips (:meth:`TilePlan.column_strips`), each
with its own band, so memory does not grow with the width either.

Example:
    >>> plan = TilePlan.build(1000, 700, tile_size=256, overlap=64, blend="spline")
    >>> len(plan.row_starts), len(plan.col_starts), plan.halo
    (6, 4, 32)
    >>> plan.finished_row(0)
    160
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geounet.core.errors import InvalidParameterError
from geounet.core.types import BLEND_MODES, IGNORE_INDEX, BlendMode, check_choice
from geounet.io.windows import core_ranges, tile_starts

__all__ = [
    "MIN_HALO",
    "MULTIPLE",
    "POP_ROWS",
    "STRIP_COLUMNS",
    "RowAccumulator",
    "TilePlan",
    "TileRegion",
    "blend_weights",
]

#: Tile sides are multiples of this (the U-Net encoders downsample 5 times).
MULTIPLE = 32
#: Smallest halo of mirrored context added around the raster, in pixels.
MIN_HALO = 16
#: Rows :meth:`RowAccumulator.pop` normalises at a time (bounds its temporaries).
POP_ROWS = 32
#: Widest column strip a raster is run in (a multiple of every output block side, 512).
#: A wider raster is run strip by strip; the tile column that straddles a strip boundary runs
#: in both strips (about one tile column per 8 192 px of width more network work), and peak
#: memory stays that of an 8 192 px wide raster, whatever the width.
STRIP_COLUMNS = 8192


def _ramp_1d(size: int, ramp: int, mode: BlendMode, floor: float) -> np.ndarray:
    if mode == "none" or ramp <= 0:
        return np.ones(size, dtype=np.float32)
    # distance of each pixel centre from the nearest tile edge, in units of the ramp length
    idx = np.arange(size, dtype=np.float64) + 0.5
    d = np.minimum(idx, size - idx) / ramp
    x = np.clip(d, 0.0, 1.0)
    s = x if mode == "linear" else x * x * (3.0 - 2.0 * x)  # cubic smoothstep (C1 spline)
    return (floor + (1.0 - floor) * s).astype(np.float32)


def blend_weights(
    tile: int, overlap: int, mode: BlendMode = "spline", floor: float = 1e-2
) -> np.ndarray:
    """A 2D weight window for blending overlapping tile predictions.

    The window is 1 in the tile's interior and falls smoothly towards the tile edges over
    ``overlap`` pixels, never below ``floor`` (so every covered pixel has a positive weight
    sum and a lone tile still counts). It is separable: ``w(r, c) = w1(r) * w1(c)``.

    Args:
        tile: Tile size in pixels.
        overlap: Ramp length in pixels (the tile overlap).
        mode: ``"spline"`` (cubic smoothstep), ``"linear"`` or ``"none"`` (all ones).
        floor: Smallest weight, in (0, 1].

    Returns:
        ``float32`` array of shape ``(tile, tile)`` with values in ``[floor**2, 1]``.
    """
    check_choice("blend", mode, BLEND_MODES)
    if tile < 1 or overlap < 0:
        raise InvalidParameterError(
            f"blend weights need tile >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}."
        )
    if not 0.0 < floor <= 1.0:
        raise InvalidParameterError(f"floor must be in (0, 1], got {floor}.")
    w1 = _ramp_1d(tile, overlap, mode, floor)
    return np.outer(w1, w1)


@dataclass(frozen=True)
class TileRegion:
    """Where one tile lies and which part of it counts.

    Attributes:
        row: Raster row of the tile's top edge (negative inside the top halo).
        col: Raster column of the tile's left edge.
        r0: First tile row that contributes (inclusive).
        r1: Last tile row that contributes (exclusive).
        c0: First tile column that contributes.
        c1: Last tile column that contributes (exclusive).
    """

    row: int
    col: int
    r0: int
    r1: int
    c0: int
    c1: int


def _round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


@dataclass(frozen=True)
class TilePlan:
    """The tile grid over a halo-padded raster, and the blend weight window (made once).

    Attributes:
        height: Raster rows.
        width: Raster columns.
        tile_h: Tile height (``tile_size`` or less for rasters smaller than one tile).
        tile_w: Tile width.
        overlap: Overlap between neighbouring tiles in pixels.
        halo: Mirrored context added on every side of the raster.
        blend: ``"spline"``, ``"linear"`` or ``"none"`` (centre crop).
        row_starts: Tile tops in padded coordinates (raster row = start - halo).
        col_starts: Tile lefts in padded coordinates.
        weights: ``(tile_h, tile_w)`` float32 weight window (all ones for ``"none"``).
        row_cores: Per tile row, the padded rows it alone owns (``"none"`` only).
        col_cores: Per tile column, the padded columns it alone owns.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    halo: int
    blend: BlendMode
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    weights: np.ndarray
    row_cores: tuple[tuple[int, int], ...]
    col_cores: tuple[tuple[int, int], ...]

    @classmethod
    def build(
        cls, height: int, width: int, *, tile_size: int, overlap: int, blend: BlendMode
    ) -> TilePlan:
        """Lay out tiles over a ``height`` x ``width`` raster.

        The halo is ``max(overlap // 2, MIN_HALO)`` pixels (at most a quarter tile). A raster
        smaller than one tile gets a single tile per axis, shrunk to the smallest multiple of
        :data:`MULTIPLE` that covers the padded raster; the rest of it is mirror padding too.

        Raises:
            InvalidParameterError: ``tile_size`` is not a multiple of 32 (at least 64) or
                ``overlap`` is not in ``[0, tile_size / 2]``.
        """
        check_choice("blend", blend, BLEND_MODES)
        if tile_size < 2 * MULTIPLE or tile_size % MULTIPLE:
            raise InvalidParameterError(
                f"tile_size={tile_size} is not allowed; use a multiple of {MULTIPLE} "
                f">= {2 * MULTIPLE} (e.g. 256, 512, 1024)."
            )
        if not 0 <= overlap <= tile_size // 2:
            raise InvalidParameterError(
                f"overlap={overlap} is not allowed; use 0 <= overlap <= tile_size / 2 "
                f"= {tile_size // 2} pixels."
            )
        halo = min(max(overlap // 2, MIN_HALO), tile_size // 4)
        ph, pw = height + 2 * halo, width + 2 * halo
        tile_h = min(tile_size, _round_up(ph, MULTIPLE))
        tile_w = min(tile_size, _round_up(pw, MULTIPLE))
        rows = tile_starts(ph, tile_h, min(overlap, tile_h - 1))
        cols = tile_starts(pw, tile_w, min(overlap, tile_w - 1))
        side = max(tile_h, tile_w)
        weights = blend_weights(side, overlap, blend)[:tile_h, :tile_w]
        # along an axis with a single tile the crop is harmless: weights are divided out
        return cls(
            height=height,
            width=width,
            tile_h=tile_h,
            tile_w=tile_w,
            overlap=overlap,
            halo=halo,
            blend=blend,
            row_starts=tuple(rows),
            col_starts=tuple(cols),
            weights=np.ascontiguousarray(weights),
            row_cores=tuple(core_ranges(rows, tile_h, ph)),
            col_cores=tuple(core_ranges(cols, tile_w, pw)),
        )

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the whole grid."""
        return len(self.row_starts) * len(self.col_starts)

    def region(self, i: int, j: int) -> TileRegion:
        """The placement of tile ``(i, j)`` and the part of it that is blended in."""
        rs, cs = self.row_starts[i], self.col_starts[j]
        if self.blend == "none":
            (a, b), (c, d) = self.row_cores[i], self.col_cores[j]
            r0, r1, c0, c1 = a - rs, b - rs, c - cs, d - cs
        else:
            r0, r1, c0, c1 = 0, self.tile_h, 0, self.tile_w
        return TileRegion(rs - self.halo, cs - self.halo, r0, r1, c0, c1)

    def tile_rows_for(self, row_start: int, row_end: int) -> range:
        """Tile rows whose tiles touch raster rows ``[row_start, row_end)``."""
        return _touching(self.span, len(self.row_starts), row_start, row_end)

    def span(self, i: int) -> tuple[int, int]:
        """Raster rows that tile row ``i`` contributes to (clipped to the raster)."""
        return self._span(self.row_starts, self.row_cores, self.tile_h, self.height, i)

    def col_span(self, j: int) -> tuple[int, int]:
        """Raster columns that tile column ``j`` contributes to (clipped to the raster)."""
        return self._span(self.col_starts, self.col_cores, self.tile_w, self.width, j)

    def tile_cols_for(self, col_start: int, col_end: int) -> range:
        """Tile columns whose tiles touch raster columns ``[col_start, col_end)``."""
        return _touching(self.col_span, len(self.col_starts), col_start, col_end)

    def _span(
        self,
        starts: tuple[int, ...],
        cores: tuple[tuple[int, int], ...],
        tile: int,
        size: int,
        k: int,
    ) -> tuple[int, int]:
        """One axis: the raster range tile ``k`` adds to (its core alone without blending)."""
        a, b = cores[k] if self.blend == "none" else (starts[k], starts[k] + tile)
        return max(a - self.halo, 0), min(b - self.halo, size)

    def column_strips(self, max_width: int | None = None) -> list[tuple[int, int]]:
        """Raster column ranges ``[a, b)`` of at most ``max_width`` columns covering the raster.

        ``max_width`` defaults to :data:`STRIP_COLUMNS`. Every boundary is a multiple of
        ``max_width``, so strips of a multiple of the output's block width write whole blocks.
        """
        max_width = STRIP_COLUMNS if max_width is None else max_width
        if max_width < 1:
            raise InvalidParameterError(f"max_width must be >= 1, got {max_width}.")
        return [(a, min(a + max_width, self.width)) for a in range(0, self.width, max_width)]

    def finished_row(self, i: int) -> int:
        """Rows above this one are final once tile rows ``0..i`` have been added."""
        if i + 1 >= len(self.row_starts):
            return self.height
        return int(np.clip(self.span(i + 1)[0], 0, self.height))


def _touching(span: Callable[[int], tuple[int, int]], n: int, start: int, end: int) -> range:
    """The consecutive indices ``k < n`` whose ``span(k)`` meets ``[start, end)``."""
    hit = [k for k in range(n) if span(k)[0] < end and span(k)[1] > start]
    return range(hit[0], hit[-1] + 1) if hit else range(0)


class RowAccumulator:
    """Weighted sums of class probabilities for a rolling band of raster rows.

    The band starts at :attr:`row0` and is ``capacity`` rows tall; it covers the raster
    columns ``[col0, col0 + width)`` (a column strip, or the whole width). :meth:`pop` hands
    out the finished rows at its top and shifts the rest up. A pixel's class is the one of highest
    ``probability x decision weight`` (the model's calibrated decision weights,
    :attr:`geounet.model.files.ModelConfig.decision_weights`; all 1: the most probable class).
    """

    def __init__(
        self,
        n_classes: int,
        width: int,
        capacity: int,
        row0: int = 0,
        decision_weights: Sequence[float] | None = None,
        col0: int = 0,
    ) -> None:
        self.row0, self.col0 = row0, col0
        self.decision = None
        if decision_weights is not None and any(w != 1 for w in decision_weights):
            if len(decision_weights) != n_classes or min(decision_weights) <= 0:
                raise InvalidParameterError(
                    f"decision_weights {list(decision_weights)} must be {n_classes} positive "
                    "numbers, one per class."
                )
            self.decision = np.asarray(decision_weights, np.float32)[:, None, None]
        self.sums = np.zeros((n_classes, capacity, width), np.float32)
        self.wsum = np.zeros((capacity, width), np.float32)
        self.valid = np.zeros((capacity, width), bool)
        self._scratch: np.ndarray | None = None

    def add(
        self,
        region: TileRegion,
        probs: np.ndarray | None,
        valid: np.ndarray,
        weights: np.ndarray,
        height: int,
    ) -> None:
        """Blend one tile in (the part of it in the band's columns).

        Args:
            region: The tile's placement and contributing part.
            probs: ``(K, tile_h, tile_w)`` probabilities, or None for a skipped (empty) tile.
            valid: ``(tile_h, tile_w)`` validity of the tile's pixels.
            weights: The plan's weight window.
            height: Raster height (rows past it are mirror padding and are dropped).

        Raises:
            InvalidParameterError: The tile's raster rows do not all lie in the band
                (rows beyond its capacity, or rows already popped).
        """
        col = region.col - self.col0  # the tile's left edge in band columns
        r0 = max(region.r0, -region.row)
        r1 = min(region.r1, height - region.row)
        c0 = max(region.c0, -col)
        c1 = min(region.c1, self.wsum.shape[1] - col)
        if r1 <= r0 or c1 <= c0:
            return
        self._check_rows(region.row + r0, region.row + r1, "add")
        a, b = region.row + r0 - self.row0, region.row + r1 - self.row0
        c, d = col + c0, col + c1
        self.valid[a:b, c:d] |= valid[r0:r1, c0:c1]
        if probs is None:
            return
        w = weights[r0:r1, c0:c1]
        part = probs[:, r0:r1, c0:c1]
        if self._scratch is None or self._scratch.size < part.size:
            self._scratch = np.empty(part.size, np.float32)
        # the weighted tile in a reused buffer: no temporary (and page faults) per tile
        weighted = self._scratch[: part.size].reshape(part.shape)
        np.multiply(part, w, out=weighted)
        self.sums[:, a:b, c:d] += weighted
        self.wsum[a:b, c:d] += w

    def pop(
        self, upto: int, probs: bool = True
    ) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray] | None:
        """Remove the finished rows ``[row0, upto)`` and return them.

        The rows are decided (and normalised) :data:`POP_ROWS` at a time, so the temporaries
        stay a few rows high whatever the band's height (only the results are full size).

        Args:
            upto: One past the last finished row.
            probs: Also return the probabilities (False: None in their place, and no
                full-size float array is made).

        Returns:
            ``(row0, classes, probabilities, valid)`` with classes ``uint8 (n, W)`` (255 where
            invalid), probabilities ``float32 (K, n, W)`` (0 where invalid; None when
            ``probs`` is False) and the validity ``(n, W)``; or None when there is nothing
            to pop.

        Raises:
            InvalidParameterError: ``upto`` lies beyond the band's capacity.
        """
        n = upto - self.row0
        if n <= 0:
            return None
        self._check_rows(self.row0, upto, "pop")
        valid = self.valid[:n] & (self.wsum[:n] > 0)
        classes = np.empty(valid.shape, np.uint8)
        out = np.empty((self.sums.shape[0], *valid.shape), np.float32) if probs else None
        for s in range(0, n, POP_ROWS):
            e = min(s + POP_ROWS, n)
            # the class from the weighted sums: dividing a pixel's sums by its (positive)
            # weight does not change which is largest, so only probabilities need it
            q = self.sums[:, s:e] if self.decision is None else self.sums[:, s:e] * self.decision
            if len(q) == 2:  # one comparison instead of an arg-max (ties go to class 0 alike)
                np.greater(q[1], q[0], out=classes[s:e], casting="unsafe")
            else:
                classes[s:e] = np.argmax(q, axis=0)
            if out is not None:
                w = self.wsum[s:e]
                np.divide(self.sums[:, s:e], np.where(w > 0, w, 1.0), out=out[:, s:e])
                out[:, s:e] *= valid[s:e]
        classes[~valid] = IGNORE_INDEX
        start = self.row0
        self._shift(n)
        return start, classes, out, valid

    def _check_rows(self, start: int, stop: int, what: str) -> None:
        """Raise unless raster rows ``[start, stop)`` all lie in the band."""
        cap = self.wsum.shape[0]
        if start < self.row0 or stop > self.row0 + cap:
            raise InvalidParameterError(
                f"RowAccumulator.{what}: raster rows {start}..{stop} do not fit the band of "
                f"capacity {cap} that holds rows {self.row0}..{self.row0 + cap}; rows would be "
                "lost. Make the band at least one tile high (capacity = TilePlan.tile_h) and pop "
                "finished rows (TilePlan.finished_row) after each row of tiles."
            )

    def _shift(self, n: int) -> None:
        """Move rows ``n..`` up to the top, chunk by chunk (no full-size temporary)."""
        cap = self.wsum.shape[0]
        for arr, axis in ((self.sums, 1), (self.wsum, 0), (self.valid, 0)):
            view = np.moveaxis(arr, axis, 0)
            for s in range(0, cap - n, n):
                e = min(s + n, cap - n)
                view[s:e] = view[s + n : e + n]
            view[cap - n :] = 0
        self.row0 += n
