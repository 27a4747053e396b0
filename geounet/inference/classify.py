"""Streamed tiled classification of a raster of any size: no seams, no memory wall.

The raster is read window by window. It is virtually padded by a halo of mirrored pixels
(reflect padding, never zeros) and cut into overlapping tiles, which are normalised with the
statistics stored in the model and run through the network in batches. Overlapping class
probabilities are blended with a smooth weight window computed once
(:class:`geounet.inference.blending.TilePlan`); only a band of accumulators a tile high is kept
(:class:`geounet.inference.blending.RowAccumulator`), and rows are written as soon as no later tile
can touch them. A reader thread reads and normalises the next batch while the network runs.

``model`` is any object with ``network`` (a torch module: normalised float ``[B, C, H, W]`` to
logits ``[B, K, H, W]``), ``config`` (:class:`geounet.model.files.ModelConfig`) and ``device``.

Example:
    Not run as a doctest: it needs a trained model and a scene on disk.

    >>> from geounet.inference.classify import classify_raster
    >>> classify_raster(model, "scene.tif", "classified.tif")   # doctest: +SKIP
    PosixPath('classified.tif')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import Geod
from rasterio.enums import MaskFlags

from geounet.core.classes import classes_tag, classes_to_json, colormap
from geounet.core.errors import BandMismatchError, InvalidParameterError, OutputExistsError
from geounet.core.types import IGNORE_INDEX, PathLike
from geounet.inference.blending import TilePlan
from geounet.inference.engine import (
    TileStream,
    job_engine,
    prepare_network,
    run_network,
    run_tiles,
)
from geounet.inference.engine_choice import ENGINE_TAG
from geounet.inference.options import ClassifyOptions
from geounet.inference.resume import classify_resumable
from geounet.inference.streams import (
    ArraySink,
    ArraySource,
    Grid,
    RasterSource,
    RemapSink,
    Sink,
    WriterSink,
)
from geounet.io.raster import (
    RasterInfo,
    RasterWriter,
    WriterOptions,
    open_raster,
    read_window,
    valid_mask,
)
from geounet.io.remote import check_local_output
from geounet.vectorizing.confidence import PROBABILITIES_TAG, probabilities_tag
from geounet.vectorizing.sizes import (
    LABEL_SPLIT_TAG,
    MIN_AREA_TAG,
    min_area_from_sizes,
    split_shares_from_sizes,
)

_LOG = logging.getLogger(__name__)

__all__ = [
    "GDAL_CACHE_BYTES",
    "PROBABILITIES_DEFLATE_LEVEL",
    "RANGE_RATIO_WARN",
    "RESAMPLE_TOLERANCE",
    "RESOLUTION_WARN",
    "ClassifyOptions",
    "class_writer",
    "classify_raster",
    "classify_rows",
    "classify_with_options",
    "predict_array",
    "probability_writer",
    "run_network",
]

#: DEFLATE level of the probabilities raster: 2.5 times faster than GDAL's default 6 for
#: 7 % more bytes (a real scene's two-class probabilities; twenty-fourth round of
#: ``benchmarks/README.md``); the class raster keeps 6.
PROBABILITIES_DEFLATE_LEVEL = 3
#: Resample to the model's pixel size when the input's differs by more than this fraction.
RESAMPLE_TOLERANCE = 0.05
#: Warn when the pixel sizes differ by more than this fraction.
RESOLUTION_WARN = 0.25
#: Refuse to resample an input whose pixels are more than this many times the model's.
MAX_UPSAMPLE = 4.0
#: GDAL block cache used while classifying, unless GDAL_CACHEMAX is set by the user: 256
#: *bytes* (rasterio passes the number to GDAL as bytes), i.e. no cache. A 64 MiB cache let
#: neighbouring tiles share decoded input blocks (indicatively 1.5x faster reading), but it
#: also held the *written* blocks, whose write errors (a full disk) then surfaced only when
#: GDAL flushed them at close, where they were not raised: ``classify`` reported success
#: with a truncated output (``tests/test_faults.py``). A read-only cache for the input is the
#: way to get the gain back; until then no cache, so every failed write raises.
GDAL_CACHE_BYTES = 256
#: Warn when the input's 98th percentile and the training one differ by more than this factor.
RANGE_RATIO_WARN = 4.0


# ----------------------------------------------------------------------------- checks


def _band_error(info: RasterInfo, config: Any, have: int, trained: int | None) -> Exception:
    want = list(config.bands or range(1, config.in_channels + 1))
    of = f" of images with {trained} data bands" if trained else ""
    names = {b: info.band_name(b) for b in info.data_bands}
    shown = ", ".join(n or f"band_{b}" for b, n in names.items())
    named = f" (named {shown})" if any(names.values()) else ""
    data = info.data_bands or [1]
    example = ",".join(str(data[min(i, len(data) - 1)]) for i in range(len(want)))
    return BandMismatchError(
        f"{info.path}: the raster has {have} data band(s){named} but the model reads "
        f"{len(want)} (bands {want}{of}, trained on {', '.join(config.band_names or [])}). "
        f"Say which of its bands are the model's bands, in the model's order (--bands {example}, "
        f"bands=({example.replace(',', ', ')})), or name its bands as the model's (band "
        "descriptions: they are then matched by name), or train a model on this kind of image."
    )


#: A band name that only numbers the band (``band_3``, ``Band 3``): it says nothing of what
#: the band holds.
_NUMBERED_BAND = re.compile(r"^band[ _-]?\d+$", re.IGNORECASE)


def _bands_by_name(info: RasterInfo, config: Any) -> list[int] | None:
    """The input's bands named as the model's training bands, in the model's order.

    None unless every band the model reads has a name (a description, or red / green / blue
    from the colour interpretation; not ``band_N``) and the input has one data band of each
    of those names (case and spaces ignored): then a BGRN scene feeds an RGB model its red,
    green and blue, where matching by position would feed it blue, green and red.
    """
    wanted = [str(n).strip().casefold() for n in (getattr(config, "band_names", None) or [])]
    if len(wanted) != config.in_channels or len(set(wanted)) != len(wanted):
        return None
    if any(_NUMBERED_BAND.match(n) for n in wanted):
        return None
    named: dict[str, list[int]] = {}
    for band in info.data_bands:
        name = info.band_name(band)
        if name:
            named.setdefault(name.strip().casefold(), []).append(band)
    if not all(len(named.get(n, ())) == 1 for n in wanted):
        return None
    return [named[n][0] for n in wanted]


def _model_bands(info: RasterInfo, config: Any) -> list[int]:
    """The file's bands the model reads: by name where both sides name them, else by position.

    Bands named alike on both sides (:func:`_bands_by_name`) are taken by name. Otherwise:

    ``config.bands`` index the bands of the training images (``source_band_count`` bands,
    alpha included). Each is matched by its position among the training images' data bands
    (alpha left out) to the input's data band at the same position, so an alpha band
    elsewhere in the input does not shift them. A model that reads every data band of its
    training images needs an input with as many data bands; one that reads some of them
    needs an input that has them.
    """
    by_name = _bands_by_name(info, config)
    if by_name is not None:
        if by_name != info.data_bands[: len(by_name)]:
            _LOG.info("%s: reading bands %s by their names", info.path, by_name)
        return by_name
    want = list(config.bands or range(1, config.in_channels + 1))
    n_src = getattr(config, "source_band_count", None)
    if n_src is None:  # model files written before the source band count was recorded
        return _legacy_model_bands(info, config, want)
    alpha = getattr(config, "source_alpha_band", None)
    trained = [b for b in range(1, n_src + 1) if b != alpha]
    have = info.data_bands
    if not set(want) <= set(trained):  # the alpha band itself was chosen as an input band
        trained, have = list(range(1, n_src + 1)), list(range(1, info.count + 1))
    pos = [trained.index(b) for b in want]
    reads_all = sorted(pos) == list(range(len(trained)))
    if len(have) == len(trained) or (not reads_all and max(pos) < len(have)):
        return [have[p] for p in pos]
    raise _band_error(info, config, len(have), len(trained))


def _chosen_bands(info: RasterInfo, config: Any, chosen: Sequence[int]) -> list[int]:
    """The bands the user chose (``ClassifyOptions.bands``), checked against file and model."""
    names = config.band_names or []
    trained = f" (trained on {', '.join(names)})" if names else ""
    if len(chosen) != config.in_channels:
        raise BandMismatchError(
            f"{info.path}: bands={tuple(chosen)} names {len(chosen)} band(s) but the model "
            f"reads {config.in_channels}{trained}; give {config.in_channels} band numbers of "
            "the image, in the model's order."
        )
    beyond = [b for b in chosen if b > info.count]
    if beyond:
        raise BandMismatchError(
            f"{info.path}: bands={tuple(chosen)} asks for band(s) {beyond} but the raster has "
            f"{info.count} (1 to {info.count}); give band numbers of this image."
        )
    if info.alpha_band in chosen:
        raise BandMismatchError(
            f"{info.path}: bands={tuple(chosen)} asks for band {info.alpha_band}, the alpha "
            f"band (transparency, not imagery); choose among the data bands {info.data_bands}."
        )
    return list(chosen)


def _legacy_model_bands(info: RasterInfo, config: Any, want: list[int]) -> list[int]:
    """Bands without the source band count: taken as positions among the data bands."""
    have = info.data_bands
    if want == have:
        return want
    full = want == list(range(1, len(want) + 1))
    if (full and len(have) != len(want)) or max(want) > len(have):
        raise _band_error(info, config, len(have), None)
    return [have[b - 1] for b in want]


def _sample_p98(src: Any, info: RasterInfo, bands: Sequence[int]) -> float | None:
    """The largest per-band 98th percentile over up to 9 windows spread over the raster.

    Each window starts on a block corner, so that it decodes one block, not up to four.
    """
    size = 256
    bh, bw = (int(v) for v in src.block_shapes[0])
    values = []
    for fr in (0.1, 0.5, 0.9):
        for fc in (0.1, 0.5, 0.9):
            r = max(0, min(int(fr * info.height) - size // 2, info.height - size))
            c = max(0, min(int(fc * info.width) - size // 2, info.width - size))
            if bh >= size:
                r -= r % bh
            if bw >= size:
                c -= c % bw
            h, w = min(size, info.height), min(size, info.width)
            data, valid = read_window(
                src, r, c, h, w, bands, nodata=info.nodata, alpha_band=info.alpha_band
            )
            values.append(data[:, valid][:, ::4].astype(np.float64))  # every 4th: plenty
    allv = np.concatenate(values, axis=1)
    if allv.shape[1] == 0:
        return None
    return float(np.max(np.percentile(allv, 98, axis=1)))


def _check_range(src: Any, info: RasterInfo, bands: Sequence[int], config: Any) -> None:
    """Warn when the input's values are orders of magnitude off the training statistics."""
    stats = config.stats or {}
    if "p98" in stats:
        trained = float(np.max(stats["p98"]))
    elif "mean" in stats and "std" in stats:
        trained = float(np.max(np.add(stats["mean"], np.multiply(stats["std"], 2))))
    else:
        return
    seen = _sample_p98(src, info, bands)
    if seen is None:
        return
    ratio = max(abs(seen), 1e-6) / max(abs(trained), 1e-6)
    source = np.dtype(config.source_dtype) if config.source_dtype else None
    beyond = source is not None and source.kind in "iu" and seen > np.iinfo(source).max
    if max(ratio, 1 / ratio) > RANGE_RATIO_WARN or beyond:  # beyond: 11-bit into an 8-bit model
        warnings.warn(
            f"{info.path}: its values reach about {seen:.4g} (98th percentile, {info.dtype}) "
            f"but the model was trained on values up to about {trained:.4g} "
            f"({config.source_dtype or 'unknown type'}); results may be poor. Give imagery "
            "of the kind the model was trained on (e.g. the same bit depth).",
            UserWarning,
            stacklevel=4,
        )


