"""Chipping: the chip grid, the leak-free train/validation split, and writing chip folders.

A chip folder holds ``images/*.tif`` and ``labels/*.tif`` (georeferenced GeoTIFF chips of the
same name) and ``manifest.json`` (see :func:`geounet.data.prepare.prepare_data` for its fields).
An image chip with invalid pixels (nodata, alpha or mask band 0, NaN, padding past the image)
carries a GDAL mask band (0 = invalid) and its source's nodata value, so the training loader
treats exactly those pixels as invalid, as inference does (label 255 there too).

Splits (``split=``):

- ``"spatial"`` (default), made to cost as little labelled area as leakage allows:

  - with fewer than :data:`WHOLE_IMAGES_FROM` images, each image at least two chips long
    gives one strip across its longer side to validation, ``max(chip_size, val_fraction x
    length)`` pixels wide: at the end (``val_strip="end"``: bottom rows, or right columns),
    at the start or in the middle; ``"auto"`` (default) is the end, or, when a labelled area
    (``prepare_data(label_area=)``) leaves part of the image unlabelled, the labelled part's
    end away from that rest (:func:`auto_strip`), so the labels beside the area to map
    train; a strip there that misrepresents a class of the labels moves to the start, the
    middle or the end, whichever is closest to the whole (:mod:`geounet.data.strips`,
    chosen by :func:`~geounet.data.prepare.prepare_data`). The parts are chipped on their
    own, so no chip crosses a cut and no training chip is dropped: the gap is 0 px, the only
    cost is the strip. (Random blocks of a grid of overlapping chips cost more: every
    validation chip takes its overlapping neighbours with it.)
  - with more images, or for images too small to cut, whole images (seeded) go to
    validation until about ``val_fraction`` of all chips are validation chips; an image
    is never split, so there is nothing to drop either.

  The manifest's ``split_cost`` says what the split took: chips and labelled pixels sent to
  validation, and chips dropped as gap (``GeoData.summary()`` shows it).
- ``"rows"``: the top ``1 - val_fraction`` of every image's rows is training, the bottom
  ``val_fraction`` validation; each part is chipped on its own, so no chip crosses the cut.
  ("train on the top 70 %, validate on the bottom 30 %" is ``split="rows", val_fraction=0.3``.)
- ``"random"``: chips drawn at random for validation; training chips that overlap one (with
  ``stride < chip_size``, and the edge chips shifted inwards to end at the border) are dropped
  as gap, so no pixel is both trained and validated on. With overlapping chips this drops
  many; prefer ``"spatial"``.

Example:
    >>> chip_grid(600, 600, 256, 256, split="random")
    [(0, 0, 0), (0, 256, 0), (0, 344, 0), (256, 0, 0), (256, 256, 0), (256, 344, 0), \
(344, 0, 0), (344, 256, 0), (344, 344, 0)]
    >>> chip_grid(600, 600, 256, 256)  # "spatial": region 1 is the validation strip
    [(0, 0, 0), (0, 256, 0), (0, 344, 0), (88, 0, 0), (88, 256, 0), (88, 344, 0), \
(344, 0, 1), (344, 256, 1), (344, 344, 1)]
    >>> check_chip_size(250)
    Traceback (most recent call last):
    ...
    geounet.core.errors.InvalidParameterError: chip_size=250 must be a positive multiple of 32 \
(the U-Net halves the chip 5 times); use 224 or 256.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio import windows
from rasterio.windows import Window

from geounet.core.classes import ClassSpec
from geounet.core.errors import InvalidParameterError
from geounet.core.types import (
    IGNORE_INDEX,
    SPLIT_MODES,
    VAL_STRIPS,
    SplitMode,
    ValStrip,
    check_choice,
)
from geounet.data.chip_files import ChipWriter
from geounet.io.raster import RasterInfo, read_window, window_bounds
from geounet.io.stats import StatsAccumulator
from geounet.io.windows import tile_starts

__all__ = [
    "SPLITS",
    "Chip",
    "assign_splits",
    "check_chip_size",
    "check_stride",
    "chip_grid",
    "footprints_overlap",
    "median_frequency_weights",
    "remove_chips",
    "split_cost",
    "strip_span",
    "write_chips",
]

log = logging.getLogger(__name__)

#: The allowed ``split=`` values.
SPLITS: tuple[str, ...] = SPLIT_MODES
#: ``split="spatial"`` with this many images or more sends whole images to validation.
WHOLE_IMAGES_FROM = 5
TRAIN, VALID = "train", "valid"


@dataclass
class Chip:
    """One chip: where it comes from and where it went.

    Attributes:
        image: Index of the source image.
        row: Row offset in the source image.
        col: Column offset in the source image.
        region: ``split="rows"`` / ``"spatial"``: 0 = training part, 1 = validation strip.
        name: File name in ``images/`` and ``labels/``.
        bounds: ``(minx, miny, maxx, maxy)`` in the image CRS.
        counts: Pixels per class index in the label chip.
        split: ``"train"``, ``"valid"`` or ``"gap"`` (dropped to keep the sets apart).
        nodata: Nodata value of the image chip (its source's, or the override).
    """

    image: int
    row: int
    col: int
    region: int = 0
    name: str = ""
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    split: str = TRAIN
    nodata: float | None = None


def check_chip_size(chip_size: int) -> int:
    """Return ``chip_size`` if it is a positive multiple of 32, else fail suggesting sizes."""
    if isinstance(chip_size, bool) or not isinstance(chip_size, int | np.integer):
        raise InvalidParameterError(f"chip_size must be an integer, got {chip_size!r}.")
    if chip_size < 32 or chip_size % 32:
        lo = max(32, chip_size // 32 * 32)
        hi = lo + 32 if chip_size > lo else lo
        sizes = f"{lo} or {hi}" if hi != lo else str(lo)
        raise InvalidParameterError(
            f"chip_size={chip_size} must be a positive multiple of 32 (the U-Net halves the "
            f"chip 5 times); use {sizes}."
        )
    return int(chip_size)


def check_stride(stride: int | None, chip_size: int) -> int:
    """The stride to use: ``chip_size`` when None; must lie in ``[1, chip_size]``."""
    if stride is None:
        return chip_size
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer):
        raise InvalidParameterError(f"stride must be an integer, got {stride!r}.")
    if not 1 <= stride <= chip_size:
        raise InvalidParameterError(
            f"stride={stride} must lie in [1, chip_size={chip_size}]; use stride=chip_size "
            "for chips side by side, or a smaller stride for overlapping chips."
        )
    return int(stride)


def chip_grid(
    height: int,
    width: int,
    chip_size: int,
    stride: int,
    *,
    split: SplitMode = "spatial",
    val_fraction: float = 0.2,
    val_strip: ValStrip = "end",
    box: tuple[int, int, int, int] | None = None,
) -> list[tuple[int, int, int]]:
    """Candidate chips ``(row, col, region)`` of one image, row by row.

    Starts follow :func:`geounet.io.windows.tile_starts`: every ``stride`` pixels with the last
    chip flush with the border, so the whole image is covered. An image smaller than the
    chip gives one chip at (0, 0) that runs past the border (the excess is padding, no label).
    With ``split="rows"`` the top and bottom parts are chipped separately (region 0 and 1);
    a part shorter than a chip gives no chip. With ``split="spatial"`` the validation strip
    of :func:`strip_span` (region 1, placed by ``val_strip``) is chipped apart from the rest
    (region 0). ``box`` ``(row, col, height, width)`` chips only that part of the image (a
    labelled area, :meth:`~geounet.data.labels.area.LabelledArea.box`), as if it were the
    image; ``val_strip="auto"`` puts the strip at the box's side away from the rest of the
    image (:func:`auto_strip`).

    Example:
        >>> [c for c in chip_grid(256, 1024, 256, 256, val_strip="middle")]
        [(0, 0, 0), (0, 128, 0), (0, 384, 1), (0, 640, 0), (0, 768, 0)]
        >>> chip_grid(512, 1024, 256, 256, val_strip="auto", box=(0, 0, 256, 768))
        [(0, 0, 1), (0, 256, 0), (0, 512, 0)]
    """
    if box is not None:
        r0, c0, h, w = box
        if h < 1 or w < 1:
            return []
        where = auto_strip(height, width, box) if val_strip == "auto" else val_strip
        grid = chip_grid(
            h, w, chip_size, stride, split=split, val_fraction=val_fraction, val_strip=where
        )
        return [(r0 + r, c0 + c, region) for r, c, region in grid]
    step = chip_size - stride
    if split == "rows":
        cut = round(height * (1.0 - val_fraction))
        return _parts(height, width, chip_size, step, "rows", [(0, cut, 0), (cut, height, 1)])
    if split == "spatial":
        axis, start, stop = strip_span(height, width, chip_size, val_fraction, val_strip)
        if axis is not None:
            length = height if axis == "rows" else width
            spans = [(0, start, 0), (start, stop, 1), (stop, length, 0)]
            return _parts(height, width, chip_size, step, axis, spans)
    cols = tile_starts(width, chip_size, step)
    return [(r, c, 0) for r in tile_starts(height, chip_size, step) for c in cols]


def strip_span(
    height: int, width: int, chip_size: int, val_fraction: float, where: ValStrip = "end"
) -> tuple[str | None, int, int]:
    """The validation strip of ``split="spatial"``: ``("rows" | "cols", first, stop)``.

    The strip runs across the image's longer side, ``max(chip_size, round(val_fraction *
    length))`` pixels wide, at its ``"end"`` (bottom rows or right columns), ``"start"`` or in
    the ``"middle"`` (``"auto"`` is the end here: :func:`chip_grid` places it from a labelled
    box). ``(None, 0, 0)`` when a training part would be shorter than a chip (or
    ``val_fraction`` is 0); in the middle both parts beside the strip must be a chip long,
    else the strip goes to the end.

    Example:
        >>> strip_span(500, 1000, 256, 0.2)
        ('cols', 744, 1000)
        >>> strip_span(500, 1000, 256, 0.2, "start")
        ('cols', 0, 256)
        >>> strip_span(500, 1000, 256, 0.2, "middle")
        ('cols', 372, 628)
        >>> strip_span(300, 300, 256, 0.2)
        (None, 0, 0)
    """
    check_choice("val_strip", where, VAL_STRIPS)
    if where == "auto":
        where = "end"
    axis, length = ("rows", height) if height >= width else ("cols", width)
    size = max(chip_size, round(val_fraction * length))
    if val_fraction <= 0 or length - size < chip_size:
        return None, 0, 0
    if where == "start":
        return axis, 0, size
    first = (length - size) // 2
    if where == "middle" and first >= chip_size and length - first - size >= chip_size:
        return axis, first, first + size
    return axis, length - size, length


def auto_strip(height: int, width: int, box: tuple[int, int, int, int]) -> ValStrip:
    """Where ``val_strip="auto"`` puts the strip of a labelled ``box`` of a larger image.

    The unlabelled rest of the image is what will be mapped, and the labels next to it are
    the most like it: they train, and the strip goes to the box's other end along its longer
    side. ``"end"`` when the image extends as far on both sides (or not at all).

    Args:
        height: Image rows.
        width: Image columns.
        box: The labelled ``(row, col, height, width)``.

    Example:
        >>> auto_strip(1024, 2048, (0, 0, 1024, 1365))   # the rest lies to the right
        'start'
        >>> auto_strip(512, 768, (0, 0, 256, 768))       # the rest lies below, beside both ends
        'end'
    """
    r0, c0, h, w = box
    first, size, length = (r0, h, height) if h >= w else (c0, w, width)
    before, after = first, length - first - size
    return "start" if after > before else "end"


def _parts(
    height: int,
    width: int,
    chip_size: int,
    step: int,
    axis: str,
    spans: Sequence[tuple[int, int, int]],
) -> list[tuple[int, int, int]]:
    """Chip each ``(first, stop, region)`` span along ``axis`` on its own (shorter: no chip)."""
    out: list[tuple[int, int, int]] = []
    across = width if axis == "rows" else height
    others = tile_starts(across, chip_size, step)
    for a0, a1, region in spans:
        if a1 - a0 < chip_size:
            continue
        for a in tile_starts(a1 - a0, chip_size, step):
            out += [(a0 + a, o, region) if axis == "rows" else (o, a0 + a, region) for o in others]
    return sorted(out)


def footprints_overlap(a: Chip, b: Chip, chip_size: int) -> bool:
    """True when two chips of the same image share pixels (positive-area intersection)."""
    return a.image == b.image and abs(a.row - b.row) < chip_size and abs(a.col - b.col) < chip_size


def _pick_blocks(groups: list[list[Chip]], target: float, rng: np.random.Generator) -> int:
    """Mark whole groups as validation, in a seeded order, to get close to ``target`` chips."""
    chosen = 0
    for i in rng.permutation(len(groups)):
        n = len(groups[i])
        if abs(chosen + n - target) < abs(chosen - target):
            for c in groups[i]:
                c.split = VALID
            chosen += n
    return chosen


def _spatial_split(chips: list[Chip], val_fraction: float, seed: int) -> None:
    """Strips (region 1) validate; images without a strip are drawn whole to make up the rest."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[Chip]] = defaultdict(list)
    for c in chips:
        by_image[c.image].append(c)
    whole: list[list[Chip]] = []
    for img in sorted(by_image):
        cs = by_image[img]
        if any(c.region == 1 for c in cs):
            for c in cs:
                c.split = VALID if c.region == 1 else TRAIN
        else:
            whole.append(cs)
    n_val = sum(c.split == VALID for c in chips)
    target = val_fraction * len(chips)
    if whole and n_val < target:
        if len(whole) == len(by_image):  # no image was cut: keep one for training
            whole = whole[1:] if len(whole) > 1 else []
        _pick_blocks(whole, target - n_val, rng)


