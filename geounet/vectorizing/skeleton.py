"""Road skeletons window by window, and the pixel graph of a sparse skeleton.

:class:`SkeletonCollector` thins the road mask of each window (read with a halo, so the
skeleton near a seam is the one a single pass would give) and keeps only the skeleton
pixels of the window's core, as global pixel indices with the distance to the road edge
(the half width). :func:`trace_skeleton` turns that sparse pixel set into a graph: end
pixels and junction pixels (clusters of adjacent pixels with more than two neighbours) are
nodes, the pixel chains between them edges. Memory follows the road length, not the scene
area.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((9, 9), bool); mask[4, 1:8] = True; mask[1:8, 4] = True
    >>> idx = np.flatnonzero(mask)
    >>> nodes, edges = trace_skeleton(idx, width=9)
    >>> len(nodes), len(edges)
    (5, 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import skeletonize

__all__ = ["SkeletonCollector", "SkeletonEdge", "trace_skeleton"]

_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _drop_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Remove components of ``mask`` smaller than ``min_size`` that do not touch the border."""
    if min_size <= 1:
        return mask
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    small = sizes < min_size
    small[0] = False
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    small[border] = False
    return mask & ~small[lab]


def _half_width(
    mask: np.ndarray, rr: np.ndarray, cc: np.ndarray, pixel_m: tuple[float, float]
) -> np.ndarray:
    """Distance (m) from pixels ``(rr, cc)`` of ``mask`` to the nearest pixel off it.

    The mean of the chessboard and the taxicab chamfer distances: within 6 % of the
    Euclidean distance in any direction, at a tenth of the cost of an exact transform.
    """
    board = ndimage.distance_transform_cdt(mask, "chessboard")[rr, cc]
    taxi = ndimage.distance_transform_cdt(mask, "taxicab")[rr, cc]
    return ((board + taxi) * (0.25 * (pixel_m[0] + pixel_m[1]))).astype(np.float32)