def _pixel_sizes_m(info: RasterInfo) -> tuple[float, float]:
    """Pixel width and height in metres (measured at the raster centre when geographic).

    A square-degree pixel at 60 degrees latitude is about half as wide as it is high; the
    mean of the two is :attr:`RasterInfo.gsd_m`.
    """
    t = info.transform
    rx, ry = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if info.crs is not None and info.crs.is_geographic:
        lon = t.c + t.a * info.width / 2 + t.b * info.height / 2
        lat = t.f + t.d * info.width / 2 + t.e * info.height / 2
        geod = Geod(ellps="WGS84")
        dx = abs(geod.inv(lon, lat, lon + rx, lat)[2])
        dy = abs(geod.inv(lon, lat, lon, lat + ry)[2])
        return float(dx), float(dy)
    mean = info.gsd_m  # map units to metres
    return mean * 2 * rx / (rx + ry), mean * 2 * ry / (rx + ry)


def _describe_size(x_m: float, y_m: float) -> str:
    if abs(x_m / y_m - 1) <= RESAMPLE_TOLERANCE:
        return f"{(x_m + y_m) / 2:.3g} m"
    return f"{x_m:.3g} m x {y_m:.3g} m"


def _working_grid(info: RasterInfo, config: Any, resample: bool) -> Grid:
    """The input grid, or a grid at the model's pixel size (per axis) over the same extent."""
    same = Grid(info.width, info.height, info.transform)
    model_gsd = getattr(config, "gsd_m", None)
    if info.crs is None or not model_gsd or model_gsd <= 0:
        return same
    x_m, y_m = _pixel_sizes_m(info)
    rx, ry = x_m / model_gsd, y_m / model_gsd
    if resample and max(rx, ry) > MAX_UPSAMPLE:
        raise InvalidParameterError(
            f"{info.path}: pixel size {_describe_size(x_m, y_m)} is {max(rx, ry):.0f} times the "
            f"{model_gsd:.3g} m the model was trained at: it never saw imagery like this, and "
            f"resampling would classify a grid of {round(info.width * rx)} x "
            f"{round(info.height * ry)} pixels. Classify imagery near {model_gsd:.3g} m, or "
            "pass resample=False (--no-resample) to classify it as it is."
        )
    if max(rx, 1 / rx, ry, 1 / ry) > 1 + RESOLUTION_WARN:
        what = (
            "resampling it to the model's pixel size on the fly and mapping the result back "
            "onto the input grid"
            if resample
            else "classifying it as is (resample=False); results may be poor"
        )
        warnings.warn(
            f"{info.path}: pixel size {_describe_size(x_m, y_m)} but the model was trained "
            f"at {model_gsd:.3g} m; {what}.",
            UserWarning,
            stacklevel=4,
        )
    if not resample or max(abs(rx - 1), abs(ry - 1)) <= RESAMPLE_TOLERANCE:
        return same
    width = max(1, round(info.width * rx))
    height = max(1, round(info.height * ry))
    transform = info.transform @ Affine.scale(info.width / width, info.height / height)
    return Grid(width, height, transform, resampled=True)


