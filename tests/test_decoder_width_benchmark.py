"""``benchmarks/decoder_width.py``: the decoder widths timed side by side (tiny inputs)."""

from __future__ import annotations

import json
import sys

import pytest
from benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def decoder_width():
    with benchmark_module("decoder_width.py", "decoder_width_benchmark") as module:
        yield module


def test_each_width_is_timed_and_compared_with_the_first(decoder_width, capsys):
    argv = ["--widths", "32,16,8,8,4", "16,8,4,4,2", "--chip", "32", "--tile", "64"]
    assert decoder_width.main([*argv, "--train-batch", "2", "--batch", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    wide, narrow = result["widths"]
    assert wide["decoder_channels"] == [32, 16, 8, 8, 4]
    assert narrow["decoder_channels"] == [16, 8, 4, 4, 2]
    assert wide["train_speedup"] == wide["infer_speedup"] == 1.0
    assert narrow["params"] < wide["params"]  # the same encoder, a narrower decoder
    for row in (wide, narrow):
        assert row["train_step_s"] > 0 and row["infer_call_s"] > 0
        assert row["train_speedup"] == pytest.approx(wide["train_step_s"] / row["train_step_s"])
    assert out[1].startswith("32-16-8-8-4") and out[2].startswith("16-8-4-4-2")


def test_the_inference_benchmarks_half_width_network_is_the_library_default(decoder_width):
    from geounet.app.classifier import DECODER_CHANNELS

    common = sys.modules["_common"]  # imported by the benchmark from its own folder
    half = common.NETWORKS["lite0-half"]
    assert tuple(half["unet_kwargs"]["decoder_channels"]) == DECODER_CHANNELS
    assert "decoder_channels" not in common.NETWORKS["lite0"]["unet_kwargs"]  # smp's width
    model = common.make_model("lite0-half")
    assert model.network.decoder.blocks[-1].conv2[0].out_channels == DECODER_CHANNELS[-1]