class SkeletonCollector:
    """Collect the skeleton of one class, window by window.

    Args:
        value: Raster value of the road class.
        height: Raster height.
        width: Raster width.
        pixel_m: Pixel (width, height) in metres, for the distance transform.
        min_object_px: Road blobs smaller than this are ignored.
        max_hole_px: Holes in the road mask smaller than this are filled (no small loops).
    """

    def __init__(
        self,
        value: int,
        height: int,
        width: int,
        pixel_m: tuple[float, float],
        min_object_px: int,
        max_hole_px: int,
    ) -> None:
        self.value, self.height, self.width = value, height, width
        self.pixel_m = pixel_m
        self.min_object_px, self.max_hole_px = min_object_px, max_hole_px
        self._idx: list[np.ndarray] = []
        self._half: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []

    def add(
        self,
        data: np.ndarray,
        row: int,
        col: int,
        core: tuple[int, int, int, int],
        confidence: np.ndarray | None = None,
    ) -> None:
        """Thin one window.

        Args:
            data: Class values of the window with its halo, top-left at ``(row, col)``.
            row: Raster row of ``data[0, 0]``.
            col: Raster column of ``data[0, 0]``.
            core: ``(row0, col0, row1, col1)``: the part of ``data`` (raster coordinates)
                whose skeleton pixels are kept.
            confidence: Probabilities of the class over the core (same shape as the core).
        """
        mask = data == self.value
        if not mask.any():
            return
        mask = _drop_components(mask, self.min_object_px)
        mask = ~_drop_components(~mask, self.max_hole_px)
        skel = skeletonize(mask)
        r0, c0, r1, c1 = core
        sub = skel[r0 - row : r1 - row, c0 - col : c1 - col]
        rr, cc = np.nonzero(sub)
        if rr.size == 0:
            return
        self._half.append(_half_width(mask, rr + r0 - row, cc + c0 - col, self.pixel_m))
        self._idx.append((rr + r0).astype(np.int64) * self.width + (cc + c0))
        if confidence is not None:
            self._conf.append(confidence[rr, cc].astype(np.float32))

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(sorted global pixel indices, half width in metres, confidence or None)``."""
        if not self._idx:
            empty = np.empty(0, np.float32)
            return np.empty(0, np.int64), empty, (empty if self._conf else None)
        idx = np.concatenate(self._idx)
        order = np.argsort(idx, kind="stable")
        conf = np.concatenate(self._conf)[order] if self._conf else None
        return idx[order], np.concatenate(self._half)[order], conf


@dataclass
class SkeletonEdge:
    """A chain of skeleton pixels between two nodes (``pixels`` includes both end pixels)."""

    u: int
    v: int
    pixels: list[int]


def _neighbours(idx: np.ndarray, width: int) -> np.ndarray:
    """``(n, 8)`` positions in ``idx`` of each pixel's neighbours (-1: none).

    A diagonal link is dropped when a 4-neighbour already joins the two pixels, so that
    staircases are chains, not triangles of pseudo-junctions.
    """
    n = idx.size
    col = idx % width
    nb = np.full((n, 8), -1, dtype=np.int64)
    for j, (dr, dc) in enumerate(_OFFSETS):
        target = idx + dr * width + dc
        pos = np.minimum(np.searchsorted(idx, target), n - 1)
        found = (idx[pos] == target) & (col + dc >= 0) & (col + dc < width)
        nb[found, j] = pos[found]
    for j, (dr, dc) in enumerate(_OFFSETS):
        if dr and dc:
            via = (nb[:, _OFFSETS.index((dr, 0))] >= 0) | (nb[:, _OFFSETS.index((0, dc))] >= 0)
            nb[via, j] = -1
    return nb


def _node_ids(nb: np.ndarray) -> np.ndarray:
    """Node id of each pixel (-1 for chain pixels); adjacent junction pixels share one id."""
    n = nb.shape[0]
    degree = (nb >= 0).sum(axis=1)
    junction = degree >= 3
    src, dst = np.nonzero(nb >= 0)
    dst = nb[src, dst]
    keep = junction[src] & junction[dst]
    graph = coo_matrix((np.ones(keep.sum()), (src[keep], dst[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    node = np.full(n, -1, dtype=np.int64)
    is_node = degree != 2
    _, node[is_node] = np.unique(labels[is_node], return_inverse=True)
    return node


def _walk(nbl: list[list[int]], node: list[int], seen: bytearray, p: int, q: int) -> list[int]:
    """Follow the chain that leaves node pixel ``p`` through ``q`` to the next node pixel."""
    path, prev, cur = [p, q], p, q
    seen[q] = 1
    while node[cur] < 0:
        a, b = (x for x in nbl[cur] if x >= 0)
        prev, cur = cur, (b if a == prev else a)
        seen[cur] = 1
        path.append(cur)
    return path


def trace_skeleton(idx: np.ndarray, width: int) -> tuple[list[list[int]], list[SkeletonEdge]]:
    """Nodes and edges of a sparse 8-connected skeleton.

    Args:
        idx: Sorted global pixel indices (``row * width + col``) of the skeleton.
        width: Raster width.

    Returns:
        ``(nodes, edges)``: each node is the list of its pixels (positions in ``idx``);
        each edge joins two node ids through a chain of pixel positions. A closed loop
        without junction gets one node.
    """
    if idx.size == 0:
        return [], []
    nb = _neighbours(idx, width)
    node_arr = _node_ids(nb)
    node, nbl = node_arr.tolist(), nb.tolist()
    seen = bytearray(idx.size)
    edges: list[SkeletonEdge] = []
    n_nodes = int(node_arr.max()) + 1 if (node_arr >= 0).any() else 0

    def from_node(p: int) -> None:
        for q in nbl[p]:
            if q < 0:
                continue
            if node[q] >= 0:
                if node[q] != node[p] and p < q:
                    edges.append(SkeletonEdge(node[p], node[q], [p, q]))
                continue
            if seen[q]:
                continue
            path = _walk(nbl, node, seen, p, q)
            edges.append(SkeletonEdge(node[p], node[path[-1]], path))

    for p in np.flatnonzero(node_arr >= 0).tolist():
        seen[p] = 1
    for p in np.flatnonzero(node_arr >= 0).tolist():
        from_node(p)
    for p in range(idx.size):  # loops without any node
        if not seen[p]:
            node[p], seen[p] = n_nodes, 1
            n_nodes += 1
            from_node(p)
    nodes: list[list[int]] = [[] for _ in range(n_nodes)]
    for p, k in enumerate(node):
        if k >= 0:
            nodes[k].append(p)
    return nodes, edges