def _open_input(
    model: Any, in_raster: PathLike, opts: ClassifyOptions
) -> tuple[RasterInfo, list[int], Grid]:
    info = open_raster(in_raster, allow_no_crs=opts.allow_no_crs, asset=opts.asset)
    if opts.nodata is not None:  # the user's value over the file's
        info = dataclasses.replace(info, nodata=float(opts.nodata))
    if opts.bands:
        bands = _chosen_bands(info, model.config, opts.bands)
    else:
        bands = _model_bands(info, model.config)
    with _bounded_gdal_cache(), rasterio.open(info.path) as src:  # GDAL's default: 5 % of RAM
        _check_range(src, info, bands, model.config)
    return info, bands, _working_grid(info, model.config, opts.resample)


def _bounded_gdal_cache() -> contextlib.AbstractContextManager[Any]:
    """A rasterio environment capping GDAL's block cache, unless the user set it."""
    active = rasterio.env.getenv() if rasterio.env.hasenv() else {}
    if os.environ.get("GDAL_CACHEMAX") or "GDAL_CACHEMAX" in active:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)  # rasterio takes bytes


def _class_tags(config: Any, engine: str, georeferenced: bool = True) -> dict[str, str]:
    """Class raster tags: class names, the engine, and what the training labels tell vectorize.

    The default ``min_area_m2`` per class comes from the training labels' object sizes. A
    model trained without a CRS measured them in square pixels, which is what ``vectorize``
    works in on a raster without a CRS: that tag is written only when the units agree
    (training data and the classified raster both georeferenced, or neither). The share of
    the training buildings that the watershed split would cut (tag
    :data:`~geounet.vectorizing.sizes.LABEL_SPLIT_TAG`) decides whether ``vectorize`` splits
    touching buildings by default.
    """
    tags = {
        "CLASSES": classes_tag({i: c.name for i, c in enumerate(config.classes)}),
        "GEOUNET_CLASSES": json.dumps(classes_to_json(config.classes)),
        ENGINE_TAG: engine,
    }
    min_area = min_area_from_sizes(getattr(config, "object_sizes", None))
    same_units = (getattr(config, "gsd_m", None) is not None) == georeferenced
    if min_area and same_units:
        tags[MIN_AREA_TAG] = json.dumps(min_area)
    shares = split_shares_from_sizes(getattr(config, "object_sizes", None))
    if shares:
        tags[LABEL_SPLIT_TAG] = json.dumps(shares)
    return tags