def _drop_gap(chips: list[Chip], chip_size: int) -> int:
    """Mark training chips that overlap a validation chip as ``"gap"``; return how many."""
    cells: dict[tuple[int, int, int], list[Chip]] = defaultdict(list)
    for v in chips:
        if v.split == VALID:
            cells[(v.image, v.row // chip_size, v.col // chip_size)].append(v)
    dropped = 0
    for t in chips:
        if t.split != TRAIN:
            continue
        r, c = t.row // chip_size, t.col // chip_size
        near = (
            v for dr in (-1, 0, 1) for dc in (-1, 0, 1) for v in cells[(t.image, r + dr, c + dc)]
        )
        if any(footprints_overlap(t, v, chip_size) for v in near):
            t.split = "gap"
            dropped += 1
    return dropped


def assign_splits(
    chips: list[Chip],
    *,
    split: SplitMode,
    val_fraction: float,
    chip_size: int,
    stride: int,
    seed: int = 0,
) -> int:
    """Set ``chip.split`` to ``"train"``, ``"valid"`` or ``"gap"`` (see the module docstring).

    Deterministic for a given ``seed``.

    Returns:
        The number of training chips dropped as ``"gap"``.
    """
    check_choice("split", split, SPLITS)
    for c in chips:
        c.split = TRAIN
    if val_fraction <= 0 or not chips:
        return 0
    if split == "rows":
        for c in chips:
            c.split = VALID if c.region == 1 else TRAIN
    elif split == "random":
        rng = np.random.default_rng(seed)
        n_val = round(val_fraction * len(chips))
        n_val = min(max(n_val, 1 if len(chips) > 1 else 0), len(chips) - 1)
        for i in rng.permutation(len(chips))[:n_val]:
            chips[i].split = VALID
    else:
        _spatial_split(chips, val_fraction, seed)
    return _drop_gap(chips, chip_size)


def split_cost(chips: Sequence[Chip]) -> dict[str, float | int]:
    """What a split took from training: chips and labelled pixels to validation and to the gap.

    Example:
        >>> cs = [Chip(0, 0, 0, split=s, counts=np.array([90, 10])) for s in ("train",) * 3]
        >>> cs[2].split = "valid"
        >>> split_cost(cs)["valid_pixel_share"]
        0.3333
    """
    px = {s: 0 for s in (TRAIN, VALID, "gap")}
    n = {s: 0 for s in px}
    for c in chips:
        if c.split in px:
            px[c.split] += int(np.sum(c.counts))
            n[c.split] += 1
    total = max(sum(px.values()), 1)
    return {
        "train_chips": n[TRAIN],
        "valid_chips": n[VALID],
        "gap_chips": n["gap"],
        "valid_pixel_share": round(px[VALID] / total, 4),
        "gap_pixel_share": round(px["gap"] / total, 4),
    }


def median_frequency_weights(counts: Sequence[int]) -> list[float]:
    """Class weights by median frequency balancing (Eigen & Fergus, 2015).

    ``w_c = median(f) / f_c`` with ``f_c`` the share of labelled pixels of class ``c``; the
    median runs over the classes present. Absent classes get the neutral weight 1.0.

    Example:
        >>> median_frequency_weights([900, 100])
        [0.5555555555555556, 5.0]
    """
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    if not present.any():
        return [1.0] * len(c)
    freq = c / c.sum()
    med = float(np.median(freq[present]))
    return [float(med / f) if p else 1.0 for f, p in zip(freq, present)]


def _chip_bounds(win: Window, info: RasterInfo) -> tuple[float, float, float, float]:
    return window_bounds(info.transform, win)  # the four corners: rotated grids too


@dataclass
class _ChipContext:
    folder: Path
    classes: Sequence[ClassSpec]
    chip_size: int
    nodata: float | None
    min_valid: int
    writer: ChipWriter
    stats: StatsAccumulator | None = None


@dataclass
class _RowStats:
    """Adds every row of one image to the statistics once, as the row bands go by.

    Row bands overlap (``stride < chip_size``, the last band flush with the border) or leave
    rows out (a part too short to chip): rows already added are skipped, rows no band read are
    read by :meth:`fill` (in bands of at most ``chip_size`` rows), so each valid pixel counts
    exactly once, as in :func:`~geounet.io.raster.band_stats`.
    """

    acc: StatsAccumulator
    info: RasterInfo
    done: int = 0

    def add(self, band: np.ndarray, valid: np.ndarray, row: int) -> None:
        """Add the rows of a band (read from column 0, at least the image wide) not yet added."""
        r0 = max(row, self.done) - row
        r1 = min(row + band.shape[1], self.info.height) - row
        if r1 > r0:
            w = self.info.width
            part, ok = band[:, r0:r1, :w], valid[r0:r1, :w]
            self.acc.add(part.reshape(len(part), -1) if ok.all() else part[:, ok])
        self.done = max(self.done, row + r1)

    def fill(self, ctx: _ChipContext, src: Any, bands: list[int], until: int) -> None:
        """Read and add the rows from the last one added up to ``until`` (exclusive)."""
        while self.done < min(until, self.info.height):
            h = min(ctx.chip_size, until - self.done)
            data, valid = read_window(
                src, self.done, 0, h, self.info.width, bands, nodata=ctx.nodata,
                alpha_band=self.info.alpha_band, pad_mode="constant",
            )  # fmt: skip
            self.add(data, valid, self.done)


def _row_bands(
    grid: list[tuple[int, int, int]],
) -> Iterator[tuple[int, list[tuple[int, int, int]]]]:
    """The grid's chips grouped by row: ``(row, chips of that row)`` (grid order kept)."""
    for row, chips in groupby(grid, key=lambda g: g[0]):
        yield row, list(chips)


def _band_labels(labels: Any, row: int, c0: int, width: int, size: int) -> Any:
    """A reader of the label chips of one row band: the band read once when exact, else per chip.

    Label sources that say ``reads_by_band`` (vector labels, label rasters on the image grid)
    give the same pixels for a band as for each chip in it; others (resampled label rasters)
    are read chip by chip, as the chips would be on their own.
    """
    if getattr(labels, "reads_by_band", False):
        band = labels.read(row, c0, size, width)
        return lambda col: band[:, col - c0 : col - c0 + size].copy()
    return lambda col: labels.read(row, col, size, size)


def _chip_band(
    ctx: _ChipContext,
    idx: int,
    info: RasterInfo,
    src: Any,
    labels: Any,
    bands: list[int],
    row: int,
    chips: list[tuple[int, int, int]],
    rows: _RowStats | None = None,
) -> tuple[list[Chip], int]:
    """Chip one row band: the image rows read once, each chip cut from them in memory."""
    size, n_cls = ctx.chip_size, len(ctx.classes)
    c0 = min(c for _, c, _ in chips)
    width = max(c for _, c, _ in chips) + size - c0
    band, band_valid = read_window(
        src, row, c0, size, width, bands, nodata=ctx.nodata, alpha_band=info.alpha_band,
        pad_mode="constant",
    )  # fmt: skip
    if rows is not None:
        if c0 != 0 or width < info.width:
            raise RuntimeError(f"row band {row} of {info.path} does not span the image")
        rows.fill(ctx, src, bands, row)
        rows.add(band, band_valid, row)
    label_chip = _band_labels(labels, row, c0, width, size)
    nodata = ctx.nodata if ctx.nodata is not None else info.nodata
    kept, dropped = [], 0
    for _, col, region in chips:
        valid = band_valid[:, col - c0 : col - c0 + size]
        lab = label_chip(col)
        lab[~valid] = IGNORE_INDEX
        known = lab != IGNORE_INDEX
        n_known = int(np.count_nonzero(known))
        if n_known == 0 or n_known < ctx.min_valid:
            dropped += 1
            continue
        chip = Chip(idx, row, col, region, name=f"{idx:03d}_{row:06d}_{col:06d}.tif", nodata=nodata)
        chip.counts = np.bincount(lab[known], minlength=n_cls).astype(np.int64)
        win = Window(col, row, size, size)
        tr = windows.transform(win, info.transform)
        data = band[:, :, col - c0 : col - c0 + size]
        ctx.writer.submit(chip.name, data, valid, lab, info.crs, tr, nodata)
        chip.bounds = _chip_bounds(win, info)
        kept.append(chip)
    return kept, dropped


def _chip_image(
    ctx: _ChipContext,
    idx: int,
    info: RasterInfo,
    labels: Any,
    bands: list[int],
    grid: list[tuple[int, int, int]],
) -> tuple[list[Chip], int]:
    kept: list[Chip] = []
    dropped = 0
    rows = None if ctx.stats is None else _RowStats(ctx.stats, info)
    with rasterio.open(info.path) as src:
        for row, chips in _row_bands(grid):
            k, d = _chip_band(ctx, idx, info, src, labels, bands, row, chips, rows)
            kept += k
            dropped += d
        if rows is not None:
            rows.fill(ctx, src, bands, info.height)
    return kept, dropped


def write_chips(
    folder: Path,
    infos: Sequence[RasterInfo],
    labels: Sequence[Any],
    classes: Sequence[ClassSpec],
    *,
    chip_size: int,
    stride: int,
    bands: Sequence[Sequence[int]],
    band_names: Sequence[str],
    nodata: float | None = None,
    split: SplitMode = "spatial",
    val_fraction: float = 0.2,
    val_strip: ValStrip | Sequence[ValStrip] = "end",
    min_valid_fraction: float = 0.5,
    stats: StatsAccumulator | None = None,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
) -> tuple[list[Chip], int]:
    """Write image and label chips of every image into ``folder/images`` and ``folder/labels``.

    Reads one row band (``chip_size`` rows) at a time and cuts its chips in memory; vector
    labels are rasterized once per band (see :func:`_band_labels`); a bounded pool of
    threads writes the chips (:class:`~geounet.data.chip_files.ChipWriter`). Memory does not
    depend on the image height. Chips with fewer than ``min_valid_fraction`` labelled valid
    pixels (or none) are skipped.

    Args:
        folder: The chip folder being built.
        infos: The images.
        labels: One bound label source per image (``read(row, col, h, w)`` -> class indices).
        classes: The class list (for the colour table of label chips).
        chip_size: Chip size in pixels.
        stride: Step between chips.
        bands: Per image, the 1-based bands to copy into its image chips.
        band_names: The band names (band descriptions of the chips).
        nodata: Nodata override for the images.
        split: Split mode (``"rows"`` and ``"spatial"`` with fewer than
            :data:`WHOLE_IMAGES_FROM` images cut each image, see :func:`chip_grid`).
        val_fraction: Validation share (sets the cut of ``"rows"`` and ``"spatial"``).
        val_strip: Where ``"spatial"`` puts each image's validation strip (:func:`strip_span`),
            one place for all images or one per image.
        min_valid_fraction: Minimum share of valid, labelled pixels for a chip to be kept.
        stats: When given, every valid pixel of the chipped bands is added to it once, in
            the same pass (the statistics of :func:`~geounet.io.raster.band_stats` without a
            second read; use an accumulator whose result does not depend on the order, i.e.
            exact histograms of 8/16-bit integers). Not with ``boxes`` that leave rows out.
        boxes: Per image, the ``(row, col, height, width)`` part to chip (its labelled area),
            or None for the whole image.

    Returns:
        ``(chips, dropped)``: the chips written (split not yet assigned) and how many
        candidates were dropped for too little valid data.
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    min_valid = math.ceil(min_valid_fraction * chip_size * chip_size)
    many = split == "spatial" and len(infos) >= WHOLE_IMAGES_FROM
    mode: SplitMode = "random" if many else split  # many images: whole images validate
    strips = [val_strip] * len(infos) if isinstance(val_strip, str) else list(val_strip)
    chips: list[Chip] = []
    dropped = 0
    with ChipWriter(folder, classes, band_names) as writer:
        ctx = _ChipContext(folder, classes, chip_size, nodata, min_valid, writer, stats)
        for idx, (info, lab, use) in enumerate(zip(infos, labels, bands)):
            grid = chip_grid(
                info.height,
                info.width,
                chip_size,
                stride,
                split=mode,
                val_fraction=val_fraction,
                val_strip=strips[idx],
                box=boxes[idx] if boxes else None,
            )
            kept, n_drop = _chip_image(ctx, idx, info, lab, list(use), grid)
            chips += kept
            dropped += n_drop
            log.info("%s: %d chips kept, %d dropped", info.path.name, len(kept), n_drop)
    return chips, dropped


def remove_chips(folder: Path, chips: Sequence[Chip]) -> None:
    """Delete the image and label files of ``chips`` (the ones dropped as split gap)."""
    for c in chips:
        (folder / "images" / c.name).unlink(missing_ok=True)
        (folder / "labels" / c.name).unlink(missing_ok=True)
