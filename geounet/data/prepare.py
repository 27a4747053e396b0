"""``prepare_data`` and :class:`GeoData`: from GeoTIFFs and GIS labels to training batches.

Example:
    Not run as a doctest: it needs a scene and its labels on disk.

    >>> data = prepare_data(["scene.tif"], labels=["buildings.gpkg"], classes="building",
    ...                     chip_size=256)                                  # doctest: +SKIP
    >>> data.summary()                                                      # doctest: +SKIP
    >>> x, y = next(iter(data.train_dl))  # float32 [B,C,H,W], int64 [B,H,W]  # doctest: +SKIP
    >>> data = prepare_data("chips/")     # re-open a chip folder           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geounet.core.classes import parse_classes
from geounet.core.errors import (
    BandMismatchError,
    InvalidParameterError,
    LabelError,
    NoChipsError,
    OutputExistsError,
)
from geounet.core.types import PathLike
from geounet.data.augment import AugmentOptions, augment_options
from geounet.data.chipping import (
    WHOLE_IMAGES_FROM,
    Chip,
    assign_splits,
    auto_strip,
    remove_chips,
    split_cost,
    write_chips,
)
from geounet.data.geodata import ChipDataset, GeoData, check_loader_args
from geounet.data.labels import is_color_mapping, open_labels, resolve_classes
from geounet.data.labels.area import AreaLabels, LabelledArea, labelled_areas
from geounet.data.manifest import (
    MANIFEST,
    build_manifest,
    json_nodata,
    load_manifest,
    write_manifest,
)
from geounet.data.settings import PrepareSettings
from geounet.data.strips import choose_strip
from geounet.io.raster import RasterInfo, atomic_output, band_stats, open_raster, stats_result
from geounet.io.stats import StatsAccumulator

__all__ = ["MANIFEST", "ChipDataset", "GeoData", "load_manifest", "prepare_data"]

log = logging.getLogger(__name__)

_GDAL_CACHE_BYTES = 256  # rasterio passes bytes: no GDAL block cache, so the RSS stays bounded
#: Vector labels whose bounding box covers less of their image than this are warned about.
PARTIAL_LABELS_SHARE = 0.5


def _as_paths(items: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if items is None:
        return []
    if isinstance(items, str | Path) or not isinstance(items, Sequence):
        return [Path(items)]  # type: ignore[arg-type]
    return [Path(p) for p in items]


def _select_bands(infos: Sequence[RasterInfo], bands: Sequence[int] | None) -> list[list[int]]:
    dtypes = {i.dtype for i in infos}
    if len(dtypes) > 1:
        detail = "; ".join(f"{i.path.name}: {i.dtype}" for i in infos)
        raise BandMismatchError(
            f"the images have different data types ({detail}); give images of one type "
            "(convert with gdal_translate -ot) so one normalisation fits all."
        )
    if bands is None:
        per = [i.data_bands for i in infos]
        if len({len(b) for b in per}) > 1:
            detail = "; ".join(f"{i.path}: {len(b)} bands" for i, b in zip(infos, per))
            raise BandMismatchError(
                f"the images have different numbers of bands ({detail}); give images with the "
                "same bands, or choose common ones with bands=[...]."
            )
        return per
    use = [int(b) for b in bands]
    if len(set(use)) < len(use):
        raise BandMismatchError(
            f"bands={use} names a band twice; give each band once, e.g. "
            f"bands={sorted(set(use), key=use.index)}."
        )
    for info in infos:
        bad = [b for b in use if not 1 <= b <= info.count]
        if bad or not use:
            raise BandMismatchError(
                f"{info.path}: bands={use} are not all in 1..{info.count} (the image has "
                f"{info.count} bands); give 1-based band indices that exist in every image."
            )
    return [use for _ in infos]


def _band_names(info: RasterInfo, bands: Sequence[int]) -> list[str]:
    return [info.band_name(b) or f"band_{b}" for b in bands]


def _match_labels(images: list[Path], labels: list[Path]) -> list[Path]:
    if not labels:
        raise LabelError(
            "labels are required: give one label raster or vector file per image "
            "(labels=[...]), or a single one covering all images."
        )
    if len(labels) == len(images):
        return labels
    if len(labels) == 1:
        return labels * len(images)
    raise InvalidParameterError(
        f"{len(images)} images but {len(labels)} label files; give one label file per image "
        "(in the same order) or one covering all of them."
    )


def _out_dir_overwrite(target: Path, overwrite: bool) -> bool:
    """Decide whether ``atomic_output`` may replace ``target``; refuse what is not ours."""
    if not target.exists():
        return False
    if not target.is_dir():
        raise OutputExistsError(f"{target}: exists and is not a folder; choose another out_dir.")
    if not any(target.iterdir()):
        return True
    if not overwrite:
        raise OutputExistsError(
            f"{target}: the folder exists and is not empty; pass overwrite=True (--overwrite) "
            "to replace it, or choose another out_dir."
        )
    if not (target / MANIFEST).is_file():
        raise OutputExistsError(
            f"{target}: the folder is not a geounet chip folder (no {MANIFEST}); refusing to "
            "delete it even with overwrite=True. Choose another out_dir."
        )
    return True


def _is_chip_folder(folder: Path) -> bool:
    """Whether ``folder`` is a chip folder (its manifest): one ``overwrite=True`` may replace."""
    return (folder / MANIFEST).is_file()


def _build_folder(out_dir: PathLike | None, overwrite: bool, build: Callable[[Path], Any]) -> Path:
    """Run ``build(folder)`` in a temporary folder; move it to ``out_dir`` only on success."""
    if out_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="geounet-chips-"))
        try:
            build(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder
    target = Path(out_dir)
    replace = _out_dir_overwrite(target, overwrite)
    with atomic_output(target, overwrite=replace, replaceable=_is_chip_folder) as tmp:
        tmp.mkdir(parents=True)
        build(tmp)
    return target


def _no_chips(infos: Sequence[RasterInfo], n_dropped: int, s: PrepareSettings) -> NoChipsError:
    sizes = ", ".join(f"{i.path.name} {i.width}x{i.height}" for i in infos)
    return NoChipsError(
        f"no chip was produced: {n_dropped} candidate chips of {s.chip_size} px were all "
        f"dropped (less than min_valid_fraction={s.min_valid_fraction} of valid, labelled "
        f"pixels) from {sizes}. Check the nodata value and that the labels cover the images, "
        "or lower chip_size or min_valid_fraction (--chip-size, --min-valid-fraction)."
    )


def _open_sources(labels: list[Path], infos: list[RasterInfo], s: PrepareSettings) -> list:
    colors = is_color_mapping(s.classes)
    sources: list = []
    try:
        for path, info in zip(labels, infos):
            src = open_labels(
                path,
                info,
                label_field=s.label_field,
                line_width_m=s.line_width_m,
                colors=colors,
                separate=s.separate_touching,
                allow_no_crs=s.allow_no_crs,
            )
            sources.append(src)
            if s.label_area is None:
                _warn_partial_labels(src, info)
    except BaseException:
        for src in sources:
            src.close()
        raise
    return sources


def _warn_partial_labels(src: Any, info: RasterInfo) -> None:
    """Warn when vector labels span a small part of their image (the rest is background)."""
    share = src.covered_share() if hasattr(src, "covered_share") else None
    if share is None or share >= PARTIAL_LABELS_SHARE:
        return
    warnings.warn(
        f"{src.path}: its features span only {share:.0%} of {info.path} (their bounding "
        "box); everywhere else is taught as background. If you labelled only part of the "
        "image, give that part's outline as label_area= (--label-area) so the rest is left "
        "out; if the rest holds none of these classes, this is as intended.",
        UserWarning,
        stacklevel=4,
    )


def _checked_stats(stats: Any, infos: Sequence[RasterInfo], bands: Sequence[int]) -> dict:
    """The statistics for the manifest; a warning for bands of one value (nothing to learn)."""
    rows = zip(bands, stats.p2, stats.p98, stats.std)
    flat = [b for b, p2, p98, sd in rows if p2 == p98 and sd == 1.0]
    if flat:
        warnings.warn(
            f"{', '.join(str(i.path) for i in infos)}: band(s) {', '.join(map(str, flat))} hold "
            "one value over every valid pixel, so the network learns nothing from them (an "
            "empty or alpha band?); leave them out with bands= (--bands).",
            UserWarning,
            stacklevel=4,
        )
    return stats.to_dict()


def _split(chips: list[Chip], folder: Path, s: PrepareSettings) -> int:
    """Assign splits, delete the gap chips, check something is left to train on."""
    n_gap = assign_splits(
        chips,
        split=s.split,
        val_fraction=s.val_fraction,
        chip_size=s.chip_size,
        stride=s.stride,
        seed=s.seed,
    )
    remove_chips(folder, [c for c in chips if c.split == "gap"])
    n_train = sum(c.split == "train" for c in chips)
    if n_train == 0:
        raise NoChipsError(
            f"no training chip is left after the {s.split!r} split ({len(chips)} chips); "
            "lower val_fraction, use more or larger images, or a smaller chip_size."
        )
    if s.val_fraction > 0 and n_train == len(chips) - n_gap:
        warnings.warn(
            "no validation chip could be set aside (too few chips); validation is empty.",
            UserWarning,
            stacklevel=4,
        )
    return n_gap


def _labelled_areas(
    s: PrepareSettings, infos: list[RasterInfo]
) -> tuple[list[LabelledArea] | None, list[tuple[int, int, int, int]] | None]:
    """Each image's labelled area and the pixel box to chip (None, None without ``label_area``)."""
    if s.label_area is None:
        return None, None
    areas = labelled_areas(s.label_area, infos, allow_no_crs=s.allow_no_crs)
    return areas, [a.box(s.chip_size) for a in areas]


