"""APLS, the Average Path Length Similarity of two road networks (SpaceNet-3).

Definition (Van Etten, Lindenbaum and Bacastow, "SpaceNet: A Remote Sensing Dataset and
Challenge Series", arXiv:1807.01232, 2018; CosmiQ Works' reference code ``CosmiQ/apls``)::

    APLS = 1 - 1/N * sum over node pairs (a, b) of min(1, |L(a, b) - L(a', b')| / L(a, b))

where ``L(a, b)`` is the length of the shortest path between ``a`` and ``b`` in the graph
that holds them, ``a'`` and ``b'`` are the nodes they snap to in the other graph, and a pair
with no counterpart path (a node that snaps nowhere, or no path between the snapped nodes)
takes the maximum penalty 1. The sum runs over all ordered pairs of control nodes that are
connected in the first graph. The score is computed both ways, truth -> proposal (penalises
missing roads and broken connections) and proposal -> truth (penalises spurious roads), and
the two are combined by their harmonic mean; it is 0 when either is 0.

How this implementation follows the reference, step by step:

1. **Graphs from centre lines** (:func:`road_graph`): lines in a metric CRS are snapped to a
   1 cm grid and noded at every crossing (so roads that cross without a shared vertex are
   connected; the reference relies on the shared vertices of SpaceNet labels). Nodes are the
   line ends and crossings, edges carry their geometry and ``length`` in metres
   (a :class:`networkx.MultiGraph`).
2. **Control nodes** (:func:`inject_control_nodes`): along every edge, nodes are injected at
   ``spacing_m`` (50 m): none on edges shorter than 0.75 x spacing, the midpoint on edges up to
   the spacing, else evenly at about the spacing (the reference ``create_graph_midpoints``
   with ``is_curved_eps=-1``, i.e. on straight edges too, its command-line default).
3. **Snapping** (:func:`snap_nodes`): every control node of one graph is projected onto the
   nearest edge of the *other* graph (without that graph's own control nodes) if it lies
   within ``snap_m`` (SpaceNet-3: 4 m); the edge is split there, and a projection within
   5 cm of an existing node uses that node (the reference renames such a node instead, which
   loses one of two control nodes that snap to the same place; here both keep it).
4. **Paths**: shortest path lengths (Dijkstra, weight ``length``) between all pairs of control
   nodes in the native graph and between their snapped nodes in the other graph; pairs whose
   native path is shorter than ``min_path_m`` are skipped (the reference command line skips
   only coincident nodes, ``min_path_length=0.001``). Networks with more than
   :data:`MAX_CONTROL_NODES` control nodes are scored on a fixed random sample of them (the
   reference's ``make_graphs_yuge`` samples as well).

An empty truth gives NaN (nothing to measure); an empty proposal against a non-empty truth
gives 0. The cost is quadratic in the number of control nodes (about one per 50 m of road).

Example:
    >>> from shapely import LineString
    >>> roads = [LineString([(0, 0), (200, 0)]), LineString([(100, 0), (100, 150)])]
    >>> round(apls(roads, roads)["apls"], 6)
    1.0
    >>> r = apls(roads, roads[:1])  # the side road is missing: 36 of 56 truth pairs lost
    >>> round(r["apls_truth_to_pred"], 4), r["apls_pred_to_truth"], round(r["apls"], 4)
    (0.3571, 1.0, 0.5263)
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import networkx as nx
import numpy as np
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from shapely import LineString
from shapely.ops import substring

from geounet.core.errors import InvalidParameterError

__all__ = [
    "APLS_SNAP_M",
    "CONTROL_SPACING_M",
    "MAX_CONTROL_NODES",
    "apls",
    "inject_control_nodes",
    "road_graph",
    "snap_nodes",
]

#: Spacing of the control nodes injected along edges (SpaceNet-3: 50 m).
CONTROL_SPACING_M = 50.0
#: Largest distance at which a node snaps onto the other graph (SpaceNet-3: 4 m).
APLS_SNAP_M = 4.0
#: Control nodes scored per graph at most (the reference samples large graphs the same way);
#: the memory of one direction is about 8 x this squared bytes.
MAX_CONTROL_NODES = 2000
#: Coordinates are snapped to this grid (metres) before noding.
_GRID_M = 0.01
#: A projection this close to an existing node uses that node.
_NODE_EPS_M = 0.05


def _line_parts(lines: Any) -> np.ndarray:
    """Simple line pieces of the input, snapped to the grid and noded at crossings."""
    arr = np.asarray(list(lines), dtype=object)
    arr = arr[~shapely.is_missing(arr)] if arr.size else arr
    if arr.size == 0:
        return np.empty(0, dtype=object)
    bad = [g for g in arr if shapely.get_type_id(g) not in (1, 2, 5)]
    if bad:
        raise InvalidParameterError(
            f"road lines must be LineStrings (or LinearRings, MultiLineStrings); got a "
            f"{bad[0].geom_type}. Give centre lines, e.g. from geounet vectorize."
        )
    arr = shapely.get_parts(arr)  # a MultiLineString cannot be a part of another
    arr = arr[~shapely.is_empty(arr)]
    if arr.size == 0:
        return np.empty(0, dtype=object)
    merged = shapely.node(shapely.set_precision(shapely.multilinestrings(arr), _GRID_M))
    parts = shapely.get_parts(merged)
    return parts[shapely.length(parts) > 0]


def road_graph(lines: Any) -> nx.MultiGraph:
    """A road graph from centre lines in a metric CRS.

    Args:
        lines: LineStrings (or a GeoSeries) in metres.

    Returns:
        A MultiGraph whose nodes carry ``x``, ``y`` and whose edges carry ``geometry`` (from
        the lower node id to the higher, or either way for loops) and ``length``.

    Example:
        >>> g = road_graph([LineString([(0, 0), (10, 0)]), LineString([(5, -5), (5, 5)])])
        >>> g.number_of_nodes(), g.number_of_edges()
        (5, 4)
    """
    g = nx.MultiGraph()
    ids: dict[tuple[float, float], int] = {}
    for part in _line_parts(lines):
        coords = shapely.get_coordinates(part)
        ends = []
        for x, y in (coords[0], coords[-1]):
            key = (round(x / _GRID_M), round(y / _GRID_M))
            if key not in ids:
                ids[key] = len(ids)
                g.add_node(ids[key], x=float(x), y=float(y))
            ends.append(ids[key])
        _add_edge(g, ends[0], ends[1], part)
    return g


def _add_edge(g: nx.MultiGraph, u: int, v: int, geom: LineString) -> None:
    """Add an edge stored from the lower id to the higher one (geometry reversed to fit)."""
    if u > v:
        u, v, geom = v, u, shapely.reverse(geom)
    g.add_edge(u, v, geometry=geom, length=float(geom.length))


def _split_edge(
    g: nx.MultiGraph, edge: tuple[int, int, int], cuts: list[tuple[float, Hashable]]
) -> dict[Hashable, int]:
    """Split one edge at ``(distance along its geometry, label)`` cuts.

    Returns ``{label: node}``: a new node per distinct cut, or an end node for a cut within
    :data:`_NODE_EPS_M` of it.
    """
    u, v, k = edge
    geom = g.edges[u, v, k]["geometry"]
    length = geom.length
    found: dict[Hashable, int] = {}
    chain, stops = [u], [0.0]
    for d, label in sorted(cuts, key=lambda c: c[0]):
        if d <= _NODE_EPS_M:
            found[label] = u
        elif d >= length - _NODE_EPS_M:
            found[label] = v
        elif d - stops[-1] <= _NODE_EPS_M and chain[-1] != u:
            found[label] = chain[-1]
        else:
            node = g.graph.get("next_node", max(g.nodes) + 1)
            g.graph["next_node"] = node + 1
            p = geom.interpolate(d)
            g.add_node(node, x=float(p.x), y=float(p.y))
            chain.append(node)
            stops.append(d)
            found[label] = node
    if len(chain) > 1:
        g.remove_edge(u, v, k)
        chain.append(v)
        stops.append(length)
        for a, b, d0, d1 in zip(chain, chain[1:], stops, stops[1:]):
            _add_edge(g, a, b, substring(geom, d0, d1))
    return found


def inject_control_nodes(g: nx.MultiGraph, spacing_m: float = CONTROL_SPACING_M) -> nx.MultiGraph:
    """A copy of ``g`` with control nodes injected along its edges (see the module notes).

    Example:
        >>> g = inject_control_nodes(road_graph([LineString([(0, 0), (120, 0)])]))
        >>> sorted(round(x) for x in nx.get_node_attributes(g, "x").values())
        [0, 40, 80, 120]
    """
    out = g.copy()
    for u, v, k, data in list(g.edges(keys=True, data=True)):
        length = data["length"]
        if length < 0.75 * spacing_m:
            continue
        if length <= spacing_m:
            stops = [0.5 * length]
        else:
            n = len(np.arange(0, length, spacing_m)) + 1
            stops = list(np.linspace(0, length, n)[1:-1])
        _split_edge(out, (u, v, k), [(float(d), i) for i, d in enumerate(stops)])
    return out


def snap_nodes(
    g: nx.MultiGraph, points: dict[Hashable, tuple[float, float]], snap_m: float
) -> tuple[nx.MultiGraph, dict[Hashable, int]]:
    """Insert ``points`` into a copy of ``g`` where they lie within ``snap_m`` of an edge.

    Args:
        g: The graph to snap onto.
        points: ``{label: (x, y)}``.
        snap_m: Largest snapping distance in metres.

    Returns:
        The new graph and ``{label: node}`` for the points that snapped.
    """
    out = g.copy()
    edges = list(out.edges(keys=True))
    if not edges or not points:
        return out, {}
    geoms = np.array([out.edges[e]["geometry"] for e in edges], dtype=object)
    labels = list(points)
    pts = shapely.points(np.array([points[p] for p in labels], dtype=float))
    pi, ei = shapely.STRtree(geoms).query_nearest(pts, max_distance=snap_m, all_matches=False)
    cuts: dict[int, list[tuple[float, Hashable]]] = {}
    for i, j in zip(pi.tolist(), ei.tolist()):
        cuts.setdefault(j, []).append((float(shapely.line_locate_point(geoms[j], pts[i])), i))
    mapping: dict[Hashable, int] = {}
    for j, edge_cuts in cuts.items():
        for i, node in _split_edge(out, edges[j], edge_cuts).items():
            mapping[labels[int(i)]] = node  # type: ignore[call-overload]
    return out, mapping


def _path_lengths(g: nx.MultiGraph, nodes: list[int]) -> np.ndarray:
    """``(n, n)`` shortest path lengths between ``nodes`` (inf where there is no path).

    Dijkstra from each of ``nodes`` (scipy's compiled one); parallel edges count with their
    shortest length.
    """
    index = {n: i for i, n in enumerate(g.nodes)}
    best: dict[tuple[int, int], float] = {}
    for a, b, length in g.edges(data="length"):
        i, j = sorted((index[a], index[b]))
        if i != j and length < best.get((i, j), np.inf):
            best[(i, j)] = length
    size = len(index)
    if best:
        (rows, cols), weights = zip(*best.keys()), np.maximum(list(best.values()), 1e-9)
        matrix = csr_matrix((weights, (rows, cols)), shape=(size, size))
    else:
        matrix = csr_matrix((size, size))
    picked = [index[n] for n in nodes]
    return dijkstra(matrix, directed=False, indices=picked)[:, picked]


def _one_way(
    native: nx.MultiGraph, other: nx.MultiGraph, snap_m: float, min_path_m: float, max_nodes: int
) -> tuple[float, int]:
    """``1 - mean penalty`` of ``native``'s control node pairs measured in ``other``."""
    controls = list(native.nodes)
    if len(controls) > max_nodes:  # a fixed random sample keeps the cost quadratic in max_nodes
        pick = np.random.default_rng(0).choice(len(controls), max_nodes, replace=False)
        controls = [controls[i] for i in np.sort(pick)]
    coords = {n: (native.nodes[n]["x"], native.nodes[n]["y"]) for n in controls}
    snapped, mapping = snap_nodes(other, coords, snap_m)
    base = _path_lengths(native, controls)
    found = [mapping.get(n) for n in controls]
    have = [i for i, n in enumerate(found) if n is not None]
    prop = np.full_like(base, np.inf)
    if have:
        sub = _path_lengths(snapped, [found[i] for i in have])  # type: ignore[misc]
        prop[np.ix_(have, have)] = sub
    scored = np.isfinite(base) & (base >= min_path_m)
    np.fill_diagonal(scored, False)
    if not scored.any():
        return float("nan"), 0
    lg, lp = base[scored], prop[scored]
    with np.errstate(invalid="ignore"):
        penalty = np.where(np.isfinite(lp), np.minimum(1.0, np.abs(lg - lp) / lg), 1.0)
    return float(1.0 - penalty.mean()), int(penalty.size)


def apls(
    truth_lines: Any,
    pred_lines: Any,
    *,
    snap_m: float = APLS_SNAP_M,
    spacing_m: float = CONTROL_SPACING_M,
    min_path_m: float = 0.001,
    max_nodes: int = MAX_CONTROL_NODES,
) -> dict[str, float]:
    """APLS of predicted road centre lines against true ones (see the module notes).

    Args:
        truth_lines: True centre lines in a metric CRS (metres).
        pred_lines: Predicted centre lines in the same CRS.
        snap_m: Largest distance at which a node snaps onto the other graph.
        spacing_m: Spacing of the injected control nodes.
        min_path_m: Node pairs whose native path is shorter are not scored.
        max_nodes: At most this many control nodes of each graph are scored (a fixed random
            sample of them in larger networks; all nodes stay in the graphs).

    Returns:
        ``{"apls", "apls_truth_to_pred", "apls_pred_to_truth", "pairs_truth_to_pred",
        "pairs_pred_to_truth", "truth_nodes", "pred_nodes"}``; the node counts include the
        control nodes.

    Raises:
        InvalidParameterError: A non-positive distance or a geometry that is not a line.
    """
    for name, value in (("snap_m", snap_m), ("spacing_m", spacing_m)):
        if not value > 0:
            raise InvalidParameterError(f"{name}={value} must be > 0 (metres).")
    truth, pred = road_graph(truth_lines), road_graph(pred_lines)
    truth_cp, pred_cp = (
        inject_control_nodes(truth, spacing_m),
        inject_control_nodes(pred, spacing_m),
    )
    if truth.number_of_edges() == 0:
        t2p, n_t, p2t, n_p = float("nan"), 0, float("nan"), 0
    elif pred.number_of_edges() == 0:
        t2p, n_t, p2t, n_p = 0.0, 0, 0.0, 0
    else:
        t2p, n_t = _one_way(truth_cp, pred, snap_m, min_path_m, max_nodes)
        p2t, n_p = _one_way(pred_cp, truth, snap_m, min_path_m, max_nodes)
    return {
        "apls": _harmonic(t2p, p2t),
        "apls_truth_to_pred": t2p,
        "apls_pred_to_truth": p2t,
        "pairs_truth_to_pred": n_t,
        "pairs_pred_to_truth": n_p,
        "truth_nodes": truth_cp.number_of_nodes(),
        "pred_nodes": pred_cp.number_of_nodes(),
    }


def _harmonic(a: float, b: float) -> float:
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    if a <= 0 or b <= 0:
        return 0.0
    return float(2 * a * b / (a + b))
