"""Memory of streamed inference: the pipeline's buffers do not grow with the scene.

Measured with :mod:`tracemalloc` (numpy registers its buffers with it): a byte count that does
not depend on the machine's load or on what else the process holds, unlike RSS or a timing.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio.env
import torch

from geounet.core.classes import make_classes
from geounet.core.types import IGNORE_INDEX
from geounet.inference import classify
from geounet.inference.blending import POP_ROWS, RowAccumulator
from geounet.inference.classify import classify_raster
from geounet.inference.options import probabilities_path
from geounet.model.files import ModelConfig


class Pointwise(torch.nn.Module):
    """Class 1 where band 1 is above its mean: a 1x1 convolution, nothing to learn."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _model() -> SimpleNamespace:
    config = ModelConfig(
        arch="unet", backbone=None, in_channels=3, classes=make_classes({1: "one"}),
        bands=[1, 2, 3], band_names=["a", "b", "c"], chip_size=64, gsd_m=0.5,
        stats={"mean": [100.0] * 3, "std": [50.0] * 3, "p2": [0.0] * 3, "p98": [250.0] * 3},
        source_dtype="uint8",
    )  # fmt: skip
    return SimpleNamespace(network=Pointwise(), config=config, device=torch.device("cpu"))


def _traced_peak(run: Callable[[], object]) -> int:
    """Peak bytes traced by :mod:`tracemalloc` while ``run()`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_classify_memory_does_not_grow_with_scene_height(make_raster, tmp_path, one_thread):
    """A raster 4x as high costs less extra memory than half a full-scene uint8 class array."""
    width, short, tall = 256, 256, 1024
    model = _model()
    peaks = {}
    opts = {"tile_size": 64, "overlap": 16, "progress": False, "engine": "torch"}
    for height in (short, tall):
        arr = np.random.default_rng(0).integers(1, 255, (3, height, width)).astype(np.uint8)
        src = make_raster(arr, name=f"in_{height}.tif")
        out = tmp_path / f"out_{height}.tif"
        classify_raster(model, src, out, **opts)  # warm-up: lazy imports, torch caches
        out.unlink()
        probabilities_path(out).unlink()  # written beside it by default, measured with it
        peaks[height] = _traced_peak(lambda s=src, o=out: classify_raster(model, s, o, **opts))
    full_scene_extra = (tall - short) * width  # one uint8 class array of the extra rows
    assert peaks[tall] - peaks[short] < full_scene_extra / 2, peaks


def _filled(n_classes: int, width: int, capacity: int) -> RowAccumulator:
    rng = np.random.default_rng(1)
    acc = RowAccumulator(n_classes, width, capacity)
    acc.sums[:] = rng.random(acc.sums.shape, np.float32)
    acc.wsum[:] = rng.random(acc.wsum.shape, np.float32) + 0.5
    acc.wsum[:, :3] = 0.0  # no tile covered these columns
    acc.valid[:] = rng.random(acc.valid.shape) > 0.1
    return acc


def test_pop_without_probabilities_allocates_no_full_size_float_array():
    """Rows are normalised a few at a time; the class rows are the only full-size result."""
    k, width, capacity, n = 3, 2048, 512, 448
    acc = _filled(k, width, capacity)
    peak = _traced_peak(lambda: acc.pop(n, probs=False))
    one_float_array = k * n * width * 4  # what the unchunked pop made (and an int64 argmax)
    assert peak < one_float_array / 2, (peak, one_float_array)


@pytest.mark.parametrize("n", [1, POP_ROWS, POP_ROWS + 7, 3 * POP_ROWS + 5])
def test_chunked_pop_equals_the_whole_band_formula(n):
    acc = _filled(3, 40, 4 * POP_ROWS)
    sums, wsum, valid = acc.sums[:, :n].copy(), acc.wsum[:n].copy(), acc.valid[:n].copy()
    start, classes, probs, got_valid = acc.pop(n)
    ok = valid & (wsum > 0)
    want = sums / np.where(wsum > 0, wsum, 1.0) * ok
    want_classes = np.where(ok, np.argmax(want, axis=0), IGNORE_INDEX).astype(np.uint8)
    assert start == 0 and acc.row0 == n
    np.testing.assert_array_equal(got_valid, ok)
    np.testing.assert_array_equal(probs, want)
    np.testing.assert_array_equal(classes, want_classes)


def test_pop_without_probabilities_gives_the_same_classes():
    a, b = _filled(2, 64, 128), _filled(2, 64, 128)
    with_probs, without = a.pop(100), b.pop(100, probs=False)
    assert without[2] is None
    np.testing.assert_array_equal(with_probs[1], without[1])
    np.testing.assert_array_equal(with_probs[3], without[3])


def test_classify_keeps_gdal_from_caching_blocks(monkeypatch):
    """rasterio sets GDAL_CACHEMAX in bytes: 256 bytes holds no block, so no written block
    waits in the cache for a flush whose errors (a full disk) would go unreported."""
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    with classify._bounded_gdal_cache():
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 256