def _val_strips(
    readers: Sequence[Any],
    infos: list[RasterInfo],
    boxes: list[tuple[int, int, int, int]] | None,
    n_classes: int,
    s: PrepareSettings,
    settings: dict[str, Any],
) -> list[str]:
    """Each image's validation strip: ``s.val_strip``, or where ``"auto"`` chooses it.

    ``"auto"`` keeps the end (or a labelled area's end away from the rest) unless the strip
    there misrepresents a class of the labels (:func:`geounet.data.strips.choose_strip`); the
    choice is recorded in ``settings["val_strip_choice"]``.
    """
    cuts = s.split == "spatial" and len(infos) < WHOLE_IMAGES_FROM and s.val_fraction > 0
    if s.val_strip != "auto" or not cuts:
        return [s.val_strip] * len(infos)
    places, records = [], []
    for i, (info, reader) in enumerate(zip(infos, readers)):
        box = boxes[i] if boxes else (0, 0, info.height, info.width)
        preferred = auto_strip(info.height, info.width, box)
        place, record = choose_strip(
            reader,
            box,
            chip_size=s.chip_size,
            val_fraction=s.val_fraction,
            n_classes=n_classes,
            preferred=preferred,
        )
        if place != preferred:
            log.info(
                "%s: the validation strip goes to the %s, not the %s (class shares %s there, "
                "%s over the labels)",
                info.path.name,
                place,
                preferred,
                record["shares"][preferred],
                record["whole"],
            )
        places.append(place)
        records.append({"image": info.path.name, **record})
    settings["val_strip_choice"] = records
    return places


