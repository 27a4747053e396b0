"""Raster IO: open and validate, read windows with mirror padding, statistics, atomic writes.

The georeferencing (CRS, transform, nodata) travels with the data in :class:`RasterInfo`;
every writer here takes it back so nothing written loses its place on the map.

Example:
    >>> info = open_raster("sample_data/train.tif")            # doctest: +SKIP
    >>> info.width, info.height, info.data_bands                # doctest: +SKIP
    (1024, 1024, [1, 2, 3, 4])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS as ProjCRS  # noqa: N811
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geounet.errors import (
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    MissingCRSError,
    OutputExistsError,
)
from geounet.tiling import pad_amounts
from geounet.types import PathLike

__all__ = [
    "SUPPORTED_DTYPES",
    "BandStats",
    "RasterInfo",
    "RasterWriter",
    "atomic_output",
    "band_stats",
    "iter_windows",
    "local_metric_crs",
    "open_raster",
    "pixel_size_m",
    "read_window",
    "valid_mask",
    "write_raster",
]

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
_HIST_DTYPES = ("uint8", "int8", "uint16", "int16")  # exact histograms for percentiles
_STATS_SAMPLE = 2_000_000  # values per band kept for percentiles of other dtypes


@dataclass(frozen=True)
class RasterInfo:
    """What geounet needs to know about a raster, read once when it is opened.

    Attributes:
        path: The file.
        width: Columns.
        height: Rows.
        count: Number of bands.
        dtype: Numpy dtype name of the bands.
        crs: Coordinate reference system, or None (only when explicitly allowed).
        transform: Affine pixel-to-map transform.
        nodata: Nodata value of the bands, or None.
        descriptions: Band descriptions (None where unset).
        alpha_band: 1-based index of the alpha band, or None.
    """

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    descriptions: tuple[str | None, ...] = field(default_factory=tuple)
    alpha_band: int | None = None

    @property
    def data_bands(self) -> list[int]:
        """1-based indices of the bands that hold data (every band but alpha)."""
        return [b for b in range(1, self.count + 1) if b != self.alpha_band]

    @property
    def band_names(self) -> list[str]:
        """A name for each data band (its description, else ``band_N``)."""
        return [self.descriptions[b - 1] or f"band_{b}" for b in self.data_bands]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the raster's CRS."""
        return _bounds(self.transform, self.height, self.width)

    @property
    def gsd_m(self) -> float:
        """Ground sample distance (pixel size) in metres, also for geographic CRSs."""
        return pixel_size_m(self.crs, self.transform, self.height, self.width)


