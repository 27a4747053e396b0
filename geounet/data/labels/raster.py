"""Label rasters (class values, RGB colour masks, palette images) read on an image grid.

A label raster on the image's grid (same CRS, size and transform to 1/100 pixel) is read
directly; any other is resampled (nearest) onto the image grid through a ``WarpedVRT``, one
window at a time. Pixels outside the label raster, label ``nodata`` and NaN become 255 (no label);
so does black ``#000000`` in colour masks unless it is declared as a class.

Example:
    Not run as a doctest: it needs a label raster and an opened image.

    >>> src = RasterLabels("mask.tif", image_info)        # doctest: +SKIP
    >>> src.found_values()                                 # doctest: +SKIP
    [0, 255]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geounet.core.classes import ClassSpec
from geounet.core.errors import InputNotFoundError, LabelError, MissingCRSError
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.data.labels.common import (
    LabelSource,
    no_overlap_error,
    norm_value,
    overlaps,
    to_image_crs,
)
from geounet.io.raster import RasterInfo, open_raster, read_failed
from geounet.io.windows import pad_amounts

__all__ = ["BLACK", "RasterLabels"]

BLACK = "#000000"
_MAX_VALUES = 1024  # more distinct values than this is not a class raster


class RasterLabels(LabelSource):
    """A label raster (class values or colours) read on one image's grid.

    Args:
        path: The label raster.
        image: The image the labels belong to.
        colors: True for colour-coded masks (RGB, or a single band with a palette) whose
            classes are ``"#RRGGBB"`` colours; None to decide from the file (3+ bands).

    Raises:
        InputNotFoundError: The file does not exist.
        MissingCRSError: The label has no CRS and a size different from the image's.
        CRSMismatchError: The label does not overlap the image.
        LabelError: The file cannot be used as labels.
    """

    def __init__(self, path: PathLike, image: RasterInfo, *, colors: bool | None = None) -> None:
        self.path, self.image = Path(path), image
        if not self.path.exists():
            raise InputNotFoundError(f"{self.path}: label file not found; check the path.")
        self.info = open_raster(self.path, allow_no_crs=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._src = rasterio.open(self.path)
        try:
            self._setup(colors)
        except BaseException:
            self._src.close()  # a refused label file is not left open
            raise
        self._found: list[Any] | None = None
        self._lut: tuple[np.ndarray, np.ndarray] | None = None

    def _setup(self, colors: bool | None) -> None:
        """Check the file can be used as labels and open it on the image grid."""
        self._palette = self._read_palette()
        bands = self.info.data_bands
        self.colors = len(bands) >= 3 if colors is None else colors
        if self.colors and len(bands) < 3 and self._palette is None:
            raise LabelError(
                f"{self.path}: classes are given as colours but the label raster has "
                f"{len(bands)} band(s) and no palette; give an RGB mask or integer classes."
            )
        if colors is False and len(bands) >= 3:
            raise LabelError(
                f"{self.path}: the label raster has {len(bands)} bands, like a colour-coded "
                "mask, but classes are not colours; give classes={'#RRGGBB': 'name', ...} or a "
                "single-band label raster."
            )
        self._bands = bands[:3] if self.colors and len(bands) >= 3 else bands[:1]
        self._reader = self._open_on_grid()
        # on the image grid pixels are read as they are; a WarpedVRT's approximate
        # transformer may place a resampled pixel differently in a larger window
        self.reads_by_band = self._reader is self._src

    def _read_palette(self) -> np.ndarray | None:
        if self._src.count != 1 or self._src.colorinterp[0] != ColorInterp.palette:
            return None
        try:
            cmap = self._src.colormap(1)
        except ValueError:
            return None
        lut = np.zeros(256, np.int64)
        for k, (r, g, b, *_) in cmap.items():
            if 0 <= k < 256:
                lut[k] = (r << 16) | (g << 8) | b
        return lut

    def _same_grid(self) -> bool:
        li, im = self.info, self.image
        if (li.width, li.height) != (im.width, im.height) or li.crs != im.crs:
            return False
        inv = ~li.transform
        corners = [(0, 0), (im.width, 0), (0, im.height), (im.width, im.height)]
        for c, r in corners:
            x, y = inv @ (im.transform @ (c, r))
            if abs(x - c) > 0.01 or abs(y - r) > 0.01:
                return False
        return True

    def _open_on_grid(self) -> Any:
        li, im = self.info, self.image
        if li.crs is None or im.crs is None:
            if (li.width, li.height) != (im.width, im.height):
                raise MissingCRSError(
                    f"{self.path}: the label raster ({li.width}x{li.height}) and the image "
                    f"{im.path} ({im.width}x{im.height}) cannot be aligned: one of them has no "
                    "CRS and their sizes differ. Give both a CRS, or a label of the image's size."
                )
            return self._src
        if self._same_grid():
            return self._src
        lb = to_image_crs(li.crs, im, li.bounds)
        if not overlaps(lb, im.bounds):
            raise no_overlap_error(self.path, im, lb)
        has_mask = self._src.nodata is not None or li.alpha_band is not None
        return WarpedVRT(
            self._src,
            crs=im.crs,
            transform=im.transform,
            width=im.width,
            height=im.height,
            resampling=Resampling.nearest,
            add_alpha=not has_mask,
        )

    def read_raw(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw values (``int64`` keys: value, or ``0xRRGGBB`` colour) and a validity mask.

        The window is on the image grid and may run past its border (that part is invalid).
        """
        src = self._reader
        (r0, c0, r1, c1), (top, _, left, _) = pad_amounts(
            row, col, height, width, src.height, src.width
        )
        win = Window(c0, r0, c1 - c0, r1 - r0)
        try:
            data = src.read(self._bands, window=win)
            ok = src.read_masks(self._bands[0], window=win) > 0
            if self.info.alpha_band and src is self._src:
                ok &= src.read(self.info.alpha_band, window=win) > 0
        except (RasterioError, CPLE_BaseError) as exc:
            raise read_failed(self.path, exc, win) from exc
        keys = self._encode(data)
        if not self.colors:
            if self.info.nodata is not None:
                ok &= data[0] != self.info.nodata
            if np.issubdtype(data.dtype, np.floating):
                ok &= np.isfinite(data[0])  # NaN is "no label", declared as nodata or not
        out = np.zeros((height, width), np.int64)
        valid = np.zeros((height, width), bool)
        out[top : top + keys.shape[0], left : left + keys.shape[1]] = keys
        valid[top : top + keys.shape[0], left : left + keys.shape[1]] = ok
        return out, valid

    def _encode(self, data: np.ndarray) -> np.ndarray:
        if self.colors and len(self._bands) >= 3:
            d = data.astype(np.int64)
            return (d[0] << 16) | (d[1] << 8) | d[2]
        if self.colors:  # palette
            return self._palette[data[0].astype(np.int64)]
        band = data[0]
        if np.issubdtype(band.dtype, np.floating):
            finite = np.isfinite(band)
            if not np.all(np.equal(np.mod(band[finite], 1), 0)):
                raise LabelError(
                    f"{self.path}: the label raster holds fractional values; labels must be "
                    "integer class values (or colours)."
                )
            band = np.where(finite, band, 0)
        return band.astype(np.int64)

    def found_values(self) -> list[Any]:
        """Distinct values (or ``"#RRGGBB"`` colours) over the image footprint (one pass)."""
        if self._found is None:
            seen: set[int] = set()
            for r in range(0, self.image.height, 1024):
                for c in range(0, self.image.width, 1024):
                    h, w = min(1024, self.image.height - r), min(1024, self.image.width - c)
                    keys, ok = self.read_raw(r, c, h, w)
                    seen.update(np.unique(keys[ok]).tolist())
                    if len(seen) > _MAX_VALUES:
                        raise LabelError(
                            f"{self.path}: more than {_MAX_VALUES} distinct label values; this "
                            "does not look like a class raster (is it the image?)."
                        )
            self._found = [self._decode(k) for k in sorted(seen)]
        return self._found

    def _decode(self, key: int) -> Any:
        return f"#{key:06X}" if self.colors else int(key)

    def _key(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else norm_value(value)

    def _keys(self, classes: Sequence[ClassSpec]) -> dict[Any, int]:
        keys = {self._key(c.value): i for i, c in enumerate(classes)}
        if self.colors and BLACK not in keys:
            keys[BLACK] = IGNORE_INDEX  # black padding of colour masks: no label
        return keys

    def palette_colors(self) -> dict[int, str]:
        """``{value: "#RRGGBB"}`` from the file's palette (empty without one)."""
        if self._palette is None:
            return {}
        return {v: f"#{int(self._palette[v]):06X}" for v in range(256)}

    def bind(self, classes: Sequence[ClassSpec]) -> None:
        """Fix the value -> class index lookup used by :meth:`read`."""
        keys = self._keys(classes)
        if self.colors:
            enc = {
                int(k[1:], 16): i for k, i in keys.items() if isinstance(k, str) and k[:1] == "#"
            }
        else:
            enc = {int(k): i for k, i in keys.items() if isinstance(k, int)}
        order = sorted(enc)
        self._lut = (np.array(order, np.int64), np.array([enc[k] for k in order], np.uint8))

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class indices ``(height, width)`` uint8 of a window; unknown/no label is 255."""
        if self._lut is None:
            raise RuntimeError("RasterLabels.read() before bind()")
        keys, ok = self.read_raw(row, col, height, width)
        vals, idx = self._lut
        if vals.size == 0:
            return np.full((height, width), IGNORE_INDEX, np.uint8)
        pos = np.clip(np.searchsorted(vals, keys), 0, vals.size - 1)
        hit = (vals[pos] == keys) & ok
        return np.where(hit, idx[pos], np.uint8(IGNORE_INDEX)).astype(np.uint8)

    def close(self) -> None:
        """Close the label raster (and its warped view)."""
        if self._reader is not self._src:
            self._reader.close()
        self._src.close()