def _probability_tags(config: Any) -> dict[str, str]:
    """Tags of the probabilities raster (no ``CLASSES`` tag: its overviews average)."""
    return {
        "GEOUNET_CLASSES": json.dumps(classes_to_json(config.classes)),
        "GEOUNET_PROBABILITY_SCALE": "255",
    }


def _input_valid(info: RasterInfo, bands: Sequence[int]) -> Callable[[int, int, int, int], Any]:
    """Validity of an input-grid window (row, rows, col, cols) read from the input itself.

    None when the input has no mask.
    """
    src = rasterio.open(info.path)
    flags = src.mask_flag_enums[0] if src.count else ()
    masked = MaskFlags.per_dataset in flags or MaskFlags.nodata in flags
    if info.nodata is None and info.alpha_band is None and not masked:
        src.close()
        return lambda row, n, col, n_cols: None

    def valid(row: int, n: int, col: int, n_cols: int) -> np.ndarray:
        return read_window(
            src, row, col, n, n_cols, bands, nodata=info.nodata, alpha_band=info.alpha_band
        )[1]

    valid.close = src.close  # type: ignore[attr-defined]
    return valid


# ----------------------------------------------------------------------------- public


def classify_raster(
    model: Any,
    in_raster: PathLike,
    out_raster: PathLike,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    blend: str = "spline",
    tta: str | None = None,
    probabilities: PathLike | bool | None = True,
    output_format: str = "GTiff",
    overwrite: bool = False,
    progress: bool = True,
    resample: bool = True,
    allow_no_crs: bool = False,
    engine: str = "auto",
    asset: str | None = None,
    resume: bool = False,
    nodata: float | None = None,
    bands: Sequence[int] | None = None,
) -> Path:
    """Classify a raster of any size into a georeferenced class raster, streamed.

    The keyword arguments are the fields of :class:`~geounet.inference.options.ClassifyOptions`,
    documented there; :func:`classify_with_options` takes them as that one object.

    Args:
        model: Object with ``network``, ``config`` (:class:`~geounet.model.files.ModelConfig`) and
            ``device``, e.g. a :class:`~geounet.app.classifier.UnetClassifier`.
        in_raster: Input image with the model's bands: a path, an ``http(s)://``, ``s3://``,
            ``gs://`` or ``az://`` URL of a (Cloud-Optimized) GeoTIFF, or a STAC Item.
        out_raster: Output GeoTIFF: uint8 class indices, 255 = nodata, the class colours as
            a colour table, the class names in the ``CLASSES`` tag.
        tile_size: See :class:`~geounet.inference.options.ClassifyOptions`.
        overlap: See :class:`~geounet.inference.options.ClassifyOptions`.
        batch_size: See :class:`~geounet.inference.options.ClassifyOptions`.
        blend: See :class:`~geounet.inference.options.ClassifyOptions`.
        tta: See :class:`~geounet.inference.options.ClassifyOptions`.
        probabilities: See :class:`~geounet.inference.options.ClassifyOptions`.
        output_format: See :class:`~geounet.inference.options.ClassifyOptions`.
        overwrite: See :class:`~geounet.inference.options.ClassifyOptions`.
        progress: See :class:`~geounet.inference.options.ClassifyOptions`.
        resample: See :class:`~geounet.inference.options.ClassifyOptions`.
        allow_no_crs: See :class:`~geounet.inference.options.ClassifyOptions`.
        engine: See :class:`~geounet.inference.options.ClassifyOptions`.
        asset: See :class:`~geounet.inference.options.ClassifyOptions`.
        resume: See :class:`~geounet.inference.options.ClassifyOptions`.
        nodata: See :class:`~geounet.inference.options.ClassifyOptions`.
        bands: See :class:`~geounet.inference.options.ClassifyOptions`.

    Returns:
        The output path.

    Raises:
        OutputExistsError: An output exists and ``overwrite`` is False.
        BandMismatchError: The input does not have the model's bands.
        InvalidParameterError: A parameter is out of range.
    """
    options = ClassifyOptions.from_arguments(locals())
    return classify_with_options(model, in_raster, out_raster, options)