def _bounds(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    xs = [transform.c, transform.c + transform.a * width + transform.b * height]
    ys = [transform.f, transform.f + transform.d * width + transform.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def open_raster(path: PathLike, *, allow_no_crs: bool = False) -> RasterInfo:
    """Open a raster, check it is usable and describe it.

    Args:
        path: Any file GDAL/rasterio reads (GeoTIFF, JPEG2000, VRT, ...).
        allow_no_crs: Accept a raster without a CRS and work in pixel coordinates.

    Returns:
        A :class:`RasterInfo`.

    Raises:
        InputNotFoundError: The file does not exist.
        InvalidRasterError: Not a raster, no bands or an unsupported data type.
        MissingCRSError: No CRS and ``allow_no_crs`` is False.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file; check the path (cwd is {Path.cwd()}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p) as src:
                info = _describe(p, src)
    except RasterioIOError as exc:
        raise InvalidRasterError(
            f"{p}: not a raster GDAL can read ({exc}); give a GeoTIFF or another GDAL raster."
        ) from exc
    if info.count == 0 or not info.data_bands:
        raise InvalidRasterError(f"{p}: the raster has no data bands; give a raster with bands.")
    if info.dtype not in SUPPORTED_DTYPES:
        raise InvalidRasterError(
            f"{p}: band data type {info.dtype} is not supported; allowed: "
            f"{', '.join(SUPPORTED_DTYPES)}. Convert it, e.g. gdal_translate -ot Float32."
        )
    if info.crs is None and not allow_no_crs:
        raise MissingCRSError(
            f"{p}: the raster has no coordinate reference system, so results could not be "
            "placed on a map. Assign one (gdal_edit.py -a_srs EPSG:XXXX), or pass "
            "allow_no_crs=True (--allow-no-crs) to work in pixel coordinates."
        )
    return info


def _describe(p: Path, src: rasterio.io.DatasetReader) -> RasterInfo:
    alpha = None
    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            alpha = i
    transform = src.transform
    if src.crs is None and transform == Affine.identity():
        transform = Affine.identity()
    return RasterInfo(
        path=p,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=str(src.dtypes[0]) if src.count else "none",
        crs=src.crs,
        transform=transform,
        nodata=src.nodata,
        descriptions=tuple(src.descriptions),
        alpha_band=alpha,
    )


def pixel_size_m(crs: CRS | None, transform: Affine, height: int = 1, width: int = 1) -> float:
    """Mean pixel size in metres, measured at the raster centre for geographic CRSs.

    Without a CRS the pixel size is returned in pixel units (1.0 for an identity transform).
    """
    rx, ry = math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)
    if crs is None:
        return float((rx + ry) / 2)
    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    if pcrs.is_geographic:
        lon, lat = transform * (width / 2, height / 2)
        geod = Geod(ellps="WGS84")
        _, _, dx = geod.inv(lon, lat, lon + rx, lat)
        _, _, dy = geod.inv(lon, lat, lon, lat + ry)
        return float((abs(dx) + abs(dy)) / 2)
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return float((rx + ry) / 2 * factor)


def local_metric_crs(crs: CRS, bounds: tuple[float, float, float, float]) -> CRS:
    """A CRS measured in metres for an area: ``crs`` itself if projected, else its UTM zone."""
    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    if not pcrs.is_geographic:
        return crs
    lon, lat = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    zone = int((lon + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def valid_mask(
    data: np.ndarray, nodata: float | None, alpha: np.ndarray | None = None
) -> np.ndarray:
    """Boolean ``(h, w)`` mask of valid pixels.

    A pixel is invalid when every band equals ``nodata``, any band is NaN/inf, or the alpha
    band is 0.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= ~np.all(data == nodata, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    if alpha is not None:
        valid &= alpha > 0
    return valid


def _pad(arr: np.ndarray, pads: tuple[int, int, int, int], mode: str) -> np.ndarray:
    top, bottom, left, right = pads
    if not any(pads):
        return arr
    widths = [(0, 0)] * (arr.ndim - 2) + [(top, bottom), (left, right)]
    if mode == "reflect" and min(arr.shape[-2:]) < 2:
        mode = "symmetric"  # reflect needs 2 pixels; one row/column is mirrored as is
    return np.pad(arr, widths, mode=mode)


def read_window(
    src: rasterio.io.DatasetReader,
    row: int,
    col: int,
    height: int,
    width: int,
    bands: Sequence[int],
    *,
    nodata: float | None = None,
    alpha_band: int | None = None,
    pad_mode: str = "reflect",
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may run past the raster edge, mirror-padding the missing part.

    Args:
        src: An open rasterio dataset.
        row: Row offset of the window (may be negative).
        col: Column offset of the window (may be negative).
        height: Window height.
        width: Window width.
        bands: 1-based band indices to read.
        nodata: Nodata value (default: the dataset's).
        alpha_band: 1-based alpha band index used as validity mask, or None.
        pad_mode: ``"reflect"`` (mirror, the default), ``"symmetric"``, ``"edge"`` or
            ``"constant"`` (zeros).

    Returns:
        ``(data, valid)``: data of shape ``(len(bands), height, width)`` in the raster's
        dtype and the boolean validity mask ``(height, width)``; the padded part mirrors
        the data next to it (and its validity).
    """
    (r0, c0, r1, c1), pads = pad_amounts(row, col, height, width, src.height, src.width)
    win = Window(c0, r0, c1 - c0, r1 - r0)
    data = src.read(list(bands), window=win)
    alpha = src.read(alpha_band, window=win) if alpha_band else None
    nd = src.nodata if nodata is None else nodata
    valid = valid_mask(data, nd, alpha)
    return _pad(data, pads, pad_mode), _pad(valid, pads, pad_mode)


def iter_windows(height: int, width: int, block: int = 1024) -> Iterator[Window]:
    """Non-overlapping windows of at most ``block`` x ``block`` covering a raster."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield Window(c, r, min(block, width - c), min(block, height - r))


@dataclass
class BandStats:
    """Per-band statistics over valid pixels: mean, standard deviation, 2nd/98th percentile."""

    mean: list[float]
    std: list[float]
    p2: list[float]
    p98: list[float]
    count: int = 0

    def to_dict(self) -> dict[str, list[float]]:
        """The JSON form stored in manifests and model files."""
        return {"mean": self.mean, "std": self.std, "p2": self.p2, "p98": self.p98}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BandStats:
        """Rebuild from :meth:`to_dict`."""
        return cls(*(list(map(float, d[k])) for k in ("mean", "std", "p2", "p98")))


class _StatsAccumulator:
    """Streams windows into sums and histograms (or a bounded sample) per band."""

    def __init__(self, n_bands: int, dtype: str, seed: int = 0) -> None:
        self.n = 0
        self.s = np.zeros(n_bands)
        self.s2 = np.zeros(n_bands)
        self.exact = dtype in _HIST_DTYPES
        self.offset = -int(np.iinfo(dtype).min) if self.exact else 0
        size = int(np.iinfo(dtype).max) + self.offset + 1 if self.exact else 0
        self.hist = [np.zeros(size, np.int64) for _ in range(n_bands)] if self.exact else None
        self.samples: list[list[np.ndarray]] = [[] for _ in range(n_bands)]
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        """Add ``(bands, n)`` valid values."""
        if values.shape[1] == 0:
            return
        v = values.astype(np.float64)
        self.n += values.shape[1]
        self.s += v.sum(axis=1)
        self.s2 += (v * v).sum(axis=1)
        for b in range(values.shape[0]):
            if self.hist is not None:
                self.hist[b] += np.bincount(
                    values[b].astype(np.int64) + self.offset, minlength=self.hist[b].size
                )
            else:
                k = min(values.shape[1], _STATS_SAMPLE // 64 + 1)
                idx = self.rng.choice(values.shape[1], size=k, replace=False)
                self.samples[b].append(values[b, idx].astype(np.float64))
                self._shrink(b)

    def _shrink(self, b: int) -> None:
        total = sum(s.size for s in self.samples[b])
        if total > 2 * _STATS_SAMPLE:
            allv = np.concatenate(self.samples[b])
            self.samples[b] = [self.rng.choice(allv, size=_STATS_SAMPLE, replace=False)]

    def _percentile(self, b: int, q: float) -> float:
        if self.hist is not None:
            cdf = np.cumsum(self.hist[b])
            return float(np.searchsorted(cdf, q / 100 * cdf[-1]) - self.offset)
        return float(np.percentile(np.concatenate(self.samples[b]), q))

    def result(self) -> BandStats:
        n = max(self.n, 1)
        mean = self.s / n
        std = np.sqrt(np.maximum(self.s2 / n - mean * mean, 0.0))
        nb = len(self.s)
        return BandStats(
            mean=[float(x) for x in mean],
            std=[float(max(x, 1e-6)) for x in std],
            p2=[self._percentile(b, 2) for b in range(nb)],
            p98=[self._percentile(b, 98) for b in range(nb)],
            count=int(self.n),
        )


def band_stats(
    infos: Sequence[RasterInfo],
    bands: Sequence[int] | None = None,
    *,
    nodata: float | None = None,
    block: int = 1024,
    seed: int = 0,
) -> BandStats:
    """Per-band mean, std, 2nd and 98th percentile over the valid pixels of several rasters.

    Streams the rasters window by window, so memory stays bounded whatever their size. For
    8- and 16-bit integers the percentiles are exact (full histograms); for other types they
    come from a bounded random sample of at most ~4 million values per band (seeded, so
    deterministic), which is accurate to well under 0.1 percentile points.

    Args:
        infos: Opened rasters (all with the same bands).
        bands: 1-based band indices (default: each raster's data bands).
        nodata: Override of the files' nodata value.
        block: Window size used to stream.
        seed: Seed of the sample used for non-integer percentiles.

    Returns:
        The :class:`BandStats`.

    Raises:
        InvalidRasterError: If no valid pixel was found.
    """
    acc: _StatsAccumulator | None = None
    for info in infos:
        use = list(bands) if bands else info.data_bands
        acc = acc or _StatsAccumulator(len(use), info.dtype, seed)
        nd = info.nodata if nodata is None else nodata
        with rasterio.open(info.path) as src:
            for win in iter_windows(info.height, info.width, block):
                data = src.read(use, window=win)
                alpha = src.read(info.alpha_band, window=win) if info.alpha_band else None
                acc.add(data[:, valid_mask(data, nd, alpha)])
    if acc is None or acc.n == 0:
        names = ", ".join(str(i.path) for i in infos)
        raise InvalidRasterError(
            f"{names}: no valid pixel (every pixel is nodata or transparent); check the nodata "
            "value or pass nodata= explicitly."
        )
    return acc.result()


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary name keeps the suffix (drivers pick formats from it). On any exception the
    temporary file or folder is removed and ``path`` is untouched.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{target}: output already exists; pass overwrite=True (--overwrite) to replace it "
            "or choose another name."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield tmp
        if target.is_dir() and overwrite:
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        for side in tmp.parent.glob(tmp.name + ".*"):  # GDAL sidecars (.aux.xml, .ovr)
            side.unlink(missing_ok=True)


def _profile(
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
) -> dict[str, Any]:
    big = width * height * count * np.dtype(dtype).itemsize > 3.5e9
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "BIGTIFF": "YES" if big else "IF_SAFER",
    }
    if width >= 256 or height >= 256:
        bs = 512 if min(width, height) >= 512 else 256
        profile.update(tiled=True, blockxsize=bs, blockysize=bs)
    if count > 1:
        profile["interleave"] = "pixel"
    return profile


class RasterWriter:
    """Stream windows into a new GeoTIFF (or COG) that appears under its name only when complete.

    Use it as a context manager; an exception inside the block leaves no file under ``path``.

    Example:
        >>> with RasterWriter("o.tif", 100, 100, 1, "uint8", crs, tr) as w:  # doctest: +SKIP
        ...     w.write(block, row=0, col=0)
    """

    def __init__(
        self,
        path: PathLike,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: CRS | None,
        transform: Affine,
        *,
        nodata: float | None = None,
        colormap: Mapping[int, Sequence[int]] | None = None,
        tags: Mapping[str, str] | None = None,
        descriptions: Sequence[str] | None = None,
        output_format: str = "GTiff",
        overwrite: bool = False,
    ) -> None:
        if output_format not in ("GTiff", "COG"):
            raise InvalidParameterError(
                f"output_format={output_format!r} is not allowed; choose 'GTiff' or 'COG'."
            )
        self.path = Path(path)
        self.profile = _profile(width, height, count, dtype, crs, transform, nodata)
        self.colormap, self.tags, self.descriptions = colormap, tags, descriptions
        self.output_format, self.overwrite = output_format, overwrite
        self._ctx: contextlib.AbstractContextManager[Path] | None = None
        self._dst: rasterio.io.DatasetWriter | None = None

    def __enter__(self) -> RasterWriter:
        self._ctx = atomic_output(self.path, overwrite=self.overwrite)
        tmp = self._ctx.__enter__()
        self._tmp = tmp.with_suffix(".tif") if self.output_format == "COG" else tmp
        self._final_tmp = tmp
        self._dst = rasterio.open(self._tmp, "w", **self.profile)
        if self.colormap:
            self._dst.write_colormap(1, {int(k): tuple(v) for k, v in self.colormap.items()})
        if self.tags:
            self._dst.update_tags(**self.tags)
        for i, d in enumerate(self.descriptions or (), start=1):
            self._dst.set_band_description(i, d)
        return self

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        """Write ``data`` (``(bands, h, w)`` or ``(h, w)``) with its top-left at ``(row, col)``."""
        assert self._dst is not None, "RasterWriter.write() outside its with-block"
        arr = data[None] if data.ndim == 2 else data
        win = Window(col, row, arr.shape[-1], arr.shape[-2])
        self._dst.write(arr.astype(self.profile["dtype"], copy=False), window=win)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._dst is not None and self._ctx is not None
        self._dst.close()
        if exc_type is None and self.output_format == "COG":
            _to_cog(self._tmp, self._final_tmp, self.profile["dtype"], bool(self.colormap))
            self._tmp.unlink()
        elif self._tmp != self._final_tmp and self._tmp.exists():
            self._tmp.unlink()
        self._ctx.__exit__(exc_type, exc, tb)


def _to_cog(src_path: Path, dst_path: Path, dtype: str, categorical: bool) -> None:
    resampling = "MODE" if categorical or np.dtype(dtype).kind in "ui" else "AVERAGE"
    with rasterio.open(src_path) as src:
        rasterio.shutil.copy(
            src,
            dst_path,
            driver="COG",
            compress="DEFLATE",
            predictor="YES" if not categorical else "NO",
            blocksize=512,
            overview_resampling=resampling,
            resampling=resampling,
            BIGTIFF="IF_SAFER",
        )


def write_raster(
    path: PathLike,
    array: np.ndarray,
    crs: CRS | None,
    transform: Affine,
    *,
    nodata: float | None = None,
    colormap: Mapping[int, Sequence[int]] | None = None,
    class_names: Mapping[int, str] | None = None,
    descriptions: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    output_format: str = "GTiff",
    overwrite: bool = False,
) -> Path:
    """Write a whole array as a tiled, compressed, georeferenced GeoTIFF (atomically).

    Args:
        path: Output file.
        array: ``(bands, h, w)`` or ``(h, w)``.
        crs: CRS to record.
        transform: Affine transform to record.
        nodata: Nodata value.
        colormap: ``{value: (r, g, b[, a])}`` colour table for single-band uint8 class rasters.
        class_names: ``{value: name}``, stored as the ``CLASSES`` JSON tag.
        descriptions: Band descriptions.
        tags: Extra dataset tags.
        output_format: ``"GTiff"`` or ``"COG"`` (with overviews).
        overwrite: Replace an existing file.

    Returns:
        The written path.
    """
    arr = array[None] if array.ndim == 2 else array
    all_tags = dict(tags or {})
    if class_names:
        all_tags["CLASSES"] = json.dumps({str(k): v for k, v in class_names.items()})
    with RasterWriter(
        path,
        arr.shape[2],
        arr.shape[1],
        arr.shape[0],
        str(arr.dtype),
        crs,
        transform,
        nodata=nodata,
        colormap=colormap,
        tags=all_tags,
        descriptions=descriptions,
        output_format=output_format,
        overwrite=overwrite,
    ) as w:
        w.write(arr, 0, 0)
    return Path(path)


def resampling_from_name(name: str) -> Resampling:
    """Map a resampling name (``"nearest"``, ``"bilinear"``...) to rasterio's enum."""
    try:
        return Resampling[name]
    except KeyError as exc:
        allowed = ", ".join(r.name for r in Resampling)
        raise InvalidParameterError(f"resampling={name!r} is unknown; allowed: {allowed}.") from exc
