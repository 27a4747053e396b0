"""Where ``val_strip="auto"`` puts an image's validation strip: where its labels are like the whole.

The spatial split validates on one strip across each image (:func:`geounet.data.chipping.
strip_span`). The validation mIoU picks the weights kept and stops training, so a strip that
holds almost none of a class judges that class on a handful of pixels: on Zanzibar's labelled
two thirds the strip at the end held 1.1 % building pixels against 10.4 % over the whole
part, and over the last 20 epochs, at a tenth of the peak learning rate or less, the
validation mIoU moved by 0.008-0.019 between epochs on average (up to 0.055; a few buildings'
pixels decide it), so which epoch's weights were kept was close to a draw.

``"auto"`` therefore reads the labels once before chipping (a sample of them on large
images, :data:`STRIP_SAMPLE_PIXELS`) and keeps its preferred place (the end, or with a
labelled area the end away from the part to map, :func:`~geounet.data.chipping.auto_strip`)
unless the strip there holds less than :data:`MIN_STRIP_SHARE` of some class's share of the
labelled pixels; then it takes the place (start, middle or end) whose worst class comes
closest to its share of the whole. The manifest records the place and the shares
(its ``val_strip_choice``), and :meth:`GeoData.summary` shows them.

Example:
    >>> import numpy as np
    >>> whole = np.array([896, 104])
    >>> strips = {"end": np.array([989, 11]), "start": np.array([943, 57]),
    ...           "middle": np.array([881, 119])}
    >>> pick_strip(strips, whole, ["end", "start", "middle"])
    'middle'
    >>> pick_strip({"end": np.array([940, 60]), "middle": np.array([880, 120])}, whole,
    ...            ["end", "middle"])   # 60 / 1000 is more than a quarter of 10.4 %: kept
    'end'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geounet.data.chipping import strip_span

__all__ = [
    "MIN_CLASS_SHARE",
    "MIN_STRIP_SHARE",
    "STRIP_PLACES",
    "STRIP_SAMPLE_PIXELS",
    "choose_strip",
    "pick_strip",
    "strip_score",
]

#: A strip is kept where every class holds at least this fraction of its share of the whole.
MIN_STRIP_SHARE = 0.25
#: Classes under this share of the labelled pixels do not move the strip (too rare to judge).
MIN_CLASS_SHARE = 0.01
#: Label pixels read, at most, to choose an image's strip (evenly spaced bands beyond it).
STRIP_SAMPLE_PIXELS = 8_000_000
#: The places a strip may take, in the order tried after the preferred one.
STRIP_PLACES: tuple[str, ...] = ("end", "start", "middle")


def strip_score(strip: np.ndarray, whole: np.ndarray) -> float:
    """How well a strip's class counts represent the whole: the worst class's share ratio.

    For every class holding at least :data:`MIN_CLASS_SHARE` of the whole's labelled pixels,
    the strip's share of that class over the whole's share, capped at 1; the smallest of those
    (0 for a strip without labelled pixels, 1 when no class qualifies).

    Example:
        >>> round(strip_score(np.array([989, 11]), np.array([896, 104])), 3)
        0.106
    """
    strip = np.asarray(strip, np.float64)
    whole = np.asarray(whole, np.float64)
    if whole.sum() <= 0:
        return 1.0
    if strip.sum() <= 0:
        return 0.0
    share, ref = strip / strip.sum(), whole / whole.sum()
    judged = ref >= MIN_CLASS_SHARE
    if not judged.any():
        return 1.0
    return float(np.minimum(share[judged] / ref[judged], 1.0).min())


def pick_strip(counts: Mapping[str, np.ndarray], whole: np.ndarray, order: Sequence[str]) -> str:
    """The place for the strip: ``order[0]`` unless it scores under :data:`MIN_STRIP_SHARE`.

    Otherwise the best-scoring place of ``order`` (:func:`strip_score`; the earlier on a tie).
    """
    if strip_score(counts[order[0]], whole) >= MIN_STRIP_SHARE:
        return order[0]
    scores = [strip_score(counts[p], whole) for p in order]
    return order[int(np.argmax(scores))]


def choose_strip(
    labels: Any,
    box: tuple[int, int, int, int],
    *,
    chip_size: int,
    val_fraction: float,
    n_classes: int,
    preferred: str,
) -> tuple[str, dict[str, Any]]:
    """Read ``labels`` over ``box`` and choose where its validation strip goes.

    Args:
        labels: A bound label source (``read(row, col, height, width)`` -> class indices, 255
            for no label).
        box: The ``(row, col, height, width)`` part to be chipped (the whole image without a
            labelled area).
        chip_size: Chip size in pixels.
        val_fraction: The validation share (the strip's width, :func:`strip_span`).
        n_classes: Number of classes, background included.
        preferred: The place kept unless its strip misrepresents a class.

    Returns:
        ``(place, record)``: the place (``"start"``, ``"middle"`` or ``"end"``) and what the
        manifest records (the preferred place and each place's class shares and score).
    """
    _, _, h, w = box
    spans: dict[str, tuple[int, int]] = {}
    for place in (preferred, *STRIP_PLACES):
        axis, a, b = strip_span(h, w, chip_size, val_fraction, place)  # type: ignore[arg-type]
        if axis is None:
            return preferred, {"preferred": preferred, "reason": "no strip fits"}
        if (a, b) not in spans.values():  # "middle" falls back to the end on short images
            spans[place] = (a, b)
    whole, counts = _strip_counts(labels, box, axis, spans, n_classes)
    order = list(spans)
    place = pick_strip(counts, whole, order)
    record = {
        "preferred": preferred,
        "chosen": place,
        "shares": {p: _shares(c) for p, c in counts.items()},
        "whole": _shares(whole),
        "scores": {p: round(strip_score(c, whole), 3) for p, c in counts.items()},
    }
    return place, record


def _shares(counts: np.ndarray) -> list[float]:
    """Class shares of ``counts`` (rounded; zeros without pixels)."""
    total = counts.sum()
    return [round(float(c / total), 4) if total else 0.0 for c in counts]


def _strip_counts(
    labels: Any,
    box: tuple[int, int, int, int],
    axis: str,
    spans: Mapping[str, tuple[int, int]],
    n_classes: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class pixel counts of the whole box and of each strip (``spans`` along ``axis``).

    The labels are read in bands of whole rows, as chipping reads them (a tall window is
    slow to rasterize without GDAL's block cache): all of them on a small box, evenly spaced
    thin bands on a large one (:func:`_row_reads`).
    """
    r0, c0, h, w = box
    whole = np.zeros(n_classes, np.int64)
    counts = {p: np.zeros(n_classes, np.int64) for p in spans}
    for s, size in _row_reads(h, w):
        arr = labels.read(r0 + s, c0, size, w)
        whole += _bincount(arr, n_classes)
        for p, (a, b) in spans.items():
            part = arr[:, a:b] if axis == "cols" else arr[max(a - s, 0) : max(b - s, 0)]
            counts[p] += _bincount(part, n_classes)
    return whole, counts


def _row_reads(height: int, width: int) -> list[tuple[int, int]]:
    """``(first row, rows)`` of the bands read: every row, or evenly spaced thin bands.

    Beyond :data:`STRIP_SAMPLE_PIXELS`, at least 16 bands of up to 32 rows, so that every
    strip (a fifth of the length by default) holds a few of them.

    Example:
        >>> _row_reads(600, 100)
        [(0, 256), (256, 256), (512, 88)]
        >>> len(_row_reads(100_000, 100_000)), _row_reads(100_000, 100_000)[1]
        (16, (6666, 5))
    """
    if height * width <= STRIP_SAMPLE_PIXELS:
        return [(s, min(256, height - s)) for s in range(0, height, 256)]
    rows = max(1, min(32, STRIP_SAMPLE_PIXELS // (16 * width)))
    n = min(max(16, STRIP_SAMPLE_PIXELS // (rows * width)), height // rows)
    starts = np.unique(np.linspace(0, height - rows, n).round().astype(int))
    return [(int(s), rows) for s in starts]


def _bincount(arr: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels of each class (no-label pixels, 255, left out)."""
    v = np.asarray(arr).ravel()
    return np.bincount(v[v < n_classes], minlength=n_classes)