def classify_with_options(
    model: Any, in_raster: PathLike, out_raster: PathLike, options: ClassifyOptions
) -> Path:
    """:func:`classify_raster` with its keyword arguments given as one options object.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        in_raster: Input image with the model's bands.
        out_raster: Output class raster (see :func:`classify_raster`).
        options: Tiling, blending, outputs and checks.

    Returns:
        The output path.

    Raises:
        OutputExistsError: An output exists and ``options.overwrite`` is False.
        BandMismatchError: The input does not have the model's bands.
        InvalidParameterError: ``options.probabilities`` is ``out_raster`` itself.
    """
    options = options.for_output(out_raster)
    for out in (out_raster, options.probabilities):
        if out is not None:
            check_local_output(out)
    if options.resume:
        steps = SimpleNamespace(
            check_outputs=_check_outputs,
            open_input=_open_input,
            gdal_cache=_bounded_gdal_cache,
            plan=_plan,
            opener=_opener,
            grid_sink=_grid_sink,
            open_writers=_open_writers,
        )
        return classify_resumable(model, in_raster, out_raster, options, steps)
    outs = _check_outputs(Path(out_raster), options)
    info, bands, grid = _open_input(model, in_raster, options)
    prepare_network(model)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_bounded_gdal_cache())
        plan = _plan(grid, options)
        tile_rows = range(len(plan.row_starts))
        opener = _opener(info, bands, grid)
        # the first tiles are read while the engine loads and the outputs open (the file
        # sinks take column strips)
        tiles = stack.enter_context(
            TileStream(model, plan, tile_rows, opener, options, column_strips=True)
        )
        engine = stack.enter_context(job_engine(model, plan, tile_rows, opener, options))
        writers = _open_writers(stack, outs, info, model.config, options, engine.name)
        sink = _grid_sink(stack, writers, info, bands, grid, 0)
        run_tiles(model, plan, tile_rows, opener, sink, options, engine=engine, tiles=tiles)
        sink.close()
    return outs[0]


