"""Raster IO: open and validate, read windows with mirror padding, statistics, atomic writes.

The georeferencing (CRS, transform, nodata) travels with the data in :class:`RasterInfo`;
every writer here takes it back so nothing written loses its place on the map. The writers
(:func:`atomic_output`, :class:`RasterWriter`, :func:`write_raster`) live in
:mod:`geounet.io.write` and are re-exported here.

Example:
    Not run as a doctest: it reads ``sample_data/`` relative to the working directory.

    >>> info = open_raster("sample_data/train.tif")            # doctest: +SKIP
    >>> info.width, info.height, info.data_bands                # doctest: +SKIP
    (1024, 1024, [1, 2, 3, 4])
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS as ProjCRS  # noqa: N811
from pyproj import Geod, Proj, Transformer
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.transform import array_bounds
from rasterio.windows import Window

from geounet.core.errors import (
    BandMismatchError,
    InputNotFoundError,
    InvalidParameterError,
    InvalidRasterError,
    MissingCRSError,
)
from geounet.core.types import PathLike, check_choice
from geounet.io.remote import RemotePath, gdal_path
from geounet.io.stats import BandStats, StatsAccumulator
from geounet.io.windows import pad_amounts
from geounet.io.write import RasterWriter, WriterOptions, atomic_output, write_raster

__all__ = [
    "MAX_SCALE_ERROR",
    "PAD_MODES",
    "SUPPORTED_DTYPES",
    "BandStats",
    "RasterInfo",
    "RasterWriter",
    "WriterOptions",
    "atomic_output",
    "band_stats",
    "iter_windows",
    "local_metric_crs",
    "mask_source",
    "open_raster",
    "pixel_size_m",
    "read_failed",
    "read_window",
    "stats_result",
    "valid_mask",
    "window_bounds",
    "write_raster",
]

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Padding modes of :func:`read_window` (numpy ``np.pad`` names).
PAD_MODES: tuple[str, ...] = ("reflect", "symmetric", "edge", "constant")


@dataclass(frozen=True)
class RasterInfo:
    """What geounet needs to know about a raster, read once when it is opened.

    Attributes:
        path: The file (a :class:`~geounet.io.remote.RemotePath` for a remote one).
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

    path: Path | RemotePath
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    descriptions: tuple[str | None, ...] = field(default_factory=tuple)
    alpha_band: int | None = None
    colorinterp: tuple[str, ...] = field(default_factory=tuple)

    @property
    def data_bands(self) -> list[int]:
        """1-based indices of the bands that hold data (every band but alpha)."""
        return [b for b in range(1, self.count + 1) if b != self.alpha_band]

    @property
    def band_names(self) -> list[str]:
        """A name for each data band (its description, else ``band_N``)."""
        descs = self.descriptions
        return [(descs[b - 1] if b <= len(descs) else None) or f"band_{b}" for b in self.data_bands]

    def band_name(self, band: int) -> str | None:
        """The name of band ``band`` (1-based); None when nothing names it.

        Its description, else ``red``, ``green`` or ``blue`` from its colour interpretation.

        Example:
            >>> info = RasterInfo("x.tif", 1, 1, 2, "uint8", None, Affine.identity(), None,
            ...                   descriptions=(None, "nir"), colorinterp=("red", "undefined"))
            >>> info.band_name(1), info.band_name(2)
            ('red', 'nir')
        """
        desc = self.descriptions[band - 1] if band <= len(self.descriptions) else None
        color = self.colorinterp[band - 1] if band <= len(self.colorinterp) else ""
        return desc or (color if color in ("red", "green", "blue") else None)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the raster's CRS."""
        return _bounds(self.transform, self.height, self.width)

    @property
    def gsd_m(self) -> float:
        """Ground sample distance (pixel size) in metres, also for geographic CRSs."""
        return pixel_size_m(self.crs, self.transform, self.height, self.width)


