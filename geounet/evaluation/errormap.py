"""The error map: where the prediction is right, wrong, missing or superfluous.

Each pixel gets one code (:data:`ERROR_CODES`): both background (true negative), the same
class (true positive), a class predicted on background (false positive), a class predicted
as background (false negative), or another class (wrong class); 255 is not scored. The
GeoTIFF carries a colour table and the code names (``CLASSES`` tag), so QGIS opens it
styled; it keeps the grid's CRS and transform and is written atomically.

Example:
    >>> import numpy as np
    >>> error_codes(np.array([0, 1, 1, 0, 2, 255]), np.array([0, 1, 0, 1, 1, 1])).tolist()
    [0, 1, 2, 3, 4, 255]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from rasterio.windows import Window

from geounet.core.classes import classes_tag
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.evaluation.pixels import Grid
from geounet.io.raster import RasterWriter, WriterOptions

__all__ = ["ERROR_CODES", "ERROR_COLORS", "ErrorMap", "error_codes"]

#: Code -> meaning of the error map's values.
ERROR_CODES: dict[int, str] = {
    0: "true negative",
    1: "true positive",
    2: "false positive",
    3: "false negative",
    4: "wrong class",
}
#: Code -> RGBA colour of the error map's colour table (GeoTIFF colour tables hold no
#: transparency: true negatives are near-white, 255 is transparent as the nodata value).
ERROR_COLORS: dict[int, tuple[int, int, int, int]] = {
    0: (245, 245, 245, 255),
    1: (26, 152, 80, 255),
    2: (215, 48, 39, 255),
    3: (69, 117, 180, 255),
    4: (253, 174, 97, 255),
    IGNORE_INDEX: (0, 0, 0, 0),
}


def error_codes(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``uint8`` error codes of class index arrays (0 is background, 255 not scored)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    out = np.full(pred.shape, 4, dtype=np.uint8)
    out[(pred == truth) & (truth == 0)] = 0
    out[(pred == truth) & (truth != 0)] = 1
    out[(pred != 0) & (truth == 0)] = 2
    out[(pred == 0) & (truth != 0)] = 3
    out[(pred == IGNORE_INDEX) | (truth == IGNORE_INDEX)] = IGNORE_INDEX
    return out


class ErrorMap:
    """Collect error codes block by block: an optional GeoTIFF and a small preview.

    Use it as a context manager and pass the instance as ``on_block`` to
    :func:`geounet.evaluation.pixels.stream_confusion`.

    Args:
        grid: The grid of the compared blocks.
        path: GeoTIFF to write, or None for the preview and counts only.
        overwrite: Replace an existing ``path``.
        preview_size: Longest side of the preview in pixels (every n-th pixel is kept).
    """

    def __init__(
        self,
        grid: Grid,
        path: PathLike | None = None,
        *,
        overwrite: bool = False,
        preview_size: int = 1000,
    ) -> None:
        self.grid, self.path = grid, path
        self.step = max(1, math.ceil(max(grid.width, grid.height) / preview_size))
        shape = (math.ceil(grid.height / self.step), math.ceil(grid.width / self.step))
        self.preview = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        self.counts = np.zeros(256, dtype=np.int64)
        self._writer: RasterWriter | None = None
        if path is not None:
            self._writer = RasterWriter(
                path,
                grid.width,
                grid.height,
                1,
                "uint8",
                grid.crs,
                grid.transform,
                WriterOptions(
                    nodata=IGNORE_INDEX,
                    colormap=ERROR_COLORS,
                    tags={"CLASSES": classes_tag(ERROR_CODES)},
                    descriptions=["evaluation errors"],
                    overwrite=overwrite,
                ),
            )

    def __enter__(self) -> ErrorMap:
        if self._writer is not None:
            self._writer.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)

    def __call__(self, win: Window, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add one block (class indices of the prediction and the truth)."""
        codes = error_codes(pred, truth)
        self.counts += np.bincount(codes.ravel(), minlength=256)
        if self._writer is not None:
            self._writer.write(codes, int(win.row_off), int(win.col_off))
        rows = np.arange(int(win.row_off), int(win.row_off) + codes.shape[0])
        cols = np.arange(int(win.col_off), int(win.col_off) + codes.shape[1])
        r, c = rows % self.step == 0, cols % self.step == 0
        self.preview[np.ix_(rows[r] // self.step, cols[c] // self.step)] = codes[np.ix_(r, c)]

    def summary(self) -> dict[str, int]:
        """Pixels per error code, by name (``"not scored"`` for 255)."""
        out = {name: int(self.counts[code]) for code, name in ERROR_CODES.items()}
        out["not scored"] = int(self.counts[IGNORE_INDEX])
        return out
