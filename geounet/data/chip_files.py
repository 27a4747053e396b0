"""Chip files: the GeoTIFF encoding of image and label chips, written by a bounded thread pool.

A chip pair is one image chip (``images/NAME``: the source bands, band descriptions, the
source's nodata value and, when some pixels are invalid, an internal GDAL mask band) and one
label chip (``labels/NAME``: class indices, 255 = no label, a colour table and the
``CLASSES`` tag). Chips are written straight into the chip folder being built: the folder as a
whole is built aside and renamed when complete (see :func:`geounet.data.prepare.prepare_data`),
so a chip file needs no atomic rename or lock of its own.

The encoding is chosen for speed: one tile per chip, :data:`CHIP_COMPRESSION` with the
horizontal predictor (fast to write and to read back in the training loop; chips stay about
as small as with deflate). Any rasterio/GDAL reader opens them.

Writing runs in :class:`ChipWriter`'s worker threads (GDAL encodes and writes without the
GIL), at most ``max_pending`` chips queued, so memory stays bounded.

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from affine import Affine
    >>> from geounet.core.classes import make_classes
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "images").mkdir(); (folder / "labels").mkdir()
    >>> data = np.ones((2, 32, 32), np.uint16); lab = np.zeros((32, 32), np.uint8)
    >>> with ChipWriter(folder, make_classes({1: "a"}), ["b1", "b2"]) as w:
    ...     w.submit("c.tif", data, np.ones((32, 32), bool), lab, None, Affine.identity(), 0)
    >>> sorted(p.name for p in folder.rglob("*.tif"))
    ['c.tif', 'c.tif']
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from geounet.core.classes import ClassSpec, classes_tag, colormap
from geounet.core.types import IGNORE_INDEX
from geounet.io.write import write_failed

__all__ = ["CHIP_COMPRESSION", "ChipWriter", "chip_profile", "write_chip_pair"]

#: GeoTIFF compression of chips (with the horizontal predictor, one tile per chip).
CHIP_COMPRESSION = "zstd"
#: Compression level of :data:`CHIP_COMPRESSION` (1: fastest).
CHIP_LEVEL = 1


def chip_profile(
    count: int, dtype: str, size: int, crs: CRS | None, transform: Affine, nodata: float | None
) -> dict[str, Any]:
    """The GTiff creation profile of a ``size`` x ``size`` chip: one tile, fast compression.

    Example:
        >>> p = chip_profile(4, "uint16", 256, None, Affine.identity(), 0)
        >>> p["blockxsize"], p["compress"], p["predictor"], p["interleave"]
        (256, 'zstd', 2, 'pixel')
    """
    return {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": size,
        "blockysize": size,
        "compress": CHIP_COMPRESSION,
        "zstd_level": CHIP_LEVEL,
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "interleave": "pixel",
        "BIGTIFF": "NO",
    }


def write_chip_pair(
    folder: Path,
    name: str,
    data: np.ndarray,
    valid: np.ndarray,
    lab: np.ndarray,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    classes: Sequence[ClassSpec],
    band_names: Sequence[str],
) -> None:
    """Write ``images/name`` (with a mask band where ``valid`` is False) and ``labels/name``.

    Args:
        folder: The chip folder (with ``images/`` and ``labels/``).
        name: File name of both chips.
        data: Image chip ``(bands, size, size)`` in the source dtype.
        valid: Validity ``(size, size)``; a mask band is written when some pixel is invalid.
        lab: Class indices ``(size, size)`` uint8.
        crs: CRS of the chip.
        transform: Affine transform of the chip.
        nodata: Nodata value recorded in the image chip.
        classes: The class list (colour table and ``CLASSES`` tag of the label chip).
        band_names: Band descriptions of the image chip.

    Raises:
        OutputNotWritableError: Writing failed (disk full, read-only folder...).
    """
    try:
        size = data.shape[-1]
        prof = chip_profile(data.shape[0], str(data.dtype), size, crs, transform, nodata)
        # no warnings.catch_warnings() here: it runs in writer threads, and that context
        # manager swaps the process-wide filters and hooks, racing with the caller's (it
        # once made a caller's pytest.warns miss its warning); ChipWriter quiets them instead
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(folder / "images" / name, "w", **prof) as dst:
                for i, d in enumerate(band_names, start=1):
                    dst.set_band_description(i, d)
                dst.write(np.ascontiguousarray(data))
                if not valid.all():
                    dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
            prof = chip_profile(1, "uint8", size, crs, transform, IGNORE_INDEX)
            with rasterio.open(folder / "labels" / name, "w", **prof) as dst:
                dst.write_colormap(1, colormap(classes))
                dst.update_tags(CLASSES=classes_tag({i: c.name for i, c in enumerate(classes)}))
                dst.write(np.ascontiguousarray(lab)[None])
    except (OSError, RasterioError, CPLE_BaseError) as exc:  # a full disk: one clear error
        raise write_failed(folder / "images" / name, exc) from exc


class ChipWriter:
    """Write chip pairs in worker threads, with at most ``max_pending`` chips waiting.

    Use it as a context manager: leaving the block waits for every chip and raises the first
    error of a worker (after the other chips finished). ``workers=0`` writes in the caller's
    thread.

    Args:
        folder: The chip folder (with ``images/`` and ``labels/``).
        classes: The class list (see :func:`write_chip_pair`).
        band_names: Band descriptions of the image chips.
        workers: Writer threads.
        max_pending: Chips submitted but not yet written, at most (bounds the memory).
    """

    def __init__(
        self,
        folder: Path,
        classes: Sequence[ClassSpec],
        band_names: Sequence[str],
        *,
        workers: int = 2,
        max_pending: int = 16,
    ) -> None:
        self.folder, self.classes, self.band_names = Path(folder), list(classes), list(band_names)
        self.max_pending = max(1, max_pending)
        self._pool = ThreadPoolExecutor(workers, "geounet-chips") if workers > 0 else None
        self._pending: deque[Future] = deque()
        self._quiet = warnings.catch_warnings()

    def __enter__(self) -> ChipWriter:
        # in the caller's thread, for the writer threads too (the filters are process-wide):
        # chips of imagery without a CRS are not georeferenced, as asked
        self._quiet.__enter__()
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return self

    def submit(
        self,
        name: str,
        data: np.ndarray,
        valid: np.ndarray,
        lab: np.ndarray,
        crs: CRS | None,
        transform: Affine,
        nodata: float | None,
    ) -> None:
        """Queue one chip pair (see :func:`write_chip_pair`); blocks while the queue is full."""
        args = (self.folder, name, data, valid, lab, crs, transform, nodata)
        if self._pool is None:
            write_chip_pair(*args, self.classes, self.band_names)
            return
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        fut = self._pool.submit(write_chip_pair, *args, self.classes, self.band_names)
        self._pending.append(fut)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._pool is None:
            self._quiet.__exit__(exc_type, exc, tb)
            return
        try:
            errors = [f.exception() for f in self._pending]
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
            self._quiet.__exit__(exc_type, exc, tb)
        first = next((e for e in errors if e is not None), None)
        if exc_type is None and first is not None:
            raise first
