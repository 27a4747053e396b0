"""Road centre lines: skeleton graph -> spurs pruned -> gaps bridged -> simplified lines.

:func:`road_network` takes the skeleton collected by
:class:`~geounet.vectorizing.skeleton.SkeletonCollector` and returns a ``networkx.MultiGraph`` in
metres whose edges are the road lines between junctions and ends:

1. the pixel graph of :func:`~geounet.vectorizing.skeleton.trace_skeleton`, node and edge
   coordinates in the metric frame (a junction is the centroid of its pixels, shared by its edges);
2. *spurs* (an edge from a junction to a free end, shorter than ``spur_length_m``) are
   removed shortest first, and the edges through a node left with two edges are joined,
   again until none is left (the default threshold is twice the typical road width,
   estimated from the distance transform along the skeleton);
3. *gaps* are bridged: two free ends closer than ``gap_m`` whose directions point at each
   other, else a free end whose direction runs into another line within ``gap_m`` (default
   :data:`GAP_WIDTHS` road widths: a network's masks break most where a road meets another,
   and each break cuts every route through it);
4. isolated fragments shorter than ``spur_length_m`` are dropped.

:func:`network_lines` turns the graph into simplified LineStrings; lines meeting at a
junction share its exact coordinates, so the network stays connected.

Example:
    >>> import numpy as np
    >>> from affine import Affine
    >>> from rasterio.crs import CRS
    >>> from geounet.io.geo import MetricFrame
    >>> frame = MetricFrame.from_grid(CRS.from_epsg(32616), Affine(1, 0, 0, 0, -1, 0), 41, 41)
    >>> mask = np.zeros((41, 41), bool); mask[18:23, 2:39] = True; mask[2:39, 18:23] = True
    >>> from skimage.morphology import skeletonize
    >>> idx = np.flatnonzero(skeletonize(mask))
    >>> g = road_network(idx, np.full(idx.size, 2.5), frame, width=41, spur_length_m=10)
    >>> sorted(d for _, d in g.degree())
    [1, 1, 1, 1, 4]
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import shapely
from scipy.spatial import cKDTree

from geounet.io.geo import MetricFrame
from geounet.vectorizing.skeleton import trace_skeleton

__all__ = ["GAP_WIDTHS", "estimate_road_width", "network_lines", "road_network"]

#: Largest gap bridged by default, in typical road widths (about 23 m for a 4 m road). On
#: the Las Vegas road scenes of ``benchmarks/recipe.py`` (a model trained on the top half,
#: the bottom half mapped) the spur length (2 widths), the earlier default, left aisles
#: ending short of the road they meet: APLS 0.365 on average over five models; 6 widths:
#: 0.610 (4: 0.544, 8: 0.595), quality 0.629 -> 0.631, correctness -0.026
#: (benchmarks/README, twenty-first round). On the true mask of the RGB tile, whose roads
#: have no breaks, it adds 35 m of bridges to 4 428 m of lines.
GAP_WIDTHS = 6.0


def estimate_road_width(half_width_m: np.ndarray, pixel_m: float) -> float:
    """Typical road width (m): twice the median distance to the edge along the skeleton.

    The distance transform at a centre pixel counts up to the first pixel off the road, so
    half a pixel is taken off on each side.
    """
    if half_width_m.size == 0:
        return 0.0
    return float(max(2 * np.median(half_width_m) - pixel_m, pixel_m))


def _edge_data(xy: np.ndarray, conf: tuple[float, float], start: int) -> dict:
    d = np.diff(xy, axis=0)
    return {
        "xy": xy,
        "length": float(np.hypot(d[:, 0], d[:, 1]).sum()),
        "conf": conf,
        "start": start,
    }


def _oriented(g: nx.MultiGraph, u: int, v: int, k: int, start: int) -> np.ndarray:
    """The coordinates of edge (u, v, k) running from node ``start``."""
    d = g.edges[u, v, k]
    return d["xy"] if d["start"] == start else d["xy"][::-1]


def _build_graph(
    idx: np.ndarray, frame: MetricFrame, width: int, confidence: np.ndarray | None
) -> nx.MultiGraph:
    nodes, edges = trace_skeleton(idx, width)
    rows, cols = np.divmod(idx, width)
    px = np.column_stack([cols + 0.5, rows + 0.5])
    node_px = np.array([px[p].mean(axis=0) for p in nodes]).reshape(-1, 2)
    coords = [node_px] + [px[e.pixels[1:-1]] for e in edges]
    metric = frame.pixel_to_metric(np.vstack(coords)) if len(node_px) else np.empty((0, 2))
    node_xy = metric[: len(node_px)]
    g = nx.MultiGraph()
    for i, xy in enumerate(node_xy):
        g.add_node(i, xy=xy)
    offset = len(node_px)
    for e in edges:
        inner = metric[offset : offset + len(e.pixels) - 2]
        offset += len(e.pixels) - 2
        xy = np.vstack([node_xy[e.u], inner, node_xy[e.v]])
        conf = (
            (float(confidence[e.pixels].sum()), len(e.pixels))
            if confidence is not None
            else (0.0, 0)
        )
        g.add_edge(e.u, e.v, **_edge_data(xy, conf, e.u))
    return g


def _join_through(g: nx.MultiGraph, n: int) -> None:
    """Replace the two edges of a node of degree 2 (no self-loop) by one edge."""
    (a, _, k1), (b, _, k2) = [(o, n, k) for _, o, k in g.edges(n, keys=True)]
    first = _oriented(g, a, n, k1, a)
    second = _oriented(g, n, b, k2, n)
    c1, c2 = g.edges[a, n, k1]["conf"], g.edges[n, b, k2]["conf"]
    g.remove_node(n)
    xy = np.vstack([first, second[1:]])
    g.add_edge(a, b, **_edge_data(xy, (c1[0] + c2[0], c1[1] + c2[1]), a))


def _join_all(g: nx.MultiGraph) -> None:
    for n in [n for n, d in g.degree() if d == 2]:
        if g.degree(n) == 2 and not g.has_edge(n, n):
            _join_through(g, n)


def _prune(g: nx.MultiGraph, spur_m: float) -> int:
    """Remove spurs shortest first until none is left; return how many were removed."""
    removed = 0
    while True:
        spurs = sorted(
            (d["length"], u, v, k)
            for u, v, k, d in g.edges(keys=True, data=True)
            if u != v and d["length"] < spur_m and sorted((g.degree(u), g.degree(v)))[0] == 1
        )
        count = 0
        for _, u, v, k in spurs:
            end, other = (u, v) if g.degree(u) == 1 else (v, u)
            if g.has_edge(u, v, k) and g.degree(end) == 1 and g.degree(other) >= 3:
                g.remove_edge(u, v, k)
                g.remove_node(end)
                count += 1
        if not count:
            return removed
        removed += count
        _join_all(g)


def _end_direction(g: nx.MultiGraph, n: int, look_m: float) -> np.ndarray:
    """Unit vector pointing out of free end ``n`` along its edge (over ``look_m``)."""
    _, o, k = next(iter(g.edges(n, keys=True)))
    xy = _oriented(g, n, o, k, n)
    seg = np.hypot(*np.diff(xy, axis=0).T)
    j = min(int(np.searchsorted(np.cumsum(seg), look_m)) + 1, len(xy) - 1)
    v = xy[0] - xy[j]
    norm = np.hypot(*v)
    return v / norm if norm > 0 else v


def _bridge_ends(
    g: nx.MultiGraph, ends: list[int], dirs: dict, gap_m: float, cos_max: float
) -> set:
    """Join pairs of free ends that face each other; return the ends used."""
    xy = np.array([g.nodes[n]["xy"] for n in ends])
    pairs = []
    for i, j in cKDTree(xy).query_pairs(gap_m):
        a, b = ends[i], ends[j]
        w = xy[j] - xy[i]
        dist = float(np.hypot(*w))
        if dist == 0 or g.has_edge(a, b):
            continue
        if dirs[a] @ w / dist >= cos_max and dirs[b] @ -w / dist >= cos_max:
            pairs.append((dist, a, b))
    used: set = set()
    for _, a, b in sorted(pairs):
        if a not in used and b not in used:
            used |= {a, b}
            g.add_edge(
                a, b, **_edge_data(np.array([g.nodes[a]["xy"], g.nodes[b]["xy"]]), (0.0, 0), a)
            )
    return used


def _split_edge(g: nx.MultiGraph, u: int, v: int, k: int, point: shapely.Point) -> int:
    """Split edge (u, v, k) at ``point`` (on it); return the new node."""
    xy = _oriented(g, u, v, k, u)
    conf = g.edges[u, v, k]["conf"]
    line = shapely.LineString(xy)
    s = line.project(point)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    j = int(np.searchsorted(cum, s, side="right"))
    p = np.array([point.x, point.y])
    share = s / max(cum[-1], 1e-9)
    g.remove_edge(u, v, k)
    m = max(g.nodes) + 1
    g.add_node(m, xy=p)
    # the pixels' sum and count are shared alike (a float count), so both parts keep the
    # edge's mean; a rounded count gave a short part a mean above 1 or none at all
    first = (conf[0] * share, conf[1] * share)
    g.add_edge(u, m, **_edge_data(np.vstack([xy[:j], p]), first, u))
    rest = (conf[0] - first[0], conf[1] - first[1])
    g.add_edge(m, v, **_edge_data(np.vstack([p, xy[j:]]), rest, m))
    return m


def _bridge_to_lines(g: nx.MultiGraph, ends: list[int], dirs: dict, gap_m: float) -> None:
    """Extend free ends along their direction onto another line within ``gap_m``."""
    index = _EdgeIndex(g)
    for n in ends:
        if g.degree(n) != 1:
            continue
        a = shapely.Point(g.nodes[n]["xy"])
        ray = shapely.LineString([a.coords[0], g.nodes[n]["xy"] + dirs[n] * gap_m])
        best = None
        for edge in sorted(index.crossing(ray), key=_edge_order):
            u, v, k = edge
            if n in (u, v):
                continue
            hit = shapely.intersection(ray, shapely.LineString(g.edges[edge]["xy"]))
            dist = shapely.distance(a, hit)
            if best is None or dist < best[0]:
                best = (dist, u, v, k, shapely.shortest_line(a, hit).coords[1])
        if best is None:
            continue
        _, u, v, k, hit_xy = best
        target = _snap_or_split(g, u, v, k, shapely.Point(hit_xy), gap_m / 4)
        if target not in (u, v):  # the edge was split in two at the new node
            index.replace((u, v, k), list(g.edges(target, keys=True)))
        xy = np.array([a.coords[0], g.nodes[target]["xy"]])
        index.add([(n, target, g.add_edge(n, target, **_edge_data(xy, (0.0, 0), n)))])


def _edge_order(edge: tuple) -> tuple:
    """A sort key of an edge that does not depend on how the graph or its index list it."""
    u, v, k = edge
    return (min(u, v), max(u, v), k)


class _EdgeIndex:
    """A spatial index of the graph's edges kept up to date as edges are split and added.

    Rebuilding an STR tree after each bridge made bridging quadratic in the number of lines
    (a noisy class raster of 1 800 road pieces: 500 rebuilds of 3 000 lines, half a minute);
    here the edges added since the last build are tested apart (one vectorized call) and the
    tree is rebuilt only once they are a quarter of it.
    """

    def __init__(self, g: nx.MultiGraph) -> None:
        self.g = g
        self._build()

    def _build(self) -> None:
        self.keys = list(self.g.edges(keys=True))
        self.tree = shapely.STRtree([shapely.LineString(self.g.edges[e]["xy"]) for e in self.keys])
        self.position = {e: i for i, e in enumerate(self.keys)}
        self.removed: set[int] = set()
        self.extra: dict[tuple, shapely.LineString] = {}

    def crossing(self, ray: shapely.LineString) -> list[tuple]:
        """The current edges whose line intersects ``ray`` (tree order, then newest last)."""
        found = [
            self.keys[i]
            for i in self.tree.query(ray, predicate="intersects").tolist()
            if i not in self.removed
        ]
        if not self.extra:
            return found
        hits = shapely.intersects(np.array(list(self.extra.values())), ray)
        return found + [e for e, hit in zip(self.extra, hits.tolist()) if hit]

    def replace(self, old: tuple, new: list[tuple]) -> None:
        """Edge ``old`` is gone from the graph; ``new`` edges took its place."""
        if self.extra.pop(old, None) is None:
            self.removed.add(self.position[old])
        self.add(new)

    def add(self, new: list[tuple]) -> None:
        """Edges added to the graph."""
        for e in new:
            self.extra[e] = shapely.LineString(self.g.edges[e]["xy"])
        if len(self.extra) > max(64, len(self.keys) // 4):
            self._build()


def _snap_or_split(
    g: nx.MultiGraph, u: int, v: int, k: int, p: shapely.Point, snap_m: float
) -> int:
    """The end of edge (u, v, k) nearest ``p`` if within ``snap_m``, else a new node there."""
    dist, node = min((float(np.hypot(*(g.nodes[n]["xy"] - [p.x, p.y]))), n) for n in (u, v))
    return node if dist <= snap_m else _split_edge(g, u, v, k, p)


def _bridge(g: nx.MultiGraph, gap_m: float, look_m: float, max_angle_deg: float = 35.0) -> None:
    ends = [n for n, d in g.degree() if d == 1]
    if not ends or gap_m <= 0:
        return
    dirs = {n: _end_direction(g, n, look_m) for n in ends}
    cos_max = float(np.cos(np.radians(max_angle_deg)))
    used = _bridge_ends(g, ends, dirs, gap_m, cos_max)
    _bridge_to_lines(g, [n for n in ends if n not in used], dirs, gap_m)


def _drop_fragments(g: nx.MultiGraph, min_length_m: float) -> None:
    for comp in list(nx.connected_components(g)):
        sub = g.subgraph(comp)
        if sum(d["length"] for _, _, d in sub.edges(data=True)) < min_length_m:
            g.remove_nodes_from(comp)


def _drop_unsure_ends(g: nx.MultiGraph, min_confidence: float) -> int:
    """Remove dead-end and lone lines whose mean confidence is under ``min_confidence``.

    One pass over the lines as they are (a line left a dead end by the removal stays); lines
    between two junctions are kept whatever their confidence, since they carry the
    network's connections. Returns how many lines were removed.
    """
    if min_confidence <= 0:
        return 0
    unsure = [
        (u, v, k)
        for u, v, k, d in g.edges(keys=True, data=True)
        if u != v
        and d["conf"][1]
        and d["conf"][0] / d["conf"][1] < min_confidence
        and min(g.degree(u), g.degree(v)) == 1
    ]
    g.remove_edges_from(unsure)
    g.remove_nodes_from([n for n, deg in list(g.degree()) if deg == 0])
    _join_all(g)
    return len(unsure)


def road_network(
    idx: np.ndarray,
    half_width_m: np.ndarray,
    frame: MetricFrame,
    *,
    width: int,
    spur_length_m: float | None = None,
    gap_m: float | None = None,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> nx.MultiGraph:
    """The cleaned road graph of a skeleton, in metres (see the module docstring).

    Args:
        idx: Sorted global pixel indices of the skeleton.
        half_width_m: Distance to the road edge at each skeleton pixel (m).
        frame: The raster's metric frame.
        width: Raster width (``idx`` is ``row * width + col``).
        spur_length_m: Spurs shorter than this are pruned (default: 2x the road width).
        gap_m: Largest gap bridged (default: :data:`GAP_WIDTHS` road widths, at least the
            spur length; 0 bridges nothing).
        confidence: Class probability (0-1) at each skeleton pixel, for ``mean_confidence``.
        min_confidence: With ``confidence``, lines that end (or stand alone) and whose mean
            probability is lower are removed last (0: none; see
            :data:`~geounet.vectorizing.confidence.ROAD_CONFIDENCE`).

    Returns:
        A ``networkx.MultiGraph``; nodes have ``xy``, edges ``xy`` (coordinates from node
        ``start``), ``length`` (m) and ``conf`` (sum, count). The graph attributes
        ``spur_length_m``, ``road_width_m`` and ``gap_m`` record the thresholds used,
        ``unsure_removed`` how many lines ``min_confidence`` removed.
    """
    road_w = estimate_road_width(half_width_m, frame.pixel_size)
    spur = spur_length_m if spur_length_m is not None else 2 * road_w
    gap = gap_m if gap_m is not None else max(GAP_WIDTHS * road_w, spur)
    g = _build_graph(idx, frame, width, confidence)
    g.graph.update(spur_length_m=spur, road_width_m=road_w, gap_m=gap)
    _join_all(g)
    _prune(g, spur)
    _bridge(g, gap, look_m=max(2 * road_w, 3 * frame.pixel_size))
    _join_all(g)
    _prune(g, spur)
    _drop_fragments(g, spur)
    g.graph["unsure_removed"] = _drop_unsure_ends(g, min_confidence)
    return g


def network_lines(g: nx.MultiGraph, simplify_m: float) -> tuple[np.ndarray, np.ndarray]:
    """``(LineStrings in metres, mean confidence or NaN)`` of the edges of a road graph."""
    data = [d for _, _, d in g.edges(data=True)]
    lines = np.array([shapely.LineString(d["xy"]) for d in data], dtype=object)
    if simplify_m and len(lines):
        lines = shapely.simplify(lines, simplify_m, preserve_topology=True)
    conf = np.array([d["conf"][0] / d["conf"][1] if d["conf"][1] else np.nan for d in data])
    return lines, conf