def _settings(s: PrepareSettings, info: RasterInfo, bands: list[int]) -> dict[str, Any]:
    """The settings the manifest records (JSON)."""
    nodata = s.nodata if s.nodata is not None else info.nodata
    keys = (
        "chip_size",
        "stride",
        "split",
        "val_fraction",
        "val_strip",
        "min_valid_fraction",
        "seed",
        "label_field",
        "line_width_m",
        "separate_touching",
        "label_area",
    )
    return {
        "bands": bands,
        "band_names": _band_names(info, bands),
        "nodata": json_nodata(nodata),
        **{k: getattr(s, k) for k in keys},
    }


#: Training images whose pixel sizes lie further apart than this ratio warn: the model
#: records one pixel size (the first image's), to which ``classify`` resamples.
MIXED_PIXEL_SIZE_RATIO = 1.25


def _warn_mixed_grids(infos: Sequence[RasterInfo]) -> None:
    """Warn when the images' CRSs differ, or their pixel sizes by more than 25 %."""
    if len({(i.crs.to_wkt() if i.crs else None) for i in infos}) > 1:
        warnings.warn(
            "the images have different CRSs; the manifest records the first one's.",
            UserWarning,
            stacklevel=4,
        )
    sized = [(i.gsd_m, i) for i in infos if i.crs is not None]
    if len(sized) < 2:
        return
    (small, a), (large, b) = min(sized, key=lambda t: t[0]), max(sized, key=lambda t: t[0])
    if large <= small * MIXED_PIXEL_SIZE_RATIO:
        return
    first = sized[0][0]
    warnings.warn(
        f"the images' pixel sizes run from {small:.3g} m ({a.path}) to {large:.3g} m "
        f"({b.path}), {large / small:.1f} times apart: the model learns objects at those "
        f"scales but records the first image's {first:.3g} m as its own, to which classify "
        "resamples the scenes it maps. For a model of one scale, resample the images to one "
        f"pixel size first (gdalwarp -tr {first:.3g} {first:.3g} in.tif out.tif).",
        UserWarning,
        stacklevel=4,
    )