def window_bounds(transform: Affine, window: Window) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of a window of a grid, from its four corners.

    A rotated or sheared grid's window is covered whole (rasterio's ``windows.bounds`` takes
    two corners).

    Example:
        >>> window_bounds(Affine.rotation(45), Window(0, 0, 2, 2))  # doctest: +ELLIPSIS
        (-1.414..., 0.0, 1.414..., 2.828...)
    """
    col, row = float(window.col_off), float(window.row_off)
    corners = [
        _xy(transform, col + c, row + r) for r in (0, window.height) for c in (0, window.width)
    ]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _bounds(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    return window_bounds(transform, Window(0, 0, width, height))


def _xy(t: Affine, col: float, row: float) -> tuple[float, float]:
    """Map coordinates of a pixel position (``t * (col, row)``, spelled out for any affine)."""
    return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f


def _is_virtual(path: str) -> bool:
    """GDAL virtual file systems, URLs and ``DRIVER:file:subdataset`` names (no file to check)."""
    prefix = path.split(":", 1)[0] if ":" in path else ""
    return path.startswith("/vsi") or "://" in path or (len(prefix) > 1 and prefix.isalnum())


def open_raster(
    path: PathLike, *, allow_no_crs: bool = False, asset: str | None = None
) -> RasterInfo:
    """Open a raster, check it is usable and describe it.

    Args:
        path: Any file GDAL/rasterio reads (GeoTIFF, JPEG2000, VRT, ``/vsicurl/`` ...), an
            ``http(s)://``, ``s3://``, ``gs://`` or ``az://`` URL of one (read with range
            requests), or a STAC Item (see :func:`geounet.io.remote.gdal_path`).
        allow_no_crs: Accept a raster without a CRS and work in pixel coordinates.
        asset: The asset key when ``path`` is a STAC Item.

    Returns:
        A :class:`RasterInfo`.

    Raises:
        InputNotFoundError: The file does not exist.
        InvalidRasterError: Not a raster, no bands or an unsupported data type.
        MissingCRSError: No CRS and ``allow_no_crs`` is False.
    """
    p: Any = gdal_path(path, asset)
    if not _is_virtual(str(path)) and not p.exists():
        raise InputNotFoundError(f"{p}: no such file; check the path (cwd is {Path.cwd()}).")
    if not _is_virtual(str(path)) and p.is_dir():
        raise InvalidRasterError(
            f"{p}: is a folder, not a raster file; give the path of a raster file (a GeoTIFF) "
            "inside it."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(p) as src:
                info = _describe(p, src)
                subdatasets = list(src.subdatasets) if not info.count else []
                dtypes = set(src.dtypes)
    except RasterioError as exc:
        if isinstance(p, RemotePath):
            raise InvalidRasterError(
                f"{path}: could not open the remote raster ({exc}); check the URL and that it "
                "is a GeoTIFF, and for s3/gs/az the credentials in the environment (e.g. "
                "AWS_ACCESS_KEY_ID or AWS_NO_SIGN_REQUEST=YES)."
            ) from exc
        raise InvalidRasterError(
            f"{p}: not a raster GDAL can read ({exc}); give a GeoTIFF or another GDAL raster "
            "(if it is one, it is damaged or incomplete: copy or download it again)."
        ) from exc
    _check_usable(info, subdatasets, dtypes)
    if info.crs is None and not allow_no_crs:
        raise MissingCRSError(
            f"{p}: the raster has no coordinate reference system, so results could not be "
            "placed on a map. Assign one (gdal_edit.py -a_srs EPSG:XXXX), or pass "
            "allow_no_crs=True (--allow-no-crs) to work in pixel coordinates."
        )
    return info


def _check_usable(info: RasterInfo, subdatasets: list[str], dtypes: set[str]) -> None:
    p = info.path
    if info.count == 0:
        hint = (
            f" It holds subdatasets; open one of them, e.g. {subdatasets[0]!r}."
            if subdatasets
            else ""
        )
        raise InvalidRasterError(
            f"{p}: the raster has no bands.{hint} Give a raster with at least one band."
        )
    if not info.data_bands:
        raise InvalidRasterError(
            f"{p}: the raster has only an alpha band and no data band; give a raster with data."
        )
    if len(dtypes) > 1:
        raise InvalidRasterError(
            f"{p}: the bands have different data types ({', '.join(sorted(dtypes))}); "
            "convert them to one, e.g. gdal_translate -ot Float32."
        )
    if info.dtype not in SUPPORTED_DTYPES:
        raise InvalidRasterError(
            f"{p}: band data type {info.dtype} is not supported; allowed: "
            f"{', '.join(SUPPORTED_DTYPES)}. Convert it, e.g. gdal_translate -ot Float32."
        )


def _describe(p: Path | RemotePath, src: Any) -> RasterInfo:
    alpha = None
    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            alpha = i
    return RasterInfo(
        path=p,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=str(src.dtypes[0]) if src.count else "none",
        crs=src.crs,
        transform=src.transform,
        nodata=src.nodata,
        descriptions=tuple(src.descriptions),
        alpha_band=alpha,
        colorinterp=tuple(ci.name for ci in src.colorinterp),
    )


#: A projected CRS whose scale at an area's centre is off by more than this share is not
#: measured in its own units but in the local UTM zone: Web Mercator (EPSG:3857, in which
#: much aerial imagery is served) beyond 5.7 degrees of latitude, where its "metres" are
#: 1 / cos(latitude) ground metres (at 50 degrees 1.56 of them, and its areas 2.4 times).
MAX_SCALE_ERROR = 0.005


def pixel_size_m(crs: CRS | None, transform: Affine, height: int = 1, width: int = 1) -> float:
    """Mean pixel size in metres, measured at the raster centre.

    Without a CRS the pixel size is returned in pixel units (1.0 for an identity transform).
    For a projected CRS measured in its own units the map unit (metre, US foot...) is
    converted to metres; a geographic CRS, and a projected one off scale there (see
    :data:`MAX_SCALE_ERROR`), are measured on the ellipsoid.
    """
    rx, ry = math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)
    if crs is None:
        return float((rx + ry) / 2)
    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    bounds = array_bounds(height, width, transform)
    if pcrs.is_geographic or local_metric_crs(crs, bounds) != crs:
        to_lonlat = _to_lonlat(crs.to_wkt())
        cx, cy = width / 2, height / 2
        (x0, x1, x2), (y0, y1, y2) = zip(
            *(_xy(transform, c, r) for c, r in ((cx, cy), (cx + 1, cy), (cx, cy + 1))),
            strict=True,
        )
        lon, lat = to_lonlat.transform([x0, x1, x2], [y0, y1, y2])
        geod = Geod(ellps="WGS84")
        dx = geod.inv(lon[0], lat[0], lon[1], lat[1])[2]
        dy = geod.inv(lon[0], lat[0], lon[2], lat[2])[2]
        return float((abs(dx) + abs(dy)) / 2)
    factor = pcrs.axis_info[0].unit_conversion_factor if pcrs.axis_info else 1.0
    return float((rx + ry) / 2 * factor)


def local_metric_crs(crs: CRS, bounds: tuple[float, float, float, float]) -> CRS:
    """A CRS measured in metres for an area (``bounds`` in ``crs``).

    ``crs`` itself if it is projected and true to scale there (within
    :data:`MAX_SCALE_ERROR`), else the UTM zone of the area's centre.

    Example:
        >>> local_metric_crs(CRS.from_epsg(32633), (500000, 5500000, 501000, 5501000)).to_epsg()
        32633
        >>> local_metric_crs(CRS.from_epsg(3857), (1113194, 6446275, 1114194, 6447275)).to_epsg()
        32632
    """
    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    x, y = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    if pcrs.is_geographic:
        lon, lat = x, y
    else:
        lon, lat = _to_lonlat(crs.to_wkt()).transform(x, y)
        if _scale_error(crs.to_wkt(), lon, lat) <= MAX_SCALE_ERROR:
            return crs
    zone = int((lon + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


@functools.lru_cache(maxsize=64)
def _to_lonlat(wkt: str) -> Transformer:
    """Map coordinates of a CRS (its WKT) to longitude and latitude (built once per CRS)."""
    return Transformer.from_crs(ProjCRS.from_wkt(wkt), "EPSG:4326", always_xy=True)


@functools.lru_cache(maxsize=64)
def _projection(wkt: str) -> Proj:
    """The projection of a projected CRS (its WKT), built once per CRS."""
    return Proj(ProjCRS.from_wkt(wkt))


def _scale_error(wkt: str, lon: float, lat: float) -> float:
    """How far a projected CRS's scale is from true at a point (0: true to scale)."""
    try:
        f = _projection(wkt).get_factors(lon, lat)
    except Exception:
        return 0.0
    error = max(abs(f.meridional_scale - 1), abs(f.parallel_scale - 1))
    return float(error) if math.isfinite(error) else 0.0


