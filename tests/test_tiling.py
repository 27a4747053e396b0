"""Tiling math: property tests of the tile grid, core ranges, pad amounts and blend weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geounet.core.errors import InvalidParameterError
from geounet.inference.blending import RowAccumulator, TileRegion, blend_weights
from geounet.io.windows import (
    Tile,
    core_ranges,
    pad_amounts,
    tile_count,
    tile_grid,
    tile_starts,
)

FAST = settings(max_examples=150, deadline=None)


@st.composite
def axes(draw: st.DrawFn) -> tuple[int, int, int]:
    """``(length, tile, overlap)`` with length 1..3000, tile 1..1024, overlap 0..tile-1."""
    length = draw(st.integers(1, 3000))
    tile = draw(st.integers(1, 1024))
    overlap = draw(st.integers(0, tile - 1))
    return length, tile, overlap


def _count_by_enumeration(length: int, tile: int, overlap: int) -> int:
    """Lay windows at 0, stride, 2 * stride... until one reaches the end (the last one is
    then moved back flush with the border): the fewest windows that cover the axis with
    consecutive windows overlapping by at least ``overlap``."""
    count, start = 1, 0
    while start + tile < length:
        start += tile - overlap
        count += 1
    return count


@FAST
@given(axes())
def test_tile_starts_properties(axis):
    length, tile, overlap = axis
    starts = tile_starts(length, tile, overlap)
    assert len(starts) == tile_count(length, tile, overlap)
    assert len(starts) == _count_by_enumeration(length, tile, overlap)
    assert starts == sorted(set(starts))  # sorted and distinct
    assert starts[0] == 0
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()  # every pixel covered
    if length >= tile:
        assert all(s >= 0 and s + tile <= length for s in starts)  # in bounds
        assert starts[-1] + tile == length  # the last tile is flush with the border
    else:
        assert starts == [0]
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= overlap  # consecutive tiles overlap enough
        assert b - a <= tile - overlap  # ... and never more than one stride apart


@FAST
@given(axes())
def test_core_ranges_partition_the_axis(axis):
    length, tile, overlap = axis
    starts = tile_starts(length, tile, overlap)
    ranges = core_ranges(starts, tile, length)
    assert len(ranges) == len(starts)
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    for (_, end), (begin, _) in itertools.pairwise(ranges):
        assert end == begin  # contiguous: every pixel in exactly one range
    for (begin, end), s in zip(ranges, starts):
        assert begin < end  # never empty
        assert s <= begin and end <= s + tile  # inside its tile


@FAST
@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(-400, 400),
    st.integers(-400, 400),
    st.integers(1, 500),
    st.integers(1, 500),
)
def test_pad_amounts_rebuild_the_window(rh, rw, row, col, h, w):
    overlaps = row < rh and row + h > 0 and col < rw and col + w > 0
    if not overlaps:
        with pytest.raises(InvalidParameterError, match="outside"):
            pad_amounts(row, col, h, w, rh, rw)
        return
    (r0, c0, r1, c1), (top, bottom, left, right) = pad_amounts(row, col, h, w, rh, rw)
    assert 0 <= r0 < r1 <= rh and 0 <= c0 < c1 <= rw  # the read lies in the raster
    assert min(top, bottom, left, right) >= 0
    assert top + (r1 - r0) + bottom == h and left + (c1 - c0) + right == w
    assert r0 - top == row and c0 - left == col  # pads sit where the window leaves the raster


def test_pad_amounts_examples():
    assert pad_amounts(0, 0, 10, 10, 100, 100) == ((0, 0, 10, 10), (0, 0, 0, 0))
    assert pad_amounts(-3, 95, 10, 10, 100, 100) == ((0, 95, 7, 100), (3, 0, 0, 5))
    assert pad_amounts(-5, -5, 50, 50, 20, 30) == ((0, 0, 20, 30), (5, 25, 5, 15))
    with pytest.raises(InvalidParameterError, match="outside"):
        pad_amounts(100, 0, 10, 10, 100, 100)
    with pytest.raises(InvalidParameterError):
        pad_amounts(-10, 0, 10, 10, 100, 100)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 256),
    st.data(),
    st.sampled_from(["spline", "linear", "none"]),
    st.floats(1e-4, 1.0),
)
def test_blend_weights_properties(tile, data, mode, floor):
    overlap = data.draw(st.integers(0, tile - 1))
    w = blend_weights(tile, overlap, mode, floor)
    assert w.shape == (tile, tile) and w.dtype == np.float32
    assert (w > 0).all() and (w <= 1).all()
    assert w.min() >= np.float32(floor) ** 2 * (1 - 1e-6)
    np.testing.assert_array_equal(w, w.T)  # separable and square
    np.testing.assert_array_equal(w, w[::-1])  # symmetric top-bottom
    np.testing.assert_array_equal(w, w[:, ::-1])  # and left-right
    if mode == "none" or overlap == 0:
        assert (w == 1).all()
    else:
        inner = w[overlap : tile - overlap, overlap : tile - overlap]
        assert (inner == 1).all()  # 1 in the interior
        if floor < 0.99:
            assert w[0, tile // 2] < 1  # lower towards the edges
        mid = w[tile // 2]
        half = mid[: (tile + 1) // 2]
        assert (np.diff(half) >= 0).all()  # rising from the edge to the centre


def test_blend_weights_examples_and_errors():
    w1 = np.array([0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125])  # pixel centres
    np.testing.assert_allclose(blend_weights(8, 4, "linear", floor=1e-9), np.outer(w1, w1))
    spline = blend_weights(64, 16)
    assert 1e-2 <= spline[32, 0] < 2e-2 and spline[32, 32] == 1  # floor at the edge
    with pytest.raises(InvalidParameterError, match="'spline', 'linear', 'none'") as err:
        blend_weights(64, 16, "hann")
    assert isinstance(err.value, ValueError)
    with pytest.raises(InvalidParameterError, match="floor"):
        blend_weights(64, 16, floor=0.0)
    with pytest.raises(InvalidParameterError):
        blend_weights(0, 0)


def test_blended_tiles_reconstruct_a_constant():
    """Weighted sums of overlapping tiles divide back to the value: no seams from weights."""
    length, tile, overlap = 300, 64, 16
    starts = tile_starts(length, tile, overlap)
    w = blend_weights(tile, overlap)
    num, den = np.zeros((length, length)), np.zeros((length, length))
    for r in starts:
        for c in starts:
            num[r : r + tile, c : c + tile] += 5.0 * w
            den[r : r + tile, c : c + tile] += w
    assert den.min() > 0
    np.testing.assert_allclose(num / den, 5.0)


def test_tile_grid_row_major_and_docstring_example():
    assert tile_starts(1000, 256, 64) == [0, 192, 384, 576, 744]
    assert tile_count(1000, 256, 64) == 5
    grid = tile_grid(300, 500, 256, 32)
    assert len(grid) == _count_by_enumeration(300, 256, 32) * _count_by_enumeration(500, 256, 32)
    assert grid == sorted(grid, key=lambda t: (t.row, t.col))
    assert grid[-1] == Tile(44, 244, 256, 256)
    assert grid[-1].row_end == 300 and grid[-1].col_end == 500
    assert grid[0].slices == (slice(0, 256), slice(0, 256))
    assert tile_grid(10, 20, 64) == [Tile(0, 0, 64, 64)]  # smaller than a tile: one, padded


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(0, 10, 0), (10, 0, 0), (10, 5, 5), (10, 5, -1)]
)
def test_tile_parameter_errors(length, tile, overlap):
    with pytest.raises(InvalidParameterError):
        tile_starts(length, tile, overlap)
    with pytest.raises(InvalidParameterError):
        tile_count(length, tile, overlap)


def test_core_ranges_examples():
    assert core_ranges([0], 64, 40) == [(0, 40)]
    assert core_ranges([0, 192, 384, 576, 744], 256, 1000) == [
        (0, 224),
        (224, 416),
        (416, 608),
        (608, 788),
        (788, 1000),
    ]
    with pytest.raises(InvalidParameterError):
        core_ranges([], 64, 40)


def _tile(row: int, rows: int, width: int = 8) -> tuple[TileRegion, np.ndarray, np.ndarray]:
    """A tile of ``rows`` x ``width`` at raster row ``row``: region, probabilities, weights."""
    probs = np.zeros((2, rows, width), np.float32)
    probs[1] = 1.0
    return TileRegion(row, 0, 0, rows, 0, width), probs, np.ones((rows, width), np.float32)


def test_accumulator_refuses_rows_outside_its_band():
    """Rows beyond the band's capacity (or above its first row) used to vanish silently."""
    acc = RowAccumulator(2, width=8, capacity=4, row0=2)
    region, probs, w = _tile(2, 6)  # raster rows 2..8 into a band of rows 2..6
    with pytest.raises(InvalidParameterError, match=r"rows 2\.\.8.*capacity 4.*rows 2\.\.6"):
        acc.add(region, probs, np.ones((6, 8), bool), w, height=20)
    region, probs, w = _tile(0, 4)  # raster rows 0..4: rows 0 and 1 were already popped
    with pytest.raises(InvalidParameterError, match=r"rows 0\.\.4"):
        acc.add(region, probs, np.ones((4, 8), bool), w, height=20)
    with pytest.raises(InvalidParameterError, match=r"rows 2\.\.7.*capacity 4"):
        acc.pop(7)
    assert not acc.valid.any() and not acc.wsum.any()  # nothing half-added