def _check_outputs(out_raster: Path, options: ClassifyOptions) -> list[Path]:
    """The output paths (class raster, then probabilities), refused before any work."""
    outs = [out_raster] + ([Path(options.probabilities)] if options.probabilities else [])
    for out, what in zip(outs, ("output", "the class probabilities' output"), strict=False):
        if out.exists() and not options.overwrite:
            other = (
                ""
                if out == out_raster
                else ", or probabilities=False (--no-probabilities) to leave them out"
            )
            raise OutputExistsError(
                f"{out}: {what} already exists; pass overwrite=True (--overwrite) to replace "
                f"it or choose another name{other}."
            )
    if len(outs) == 2 and outs[0].resolve() == outs[1].resolve():
        raise InvalidParameterError(
            f"{outs[1]}: the probabilities raster must be another file than the class raster "
            f"{outs[0]}; give it another name."
        )
    return outs


def _open_writers(
    stack: contextlib.ExitStack,
    outs: Sequence[Path],
    info: RasterInfo,
    config: Any,
    options: ClassifyOptions,
    engine: str,
) -> WriterSink:
    """Writers of the class raster (and the probabilities), closed by ``stack``."""
    writer = stack.enter_context(class_writer(outs[0], info, config, options, engine))
    prob_writer = None
    if len(outs) > 1:
        prob_writer = stack.enter_context(probability_writer(outs[1], info, config, options))
    return WriterSink(writer, prob_writer)


