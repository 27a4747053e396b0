"""Reading through the block cache: same pixels as direct reads, each block decoded once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geounet.data.normalize import normalize, normalize_valid
from geounet.inference.streams import Drain
from geounet.io.blocks import MAX_BLOCK_SIDE, BlockCache
from geounet.io.raster import read_window


def _tiled(path: Path, array: np.ndarray, block: int = 32, **extra: object) -> Path:
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 3700000, 0.5, 0.5),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        **extra,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _scene(shape: tuple[int, int, int] = (3, 100, 140), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 4000, size=shape).astype(np.uint16)


def _windows(h: int, w: int, size: int = 40, stride: int = 30, pad: int = 5) -> list[tuple]:
    """Tile windows in reading order, starting ``pad`` before the raster (mirror padding)."""
    return [
        (r, c, size, size)
        for r in range(-pad, h - size + stride + pad, stride)
        for c in range(-pad, w - size + stride + pad, stride)
    ]


def test_cached_reads_equal_direct_reads_and_decode_each_block_once(tmp_path: Path) -> None:
    array = _scene()
    array[:, 10:20, 30:60] = 0  # nodata pixels inside blocks
    path = _tiled(tmp_path / "s.tif", array, nodata=0)
    bands = [1, 2, 3]
    with rasterio.open(path) as src:
        cache = BlockCache.for_dataset(src, bands)
        assert cache is not None
        for win in _windows(src.height, src.width):
            want = read_window(src, *win, bands)
            got = read_window(src, *win, bands, cache=cache)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            # never more than the block rows one window spans (3 for 40 rows), 160 columns wide
            assert cache.nbytes <= 3 * 32 * 160 * 3 * 2
        n_blocks = -(-src.height // 32) * -(-src.width // 32)
        assert cache.decoded == n_blocks  # windows overlap: read directly, blocks decode ~4x


def test_strip_by_strip_order_still_decodes_each_block_once_per_strip(tmp_path: Path) -> None:
    path = _tiled(tmp_path / "s.tif", _scene((1, 96, 128)))
    with rasterio.open(path) as src:
        cache = BlockCache.for_dataset(src, [1])
        assert cache is not None
        for c0 in (0, 64):  # two column strips of 64, each read from the top down
            for r in range(0, 96 - 32 + 1, 16):
                for c in range(c0, c0 + 64 - 32 + 1, 16):
                    got, _ = read_window(src, r, c, 32, 32, [1], cache=cache)
                    np.testing.assert_array_equal(got, src.read([1])[:, r : r + 32, c : c + 32])
        assert cache.decoded == 3 * 4  # each of the 12 blocks once


def test_alpha_band_and_gdal_mask_travel_with_the_cache(tmp_path: Path) -> None:
    array = _scene((4, 70, 90))
    array[3] = 65535
    array[3, 5:25, 40:80] = 0  # alpha 0: invalid; values above 255 stay valid
    path = _tiled(tmp_path / "a.tif", array)
    with rasterio.open(path) as src:
        cache = BlockCache.for_dataset(src, [1, 2, 3], alpha_band=4)
        for win in _windows(src.height, src.width):
            want = read_window(src, *win, [1, 2, 3], alpha_band=4)
            got = read_window(src, *win, [1, 2, 3], alpha_band=4, cache=cache)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
        whole = read_window(src, 0, 0, 70, 90, [1, 2, 3], alpha_band=4, cache=cache)[1]
        assert not whole[5:25, 40:80].any() and whole[30:].all()  # alpha 65535 is valid

    masked = _tiled(tmp_path / "m.tif", _scene((2, 70, 90)))
    with rasterio.open(masked, "r+") as dst:
        mask = np.full((70, 90), 255, np.uint8)
        mask[30:50, 10:70] = 0
        dst.write_mask(mask)
    with rasterio.open(masked) as src:
        cache = BlockCache.for_dataset(src, [1, 2])
        assert cache is not None and cache.mask == "mask"
        invalid = 0
        for win in _windows(src.height, src.width):
            want = read_window(src, *win, [1, 2])
            got = read_window(src, *win, [1, 2], cache=cache)
            np.testing.assert_array_equal(got[1], want[1])
            invalid += int((~got[1]).sum())
        assert invalid > 0  # the mask was applied


def test_striped_files_and_mixed_blocks_are_read_window_by_window(tmp_path: Path) -> None:
    wide = np.ones((1, 2, MAX_BLOCK_SIDE + 16), np.uint8)
    path = tmp_path / "striped.tif"
    profile = {
        "driver": "GTiff",
        "width": wide.shape[2],
        "height": 2,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 3700000, 0.5, 0.5),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(wide)
    with rasterio.open(path) as src:
        assert src.block_shapes[0][1] > MAX_BLOCK_SIDE
        assert BlockCache.for_dataset(src, [1]) is None


def test_normalize_writes_into_a_batch_slot() -> None:
    x = _scene((3, 8, 8))
    stats = {"mean": [100.0, 200.0, 300.0], "std": [10.0, 20.0, 30.0]}
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False
    batch = np.full((2, 3, 8, 8), np.nan, np.float32)
    out = normalize_valid(x, stats, valid, out=batch[1])
    assert out is not None and np.shares_memory(out, batch)
    np.testing.assert_array_equal(batch[1], normalize_valid(x, stats, valid))
    assert np.isnan(batch[0]).all()
    mean = np.float32([100, 200, 300]).reshape(-1, 1, 1)
    std = np.float32([10, 20, 30]).reshape(-1, 1, 1)
    np.testing.assert_array_equal(normalize(x, stats), (x.astype(np.float32) - mean) / std)


def test_drain_runs_items_in_order_in_another_thread() -> None:
    seen: list[tuple[int, str]] = []
    with Drain(lambda k: seen.append((k, threading.current_thread().name))) as drain:
        for k in range(20):
            drain.put(k)
    assert [k for k, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"geounet-writer"}


def test_drain_hands_its_error_to_the_caller_and_stops_writing() -> None:
    seen: list[int] = []

    def handle(k: int) -> None:
        if k == 3:
            raise OSError("No space left on device")
        seen.append(k)

    with pytest.raises(OSError, match="No space left"), Drain(handle, depth=1) as drain:
        for k in range(50):
            drain.put(k)
    assert seen == [0, 1, 2]  # nothing written after the failure

    def last(k: int) -> None:
        if k == 4:
            raise OSError("last")

    with pytest.raises(OSError, match="last"), Drain(last) as d:  # raised when the block ends
        for k in range(5):
            d.put(k)


def test_drain_lets_the_callers_own_error_through_and_waits_for_its_thread() -> None:
    done = threading.Event()

    def slow(_: int) -> None:
        done.wait(0.05)

    drain = Drain(slow)
    with pytest.raises(KeyError), drain:
        drain.put(1)
        raise KeyError("network failed")
    assert not drain._thread.is_alive()  # the sink is free to close


def _run_reader(path: Path, budget: int) -> tuple[list[int], int, list, object]:
    """The pipeline's reader over the whole raster: peaks of the cache, decodes, batches."""
    from geounet.inference.blending import TilePlan
    from geounet.inference.engine import _batches
    from geounet.inference.streams import RasterSource
    from geounet.io.raster import open_raster

    info = open_raster(path)
    plan = TilePlan.build(info.height, info.width, tile_size=64, overlap=8, blend="spline")
    tiles = [(i, j) for i in range(len(plan.row_starts)) for j in range(len(plan.col_starts))]
    peaks: list[int] = []
    caches: list[BlockCache] = []

    class Watched(RasterSource):
        def __enter__(self) -> RasterSource:
            super().__enter__()
            self._cache.max_bytes = budget
            caches.append(self._cache)
            return self

        def read(self, *args: int, **kwargs: int | None) -> tuple[np.ndarray, np.ndarray]:
            out = super().read(*args, **kwargs)
            peaks.append(self._cache.nbytes)
            return out

    stats = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    batches = list(_batches(lambda: Watched(info, [1, 2]), plan, tiles, 4, stats))
    assert sum(len(b.tiles) for b in batches) == len(tiles)
    return peaks, caches[0].decoded, batches, plan


