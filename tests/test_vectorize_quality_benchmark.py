"""``benchmarks/vectorize_quality.py``: a broken road map, a block of touching roofs, timed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmark_modules import benchmark_module
from scipy import ndimage


@pytest.fixture(scope="module")
def vq():
    with benchmark_module("vectorize_quality.py", "vectorize_quality_benchmark") as module:
        yield module


def test_the_road_map_is_broken_and_strewn_with_confetti(vq) -> None:
    mask = vq.road_mask(400)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask, vq.road_mask(400))  # seeded
    _, parts = ndimage.label(mask)
    assert parts > 400 * 400 // 4000 // 2  # confetti, beside the broken grid
    assert 0.05 < mask.mean() < 0.3


def test_road_speed_times_both_sizes_and_the_growth(vq, tmp_path) -> None:
    r = vq.road_speed(tmp_path, 400)
    assert r["half"]["size"] == 200 and r["full"]["size"] == 400
    assert r["full"]["lines"] > r["half"]["lines"] > 0
    assert all(r[k]["vectorize_seconds"] > 0 and r[k]["bare_seconds"] > 0 for k in ("half", "full"))
    assert math.isfinite(r["growth"])
    assert vq._targets_met({"road_speed": r})["road_growth"] == (r["growth"] <= 1.3)


def test_split_speed_finds_every_roof_of_the_ragged_block(vq, tmp_path) -> None:
    block = vq.roof_block(4)
    assert block.shape == (146, 146) and block.dtype == np.uint8
    lab, _ = ndimage.label(block)
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.max() > 0.99 * sizes.sum()  # one region (the roofs touch), a few stray pixels
    r = vq.split_speed(tmp_path, 6)
    assert r["half"]["roofs"] == 9 and r["full"]["roofs"] == 36
    assert r["half"]["buildings"] == 9 and r["full"]["buildings"] == 36  # split apart
    assert math.isfinite(r["growth"])


def test_speed_times_the_default_threads_and_one_thread(vq, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GEOUNET_NUM_THREADS", "2")
    r = vq.speed(tmp_path, 300)
    assert r["threads"] == 2 and r["polygons"] == r["polygons_unregularized"] > 0
    assert len(r["bare_seconds_runs"]) == 2 and r["bare_seconds"] > 0
    assert r["ratio_one_thread"] == r["vectorize_one_thread_seconds"] / r["bare_seconds"]
    assert vq.os.environ["GEOUNET_NUM_THREADS"] == "2"  # put back after the one-thread run


def test_holes_speed_keeps_the_lakes_and_fills_the_stray_pixels(vq, tmp_path) -> None:
    mask = vq.pepper_mask(1000)
    assert mask.shape == (1000, 1000) and mask.dtype == np.uint8
    assert 0.02 < 1 - mask.mean() < 0.03  # stray pixels and four lakes of 40 x 40
    assert not mask[230:270, 730:770].any()
    r = vq.holes_speed(tmp_path, 600)
    assert r["half"]["size"] == 300 and r["full"]["size"] == 600
    # one land polygon each; only the lake is a hole (the stray pixels are under 5 m²)
    assert r["half"]["polygons"] == r["full"]["polygons"] == 1
    assert r["half"]["holes"] == r["full"]["holes"] == 1
    assert math.isfinite(r["growth"])
    assert vq._targets_met({"holes_speed": r})["holes_growth"] == (r["growth"] <= 1.3)
