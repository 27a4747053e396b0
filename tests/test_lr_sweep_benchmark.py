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