def test_accumulator_takes_tiles_inside_its_band_and_clips_the_raster_edges():
    acc = RowAccumulator(2, width=8, capacity=4, row0=6)
    region, probs, w = _tile(6, 4)
    acc.add(region, probs, np.ones((4, 8), bool), w, height=20)
    start, classes, p, valid = acc.pop(10)
    assert start == 6 and classes.shape == (4, 8) and (classes == 1).all() and valid.all()
    np.testing.assert_allclose(p[1], 1.0)
    region, probs, w = _tile(8, 4)  # rows 8..12 of a 10-row raster: 10 and 11 are padding
    acc = RowAccumulator(2, width=8, capacity=4, row0=8)
    acc.add(region, probs, np.ones((4, 8), bool), w, height=10)
    start, classes, _, valid = acc.pop(10)
    assert start == 8 and classes.shape == (2, 8) and valid.all()
    assert acc.pop(10) is None


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("decision", [None, [1.0, 2.5, 1.0]])
def test_popped_classes_are_the_arg_max_ties_included(n_classes, decision):
    rng = np.random.default_rng(0)
    weights = None if decision is None else decision[:n_classes]
    acc = RowAccumulator(n_classes, width=40, capacity=8, decision_weights=weights)
    acc.sums[:] = rng.random(acc.sums.shape).astype(np.float32)
    acc.sums[:, :2] = 0.25  # exact ties: the first class wins, as np.argmax decides
    acc.wsum[:], acc.valid[:] = 2.0, True
    scale = 1.0 if weights is None else np.asarray(weights, np.float32)[:, None, None]
    expected = np.argmax(acc.sums / 2.0 * scale, axis=0)
    _, classes, _, _ = acc.pop(8)
    np.testing.assert_array_equal(classes, expected)
    assert (classes[:2] == (0 if weights is None else int(np.argmax(weights)))).all()