def valid_mask(
    data: np.ndarray, nodata: float | None, alpha: np.ndarray | None = None
) -> np.ndarray:
    """Boolean ``(h, w)`` mask of valid pixels.

    A pixel is invalid when every band equals ``nodata`` (a NaN ``nodata`` matches NaN),
    any band is NaN/inf (floats), or ``alpha`` (an alpha band or a GDAL mask) is 0.
    """
    # band by band into one (h, w) array: no (bands, h, w) temporaries
    valid = np.ones(data.shape[1:], dtype=bool)
    if nodata is not None and not math.isnan(nodata) and len(data):
        np.not_equal(data[0], nodata, out=valid)
        for band in data[1:]:
            valid |= band != nodata
    if np.issubdtype(data.dtype, np.floating):
        for band in data:
            valid &= np.isfinite(band)
    if alpha is not None:
        valid &= alpha > 0
    return valid


def _mirror_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map indices outside ``[0, n)`` back inside the way ``np.pad`` pads (any pad length)."""
    if mode == "edge":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect" and n > 1:  # mirror about the edge pixel: period 2(n-1)
        period = 2 * (n - 1)
        m = np.mod(idx, period)
        return np.where(m >= n, period - m, m)
    period = 2 * n  # symmetric: mirror including the edge pixel (also reflect of 1 pixel)
    m = np.mod(idx, period)
    return np.where(m >= n, period - 1 - m, m)


def mask_source(src: Any, alpha_band: int | None) -> str | None:
    """``"alpha"``, ``"mask"`` (a GDAL per-dataset mask band) or None."""
    if alpha_band:
        return "alpha"
    flags = src.mask_flag_enums[0] if src.count else ()
    if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
        return "mask"
    return None


def _read_valid(
    src: Any,
    bands: Sequence[int],
    win: Window,
    nodata: float | None,
    alpha_band: int | None,
    mask_source: str | None,
    cache: Any = None,
    keep_from: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    if cache is not None:
        data, alpha = cache.read(win, keep_from)
        return data, valid_mask(data, nodata, alpha)
    try:
        data = src.read(list(bands), window=win)
        alpha = None
        if mask_source == "alpha" and alpha_band:
            alpha = src.read(alpha_band, window=win)
        elif mask_source == "mask":
            alpha = src.read_masks(1, window=win)
    except (RasterioError, CPLE_BaseError) as exc:
        raise read_failed(src.name, exc, win) from exc
    return data, valid_mask(data, nodata, alpha)


def read_failed(path: PathLike, exc: BaseException, window: Window | None = None) -> Exception:
    """The error of a raster whose pixels cannot be read (truncated file, corrupt block).

    Args:
        path: The raster.
        exc: The low-level read error (its text and its cause's are quoted).
        window: The window being read, named in the message when given.

    Returns:
        An :class:`~geounet.core.errors.InvalidRasterError` naming the file, the place, the
        reason and the fix.
    """
    where = ""
    if window is not None:
        r, c = int(window.row_off), int(window.col_off)
        where = f" at rows {r}-{r + int(window.height)}, columns {c}-{c + int(window.width)}"
    why = " ".join(str(e).strip() for e in (exc, exc.__cause__) if e is not None)
    return InvalidRasterError(
        f"{path}: reading its pixels{where} failed ({' '.join(why.split())}); the file is "
        "damaged or incomplete (an interrupted download or copy?). Copy or download it again "
        "(gdalinfo -checksum FILE finds such errors)."
    )


def read_window(
    src: Any,
    row: int,
    col: int,
    height: int,
    width: int,
    bands: Sequence[int],
    *,
    nodata: float | None = None,
    alpha_band: int | None = None,
    pad_mode: str = "reflect",
    cache: Any = None,
    keep_from: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may run past the raster edge, mirror-padding the missing part.

    The result equals ``np.pad(full_array, ..., mode=pad_mode)`` cut to the window, whatever
    the pad length (a window larger than the raster repeats the mirror), but only the rows and
    columns the window needs are read.

    Args:
        src: An open rasterio dataset.
        row: Row offset of the window (may be negative).
        col: Column offset of the window (may be negative).
        height: Window height.
        width: Window width.
        bands: 1-based band indices to read.
        nodata: Nodata value (default: the dataset's).
        alpha_band: 1-based alpha band index used as validity mask, or None (then a GDAL
            per-dataset mask band, when the file has one, is used).
        pad_mode: ``"reflect"`` (mirror, the default), ``"symmetric"``, ``"edge"`` or
            ``"constant"`` (zeros, marked invalid).
        cache: A :class:`geounet.io.blocks.BlockCache` of ``src`` for these ``bands`` and
            this ``alpha_band`` (overlapping windows then decode each block once), or None.
        keep_from: With ``cache``, a hint: the first raster row the next row of windows
            reads (the raster's height when none follows); None: unknown.

    Returns:
        ``(data, valid)``: data of shape ``(len(bands), height, width)`` in the raster's
        dtype and the boolean validity mask ``(height, width)``; the padded part mirrors
        the data next to it (and its validity).

    Raises:
        InvalidParameterError: Unknown ``pad_mode`` or a window that misses the raster.
    """
    check_choice("pad_mode", pad_mode, PAD_MODES)
    (r0, c0, r1, c1), pads = pad_amounts(row, col, height, width, src.height, src.width)
    nd = src.nodata if nodata is None else nodata
    source = mask_source(src, alpha_band)
    if pad_mode == "constant" or not any(pads):
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data, valid = _read_valid(src, bands, win, nd, alpha_band, source, cache, keep_from)
        if not any(pads):
            return data, valid
        widths = ((pads[0], pads[1]), (pads[2], pads[3]))
        return np.pad(data, ((0, 0), *widths)), np.pad(valid, widths)
    rows = _mirror_index(np.arange(row, row + height), src.height, pad_mode)
    cols = _mirror_index(np.arange(col, col + width), src.width, pad_mode)
    rr0, cc0 = int(rows.min()), int(cols.min())
    win = Window(cc0, rr0, int(cols.max()) + 1 - cc0, int(rows.max()) + 1 - rr0)
    data, valid = _read_valid(src, bands, win, nd, alpha_band, source, cache, keep_from)
    # one axis at a time, and only a padded one (np.ix_ indexing costs 3-10 times more)
    if pads[0] or pads[1]:
        data, valid = data.take(rows - rr0, axis=1), valid.take(rows - rr0, axis=0)
    if pads[2] or pads[3]:
        data, valid = data.take(cols - cc0, axis=2), valid.take(cols - cc0, axis=1)
    return data, valid


def iter_windows(height: int, width: int, block: int = 1024) -> Iterator[Window]:
    """Non-overlapping windows of at most ``block`` x ``block`` covering a raster, row by row."""
    if block < 1:
        raise InvalidParameterError(f"block must be >= 1 pixel, got {block}.")
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield Window(c, r, min(block, width - c), min(block, height - r))


def _stats_bands(infos: Sequence[RasterInfo], bands: Sequence[int] | None) -> list[list[int]]:
    """The bands to read from each raster; all must give the same number of bands."""
    per = [list(bands) if bands else info.data_bands for info in infos]
    for info, use in zip(infos, per):
        bad = [b for b in use if not 1 <= b <= info.count]
        if bad:
            raise BandMismatchError(
                f"{info.path}: band(s) {bad} do not exist; the raster has bands 1..{info.count}."
            )
        if len(use) != len(per[0]):
            raise BandMismatchError(
                f"{info.path}: {len(use)} data bands, but {infos[0].path} has {len(per[0])}; "
                "statistics need the same bands in every raster (pass bands=...)."
            )
    return per


def band_stats(
    infos: Sequence[RasterInfo | PathLike],
    bands: Sequence[int] | None = None,
    *,
    nodata: float | None = None,
    block: int = 1024,
    seed: int = 0,
) -> BandStats:
    """Per-band mean, std, 2nd and 98th percentile over the valid pixels of several rasters.

    Streams the rasters window by window, so memory stays bounded whatever their size. Valid
    pixels exclude nodata (every band equal to it), NaN/inf, alpha = 0 and GDAL mask = 0.
    Mean and std are exact. Percentiles follow ``numpy.percentile`` (linear interpolation):
    for 8- and 16-bit integers they are exact (full histograms); for other types they come
    from a uniform random sample of at most 1 million pixels (seeded, so deterministic;
    exact for smaller rasters), accurate to about 0.02 percentile points.

    Args:
        infos: Opened rasters, or paths (all with the same number of bands).
        bands: 1-based band indices (default: each raster's data bands).
        nodata: Override of the files' nodata value.
        block: Window size used to stream.
        seed: Seed of the sample used for non-integer percentiles.

    Returns:
        The :class:`BandStats`.

    Raises:
        InvalidParameterError: If no raster is given.
        BandMismatchError: If the rasters do not have the same number of bands.
        InvalidRasterError: If no valid pixel was found.
    """
    infos = [i if isinstance(i, RasterInfo) else open_raster(i, allow_no_crs=True) for i in infos]
    if not infos:
        raise InvalidParameterError("band_stats needs at least one raster.")
    per_bands = _stats_bands(infos, bands)
    dtype = np.result_type(*(np.dtype(i.dtype) for i in infos)).name
    acc = StatsAccumulator(len(per_bands[0]), dtype, seed)
    for info, use in zip(infos, per_bands):
        nd = info.nodata if nodata is None else nodata
        with rasterio.open(info.path) as src:
            source = mask_source(src, info.alpha_band)
            for win in iter_windows(info.height, info.width, block):
                data, valid = _read_valid(src, use, win, nd, info.alpha_band, source)
                acc.add(data[:, valid])
    return stats_result(acc, infos)


def stats_result(acc: StatsAccumulator, infos: Sequence[RasterInfo]) -> BandStats:
    """The statistics of ``acc``, filled from ``infos``; an error when no pixel was valid.

    Raises:
        InvalidRasterError: No valid pixel was added (the message names the rasters).
    """
    if acc.n == 0:
        names = ", ".join(str(i.path) for i in infos)
        raise InvalidRasterError(
            f"{names}: no valid pixel (every pixel is nodata or transparent); check the nodata "
            "value or pass nodata= explicitly."
        )
    return acc.result()
