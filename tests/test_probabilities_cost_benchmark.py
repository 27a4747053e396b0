"""``benchmarks/probabilities_cost.py``: what the probabilities written by default cost."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def cost_bench():
    with benchmark_module("probabilities_cost.py", "probabilities_cost_benchmark") as module:
        yield module


def test_the_scene_is_laid_out_mirrored(cost_bench, make_raster, tmp_path):
    arr = np.arange(3 * 4 * 6, dtype=np.uint8).reshape(3, 4, 6)
    src = make_raster(arr, "s.tif")
    big = cost_bench.mirrored(src, 2, tmp_path / "big.tif")
    with rasterio.open(big) as b, rasterio.open(src) as s:
        got = b.read()
        assert (b.transform, b.crs) == (s.transform, s.crs)  # the same origin and pixel size
    assert got.shape == (3, 8, 12)
    np.testing.assert_array_equal(got[:, :4, :6], arr)
    np.testing.assert_array_equal(got[:, :4, 6:], arr[:, :, ::-1])  # no seam: mirrored
    np.testing.assert_array_equal(got[:, 4:, :6], arr[:, ::-1])
    assert cost_bench.mirrored(src, 1, tmp_path / "same.tif") == src


def test_both_ways_are_measured_on_a_real_model(cost_bench, make_raster, tmp_path):
    from model_fakes import make_fake_data, synthetic_scene

    from geounet.app.classifier import UnetClassifier

    data = make_fake_data(bands=3, chip=32, size=64)
    model = UnetClassifier(data, backbone=None, base_channels=4, depth=2, seed=0)
    folder = model.save(tmp_path / "model")
    image, labels = synthetic_scene(96, 3, 1)
    img = make_raster(image, "scene.tif")
    truth = make_raster((labels == 1).astype(np.uint8)[None], "truth.tif")
    args = SimpleNamespace(model=str(folder), image=str(img), truth=str(truth), repeat=2,
                           rounds=1, engine="torch", tile=64, overlap=16, batch=2,
                           work=str(tmp_path / "work"))  # fmt: skip
    result = cost_bench.run(args)
    assert result["pixels"] == 192 * 192
    plain, default = result["no_probabilities"], result["default"]
    assert len(plain["bytes_per_pixel"]) == 1 and len(default["bytes_per_pixel"]) == 2
    assert default["bytes_per_pixel"][1] > 0 and result["classify_ratio_best"] > 0
    for r in (plain, default):
        assert r["buildings"] is not None and 0 <= r["object_f1"] <= 1
    assert (tmp_path / "work" / "default_classified_probabilities.tif").exists()
    assert not (tmp_path / "work" / "plain_classified_probabilities.tif").exists()
