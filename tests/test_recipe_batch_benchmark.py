"""``benchmarks/recipe_batch.py``: many protocol runs at once, one core each."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from benchmark_modules import benchmark_module

FAKE_RECIPE = """
import json, os, sys
args = sys.argv[1:]
scene, seed = args[args.index("--scene") + 1], int(args[args.index("--seed") + 1])
if "--fail" in args:
    print("Traceback: something broke")
    sys.exit(3)
print("fit: 100%")
print(json.dumps({"scenes": {scene: {
    "building_f1": 0.5 + seed / 100, "iou": {"building": 0.6}, "miou": 0.7,
    "pred_buildings": 3, "true_buildings": 4, "epochs": 5, "stopped_by": "epochs",
    "train_minutes": 0.1, "cores": sorted(os.sched_getaffinity(0)),
    "threads": os.environ["GEOUNET_NUM_THREADS"], "args": args}}}))
"""


@pytest.fixture
def batch(tmp_path: Path, monkeypatch):
    with benchmark_module("recipe_batch.py", "recipe_batch_benchmark") as module:
        fake = tmp_path / "fake_recipe.py"
        fake.write_text(FAKE_RECIPE)
        monkeypatch.setattr(module, "RECIPE", fake)
        yield module


def test_runs_are_every_scene_variant_and_seed_with_readable_names(batch):
    runs = batch.plan_runs(["oam_kampala", "inria_austin"], ["", "--fit lr=2e-3"], [1, 2])
    assert len(runs) == 8 and runs[0] == batch.Run("oam_kampala", "", 1)
    assert runs[0].name == "oam_kampala-defaults-s1"
    assert runs[3].name == "oam_kampala-fit_lr_2e-3-s2"
    views = batch.Run("oam_zanzibar", "--chip-views 18000 --fit time_budget_s=330", 2)
    assert views.name == "oam_zanzibar-chip-views_18000_fit_time_budget_s_330-s2"
    cmd = views.command(Path("out"), Path("data"))
    assert cmd[0] == sys.executable and cmd[1] == str(batch.RECIPE)
    assert cmd[2:] == [
        "--scene", "oam_zanzibar", "--seed", "2", "--chip-views", "18000", "--fit",
        "time_budget_s=330", "--out", str(Path("out") / views.name), "--data", "data",
    ]  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs CPU affinity")
def test_each_run_has_cores_of_its_own_and_as_many_threads(batch, tmp_path, capsys):
    out = tmp_path / "runs"
    code = batch.main(
        ["--scene", "oam_kampala", "--seeds", "1", "2", "3", "--out", str(out), "--jobs", "2"]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = json.loads(lines[-1])["runs"]
    assert [r["run"] for r in records] == [f"oam_kampala-defaults-s{n}" for n in (1, 2, 3)]
    groups = batch.core_groups(2)
    for r in records:
        scene = r["result"]["scenes"]["oam_kampala"]
        assert r["rc"] == 0 and scene["cores"] == r["cores"] and tuple(r["cores"]) in groups
        assert scene["threads"] == str(len(r["cores"]))
        assert (out / f"{r['run']}.log").is_file()
    assert sum("F1 0.5" in line and "3 / 4 buildings" in line for line in lines) == 3


def test_cores_are_shared_out_evenly_and_never_twice(batch, monkeypatch):
    monkeypatch.setattr(batch, "cores", lambda: list(range(16)))
    assert batch.core_groups(1) == [tuple(range(16))]  # one run: every core, 16 threads
    twelve = batch.core_groups(12)
    assert len(twelve) == 12 and all(len(g) == 1 for g in twelve)
    assert len({c for g in twelve for c in g}) == 12
    assert batch.core_groups(40) == [(c,) for c in range(16)]  # never more runs than cores
    monkeypatch.setattr(batch, "cores", lambda: [0, 1])
    assert batch.core_groups(1) == [(0, 1)]


def test_a_variant_given_twice_is_refused(batch, tmp_path):
    args = ["--scene", "oam_kampala", "--variant=--epochs 1", "--variant=--epochs  1"]
    with pytest.raises(SystemExit, match="named twice"):
        batch.main([*args, "--out", str(tmp_path)])


def test_a_failed_run_is_reported_and_fails_the_batch(batch, tmp_path, capsys):
    args = ["--scene", "oam_kampala", "--seeds", "1", "--variant=", "--variant=--fail"]
    assert batch.main([*args, "--out", str(tmp_path / "runs"), "--jobs", "1"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    records = json.loads(lines[-1])["runs"]
    assert [r["rc"] for r in records] == [0, 3] and records[1]["result"] is None
    assert any("oam_kampala-fail-s1: rc 3" in line and "no figures" in line for line in lines)