def test_the_reader_decodes_each_block_once_and_keeps_to_its_budget(tmp_path: Path) -> None:
    """Tiles of 64 at a stride of 56 over blocks of 64 (the 512 / 448 / 512 of a real run, / 8)."""
    path = _tiled(tmp_path / "s.tif", _scene((2, 300, 520)), block=64)
    block = 64 * 64 * 2 * 2  # 2 bands of uint16
    n_blocks = 5 * 9
    peaks, decoded, batches, plan = _run_reader(path, budget=100 * block)
    assert decoded == n_blocks
    assert max(peaks) <= 2 * 9 * block  # at most two block rows, and mostly about one
    assert np.median(peaks) <= 1.5 * 9 * block

    peaks, decoded, _, _ = _run_reader(path, budget=6 * block)  # well under a block row
    assert max(peaks) <= 6 * block + 4 * block  # the budget, plus the blocks of one window
    assert n_blocks < decoded <= 2 * n_blocks  # some decoded again; direct reads: ~4x

    first = batches[0]  # the pixels are right (normalised with mean 0, std 1)
    region = plan.region(*first.tiles[1])
    with rasterio.open(path) as src:
        want = read_window(src, region.row, region.col, 64, 64, [1, 2])[0]
    np.testing.assert_array_equal(first.x[1], want.astype(np.float32))


def test_blocks_are_decoded_once_with_the_hint(tmp_path: Path) -> None:
    path = _tiled(tmp_path / "s.tif", _scene((1, 300, 520)), block=64)
    with rasterio.open(path) as src:
        cache = BlockCache.for_dataset(src, [1])
        rows = list(range(-4, 300, 56))
        for n, r in enumerate(rows):
            below = rows[n + 1] if n + 1 < len(rows) else 300
            for c in range(-4, 520, 56):
                read_window(src, r, c, 64, 64, [1], cache=cache, keep_from=max(below, 0))
        assert cache.decoded == 5 * 9  # 300 / 64 -> 5 block rows, 520 / 64 -> 9 columns