def probability_writer(
    path: PathLike, info: RasterInfo, config: Any, options: ClassifyOptions
) -> RasterWriter:
    """The writer of the probabilities raster as :func:`classify_raster` writes it.

    uint8 (0-255), one band per class named after it, on the input's grid, with the
    ``GEOUNET_CLASSES`` and scale tags, the pixels without data (255 in the class raster)
    masked in the file's mask band (every byte is a valid probability, so no nodata value),
    ``options.output_format`` and ``options.overwrite``
    (to enter with ``with``; scale-out code writes finished rows into it in order).
    """
    probs = WriterOptions(
        tags=_probability_tags(config),
        descriptions=config.class_names,
        output_format=options.output_format,
        overwrite=options.overwrite,
        deflate_level=PROBABILITIES_DEFLATE_LEVEL,
    )
    return RasterWriter(
        path, info.width, info.height, config.n_classes, "uint8", info.crs, info.transform, probs
    )


def class_writer(
    out_raster: PathLike, info: RasterInfo, config: Any, options: ClassifyOptions, engine: str
) -> RasterWriter:
    """The writer of a class raster as :func:`classify_raster` writes it (to enter with ``with``).

    uint8 on the input's grid, 255 = nodata, the class colours, the ``CLASSES``,
    ``GEOUNET_CLASSES``, engine and minimum-area tags (and, when ``options.probabilities`` is
    set, the tag naming that raster, which ``vectorize`` then uses), ``options.output_format``
    and ``options.overwrite``. Scale-out code writes finished rows into it in order.

    Args:
        out_raster: The output file.
        info: The input raster (grid, CRS, transform).
        config: The model's :class:`~geounet.model.files.ModelConfig`.
        options: The classification options (format, overwrite).
        engine: The engine variant that ran (the ``GEOUNET_ENGINE`` tag), e.g. ``"torch-fp32"``.

    Returns:
        A :class:`~geounet.io.write.RasterWriter` (not yet entered).
    """
    tags = _class_tags(config, engine, info.crs is not None)
    if options.probabilities is not None:
        tags[PROBABILITIES_TAG] = probabilities_tag(out_raster, options.probabilities)
    classes = WriterOptions(
        nodata=IGNORE_INDEX,
        colormap=colormap(config.classes),
        tags=tags,
        descriptions=["class"],
        output_format=options.output_format,
        overwrite=options.overwrite,
    )
    return RasterWriter(
        out_raster, info.width, info.height, 1, "uint8", info.crs, info.transform, classes
    )


def _plan(grid: Grid, opts: ClassifyOptions) -> TilePlan:
    return TilePlan.build(
        grid.height, grid.width, tile_size=opts.tile_size, overlap=opts.overlap, blend=opts.blend
    )


def _opener(info: RasterInfo, bands: Sequence[int], grid: Grid) -> Callable[[], RasterSource]:
    return lambda: RasterSource(info, bands, grid)


def _grid_sink(
    stack: contextlib.ExitStack,
    inner: Sink,
    info: RasterInfo,
    bands: Sequence[int],
    grid: Grid,
    y0: int,
    y1: int | None = None,
) -> Sink:
    """``inner``, behind a :class:`RemapSink` when the network runs on a resampled grid."""
    if not grid.resampled:
        return inner
    rowmap, colmap = grid.index_maps(info.width, info.height)
    input_valid = _input_valid(info, bands)
    if hasattr(input_valid, "close"):
        stack.callback(input_valid.close)
    return RemapSink(inner, rowmap, colmap, y0, info.height if y1 is None else y1, input_valid)


