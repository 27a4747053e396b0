"""Reading overlapping windows of a tiled raster with each block decoded once.

Tiled inference reads windows that overlap their neighbours (a 512 tile at a 448 stride spans
2 x 2 blocks of 512, and the next tile shares half of them), and GDAL's block cache is kept
tiny while classifying (it would also hold written blocks: see
``geounet.inference.classify``). Read window by window, each input block is then decoded
about six times. :class:`BlockCache` keeps the decoded blocks of the block rows the current
windows touch: windows that move left to right, then down (strip by strip) decode each block
once. The cache holds at most the block rows one window spans, over the columns read since
those rows were entered (one column strip of the scene). Told where the next row of windows
starts (``keep_from``), it drops the blocks above it as soon as the windows have passed
them; a byte budget (:data:`CACHE_BYTES`) bounds the rest, so memory does not grow with the
scene's width (a strip wider than the budget decodes a few blocks twice).

Measured on a 4096² 4-band uint16 deflate scene in blocks of 512, tiles of 512 at a 448
stride: the reader's CPU fell from 1.07 to 0.44 s (64 block decodes instead of about 400),
with this change and the batch normalised in place (``benchmarks/pipeline_overhead.py``).

Example:
    Not run as a doctest: it needs a raster file.

    >>> with rasterio.open("scene.tif") as src:                     # doctest: +SKIP
    ...     cache = BlockCache.for_dataset(src, [1, 2, 3])
    ...     data, valid = read_window(src, -32, -32, 512, 512, [1, 2, 3], cache=cache)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geounet.io.raster import mask_source, read_failed

__all__ = ["CACHE_BYTES", "MAX_BLOCK_SIDE", "BlockCache"]

#: Default budget of decoded blocks: two block rows of a 4 096-column, 4-band uint16 scene
#: in blocks of 512. A wider strip (up to 8 192 columns) keeps the same budget, so memory
#: does not grow with the scene's width; it then decodes a few blocks twice.
CACHE_BYTES = 32 * 2**20

#: Blocks wider or higher than this are not cached (a striped file's blocks span the whole
#: width, so caching them would hold full-width rows): such rasters are read window by window.
MAX_BLOCK_SIDE = 2048


class BlockCache:
    """The decoded blocks of the block rows that the latest window touched.

    Windows are expected roughly in reading order (left to right, then down, possibly strip
    by strip): a window evicts every block outside its own block rows. Any order gives the
    right pixels; only the number of decodes depends on it.

    Args:
        src: An open rasterio dataset (used from one thread only).
        bands: 1-based data bands to read.
        alpha_band: 1-based alpha band read along as the validity mask, or None.
        max_bytes: Budget of decoded blocks. Over it, blocks the windows have passed are let
            go (the next row of windows decodes those it needs again); the blocks of the
            window being read are always kept.
    """

    def __init__(
        self,
        src: Any,
        bands: Sequence[int],
        alpha_band: int | None = None,
        max_bytes: int = CACHE_BYTES,
    ) -> None:
        self.src, self.bands, self.alpha_band = src, list(bands), alpha_band
        self.max_bytes = int(max_bytes)
        self.mask = mask_source(src, alpha_band)
        self.block_h, self.block_w = (int(v) for v in src.block_shapes[0])
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self.decoded = 0

    @classmethod
    def for_dataset(
        cls, src: Any, bands: Sequence[int], alpha_band: int | None = None
    ) -> BlockCache | None:
        """A cache for ``src``, or None when its blocks are too large to keep.

        Blocks larger than :data:`MAX_BLOCK_SIDE` on a side (striped files), or bands with
        different block shapes, are read window by window instead.
        """
        shapes = {tuple(s) for s in src.block_shapes}
        if len(shapes) != 1:
            return None
        bh, bw = next(iter(shapes))
        if max(bh, bw) > MAX_BLOCK_SIDE:
            return None
        return cls(src, bands, alpha_band)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded blocks held now."""
        return sum(_size(b) for b in self._blocks.values())

    def read(
        self, win: Window, keep_from: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(data (C, h, w), alpha or GDAL mask (h, w) or None)`` of a window inside the raster.

        Args:
            win: The window (inside the raster).
            keep_from: A hint: the first row the next row of windows will read (the raster's
                height when none follows). Blocks entirely above it and left of this window
                are dropped now, as the reader will not come back to them. None: no hint
                (the window's block rows are kept).
        """
        data, alpha = self._assemble(win)
        col = int(win.col_off)
        passed = sorted(k for k in self._blocks if (k[1] + 1) * self.block_w <= col)
        if keep_from is not None:
            for br, bc in passed:
                if (br + 1) * self.block_h <= keep_from:
                    del self._blocks[(br, bc)]
        size = self.nbytes
        for key in passed:  # over the budget: the passed blocks go, top left first
            if size <= self.max_bytes:
                break
            if key in self._blocks:
                size -= _size(self._blocks.pop(key))
        return data, alpha

    def _assemble(self, win: Window) -> tuple[np.ndarray, np.ndarray | None]:
        r0, c0 = int(win.row_off), int(win.col_off)
        r1, c1 = r0 + int(win.height), c0 + int(win.width)
        rows = range(r0 // self.block_h, (r1 - 1) // self.block_h + 1)
        cols = range(c0 // self.block_w, (c1 - 1) // self.block_w + 1)
        for key in [k for k in self._blocks if k[0] not in rows]:
            del self._blocks[key]
        data = np.empty((len(self.bands), r1 - r0, c1 - c0), self.src.dtypes[self.bands[0] - 1])
        alpha: np.ndarray | None = None
        for br in rows:
            for bc in cols:
                block, block_alpha = self._block(br, bc)
                y0, x0 = br * self.block_h, bc * self.block_w
                ys, ye = max(r0, y0), min(r1, y0 + block.shape[1])
                xs, xe = max(c0, x0), min(c1, x0 + block.shape[2])
                out = (slice(ys - r0, ye - r0), slice(xs - c0, xe - c0))
                inner = (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
                data[(slice(None), *out)] = block[(slice(None), *inner)]
                if block_alpha is not None:
                    if alpha is None:
                        alpha = np.empty((r1 - r0, c1 - c0), block_alpha.dtype)
                    alpha[out] = block_alpha[inner]
        return data, alpha

    def _block(self, br: int, bc: int) -> tuple[np.ndarray, np.ndarray | None]:
        key = (br, bc)
        if key not in self._blocks:
            y0, x0 = br * self.block_h, bc * self.block_w
            w, h = min(self.block_w, self.src.width - x0), min(self.block_h, self.src.height - y0)
            win = Window(x0, y0, w, h)
            try:
                alpha = None
                if self.mask == "alpha" and self.alpha_band:  # one read: one decode
                    both = self.src.read([*self.bands, self.alpha_band], window=win)
                    data, alpha = both[:-1], both[-1]
                else:
                    data = self.src.read(self.bands, window=win)
                if self.mask == "mask":
                    alpha = self.src.read_masks(1, window=win)
            except (RasterioError, CPLE_BaseError) as exc:
                raise read_failed(self.src.name, exc, win) from exc
            self._blocks[key] = (data, alpha)
            self.decoded += 1
        return self._blocks[key]


def _size(block: tuple[np.ndarray, np.ndarray | None]) -> int:
    data, mask = block
    return data.nbytes + (mask.nbytes if mask is not None else 0)