@pytest.mark.parametrize("decision", [None, [1.0, 2.5, 1.0]])
def test_popped_classes_do_not_depend_on_asking_for_probabilities(decision):
    """Classes come from the weighted sums (no division); probabilities are the sums / weight."""
    rng = np.random.default_rng(1)
    accs = [RowAccumulator(3, width=24, capacity=6, decision_weights=decision) for _ in range(2)]
    sums = rng.random(accs[0].sums.shape).astype(np.float32)
    wsum = rng.uniform(0.1, 3.0, accs[0].wsum.shape).astype(np.float32)
    wsum[0, :5] = 0.0  # covered by no tile: invalid
    for acc in accs:
        acc.sums[:], acc.wsum[:], acc.valid[:] = sums, wsum, True
    _, with_p, probs, valid = accs[0].pop(6, probs=True)
    _, without_p, none, _ = accs[1].pop(6, probs=False)
    assert none is None and not valid[0, :5].any() and valid[1:].all()
    np.testing.assert_array_equal(with_p, without_p)
    assert (with_p[0, :5] == 255).all()
    np.testing.assert_allclose(probs[:, valid], (sums / np.where(wsum > 0, wsum, 1))[:, valid])
    assert (probs[:, ~valid] == 0).all()
    scale = 1.0 if decision is None else np.asarray(decision, np.float32)[:, None, None]
    np.testing.assert_array_equal(with_p[valid], np.argmax(probs * scale, axis=0)[valid])
