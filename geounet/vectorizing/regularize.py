"""Building regularization: dominant orientation, right angles, rectangle fallback.

A traced building outline is a pixel staircase. :func:`regularize_buildings` turns it into
the outline an analyst would digitize:

1. simplify it (Douglas-Peucker, at least one pixel) and find its *dominant orientation*
   ``theta``: the angle that best aligns the edges modulo 90°, weighted by length
   (closed form: ``theta = atan2(sum l sin 4a, sum l cos 4a) / 4``);
2. *orthogonalize* (:func:`orthogonalize_ring`): rotate by ``-theta``, call each edge
   horizontal or vertical, merge runs of edges of the same direction into one line at their
   length-weighted mean position, drop runs shorter than ``min_edge`` (two parallel
   neighbours merge), rebuild the vertices at the intersections of consecutive lines and
   rotate back: every corner is a right angle;
3. keep the result only if it stays close to the traced shape (IoU >= ``min_iou``).
   Buildings with a cut corner or a slanted wall fail that test; for them the edges more
   than ``max_snap_deg`` off both axes stay free lines while the others snap (right angles
   wherever two snapped walls meet), under the same test;
4. the minimum rotated rectangle replaces the result when it fits about as well (IoU >=
   ``rect_iou`` and at most ``prefer_rect`` below), and is the fallback when both fail;
   otherwise the simplified traced outline is kept.

Example:
    >>> import shapely
    >>> ell = shapely.Polygon([(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)])
    >>> out = regularize_buildings(np.array([ell]), pixel_m=0.5)
    >>> len(out[0].exterior.coords) - 1
    6
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import NamedTuple

import numpy as np
import shapely

from geounet.vectorizing.polygons import largest_polygon, simplify_polygons

__all__ = ["dominant_angle", "orthogonalize_ring", "regularize_buildings", "start_at_corner"]

_H, _V, _D = 0, 1, 2  # run kinds: horizontal, vertical, free (diagonal)
_AXES = {_H: (1.0, 0.0), _V: (0.0, 1.0)}
_PARALLEL = 0.2  # |sin| below which two free lines count as one (about 11.5°)
COARSE_PX = 1.5  # tolerance (pixels) of the outline regularization starts from


def dominant_angle(ring: np.ndarray) -> float:
    """The orientation (radians, in ``[-pi/4, pi/4]``) best aligning the ring's edges mod 90°.

    Example:
        >>> c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
        >>> r = np.array([[0, 0], [4 * c, 4 * s], [4 * c - s, 4 * s + c], [-s, c], [0, 0]])
        >>> round(float(np.degrees(dominant_angle(r))), 6)
        30.0
    """
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    a4 = 4 * np.arctan2(d[:, 1], d[:, 0])
    return float(np.arctan2((length * np.sin(a4)).sum(), (length * np.cos(a4)).sum()) / 4)


class _Runs:
    """Consecutive edges of a (rotated) closed ring as lines.

    Each run is ``[kind, x, y, dx, dy, length]``: a line through ``(x, y)`` with unit
    direction ``(dx, dy)`` (``(1, 0)`` for horizontal, ``(0, 1)`` for vertical runs). Plain
    floats: these rings have a handful of edges and numpy's per-call cost would dominate.
    """

    def __init__(self, p: np.ndarray | list, max_snap_deg: float, steps: bool = False) -> None:
        tan_snap = float(np.tan(np.radians(min(max_snap_deg, 45.0))))
        self.runs: list[list] = []
        pts = p.tolist() if isinstance(p, np.ndarray) else p
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            dx, dy = x1 - x0, y1 - y0
            ln = math.hypot(dx, dy)
            if ln <= 1e-9:
                continue
            ax, ay = abs(dx), abs(dy)
            kind = _H if ay <= ax else _V
            if min(ax, ay) > tan_snap * max(ax, ay) and max_snap_deg < 45:
                kind = _D
            if kind == _D and steps:
                self._add_step(x0, y0, dx, dy)
            elif kind == _D:
                self._add([_D, x0 + dx / 2, y0 + dy / 2, dx / ln, dy / ln, ln])
            else:
                self._add([kind, x0 + dx / 2, y0 + dy / 2, *_AXES[kind], ln])
        runs = self.runs
        if len(runs) > 1 and self._same_line(runs[0], runs[-1]):
            self._merge(runs[0], runs.pop())

    def _add(self, run: list) -> None:
        if self.runs and self._same_line(self.runs[-1], run):
            self._merge(self.runs[-1], run)
        else:
            self.runs.append(run)

    def _add_step(self, x0: float, y0: float, dx: float, dy: float) -> None:
        """A slanted edge as a Z of three axis runs (errors on both sides cancel)."""
        if abs(dx) >= abs(dy):
            h = dx / 2
            self._add([_H, x0 + h / 2, y0, 1.0, 0.0, abs(h)])
            self._add([_V, x0 + h, y0 + dy / 2, 0.0, 1.0, abs(dy)])
            self._add([_H, x0 + 1.5 * h, y0 + dy, 1.0, 0.0, abs(h)])
        else:
            h = dy / 2
            self._add([_V, x0, y0 + h / 2, 0.0, 1.0, abs(h)])
            self._add([_H, x0 + dx / 2, y0 + h, 1.0, 0.0, abs(dx)])
            self._add([_V, x0 + dx, y0 + 1.5 * h, 0.0, 1.0, abs(h)])

    @staticmethod
    def _same_line(a: list, b: list) -> bool:
        """Whether run ``b`` continues the line of run ``a``."""
        if a[0] != b[0]:
            return False
        return a[0] != _D or abs(a[3] * b[4] - a[4] * b[3]) < _PARALLEL

    @staticmethod
    def _merge(a: list, b: list) -> None:
        """Merge parallel run ``b`` into ``a``: length-weighted position (and direction)."""
        la, lb = a[5], b[5]
        total = la + lb
        a[1] = (a[1] * la + b[1] * lb) / total
        a[2] = (a[2] * la + b[2] * lb) / total
        if a[0] == _D:
            sign = 1.0 if a[3] * b[3] + a[4] * b[4] >= 0 else -1.0
            dx, dy = a[3] * la + sign * b[3] * lb, a[4] * la + sign * b[4] * lb
            norm = math.hypot(dx, dy)
            a[3], a[4] = dx / norm, dy / norm
        a[5] = total

    def drop_short(self, min_edge: float) -> None:
        """Remove runs shorter than ``min_edge``, shortest first, while 4 runs remain."""
        runs = self.runs
        while len(runs) > 4:
            n = len(runs)
            # pixel outlines give many runs of equal length: rounding makes the order
            # (ties by position) immune to floating-point noise
            for k in sorted(range(n), key=lambda i: (round(runs[i][5], 9), i)):
                if runs[k][5] >= min_edge - 1e-9:  # a wall of exactly min_edge stays
                    return
                a, b = runs[(k - 1) % n], runs[(k + 1) % n]
                if self._same_line(a, b):  # two parallel walls: merge them
                    self._merge(a, b)
                    for i in sorted((k, (k + 1) % n), reverse=True):
                        del runs[i]
                    break
                if abs(a[3] * b[4] - a[4] * b[3]) >= _PARALLEL:  # the neighbours meet
                    del runs[k]
                    break
            else:
                return

    def vertices(self) -> np.ndarray | None:
        """Intersections of consecutive lines, or None if two consecutive lines are parallel."""
        runs = self.runs
        n = len(runs)
        if n < 3 or (n < 4 and all(r[0] != _D for r in runs)):
            return None
        out = []
        for i in range(n):
            _, x1, y1, u1, v1, _ = runs[i]
            _, x2, y2, u2, v2, _ = runs[(i + 1) % n]
            det = u2 * v1 - u1 * v2
            if abs(det) < 1e-6:
                return None
            t = (u2 * (y2 - y1) - v2 * (x2 - x1)) / det
            out.append((x1 + t * u1, y1 + t * v1))
        return np.array(out)


class _Ortho(NamedTuple):
    """An orthogonalized ring in the rotated frame: ``world = local @ rot.T + centre``."""

    local: np.ndarray  # (n + 1, 2) closed ring in the rotated frame
    centre: np.ndarray
    rot: np.ndarray
    rectilinear: bool  # every side parallel to an axis of the rotated frame

    def world(self) -> np.ndarray:
        return self.local @ self.rot.T + self.centre


def _orthogonalize(
    ring: np.ndarray, theta: float, min_edge: float, max_snap_deg: float, steps: bool
) -> _Ortho | None:
    c = ring[:-1].mean(axis=0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return _orthogonalize_local((ring - c) @ rot, c, rot, min_edge, max_snap_deg, steps)


def _orthogonalize_local(
    local: np.ndarray | list,
    centre: np.ndarray,
    rot: np.ndarray,
    min_edge: float,
    max_snap_deg: float,
    steps: bool,
) -> _Ortho | None:
    """:func:`orthogonalize_ring` of a ring already in the rotated frame."""
    runs = _Runs(local, max_snap_deg, steps)
    kinds = {r[0] for r in runs.runs}
    if _D not in kinds and len(kinds) < 2:
        return None
    runs.drop_short(min_edge)
    verts = runs.vertices()
    if verts is None:
        return None
    rectilinear = all(r[0] != _D for r in runs.runs)
    if rectilinear:  # exact corners: x of the vertical line, y of the horizontal one
        rr = runs.runs
        for i in range(len(rr)):
            a, b = rr[i], rr[(i + 1) % len(rr)]
            h, v = (a, b) if a[0] == _H else (b, a)
            verts[i] = (v[1], h[2])
    return _Ortho(np.vstack([verts, verts[:1]]), centre, rot, rectilinear)


def orthogonalize_ring(
    ring: np.ndarray,
    theta: float,
    min_edge: float,
    max_snap_deg: float = 45.0,
    steps: bool = False,
) -> np.ndarray | None:
    """Snap a closed ring to right angles in the frame rotated by ``theta``.

    Args:
        ring: ``(n, 2)`` closed ring (first point repeated last), in metres.
        theta: Dominant orientation (radians).
        min_edge: Runs shorter than this are removed (parallel neighbours merge).
        max_snap_deg: Edges more than this off both axes stay free lines (45: snap all),
            or become steps.
        steps: Turn edges more than ``max_snap_deg`` off both axes into a Z of three axis
            runs (all corners right angles) instead of free lines.

    Returns:
        The closed regularized ring, or None when no valid ring with 4+ sides results.

    Example:
        >>> sq = np.array([[0, 0], [4, 0.2], [4, 4], [0.1, 4], [0, 0]], dtype=float)
        >>> orthogonalize_ring(sq, 0.0, 1.0).round(2).tolist()
        [[4.0, 0.1], [4.0, 4.0], [0.05, 4.0], [0.05, 0.1], [4.0, 0.1]]
    """
    ortho = _orthogonalize(ring, theta, min_edge, max_snap_deg, steps)
    return None if ortho is None else ortho.world()


def _slab_rects(local: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Rectangles ``(x0, y0, x1, y1)`` exactly tiling a simple rectilinear closed ring."""
    if len(local) == 5:  # a rectangle
        (x0, y0), (x1, y1) = local.min(axis=0), local.max(axis=0)
        return [(x0, y0, x1, y1)]
    pts = local[:-1].tolist()
    n = len(pts)
    ys = sorted({y for _, y in pts})
    verticals = [
        (pts[i][0], min(pts[i][1], pts[(i + 1) % n][1]), max(pts[i][1], pts[(i + 1) % n][1]))
        for i in range(n)
        if pts[i][0] == pts[(i + 1) % n][0]
    ]
    rects = []
    for y0, y1 in itertools.pairwise(ys):
        mid = (y0 + y1) / 2
        xs = sorted(x for x, lo, hi in verticals if lo < mid < hi)
        rects.extend((xs[k], y0, xs[k + 1], y1) for k in range(0, len(xs) - 1, 2))
    return rects