def classify_rows(
    model: Any,
    in_raster: PathLike,
    row_start: int,
    row_end: int,
    options: ClassifyOptions | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Classify the rows ``[row_start, row_end)`` of a raster: a plain function for scale-out.

    The tiles are those of the whole-raster grid that touch the band, so the context above
    and below (the halo) is read from the raster, and mirror-padded at its borders: the
    result is identical to the same rows of :func:`classify_raster` with the same options. A
    Dask worker can call it for one row band of a huge scene.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        in_raster: Input image.
        row_start: First row (of the input grid).
        row_end: One past the last row.
        options: Tiling, blending, resampling and CRS check (default: the defaults of
            :class:`~geounet.inference.options.ClassifyOptions` without a progress bar); the
            output fields (``probabilities``, ``output_format``, ``overwrite``) are not used.

    Returns:
        ``(classes, probabilities)``: ``uint8 (n, W)`` (255 = nodata) and ``float32 (K, n, W)``.
    """
    opts = options or ClassifyOptions(progress=False)
    info, bands, grid = _open_input(model, in_raster, opts)
    if not 0 <= row_start < row_end <= info.height:
        raise InvalidParameterError(
            f"{info.path}: rows [{row_start}, {row_end}) are not within the raster's "
            f"0..{info.height} rows; give 0 <= row_start < row_end <= {info.height}."
        )
    prepare_network(model)
    out = ArraySink(row_start, row_end, info.width, model.config.n_classes)
    plan = _plan(grid, opts)
    a, b = row_start, row_end
    if grid.resampled:
        rowmap, _ = grid.index_maps(info.width, info.height)
        a, b = int(rowmap[row_start]), int(rowmap[row_end - 1]) + 1
    with contextlib.ExitStack() as stack:
        stack.enter_context(_bounded_gdal_cache())
        sink = _grid_sink(stack, out, info, bands, grid, row_start, row_end)
        rows, opener = plan.tile_rows_for(a, b), _opener(info, bands, grid)
        engine = stack.enter_context(job_engine(model, plan, rows, opener, opts))
        run_tiles(model, plan, rows, opener, sink, opts, engine=engine)
        sink.close()
    return out.classes, out.probs


def predict_array(
    model: Any,
    array: np.ndarray,
    options: ClassifyOptions | None = None,
    *,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Classify an in-memory image with the same tiling, padding and blending.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        array: ``(C, H, W)`` raw values (the model's bands, in the source data type).
        options: Tiling and blending (default: the defaults of
            :class:`~geounet.inference.options.ClassifyOptions` without a progress bar); the
            file fields (outputs, resampling, CRS check) are not used.
        valid: Optional ``(H, W)`` boolean mask of valid pixels (NaN/inf are invalid anyway).

    Returns:
        ``(classes, probabilities)``: ``uint8 (H, W)`` (255 where invalid) and
        ``float32 (K, H, W)``.
    """
    opts = options or ClassifyOptions(progress=False)
    if array.ndim != 3:
        raise InvalidParameterError(
            f"array of shape {array.shape}: expected (bands, height, width); give a 3-D array."
        )
    if array.shape[0] != model.config.in_channels:
        raise BandMismatchError(
            f"the array has {array.shape[0]} band(s) but the model reads "
            f"{model.config.in_channels}; give the model's bands in order."
        )
    mask = valid_mask(array, None)
    if valid is not None:
        mask &= np.asarray(valid, bool)
    prepare_network(model)
    _, h, w = array.shape
    plan = _plan(Grid(w, h, Affine.identity()), opts)
    out = ArraySink(0, h, w, model.config.n_classes)
    source = ArraySource(array, mask)
    rows, opener = range(len(plan.row_starts)), lambda: contextlib.nullcontext(source)
    with job_engine(model, plan, rows, opener, opts) as engine:
        run_tiles(model, plan, rows, opener, out, opts, engine=engine)
    return out.classes, out.probs