def _prepare(
    image_paths: list[Path], label_paths: list[Path], folder: Path, s: PrepareSettings
) -> dict[str, Any]:
    infos = [open_raster(p, allow_no_crs=s.allow_no_crs) for p in image_paths]
    areas, boxes = _labelled_areas(s, infos)
    s = s.for_area([(b[2], b[3]) for b in boxes] if boxes else [(i.height, i.width) for i in infos])
    _warn_mixed_grids(infos)
    per_bands = _select_bands(infos, s.bands)
    labels = _match_labels(image_paths, label_paths)
    settings = _settings(s, infos[0], per_bands[0])
    sources = _open_sources(labels, infos, s)
    try:
        specs = resolve_classes(s.classes, sources)
        for src in sources:
            src.bind(specs)
        readers = [AreaLabels(src, a) for src, a in zip(sources, areas)] if areas else sources
        strips = _val_strips(readers, infos, boxes, len(specs), s, settings)
        acc = StatsAccumulator(len(per_bands[0]), infos[0].dtype, s.seed)
        exact = acc.exact and boxes is None  # a labelled area's rows alone are chipped
        if not exact:  # a sample depends on the order: its own pass, as band_stats reads
            stats = band_stats(infos, s.bands, nodata=s.nodata, seed=s.seed)
            log.info("statistics done; chipping %d image(s)", len(infos))
        chips, n_low = write_chips(
            folder,
            infos,
            readers,
            specs,
            chip_size=s.chip_size,
            stride=s.stride,
            bands=per_bands,
            band_names=settings["band_names"],
            nodata=s.nodata,
            split=s.split,
            val_fraction=s.val_fraction,
            val_strip=strips,
            min_valid_fraction=s.min_valid_fraction,
            stats=acc if exact else None,  # exact histograms: added in the chipping pass
            boxes=boxes,
        )
        if exact:
            stats = stats_result(acc, infos)
    finally:
        for src in sources:
            src.close()
    if not chips:
        raise _no_chips(infos, n_low, s)
    n_gap = _split(chips, folder, s)
    settings.update(
        stats=_checked_stats(stats, infos, per_bands[0]),
        dropped_chips={"low_valid_fraction": n_low, "split_gap": n_gap},
        split_cost=split_cost(chips),
    )
    manifest = build_manifest(infos, labels, specs, chips, settings)
    write_manifest(folder, manifest)
    return manifest