class _Coarse(NamedTuple):
    """The coarse outlines regularization starts from, unpacked once for all modes."""

    local: list  # closed exterior rings in each one's rotated frame, as lists (None: none)
    centre: np.ndarray  # (n, 2) centre of each rotated frame
    rot: np.ndarray  # (n, 2, 2): world = local @ rot.T + centre
    holes: dict[int, list[np.ndarray]]  # interior rings (world) of the polygons with some
    theta: np.ndarray  # dominant orientation of each shell

    @classmethod
    def of(cls, traced: np.ndarray, todo: np.ndarray, tolerance: float) -> _Coarse:
        """Simplify ``traced[todo]`` with ``tolerance`` (the others stay None)."""
        n = len(traced)
        polys = np.full(n, None, dtype=object)
        coarse = simplify_polygons(start_at_corner(traced[todo]), tolerance)
        polys[todo] = largest_polygon(coarse)  # a split outline: its largest part
        pos = np.flatnonzero(~shapely.is_missing(polys))
        local: list = [None] * n
        theta, centre, rot = np.zeros(n), np.zeros((n, 2)), np.zeros((n, 2, 2))
        if pos.size:
            coords, idx = shapely.get_coordinates(
                shapely.get_exterior_ring(polys[pos]), return_index=True
            )
            theta[pos] = _dominant_angles(coords, idx, pos.size)
            last = np.r_[idx[1:] != idx[:-1], True]  # the closing point of each ring
            counts = np.bincount(idx[~last], minlength=pos.size)
            sums = np.column_stack(
                [
                    np.bincount(idx[~last], weights=coords[~last, j], minlength=pos.size)
                    for j in (0, 1)
                ]
            )
            centre[pos] = sums / counts[:, None]
            cos, sin = np.cos(theta[pos]), np.sin(theta[pos])
            rot[pos] = np.stack([np.column_stack([cos, -sin]), np.column_stack([sin, cos])], 1)
            xy = np.einsum("ni,nij->nj", coords - centre[pos][idx], rot[pos][idx])
            cuts = (np.flatnonzero(np.diff(idx)) + 1).tolist()
            for k, ring in zip(pos.tolist(), np.split(xy, cuts)):
                local[k] = ring.tolist()
        holed = np.flatnonzero(shapely.get_num_interior_rings(polys) > 0)
        holes = {int(k): [np.asarray(r.coords) for r in polys[k].interiors] for k in holed}
        return cls(local, centre, rot, holes, theta)


