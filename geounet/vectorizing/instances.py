"""Split touching buildings: marker-controlled watershed of each traced building outline.

A building mask merges roofs that touch. Each traced building polygon (one 4-connected
region, whole: :class:`~geounet.vectorizing.polygons.PolygonTracer` has already merged the
pieces cut by window seams) is cut out of the class raster into a small crop of its own and
split by a watershed on a height surface ``s``:

- without probabilities, ``s`` is the distance (m) of each pixel to the outline: a neck or
  a notch between two roofs is a dip of ``s``;
- with the blended building probability ``p`` (0-1) of ``classify``, ``s`` is that distance
  times ``p``: a model that is less sure along the line where two roofs meet marks the
  split even where the outline has no notch.

Markers are the regional maxima of ``s``; the watershed of ``-s`` from them cuts the outline
along its necks. Neighbouring parts are then merged again, the widest neck first, unless the
pass of ``s`` between them is at most ``neck_ratio`` (:data:`NECK_RATIO`) of the lower of their
two peaks and at least :data:`DIP_M` below it (a neck clearly narrower than both parts), and
both parts are at least ``min_separation_m`` wide. A rectangle, or an L, stays
one polygon; two squares joined by a bridge, or a terraced row with notches at the party
walls, come apart. Because a polygon is split on its own (its crop holds only its pixels,
with a one-pixel margin), the result does not depend on the window it was traced in: no
seams. The crops of nearby outlines are packed side by side into one mosaic and split in
one call (:data:`BATCH_PX`): every step is 4-connected, so each crop gets its own instances,
and the per-call cost of thousands of small buildings is paid once per block
(``benchmarks/vectorize_quality.py --parts speed``: 10 000² pixels of buildings, 16.5 s ->
12.6 s). The blocks are split on :func:`~geounet.core.threads.worker_threads` threads: the
distance transform, labelling and watershed release the GIL (2 cores: 8.4-8.6 s on one
thread -> 7.0-7.3 s, the same polygons).

Whether ``vectorize`` splits by default follows the model's training labels
(:func:`label_split_share`, :mod:`geounet.vectorizing.sizes`): labels that draw a block of
buildings as one teach the network blocks, and those are not split.

Measured (``benchmarks/separation.py``): the OpenStreetMap buildings of ``oam_kampala``
(106 of at least 2 m², a dense settlement) rasterized as one class merge into 95 regions;
vectorized, they give object F1 0.945 (95 polygons) without separation and 0.986 (105) with
it; ``oam_zanzibar`` 0.970 (116 of 121) and 0.984 (123). On a small model's predictions on
the bottom half of Kampala, F1 0.28 (42 polygons for 51 buildings) becomes 0.43 (61).

Example:
    >>> import numpy as np
    >>> mask = np.zeros((20, 40), bool); mask[2:18, 2:18] = mask[2:18, 22:38] = True
    >>> mask[8:12, 18:22] = True                      # a narrow bridge between two squares
    >>> labels = split_mask(mask, (1.0, 1.0), SeparationOptions(min_separation_m=4.0))
    >>> int(labels.max())
    2
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
import rasterio.features
import shapely
from scipy import ndimage
from skimage.morphology import local_maxima
from skimage.segmentation import watershed

from geounet.core.errors import InvalidParameterError
from geounet.core.threads import ordered_map
from geounet.vectorizing.polygons import polygons_from_shapes
from geounet.vectorizing.sizes import whole_regions

__all__ = [
    "BATCH_PX",
    "DIP_M",
    "MAX_SPLIT_PX",
    "MIN_SEPARATION_M",
    "NECK_RATIO",
    "SeparationOptions",
    "label_split_share",
    "split_mask",
    "split_polygons",
]

#: Default smallest width (m) of a part split off as a building of its own.
MIN_SEPARATION_M = 3.0
#: Two parts stay apart only when the lower peak of ``s`` rises this much (m) above the pass.
DIP_M = 0.3
#: Two parts stay apart when the neck between them is at most this fraction of the narrower.
NECK_RATIO = 0.7
#: Outlines whose bounding box holds more pixels than this are not split (memory bound).
MAX_SPLIT_PX = 4096 * 4096
#: Outlines are split together a block of about this many pixels a side at a time.
BATCH_PX = 1024
_CROSS = ndimage.generate_binary_structure(2, 1)

#: Reads a block of rows ``[r0, r1)`` and columns ``[c0, c1)`` of a raster band: the class
#: values, or the building probability (0-1, float).
BlockReader = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class SeparationOptions:
    """How touching buildings are split.

    Attributes:
        min_separation_m: Smallest width (metres) of a part split off as a building of its
            own.
        neck_ratio: Two parts stay apart when the pass of ``s`` between them is at most
            this fraction of the lower of their two peaks (a neck at most this fraction as
            wide as the narrower part).
        dip_m: Smallest depth (metres of distance to the outline, times the probability
            when given) of the pass between two parts below the lower of their peaks.
    """

    min_separation_m: float = MIN_SEPARATION_M
    dip_m: float = DIP_M
    neck_ratio: float = NECK_RATIO

    def __post_init__(self) -> None:
        for name in ("min_separation_m", "dip_m"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and value > 0 and np.isfinite(value)):
                raise InvalidParameterError(
                    f"{name}={value!r} must be a positive number of metres, e.g. "
                    f"{name}={getattr(SeparationOptions, name)}."
                )
        if not 0 < self.neck_ratio <= 1:
            raise InvalidParameterError(
                f"neck_ratio={self.neck_ratio!r} must be in (0, 1], e.g. {NECK_RATIO}."
            )


def _markers(s: np.ndarray, step_m: float) -> tuple[np.ndarray, int]:
    """Labelled regional maxima of ``s`` (4-connected plateaus), to a precision of step_m / 8.

    With 4-connectivity a building's maxima never depend on the pixels of another one.
    """
    q = np.round(s / (step_m / 8)).astype(np.int32)
    peaks = local_maxima(q, connectivity=1, allow_borders=True) & (q > 0)
    return ndimage.label(peaks, structure=_CROSS)


def _saddles(labels: np.ndarray, s: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(a, b): saddle}``: the highest pass of ``s`` between each two adjacent regions."""
    keys, values = [], []
    for la, lb, va, vb in (
        (labels[:, :-1], labels[:, 1:], s[:, :-1], s[:, 1:]),
        (labels[:-1], labels[1:], s[:-1], s[1:]),
    ):
        m = (la != lb) & (la > 0) & (lb > 0)
        a, b = la[m].astype(np.int64), lb[m].astype(np.int64)
        keys.append(np.minimum(a, b) * (int(labels.max()) + 1) + np.maximum(a, b))
        values.append(np.minimum(va[m], vb[m]))
    k, v = np.concatenate(keys), np.concatenate(values)
    uniq, inv = np.unique(k, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inv, v)
    n1 = int(labels.max()) + 1
    return {(int(u // n1), int(u % n1)): float(x) for u, x in zip(uniq, best)}


def _merge_regions(
    labels: np.ndarray, s: np.ndarray, dist: np.ndarray, opts: SeparationOptions
) -> np.ndarray:
    """Merge watershed regions not separated by a narrow enough neck, widest neck first.

    Two regions stay apart when the pass between them is at most ``neck_ratio`` of the lower
    of their two peaks and at least ``dip_m`` below it, and both are at least
    ``min_separation_m`` wide. The pairs wait in a heap (a merge rescores only the pairs of
    the merged region), so a large region of many peaks costs ``n log n``, not ``n**2``.
    """
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    peak = dict(zip(idx.tolist(), _region_max(s, labels, n).tolist()))
    width = dict(zip(idx.tolist(), (_region_max(dist, labels, n) * 2).tolist()))
    nbrs: dict[int, dict[int, float]] = {i: {} for i in idx.tolist()}
    for (a, b), v in _saddles(labels, s).items():
        nbrs[a][b] = nbrs[b][a] = v
    version = dict.fromkeys(nbrs, 0)
    heap: list[tuple[float, int, int, int, int]] = []

    def push(a: int, b: int) -> None:
        x, y = min(a, b), max(a, b)
        score = _merge_score(nbrs[x][y], peak[x], peak[y], width[x], width[y], opts)
        heapq.heappush(heap, (-score, x, y, version[x], version[y]))

    for a in nbrs:
        for b in nbrs[a]:
            if a < b:
                push(a, b)
    parent = np.arange(n + 1)
    while heap:
        neg, a, b, va, vb = heapq.heappop(heap)
        if va != version.get(a) or vb != version.get(b):
            continue  # a region of the pair has merged since: rescored elsewhere
        if -neg <= opts.neck_ratio:
            break
        parent[b] = a  # b's region joins a's (a < b: the lower label stays, as it always did)
        peak[a], width[a] = max(peak[a], peak[b]), max(width[a], width[b])
        for y, v in nbrs.pop(b).items():
            del nbrs[y][b]
            if y != a:
                nbrs[a][y] = nbrs[y][a] = max(v, nbrs[a].get(y, -np.inf))
        del version[b]
        version[a] += 1
        for y in nbrs[a]:
            push(a, y)
    while not np.array_equal(parent, parent[parent]):  # every label to its region's root
        parent = parent[parent]
    _, dense = np.unique(parent, return_inverse=True)
    return dense[labels].astype(np.int32)


def _region_max(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The largest value of each region ``1..n`` of ``labels`` (-inf for an empty one)."""
    inside = labels > 0
    out = np.full(n + 1, -np.inf)
    np.maximum.at(out, labels[inside], values[inside])
    return out[1:]


def _merge_score(
    saddle: float,
    peak_a: float,
    peak_b: float,
    width_a: float,
    width_b: float,
    opts: SeparationOptions,
) -> float:
    """How much two neighbouring regions belong together (merged above ``neck_ratio``)."""
    low = min(peak_a, peak_b)
    if min(width_a, width_b) < opts.min_separation_m or low - saddle < opts.dip_m:
        return np.inf
    return saddle / max(low, 1e-9)


def split_mask(
    mask: np.ndarray,
    pixel_m: tuple[float, float],
    opts: SeparationOptions,
    prob: np.ndarray | None = None,
) -> np.ndarray:
    """Split one building region into instances by marker-controlled watershed.

    Args:
        mask: Boolean ``(H, W)`` crop holding the region (pixels outside it are False; give
            at least a one-pixel False margin where the outline should count as an edge).
        pixel_m: Pixel width and height in metres.
        opts: Separation settings.
        prob: Optional building probability (0-1) on the same crop.

    Returns:
        int32 ``(H, W)`` instance labels, 0 outside the mask, 1..n inside.
    """
    sampling = (float(pixel_m[1]), float(pixel_m[0]))
    dist = ndimage.distance_transform_edt(mask, sampling=sampling)
    return _watershed_split(mask, dist, pixel_m, opts, prob)


def label_split_share(
    labels: Iterable[np.ndarray],
    value: int,
    pixel_m: tuple[float, float],
    opts: SeparationOptions | None = None,
    most: int | None = None,
) -> dict[str, float]:
    """How much of the training labels' own buildings the watershed split would cut.

    Each 4-connected region of ``value`` lying whole inside a label chip is one labelled
    building (vector labels are burnt with a gap between touching polygons); it is split with
    :func:`split_mask` as ``vectorize`` would split a predicted one. Labels that draw each
    roof apart are rarely cut (the recipe scenes: ``oam_kampala`` 0 %, ``oam_zanzibar``
    1.2 %, ``spacenet_atlanta_pan`` 2.3 %, ``inria_austin`` 4.9 % of the area); labels that
    draw a block of buildings as one object are (``dubai_multiclass`` 21 %).

    Args:
        labels: Label chips ``(H, W)`` of class values.
        value: The building class's value.
        pixel_m: Pixel width and height in metres.
        opts: Separation settings (default: ``vectorize``'s).
        most: Stop after the chip in which this many objects have been measured (None: all).

    Returns:
        ``{"split_objects": whole regions measured, "split_share": share of their area that
        would be split}``; each region weighted for the chance that a chip sees it whole
        (:func:`~geounet.vectorizing.sizes.whole_regions`). The share is 0 without regions.
    """
    opts = opts or SeparationOptions()
    cut = total = 0.0
    n = 0
    for lab in labels:
        regions, boxes, pixels, weights = whole_regions(np.asarray(lab), value)
        for (k, box), px, w in zip(boxes, pixels, weights):
            crop = np.pad(regions[box] == k, 1)
            n += 1
            total += px * w
            if split_mask(crop, pixel_m, opts).max() > 1:
                cut += px * w
        if most is not None and n >= most:
            break
    return {"split_objects": n, "split_share": round(float(cut / total), 4) if total else 0.0}


def _watershed_split(
    mask: np.ndarray,
    dist: np.ndarray,
    pixel_m: tuple[float, float],
    opts: SeparationOptions,
    prob: np.ndarray | None,
) -> np.ndarray:
    """:func:`split_mask` given each pixel's distance ``dist`` (m) to its region's outline."""
    s = dist if prob is None else dist * np.clip(prob, 0.0, 1.0)
    markers, n = _markers(s, min(float(pixel_m[0]), float(pixel_m[1])))
    if n <= 1:
        return mask.astype(np.int32)
    labels = watershed(-s, markers=markers, mask=mask, connectivity=1)
    return _merge_regions(labels, s, dist, opts)


def _component_crop(
    poly: shapely.Polygon,
    value: int,
    read: tuple[BlockReader, BlockReader | None],
    size: tuple[int, int],
) -> tuple[int, int, np.ndarray, np.ndarray | None]:
    """``(row0, col0, mask, prob)``: the region a traced polygon outlines, margin included.

    The region is the 4-connected region of ``value`` pixels with the polygon's bounding box
    and area; other regions in the box are False, and so is a one-pixel margin. ``read`` is
    the reader of the class values and that of the building probability (or None, and the
    crop's ``prob`` is None).
    """
    c0, r0, c1, r1 = (round(float(v)) for v in shapely.bounds(poly))
    block = _crop(read[0], r0 - 1, c0 - 1, (r1 - r0 + 2, c1 - c0 + 2), size) == value
    lab, _ = ndimage.label(block, structure=_CROSS)
    count = np.bincount(lab.ravel())
    want = (slice(1, r1 - r0 + 1), slice(1, c1 - c0 + 1))
    area = round(float(shapely.area(poly)))
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl == want and count[i] == area:
            p = None if read[1] is None else _crop(read[1], r0 - 1, c0 - 1, lab.shape, size)
            return r0 - 1, c0 - 1, lab == i, p
    raise InvalidParameterError(  # pragma: no cover - the polygon was traced from this raster
        f"the building outline at pixel ({r0}, {c0}) does not match the class raster."
    )


def _split_crop(
    crop: tuple[int, int, np.ndarray, np.ndarray | None],
    pixel_m: tuple[float, float],
    opts: SeparationOptions,
) -> np.ndarray | None:
    """The pieces of one region cut out by :func:`_component_crop` (None: it stays whole)."""
    r0, c0, mask, p = crop
    return _pieces(split_mask(mask, pixel_m, opts, p), r0, c0)


def _crop(
    read: BlockReader, r0: int, c0: int, shape: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """A block read over a crop that may reach one pixel outside the raster (0 there)."""
    h, w = shape
    a, b = max(r0, 0), max(c0, 0)
    e, f = min(r0 + h, size[0]), min(c0 + w, size[1])
    block = read(a, b, e, f)
    out = np.zeros(shape, dtype=block.dtype)
    out[a - r0 : e - r0, b - c0 : f - c0] = block
    return out


def split_polygons(
    geoms_px: np.ndarray,
    value: int,
    classes: BlockReader,
    pixel_m: tuple[float, float],
    opts: SeparationOptions,
    *,
    size: tuple[int, int],
    prob: BlockReader | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split traced building polygons (pixel coordinates) into instance polygons.

    Nearby outlines are split together, a block of up to about :data:`BATCH_PX` pixels a side
    at a time (one read, one distance transform, one watershed): the instances of
    splitting each outline in its own crop (:func:`split_mask`), which is what outlines
    larger than half a block still get. Blocks are read in the calling thread and split on
    :func:`~geounet.core.threads.worker_threads` threads (the distance transform, labelling
    and watershed release the GIL); the result does not depend on the thread count.

    Args:
        geoms_px: Polygons of ``value`` traced by
            :class:`~geounet.vectorizing.polygons.PolygonTracer` (whole objects).
        value: The building class value.
        classes: Reader of the class raster the polygons were traced from.
        pixel_m: Pixel width and height in metres.
        opts: Separation settings.
        size: ``(height, width)`` of the raster (reads stay inside it).
        prob: Optional reader of the building probability (0-1).

    Returns:
        ``(polygons, source)``: the instance polygons (pixel coordinates) and, for each, the
        position of the input polygon it comes from. Unsplit inputs are returned as they are.
    """
    geoms_px = np.asarray(geoms_px, dtype=object).reshape(-1)
    min_area_px = np.pi * (opts.min_separation_m / 2) ** 2 / (pixel_m[0] * pixel_m[1])
    bounds = shapely.bounds(geoms_px).reshape(-1, 4)
    box_px = (bounds[:, 2] - bounds[:, 0] + 2) * (bounds[:, 3] - bounds[:, 1] + 2)
    area = shapely.area(geoms_px)
    todo = (area >= 2 * min_area_px) & (box_px <= MAX_SPLIT_PX)
    if prob is None:  # a convex outline has no neck: only a probability dip could split it
        todo &= area < shapely.area(shapely.convex_hull(geoms_px)) - 1e-6
    split: dict[int, np.ndarray | None] = {}
    polygon = shapely.get_type_id(geoms_px) == 3  # a traced region; anything else alone
    batches, alone = _batches(bounds, np.flatnonzero(todo & polygon))
    alone.extend(np.flatnonzero(todo & ~polygon).tolist())
    blocks = (_batch_block(geoms_px[b], (classes, prob), size) for b in batches)
    work = partial(_split_batch, value=value, pixel_m=pixel_m, opts=opts)
    for batch, (pieces, missed) in zip(batches, ordered_map(work, blocks)):
        split.update((int(batch[j]), g) for j, g in pieces.items())
        alone.extend(batch[missed].tolist())
    crops = (_component_crop(geoms_px[i], value, (classes, prob), size) for i in alone)
    work = partial(_split_crop, pixel_m=pixel_m, opts=opts)
    split.update(zip(alone, ordered_map(work, crops)))
    if len(geoms_px) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    out = [split.get(i) for i in range(len(geoms_px))]
    out = [np.array([g], dtype=object) if p is None else p for g, p in zip(geoms_px, out)]
    src = [np.full(len(p), i, dtype=np.int64) for i, p in enumerate(out)]
    return np.concatenate(out), np.concatenate(src)


def _batches(bounds: np.ndarray, todo: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Outlines to split grouped by the block of :data:`BATCH_PX` their corner falls in.

    Returns ``(batches, alone)``: arrays of positions split together, and the positions of
    outlines wider or taller than half a block (split one by one).
    """
    extent = np.maximum(bounds[todo, 2] - bounds[todo, 0], bounds[todo, 3] - bounds[todo, 1])
    big = extent > BATCH_PX // 2
    alone = todo[big].tolist()
    small = todo[~big]
    cells = np.floor(bounds[small][:, [1, 0]] / BATCH_PX).astype(np.int64)
    if len(small) == 0:
        return [], alone
    _, inverse = np.unique(cells, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    cuts = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(small[order], cuts), alone


def _batch_block(
    geoms: np.ndarray, read: tuple[BlockReader, BlockReader | None], size: tuple[int, int]
) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray | None]:
    """``(geoms, row0, col0, classes, prob)``: the block under a batch of outlines, read.

    The block spans the outlines' bounding boxes with a one-pixel margin; ``read`` is the
    reader of the class values and that of the building probability (or None).
    """
    box = np.round(shapely.bounds(geoms)).astype(np.int64)  # col0, row0, col1, row1
    r0, c0 = int(box[:, 1].min()) - 1, int(box[:, 0].min()) - 1
    shape = (int(box[:, 3].max()) + 1 - r0, int(box[:, 2].max()) + 1 - c0)
    probs = None if read[1] is None else _crop(read[1], r0, c0, shape, size)
    return geoms, r0, c0, _crop(read[0], r0, c0, shape, size), probs


def _split_batch(
    block: tuple[np.ndarray, int, int, np.ndarray, np.ndarray | None],
    value: int,
    pixel_m: tuple[float, float],
    opts: SeparationOptions,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Split a batch of outlines in one call, given the block under them (:func:`_batch_block`).

    The block is labelled once; each outline's region is cut out of it with a one-pixel
    margin, as :func:`split_mask` gets it alone, and the crops are packed side by side into
    one mosaic that is split in one call: the distance transform (a region's nearest outside
    pixel is in its margin), the regional maxima, the watershed and the merging are all
    4-connected, so no region sees another. The only difference from one call per region is
    the order in which the watershed floods pixels of equal height: a few pixels of a
    watershed line may fall to the other side.

    Returns:
        ``(pieces, missed)``: the pieces of each outline that splits, by its position in the
        batch, and the positions of outlines that match no region of the block (to be split
        alone).
    """
    geoms, r0, c0, classes, probs = block
    box = np.round(shapely.bounds(geoms)).astype(np.int64)  # col0, row0, col1, row1
    lab, n = ndimage.label(classes == value, structure=_CROSS)
    first = _first_pixel(geoms) - [r0, c0]  # each outline's first pixel in raster order
    comp = lab[first[:, 0], first[:, 1]]
    comp[np.bincount(lab.ravel(), minlength=n + 1)[comp] != np.round(shapely.area(geoms))] = 0
    box = box[comp > 0] - [c0 + 1, r0 + 1, c0 - 1, r0 - 1]  # in block pixels, with a margin
    sizes = np.stack([box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]], axis=1)
    corners, mosaic_shape = _pack(sizes) if len(box) else (sizes, (0, 0))
    members = np.flatnonzero(comp > 0)
    owner, p = _mosaic(lab, comp[members], box, corners, mosaic_shape, probs)
    owner[owner > 0] = members[owner[owner > 0] - 1] + 1  # position in the batch + 1
    places = [(slice(y, y + h), slice(x, x + w)) for (y, x), (h, w) in zip(corners, sizes)]
    labels = split_mask(owner > 0, pixel_m, opts, p) if len(box) else owner
    instance_of = np.zeros(int(labels.max()) + 1, dtype=np.int64)  # instance -> member + 1
    instance_of[labels[owner > 0]] = owner[owner > 0]
    count = np.bincount(instance_of[1:], minlength=len(geoms) + 1)
    pieces = {}
    for j, m in enumerate(members.tolist()):
        if count[m + 1] > 1:  # ranked 1..n in raster order, as its own crop numbers them
            ranked = np.unique(labels[places[j]], return_inverse=True)[1].reshape(sizes[j])
            rows, cols = int(box[j, 1]) + r0, int(box[j, 0]) + c0
            pieces[m] = _pieces(ranked.astype(np.int32), rows, cols)
    return pieces, np.flatnonzero(comp == 0)


def _mosaic(
    lab: np.ndarray,
    comps: np.ndarray,
    box: np.ndarray,
    corners: np.ndarray,
    shape: tuple[int, int],
    probs: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Regions ``comps`` of the labelled block ``lab`` placed into a mosaic of ``shape``.

    Region ``comps[j]`` (its box ``box[j]``, block columns and rows with the margin, goes to
    ``corners[j]``) is marked ``j + 1`` in the returned int64 mosaic, and its pixels'
    probabilities copied (0 elsewhere: the height surface is 0 outside a region anyway).
    """
    index = np.full(int(lab.max()) + 1, -1, dtype=np.int64)
    index[comps] = np.arange(len(comps))
    flat = np.flatnonzero(lab)
    j = index[lab.ravel()[flat]]
    flat, j = flat[j >= 0], j[j >= 0]
    rows, cols = np.divmod(flat, lab.shape[1])
    to_r = rows - box[j, 1] + corners[j, 0]
    to_c = cols - box[j, 0] + corners[j, 1]
    owner = np.zeros(shape, dtype=np.int64)
    owner[to_r, to_c] = j + 1
    if probs is None:
        return owner, None
    p = np.zeros(shape, dtype=np.float32)
    p[to_r, to_c] = probs[rows, cols]
    return owner, p


def _first_pixel(geoms: np.ndarray) -> np.ndarray:
    """``(row, col)`` of each traced outline's first pixel in raster order.

    The top-left corner of that pixel is the outline's vertex of the smallest row, then
    column: a traced outline follows pixel edges, and no hole reaches its top row.
    """
    xy, index = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    order = np.lexsort((xy[:, 0], xy[:, 1], index))
    starts = np.searchsorted(index[order], np.arange(len(geoms)))
    corner = xy[order[starts]]
    return np.round(corner[:, ::-1]).astype(np.int64)


def _pack(sizes: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners that place rectangles ``(h, w)`` side by side in rows, tallest first.

    Returns the corners and the ``(height, width)`` of the mosaic, about as wide as tall.
    """
    width = max(int(sizes[:, 1].max()), int(np.ceil(np.sqrt(np.prod(sizes, axis=1).sum()))))
    corners = np.zeros_like(sizes)
    y = x = shelf = 0
    for i in np.argsort(-sizes[:, 0], kind="stable").tolist():
        h, w = sizes[i].tolist()
        if x + w > width:
            y, x, shelf = y + shelf, 0, 0
        corners[i] = (y, x)
        x, shelf = x + w, max(shelf, h)
    return corners, (y + shelf, width)


def _pieces(labels: np.ndarray, r0: int, c0: int) -> np.ndarray | None:
    """The polygons (pixel coordinates) of instance labels, or None for a single instance."""
    if labels.max() <= 1:
        return None
    items = list(rasterio.features.shapes(labels, mask=labels > 0, connectivity=4))
    geoms, _ = polygons_from_shapes(items, offset=(float(c0), float(r0)))
    return geoms
