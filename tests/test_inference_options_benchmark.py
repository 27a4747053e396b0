"""``benchmarks/inference_options.py``: saved recipe runs scored with other inference options.

The scoring itself is ``recipe.py``'s (tested there, and it needs ``../shared/data``); here a
stand-in for that module records what reaches ``classify`` and ``vectorize``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmark_modules import benchmark_module


@pytest.fixture(scope="module")
def options_bench():
    with benchmark_module("inference_options.py", "inference_options_benchmark") as module:
        yield module


def _row(saved: float, options: float) -> dict:
    return {"saved": {"building_f1": saved, "miou": 0.5}, "options": {"building_f1": options}}


def test_differences_are_averaged_and_counted(options_bench):
    rows = [_row(0.5, 0.6), _row(0.5, 0.4), _row(0.4, 0.7), _row(0.3, 0.3)]
    got = options_bench.mean_differences(rows)
    assert got["building_f1"] == {"mean": 0.075, "min": -0.1, "max": 0.3, "up": 2, "down": 1}
    assert "miou" not in got  # no run has it on both sides


def test_road_scenes_compare_road_figures(options_bench):
    summary = {
        "iou": {"background": 0.8, "road": 0.4}, "miou": 0.6, "road_completeness": 0.83,
        "road_correctness": 0.79, "road_quality": 0.68, "apls": 0.36, "road_lines": 89,
        "road_length_m": {"pred": 3366.9, "true": 3283.0},
    }  # fmt: skip
    got = options_bench.figures(summary)
    assert got["road_iou"] == 0.4 and got["apls"] == 0.36 and "building_f1" not in got
    bridged = dict(got, apls=0.72)
    diff = options_bench.mean_differences([{"saved": got, "options": bridged}])
    assert diff["apls"]["mean"] == 0.36 and diff["road_quality"]["mean"] == 0.0
    assert "building_f1" not in diff


def test_nothing_to_compare_is_refused(options_bench):
    with pytest.raises(SystemExit, match="--classify KEY=VALUE"):
        options_bench.parse_args(["--scene", "oam_zanzibar", "run"])


def test_options_reach_classify_and_vectorize_and_saved_rasters_are_scored_as_saved(
    options_bench, tmp_path
):
    run = tmp_path / "run1"
    (run / "scene").mkdir(parents=True)
    (run / "scene" / "classified_00.tif").write_bytes(b"")
    calls, scored = [], []

    class FakeClassifier:
        @classmethod
        def from_model(cls, path):
            calls.append(("from_model", Path(path)))
            return cls()

        def classify(self, image, out, **kwargs):
            calls.append(("classify", image, kwargs["tta"], kwargs["probabilities"]))

    def score(classified, data, scene, i, names, vectorize_options=None):
        scored.append((Path(classified), vectorize_options))
        return {"f1": 0.5 if classified.parent == run / "scene" else 0.6}

    def summarize(parts, names):
        f1 = parts[0]["f1"]
        return {"iou": {"Building": f1}, "miou": f1, "building_f1": f1, "pred_buildings": 3,
                "true_buildings": 4}  # fmt: skip

    recipe = SimpleNamespace(
        UnetClassifier=FakeClassifier, score_class_raster=score, summarize=summarize
    )
    scene = SimpleNamespace(test_images=[tmp_path / "test.tif"], allow_no_crs=False)
    data = SimpleNamespace(classes={0: "background", 1: "building"})
    options = {
        "classify": {"tta": "flips"},
        "vectorize": {"separate": False, "probabilities": True},
    }
    row = options_bench.score_run(recipe, run, "scene", scene, data, options, tmp_path)
    assert calls[0] == ("from_model", run / "scene" / "model")
    probabilities = tmp_path / "run1_00_probabilities.tif"
    assert calls[1] == ("classify", tmp_path / "test.tif", "flips", probabilities)
    assert scored[0] == (run / "scene" / "classified_00.tif", None)  # as the run left it
    assert scored[1] == (
        tmp_path / "run1_00.tif",
        {"separate": False, "probabilities": probabilities},
    )
    assert row["saved"]["building_f1"] == 0.5 and row["options"]["building_f1"] == 0.6
    assert row["options"]["building_iou"] == 0.6 and row["options"]["buildings"] == "3 / 4"


def test_a_run_without_its_class_raster_is_refused(options_bench, tmp_path):
    recipe = SimpleNamespace()
    scene = SimpleNamespace(test_images=[tmp_path / "test.tif"], allow_no_crs=False)
    data = SimpleNamespace(classes={0: "background", 1: "building"})
    options = {"classify": {}, "vectorize": {"separate": False}}
    with pytest.raises(SystemExit, match=r"classified_00\.tif: missing"):
        options_bench.score_run(recipe, tmp_path, "scene", scene, data, options, tmp_path)