def _dominant_angles(coords: np.ndarray, ring: np.ndarray, n: int) -> np.ndarray:
    """:func:`dominant_angle` of many closed rings at once (``ring``: owner of each point)."""
    d = np.diff(coords, axis=0)
    same = ring[1:] == ring[:-1]
    d, owner = d[same], ring[1:][same]
    length = np.hypot(d[:, 0], d[:, 1])
    a4 = 4 * np.arctan2(d[:, 1], d[:, 0])
    sin = np.bincount(owner, weights=length * np.sin(a4), minlength=n)
    cos = np.bincount(owner, weights=length * np.cos(a4), minlength=n)
    return np.arctan2(sin, cos) / 4


class _Candidate(NamedTuple):
    ortho: _Ortho
    holes: list[np.ndarray]


def _regularize_one(
    coarse: _Coarse, k: int, min_edge: float, max_snap_deg: float, steps: bool
) -> _Candidate | None:
    """The orthogonalized rings of coarse outline ``k``, or None (no polygon, no valid shell)."""
    if coarse.local[k] is None:
        return None
    mode = (min_edge, max_snap_deg, steps)
    ortho = _orthogonalize_local(coarse.local[k], coarse.centre[k], coarse.rot[k], *mode)
    if ortho is None:
        return None
    snapped = []
    for h in coarse.holes.get(k, []):
        hole = orthogonalize_ring(h, coarse.theta[k], *mode)
        snapped.append(h if hole is None else hole)
    return _Candidate(ortho, snapped)


