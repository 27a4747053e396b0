"""``benchmarks/lr_sweep.py``: what ``fit()``'s learning-rate sweep picks on a real scene."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from benchmark_modules import benchmark_module
from conftest import shared_data


@pytest.fixture(autouse=True)
def _forget_the_recipe():
    """The script loads ``recipe.py`` as ``recipe_benchmark``; other tests load it afresh."""
    yield
    sys.modules.pop("recipe_benchmark", None)


def test_lr_sweep_refuses_a_missing_data_folder(tmp_path: Path, capsys):
    with benchmark_module("lr_sweep.py", "lr_sweep_benchmark") as bench:
        assert bench.main(["--data", str(tmp_path / "none"), "--scene", "oam_kampala"]) == 2
    assert "shared data folder is missing" in capsys.readouterr().err


@pytest.mark.realdata
def test_lr_sweep_reports_fits_own_sweep_on_kampala(capsys, one_thread):
    """The record is ``fit()``'s own sweep: 16 learning rates from 1e-5 to 1, the suggestion
    within the recipe's cap for a pretrained encoder."""
    data = shared_data("oam_kampala").parent
    with benchmark_module("lr_sweep.py", "lr_sweep_benchmark") as bench:
        assert bench.main(["--data", str(data), "--scene", "oam_kampala", "--seeds", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = result["scenes"]["oam_kampala"]
    assert len(row["lrs"]) == len(row["losses"]) == 16
    assert row["lrs"][0] == pytest.approx(1e-5) and row["lrs"][-1] == pytest.approx(1.0)
    assert 0 < row["suggestion"] <= 1e-3


def test_raw_readings_cap_a_pretrained_encoder_and_see_divergence_only_when_smoothed_enough():
    """A curve whose raw loss falls to LR 1e-2, then climbs to nearly 4 times its lowest:
    every reading caps a pretrained encoder at 1e-3; fit()'s light smoothing sees no
    divergence in 16 steps (the fallback), a heavy one does."""
    with benchmark_module("lr_sweep.py", "lr_sweep_benchmark") as bench:
        lrs = [1e-5 * 10 ** (5 * i / 15) for i in range(16)]
        raw = [1.4 - 0.05 * i for i in range(10)] + [1.2, 1.5, 1.9, 2.4, 3.0, 3.6]
        readings = bench.read_raw(lrs, raw)
    assert set(readings) == {
        f"{s}/{k}" for s in bench.SMOOTHINGS for k in ("pretrained", "scratch")
    }
    assert all(r["suggestion"] <= 1e-3 for k, r in readings.items() if k.endswith("pretrained"))
    assert readings["0.05/scratch"]["fallback"]
    heavy = readings["0.5/scratch"]
    assert not heavy["fallback"] and heavy["minimum"] == pytest.approx(lrs[9])
    assert heavy["suggestion"] == pytest.approx(heavy["steepest"])  # below the divergence


@pytest.mark.realdata
def test_raw_sweep_records_every_step_on_kampala(capsys, one_thread):
    data = shared_data("oam_kampala").parent
    with benchmark_module("lr_sweep.py", "lr_sweep_benchmark") as bench:
        args = ["--raw", "--data", str(data), "--scene", "oam_kampala", "--seeds", "1"]
        assert bench.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = result["scenes"]["oam_kampala"]
    assert result["raw"] and len(row["raw"]) == len(row["lrs"]) == 16  # no stop in raw mode
    assert row["readings"]["0.05/pretrained"]["suggestion"] <= 1e-3