def prepare_data(
    images: PathLike | Sequence[PathLike],
    labels: PathLike | Sequence[PathLike] | None = None,
    *,
    classes: Mapping[Any, str] | Sequence[str] | str | None = None,
    label_field: str | None = None,
    chip_size: int = 256,
    stride: int | None = None,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    val_fraction: float = 0.2,
    split: str = "spatial",
    val_strip: str = "auto",
    label_area: PathLike | None = None,
    min_valid_fraction: float = 0.5,
    line_width_m: float = 4.0,
    separate_touching: str | None = "building",
    batch_size: int = 8,
    augment: bool | AugmentOptions | Mapping[str, Any] = True,
    out_dir: PathLike | None = None,
    allow_no_crs: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    num_workers: int = 0,
) -> GeoData:
    """Chip images and their labels into a leak-free, georeferenced training set.

    Or, given one folder written earlier, re-open it: ``prepare_data("chips/")``.

    Labels, one per image (or one file covering all images), are label rasters or vector files
    (GeoPackage, Shapefile, GeoJSON, FlatGeobuf; a file of several layers names one as QGIS
    writes a layer's source, ``town.gpkg|layername=buildings``):

    - vectors are reprojected to the image CRS, repaired (``make_valid``) and rasterized onto
      the image grid; polygons are filled, lines and points are buffered by ``line_width_m / 2``
      metres (measured in the local UTM zone when the image CRS is geographic);
    - label rasters on another grid or CRS are resampled (nearest) onto the image grid; pixels
      outside the label raster and label nodata are "no label" (255, ignored by the loss);
    - colour-coded masks (RGB, or a palette PNG) take ``classes={"#3C1098": "Building", ...}``;
      black ``#000000`` is padding (255) unless declared, any other undeclared colour is an
      error.

    Image nodata (file, ``nodata=`` or alpha band) also becomes 255 in the masks. Statistics
    per band over the valid pixels of all images normalise the chips (8-, 16-bit and float
    imagery alike). Everything streams by windows: memory does not grow with the scene.

    Args:
        images: One image path or a list (GeoTIFF or any GDAL raster), or one chip folder.
        labels: Label files, one per image in the same order, or one for all images.
        classes: ``{label value: name}`` (``{255: "building"}``), ``{"#RRGGBB": name}`` for
            colour masks, a single name (``"building"``: every vector feature, or value 1), or
            a list of names (values 1, 2, ...), or the text ``"1=building,2=road"`` (one
            parser for all: :func:`geounet.core.classes.parse_classes`). With vectors, values
            are ``label_field`` values (matched by value or by class name). Index 0 is
            always ``background``.
            None infers classes: one per value found (value ``v`` named ``class_v``; a 0/255
            mask gives ``{255: "class_255"}``), one per colour found (named by the colour),
            or for a vector file without ``label_field`` one class named after the file;
            ``buildings``/``roads`` (any case: a field value, or a word of the name of a file
            of one class, ``buildings.geojson``, a 0/255 ``buildings_mask.tif``) name the
            classes ``building``/``road`` that ``vectorize`` regularizes, splits and draws
            as centre lines (:func:`geounet.core.classes.inferred_name`).
        label_field: Vector attribute holding each feature's class.
        chip_size: Chip size in pixels, a multiple of 32.
        stride: Step between chips (smaller than ``chip_size`` gives overlapping chips).
            Default: half a chip on a small area (fewer than
            :data:`~geounet.data.settings.SMALL_AREA_CHIPS` chips side by side: more views
            of few labels), else ``chip_size``.
        bands: 1-based bands to use (default all but alpha; an alpha band marks validity).
        nodata: Image nodata value overriding the files'.
        val_fraction: Share of chips set aside for validation, in [0, 1).
        split: ``"spatial"`` (default: with fewer than 5 images a strip across each image's
            longer side validates, chipped apart from the rest so that no chip is dropped;
            with more, whole images validate), ``"rows"`` (top ``1 - val_fraction`` of each
            image trains, the bottom part validates: "train on the top 70 %, validate on the
            bottom 30 %" is ``split="rows", val_fraction=0.3``) or ``"random"`` (training
            chips overlapping a validation chip are dropped as gap). All deterministic for a
            ``seed``; see :mod:`geounet.data.chipping`.
        val_strip: Where ``split="spatial"`` puts an image's validation strip along its
            longer side: ``"auto"`` (default), ``"end"`` (bottom rows or right columns),
            ``"middle"`` or ``"start"``. The labels next to the area you will map are the
            most like it: keep them for training by putting the strip on the other side.
            ``"auto"`` does so when a ``label_area`` leaves the rest of an image unlabelled
            (the strip goes to the labelled part's end away from it), else it is ``"end"``;
            and where the strip there would hold less than a quarter of a class's share of
            the labelled pixels (a strip of empty ground judges the buildings on a few
            pixels), ``"auto"`` moves it to the place whose classes are closest to the
            whole's (:mod:`geounet.data.strips`; the manifest's ``val_strip_choice`` and
            :meth:`GeoData.summary` say where and why).
        label_area: A polygon file (any vector format and CRS) outlining where the labels
            are complete, when you labelled part of an image and will map the rest. Only
            that part is chipped; outside it the masks are "no label" (255), so unlabelled
            ground is not taught as background; the statistics still cover the whole image
            (the area you will map too). Without it, vector labels mean "everything else is
            background" over the whole image.
        min_valid_fraction: Chips with a smaller share of valid, labelled pixels are dropped
            (and counted in the manifest's ``dropped_chips``).
        line_width_m: Width in metres given to line (and point) features.
        separate_touching: Vector labels only: the class (by name, case-insensitive) whose
            touching polygons are parted by a background gap of about 2 pixels in the chip
            masks (where two features meet or overlap), so the network learns to leave a
            gap between touching roofs and they vectorize as separate buildings (the U-Net
            paper's treatment of touching cells). None burns the polygons as they are (for
            land-cover parcels that should stay one surface); for buildings, touching ones
            then become one labelled object, and where many touch, ``vectorize`` keeps the
            model's touching buildings whole by default
            (:func:`~geounet.vectorizing.sizes.separate_from_tag`).
        batch_size: Batch size of the loaders.
        augment: Augment training chips for aerial imagery: flips and 90° rotations, small
            scale jitter, per-band brightness/contrast/gamma (same geometry on image and
            mask; nodata stays nodata; see :func:`geounet.data.augment.augment_chip`).
            True uses the recipe's :class:`~geounet.data.augment.AugmentOptions`; a mapping
            changes some of them (``{"brightness": 0.1, "grayscale": 0.2}``); False is off.
        out_dir: Chip folder to write (built beside it and renamed when complete); None
            writes a temporary folder removed with the returned object.
        allow_no_crs: Accept images without a CRS (pixel coordinates).
        seed: Seed of the split, the shuffling and the augmentation.
        overwrite: Replace an existing chip folder ``out_dir``.
        num_workers: DataLoader worker processes.

    Returns:
        A :class:`GeoData`. Its folder holds ``images/*.tif``, ``labels/*.tif`` and
        ``manifest.json`` with ``classes`` ({value, name, color}), ``bands``,
        ``band_names``, ``stats`` ({mean, std, p2, p98}), ``chip_size``, ``stride``, ``crs``
        (WKT), ``gsd_m``, ``source_dtype``, ``source_band_count`` and ``source_alpha_band``
        (of the first image), ``nodata`` (the override, else the first image's),
        ``class_pixel_counts`` (and ``_by_split``), ``class_weights`` (median frequency),
        ``chip_counts``, ``dropped_chips``, ``split_cost``, ``val_strip_choice`` (with
        ``val_strip="auto"``: per image the place preferred and chosen, and each place's
        class shares), ``sources`` ([{image, label, nodata}]) and
        ``chips`` ([{image, label, split, source, bounds, window}]). Image chips with
        invalid pixels (nodata, alpha or mask band, NaN, padding) carry a GDAL mask band;
        their labels are 255 there and the loaders feed them as inference does (0, the
        training mean).

    Raises:
        InputNotFoundError: An image, label or ``label_area`` file (or chip folder) does not
            exist.
        MissingCRSError: An image (or a vector file) has no CRS and ``allow_no_crs`` is
            False.
        CRSMismatchError: Labels do not overlap their image, or ``label_area`` overlaps none
            of the images.
        LabelError: Missing ``label_field`` (the message lists the fields), label values
            outside ``classes`` (the message lists the values found), no labels, no polygon
            in ``label_area``.
        BandMismatchError: Images with different band counts or types, or bad ``bands``.
        InvalidParameterError: A bad parameter (e.g. a chip size not a multiple of 32: the
            message suggests the nearest valid sizes).
        NoChipsError: No usable chip was produced.
        OutputExistsError: ``out_dir`` exists and is not empty (and ``overwrite`` is False).
    """
    loader = {
        "batch_size": batch_size,
        "augment": augment_options(augment),  # a bad value fails before any chipping
        "seed": seed,
        "num_workers": num_workers,
    }
    paths = _as_paths(images)
    if not paths:
        raise InvalidParameterError("no image given; pass one or more image paths.")
    if len(paths) == 1 and paths[0].is_dir():
        return _reopen(paths[0], labels, loader)
    settings = PrepareSettings(
        classes=parse_classes(classes),
        label_field=label_field,
        chip_size=chip_size,
        stride=stride,
        bands=bands,
        nodata=nodata,
        val_fraction=val_fraction,
        split=split,
        val_strip=val_strip,
        label_area=None if label_area is None else str(Path(label_area).resolve()),
        min_valid_fraction=min_valid_fraction,
        line_width_m=line_width_m,
        separate_touching=separate_touching,
        allow_no_crs=allow_no_crs,
        seed=seed,
    )
    check_loader_args(batch_size, num_workers)
    folder, manifest = _chip_folder(paths, _as_paths(labels), settings, out_dir, overwrite)
    data = GeoData(folder, manifest, **loader)
    if out_dir is None:
        data._own_folder()
    return data


def _reopen(folder: Path, labels: Any, loader: dict[str, Any]) -> GeoData:
    """Re-open a chip folder written earlier (refused with labels: they would be ignored)."""
    if labels is not None:
        raise InvalidParameterError(
            f"{folder} is a folder: re-opening a chip folder takes no labels; give image "
            "files to chip new labels."
        )
    return GeoData.from_folder(folder, **loader)


def _chip_folder(
    paths: list[Path],
    label_paths: list[Path],
    settings: PrepareSettings,
    out_dir: PathLike | None,
    overwrite: bool,
) -> tuple[Path, dict[str, Any]]:
    """Chip ``paths`` into ``out_dir`` (or a temporary folder): the folder and its manifest."""
    box: dict[str, Any] = {}

    def build(folder: Path) -> None:
        box["manifest"] = _prepare(paths, label_paths, folder, settings)

    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), warnings.catch_warnings():
        if settings.allow_no_crs:  # asked for pixel coordinates: GDAL's reminders are noise
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
        folder = _build_folder(out_dir, overwrite, build)
    return folder, box["manifest"]