def _build(cands: list[_Candidate | None]) -> np.ndarray:
    """The candidates as polygons, in bulk; None where missing or invalid."""
    out = np.full(len(cands), None, dtype=object)
    simple = [k for k, c in enumerate(cands) if c is not None and not c.holes]
    if simple:
        rings = [cands[k].ortho for k in simple]
        counts = np.fromiter((len(r.local) for r in rings), dtype=np.int64, count=len(rings))
        idx = np.repeat(np.arange(len(rings)), counts)
        centre, rot = np.array([r.centre for r in rings]), np.array([r.rot for r in rings])
        local = np.concatenate([r.local for r in rings])
        world = np.einsum("nj,nij->ni", local, rot[idx]) + centre[idx]
        out[simple] = shapely.polygons(shapely.linearrings(world, indices=idx))
    for k, c in enumerate(cands):
        if c is not None and c.holes:
            # holes differ in length: one Polygon, not the vectorized constructor
            with contextlib.suppress(ValueError, shapely.errors.GEOSException):
                out[k] = shapely.Polygon(c.ortho.world(), c.holes)
    bad = shapely.is_missing(out) | shapely.is_empty(out) | ~shapely.is_valid(out)
    out[bad] = None
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = shapely.area(shapely.intersection(a, b))
    return _ratio(a, b, inter)


def _ratio(a: np.ndarray, b: np.ndarray, inter: np.ndarray) -> np.ndarray:
    union = shapely.area(a) + shapely.area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.where(union > 0, inter / union, 0.0))


def _rect_intersections(
    traced: np.ndarray, cands: list[_Candidate]
) -> tuple[np.ndarray, np.ndarray]:
    """Area of ``traced[k] & cands[k].poly`` for rectilinear candidates, without overlay.

    Each traced shape is rotated into its candidate's frame, where the candidate is a union
    of axis-aligned rectangles (:func:`_slab_rects`); the rings are clipped by each
    rectangle (:func:`_clipped_area`), all at once.

    Returns:
        ``(positions in cands handled, their intersection areas)``.
    """
    pos, owner, boxes = [], [], []
    for k, cand in enumerate(cands):
        if cand is None or cand.holes or not cand.ortho.rectilinear:
            continue
        rects = _slab_rects(cand.ortho.local)
        if not rects:
            continue
        pos.append(k)
        owner.extend([len(pos) - 1] * len(rects))
        boxes.extend(rects)
    if not pos:
        return np.empty(0, np.int64), np.empty(0)
    sel = [cands[k] for k in pos]
    centre = np.array([c.ortho.centre for c in sel])
    rots = np.array([c.ortho.rot for c in sel])
    geoms = traced[np.asarray(pos)]
    n_rings = shapely.get_num_interior_rings(geoms) + 1
    xy, ring = shapely.get_coordinates(shapely.get_rings(geoms), return_index=True)
    closing = np.r_[ring[1:] != ring[:-1], True]
    xy, ring = xy[~closing], ring[~closing]  # open rings
    k = np.repeat(np.arange(len(pos)), n_rings)[ring]
    xy = np.einsum("ni,nij->nj", xy - centre[k], rots[k])
    part = _clipped_area(xy, ring, n_rings, np.asarray(owner), np.asarray(boxes))
    return np.asarray(pos), np.bincount(owner, weights=part, minlength=len(pos))


def _clipped_area(
    xy: np.ndarray, ring: np.ndarray, n_rings: np.ndarray, owner: np.ndarray, boxes: np.ndarray
) -> np.ndarray:
    """Area of polygon ``owner[j]`` inside ``boxes[j]`` (x0, y0, x1, y1), for every box ``j``.

    Sutherland-Hodgman clipping of every ring by every box of its polygon, vectorized; the
    clipped rings may carry degenerate edges along the box, which add no area, so the
    shoelace sums are exact. Holes run opposite to their shell (as traced and normalized).

    Args:
        xy: Points of open rings (no closing point), grouped by ring.
        ring: Ring of each point (sorted); the rings of polygon ``k`` follow those of ``k-1``.
        n_rings: Number of rings of each polygon.
        owner: Polygon of each box.
        boxes: ``(m, 4)`` boxes.
    """
    # one copy of the polygon's rings per box
    counts = np.bincount(ring, minlength=int(n_rings.sum()))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_ring = np.concatenate([[0], np.cumsum(n_rings)[:-1]])
    per_box = n_rings[owner]
    copies = np.repeat(first_ring[owner], per_box) + _ranges(per_box)  # ring of each copy
    box_of = np.repeat(np.arange(len(owner)), per_box)
    n_pts = counts[copies]
    pt = np.repeat(starts[copies], n_pts) + _ranges(n_pts)
    p, rid = xy[pt], np.repeat(np.arange(len(copies)), n_pts)
    for axis, col, sign in ((0, 0, 1.0), (0, 2, -1.0), (1, 1, 1.0), (1, 3, -1.0)):
        if not len(p):
            break
        bound = boxes[box_of[rid], col]
        nxt = _next_in_ring(rid)
        inside = sign * (p[:, axis] - bound) >= 0
        cross = inside != inside[nxt]
        q = p[nxt]
        with np.errstate(invalid="ignore", divide="ignore"):  # used only where crossing
            t = (bound - p[:, axis]) / (q[:, axis] - p[:, axis])
            hit = p + t[:, None] * (q - p)
        hit[:, axis] = bound  # exactly on the boundary
        keep = np.column_stack([inside, cross]).ravel()
        p = np.stack([p, hit], axis=1).reshape(-1, 2)[keep]
        rid = np.repeat(rid, 2)[keep]
    if not len(p):
        return np.zeros(len(owner))
    q = p[_next_in_ring(rid)]
    cross = p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]
    signed = np.bincount(box_of[rid], weights=cross, minlength=len(owner)) / 2
    return np.abs(signed)


def _ranges(n: np.ndarray) -> np.ndarray:
    """``concatenate([arange(k) for k in n])``."""
    ends = np.cumsum(n)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - n, n)


def _next_in_ring(rid: np.ndarray) -> np.ndarray:
    """Index of the next point of the same (open, cyclic) ring; ``rid`` is grouped."""
    idx = np.arange(len(rid))
    nxt = idx + 1
    last = np.r_[rid[1:] != rid[:-1], True]
    first = np.r_[True, rid[1:] != rid[:-1]]
    nxt[last] = idx[first]
    return nxt


def _candidates(
    coarse: _Coarse, traced: np.ndarray, todo: np.ndarray, min_edge: float, mode: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Regularized outlines of ``coarse[todo]`` (None where impossible) and their IoU."""
    out = np.full(len(traced), None, dtype=object)
    iou = np.zeros(len(traced))
    cands = [_regularize_one(coarse, k, min_edge, *mode) for k in todo.tolist()]
    out[todo] = polys = _build(cands)
    cands = [c if p is not None else None for c, p in zip(cands, polys)]
    fast, inter = _rect_intersections(traced[todo], cands)
    iou[todo[fast]] = _ratio(out[todo[fast]], traced[todo[fast]], inter)
    slow = np.setdiff1d(todo, todo[fast])
    out[slow] = shapely.simplify(out[slow], 1e-6)  # drop collinear and repeated points
    iou[slow] = _iou(out[slow], traced[slow])
    return out, iou


def start_at_corner(polys: np.ndarray) -> np.ndarray:
    """The polygons with each shell starting at its vertex farthest from the centroid.

    Douglas-Peucker always keeps a ring's first point; starting at an extreme vertex (a true
    corner) makes the simplified outline independent of where tracing began.

    Example:
        >>> ell = shapely.Polygon([(0, 1), (0, 0), (4, 0), (4, 1), (1, 1), (1, 3), (0, 3)])
        >>> start_at_corner(np.array([ell]))[0].exterior.coords[0]
        (4.0, 0.0)
    """
    n = len(polys)
    if n == 0:
        return polys
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(polys), return_index=True)
    counts = np.bincount(ring, minlength=n)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    open_ = np.ones(len(coords), dtype=bool)
    open_[first + counts - 1] = False  # drop each closing point
    coords, ring, counts = coords[open_], ring[open_], counts - 1
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    centre = shapely.get_coordinates(shapely.centroid(polys))
    dist = ((coords - centre[ring]) ** 2).sum(axis=1)
    shift = np.lexsort((-dist, ring))[first] - first
    k = np.arange(len(coords)) - first[ring]
    rolled = coords[first[ring] + (k + shift[ring]) % counts[ring]]
    closed = np.insert(rolled, first + counts, rolled[first], axis=0)
    shells = shapely.linearrings(closed, indices=np.repeat(np.arange(n), counts + 1))
    out = shapely.polygons(shells)
    holed = np.flatnonzero(shapely.get_num_interior_rings(polys) > 0)
    for i in holed:
        out[i] = shapely.Polygon(out[i].exterior, polys[i].interiors)
    return out


def _enclosing_rectangles(polys: np.ndarray) -> np.ndarray:
    """Minimum rotated rectangles; a polygon that is an upright rectangle is its own."""
    b = shapely.bounds(polys)
    upright = (shapely.get_num_coordinates(polys) == 5) & np.isclose(
        shapely.area(polys), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), rtol=1e-12, atol=0
    )
    out = polys.copy()
    out[~upright] = shapely.oriented_envelope(polys[~upright])
    return out


def regularize_buildings(
    traced: np.ndarray,
    *,
    pixel_m: float,
    simplify_m: float = 0.5,
    min_edge_m: float | None = None,
    min_iou: float = 0.85,
    max_snap_deg: float = 20.0,
    rect_iou: float = 0.9,
    prefer_rect: float = 0.02,
) -> np.ndarray:
    """Regularize building polygons (metric coordinates); see the module docstring.

    Args:
        traced: Traced (hole-filled) polygons, in metres.
        pixel_m: Pixel size in metres.
        simplify_m: The user's simplification tolerance (of the fallback outline).
        min_edge_m: Shortest wall kept (default: the larger of 1 m and 2 pixels).
        min_iou: Smallest IoU with the traced shape of an accepted regularized outline.
        max_snap_deg: Later tries: walls more than this off the dominant axes become steps,
            then stay free.
        rect_iou: Smallest IoU of an accepted minimum rotated rectangle.
        prefer_rect: Take the rectangle when its IoU is at most this much below the other
            regularized outline's.

    Returns:
        The regularized polygons, one per input.
    """
    if len(traced) == 0:
        return traced.copy()
    tol = max(simplify_m, COARSE_PX * pixel_m)
    min_edge = min_edge_m if min_edge_m is not None else max(1.0, 2 * pixel_m)
    rect = _enclosing_rectangles(traced)
    # the rectangle encloses the shape: IoU = area ratio, no overlay needed
    with np.errstate(invalid="ignore", divide="ignore"):
        iou_rect = np.nan_to_num(shapely.area(traced) / shapely.area(rect))
    out = np.full(len(traced), None, dtype=object)
    iou = np.zeros(len(traced))
    # rectangles within prefer_rect of a perfect fit win anyway: no need to try more
    todo = np.flatnonzero(iou_rect < 1 - prefer_rect)
    coarse = _Coarse.of(traced, todo, tol)
    # right angles only; then slanted walls as steps; then slanted walls kept
    for mode in ((45.0, False), (max_snap_deg, True), (max_snap_deg, False)):
        cand, cand_iou = _candidates(coarse, traced, todo, min_edge, mode)
        out[todo], iou[todo] = cand[todo], cand_iou[todo]
        todo = todo[cand_iou[todo] < min_iou]
        if todo.size == 0:
            break
    ok = iou >= min_iou
    use_rect = (iou_rect >= rect_iou) & (~ok | (iou_rect >= iou - prefer_rect))
    fallback = np.flatnonzero(~ok & ~use_rect)
    out[fallback] = simplify_polygons(traced[fallback], simplify_m)
    out[use_rect] = rect[use_rect]
    # whatever happened above, every building stays one valid polygon
    # (candidates and simplified outlines were validated; a rectangle of a shape with an
    # area is valid)
    bad = np.flatnonzero((shapely.get_type_id(out) != 3) | shapely.is_empty(out))
    out[bad] = simplify_polygons(traced[bad], simplify_m)
    return out
