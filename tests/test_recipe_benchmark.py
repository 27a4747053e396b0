"""The command line of ``benchmarks/recipe.py`` (the protocol itself needs ``../shared/data``)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parent.parent / "benchmarks" / "recipe.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe_benchmark", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_prepare_overrides_are_python_literals_or_strings(recipe):
    got = recipe.parse_overrides(["stride=64", "separate_touching=None", "split=rows"])
    assert got == {"stride": 64, "separate_touching": None, "split": "rows"}
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        recipe.parse_overrides(["stride"])


def test_a_busy_machine_is_named_before_training(recipe):
    assert recipe.busy_warning(0.4, 2) is None
    warning = recipe.busy_warning(1.3, 2)
    assert "busy (load 1.3 on 2 cores)" in warning and "stopped_by" in warning


def test_seed_and_prepare_options_reach_the_arguments(recipe):
    args = recipe.parse_args(["--scene", "inria_austin", "--seed", "2", "--prepare", "stride=64"])
    assert (args.scene, args.seed, args.prepare) == ("inria_austin", 2, ["stride=64"])
    assert recipe.parse_args([]).seed is None


def test_model_options_reach_unet_classifier_keywords(recipe):
    args = recipe.parse_args(["--model", "decoder_channels=(128,64,32,16,8)", "--model", "seed=3"])
    got = recipe.parse_overrides(args.model, "--model")
    assert got == {"decoder_channels": (128, 64, 32, 16, 8), "seed": 3}
    with pytest.raises(SystemExit, match="--model 'decoder_channels': expected KEY=VALUE"):
        recipe.parse_overrides(["decoder_channels"], "--model")


def test_chip_views_option_sets_the_plan_inside_the_block_only(recipe):
    from geounet.model import schedule
    from geounet.model.schedule import plan_training

    assert recipe.parse_args(["--chip-views", "2000"]).chip_views == 2000
    before = schedule.TARGET_CHIP_VIEWS
    with recipe.planned_chip_views(2000) as views:
        assert views == 2000
        assert plan_training(50, "cpu")[0] == 40  # 2000 views / 50 chips
    assert before == schedule.TARGET_CHIP_VIEWS
    with recipe.planned_chip_views(None) as views:
        assert views == before
    cap = schedule.MAX_EPOCHS
    with recipe.planned_chip_views(3 * before):  # a larger plan lifts the epoch cap too
        assert plan_training(4, "cuda")[0] == 3 * cap
        assert plan_training(50, "cpu")[0] == math.ceil(3 * before / 50)
    assert (before, cap) == (schedule.TARGET_CHIP_VIEWS, schedule.MAX_EPOCHS)
    with pytest.raises(SystemExit, match="positive"), recipe.planned_chip_views(0):
        pass


class _RecordedError(Exception):
    """Raised by the fake model's ``fit`` once it has seen its arguments."""


def test_fit_options_and_seed_reach_fit(recipe, monkeypatch, tmp_path):
    seen = {}

    class FakeModel:
        def fit(self, *args, **kwargs):
            seen.update(args=args, kwargs=kwargs)
            raise _RecordedError

    scene = recipe.Scene([tmp_path / "a.tif"], [tmp_path / "a.gpkg"], [], [], ["building"])
    monkeypatch.setitem(recipe.SCENES, "fake", lambda root, out: scene)
    monkeypatch.setattr(recipe, "prepare_data", lambda *a, **k: object())
    monkeypatch.setattr(recipe, "make_model", lambda data, **k: (FakeModel(), "lite0"))
    args = recipe.parse_args(["--fit", "checkpoint=False", "--fit", "refit_on_all=True"])
    options = recipe.parse_overrides(args.fit, "--fit")
    with pytest.raises(_RecordedError):
        recipe.run_scene("fake", tmp_path, tmp_path, None, seed=4, fit_options=options)
    assert seen == {"args": (), "kwargs": {"checkpoint": False, "refit_on_all": True, "seed": 4}}
    with pytest.raises(SystemExit, match="use --seed"):
        recipe.main(["--fit", "seed=3", "--data", str(tmp_path)])


def test_vectorize_options_reach_the_scoring(recipe, monkeypatch, tmp_path):
    seen = []

    class FakeHistory(list):
        def __init__(self, items):
            super().__init__(items)
            self.attrs = {}

    class FakeModel:
        config = type("C", (), {"class_names": ["background", "building"], "object_sizes": {}})

        def fit(self, *args, **kwargs):
            return FakeHistory([1])

        def save(self, *args, **kwargs):
            pass

        def classify(self, *args, **kwargs):
            pass

    def score(classified, data, scene, i, names, vectorize_options=None):
        seen.append(vectorize_options)
        return {}

    scene = recipe.Scene([tmp_path / "a.tif"], [tmp_path / "a.gpkg"], [tmp_path / "t.tif"], [], [])
    monkeypatch.setitem(recipe.SCENES, "fake", lambda root, out: scene)
    monkeypatch.setattr(recipe, "prepare_data", lambda *a, **k: type("D", (), {"manifest": {}})())
    monkeypatch.setattr(recipe, "make_model", lambda data, **k: (FakeModel(), "lite0"))
    monkeypatch.setattr(recipe, "score_class_raster", score)
    monkeypatch.setattr(recipe, "summarize", lambda parts, names: {})
    args = recipe.parse_args(["--vectorize", "grow_confidence=0.2"])
    options = recipe.parse_overrides(args.vectorize, "--vectorize")
    recipe.run_scene("fake", tmp_path, tmp_path, None, vectorize_options=options)
    assert seen == [{"grow_confidence": 0.2}]


def test_label_area_gives_the_whole_image_and_a_polygon_of_the_training_part(
    recipe, make_raster, tmp_path
):
    import geopandas as gpd
    import numpy as np
    from rasterio.windows import Window

    image = make_raster(np.zeros((1, 60, 90), np.uint8), "whole.tif")
    train, test = recipe.train_window(image, "left")
    assert (train.width, test.col_off, test.width) == (60, 60, 30)
    scene = recipe.Scene([tmp_path / "crop.tif"], [tmp_path / "b.gpkg"], [], [], ["building"])
    assert recipe.training_inputs(scene, tmp_path, False) == (
        [str(tmp_path / "crop.tif")], [str(tmp_path / "b.gpkg")], {},
    )  # fmt: skip
    with pytest.raises(SystemExit, match="no single image"):
        recipe.training_inputs(scene, tmp_path, True)
    scene.whole = (image, tmp_path / "b.gpkg", Window(0, 0, 60, 60))
    images, labels, extra = recipe.training_inputs(scene, tmp_path / "out", True)
    assert (images, labels) == ([str(image)], [str(tmp_path / "b.gpkg")])
    area = gpd.read_file(extra["label_area"])
    # conftest's grid: origin (500000, 3700000), 0.5 m pixels; 60 x 60 px = 30 m x 30 m
    assert tuple(area.total_bounds) == (500000.0, 3699970.0, 500030.0, 3700000.0)
    assert recipe.parse_args(["--label-area"]).label_area


def _lines_file(path, lines, crs):
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=lines, crs=crs).to_crs("EPSG:4326").to_file(path)
    return path


def test_road_lines_are_clipped_to_the_mapped_part_and_scored_in_metres(
    recipe, make_raster, tmp_path
):
    import geopandas as gpd
    import numpy as np
    from conftest import UTM
    from shapely import LineString

    # 200 x 200 px at 0.5 m: x 500000-500100, y 3699900-3700000 (m)
    image = make_raster(np.zeros((1, 200, 200), np.uint8), "part.tif")
    y = 3699950.0
    truth = _lines_file(tmp_path / "roads.geojson", [LineString([(499950, y), (500150, y)])], UTM)
    found = LineString([(500000, y + 1), (500050, y + 1)])  # half of the road, 1 m off
    stray = LineString([(500010, 3699910), (500030, 3699910)])  # 20 m, 40 m from the road
    layer = gpd.GeoDataFrame(geometry=[found, stray], crs=UTM).to_crs("EPSG:4326")
    got = recipe.score_roads(image, truth, layer)
    assert got["truth_m"] == pytest.approx(100.0, abs=0.01)  # clipped to the part
    assert got["pred_m"] == pytest.approx(70.0, abs=0.01)
    assert got["pred_hit_m"] == pytest.approx(50.0, abs=0.01)
    assert got["truth_hit_m"] == pytest.approx(50.0 + 3.0, abs=0.2)  # + the buffer's end
    assert 0.0 < got["apls"] < 1.0 and got["n_lines"] == 2
    missed = recipe.score_roads(image, truth, None)
    assert (missed["pred_m"], missed["truth_hit_m"], missed["apls"]) == (0.0, 0.0, 0.0)

    summary = recipe.summarize_roads([got, missed])
    assert summary["road_completeness"] == pytest.approx(53.0 / 200.0, abs=0.002)
    assert summary["road_correctness"] == pytest.approx(50.0 / 70.0, abs=0.001)
    assert summary["road_quality"] == pytest.approx(50.0 / (70.0 + 200.0 - 53.0), abs=0.002)
    assert summary["road_length_m"] == {"pred": 70.0, "true": 200.0}
    assert summary["road_lines"] == 2 and summary["apls"] == pytest.approx(
        got["apls"] / 2, abs=1e-4
    )


def test_a_road_scene_is_scored_on_its_pixels_and_centre_lines(recipe, make_raster, tmp_path):
    import numpy as np
    import rasterio
    from conftest import UTM
    from rasterio import features
    from shapely import LineString

    from geounet.data.prepare import prepare_data

    rng = np.random.default_rng(0)
    image = make_raster(rng.integers(0, 255, (3, 128, 256), dtype=np.uint8), "part.tif")
    y = 3699968.0  # 64 px down
    road = LineString([(500000, y), (500128, y)])
    lines = _lines_file(tmp_path / "roads.geojson", [road], UTM)
    data = prepare_data(
        [str(image)], [str(lines)], classes=["road"], chip_size=64, out_dir=tmp_path / "chips"
    )
    with rasterio.open(image) as src:
        burnt = features.rasterize(
            [(road.buffer(2.0, cap_style="flat"), 1)], (128, 256), transform=src.transform
        )
    classified = make_raster(burnt.astype(np.uint8), "classified.tif")
    scene = recipe.Scene([], [], [image], [lines], ["road"], vector_truth=True, objects="road")
    names = ["background", "road"]  # as the trained model names them
    part = recipe.score_class_raster(classified, data, scene, 0, names, {"classes": {1: "road"}})
    summary = recipe.summarize([part], names)
    assert summary["iou"]["road"] > 0.9 and "building_f1" not in summary
    assert summary["road_completeness"] > 0.95 and summary["road_correctness"] > 0.95
    assert summary["road_length_m"]["true"] == pytest.approx(128.0, abs=0.01)
    assert summary["apls"] > 0.9 and summary["road_lines"] >= 1


def test_a_building_scene_says_whether_touching_buildings_were_split(recipe, make_raster, tmp_path):
    import numpy as np

    from geounet.data.prepare import prepare_data

    labels = np.zeros((128, 128), np.uint8)
    labels[20:36, 20:36] = labels[20:36, 40:56] = 1
    labels[26:30, 36:40] = 1  # two squares joined by a bridge: one labelled building
    image = make_raster(np.repeat(labels[None] * 200, 3, axis=0), "part.tif")
    truth = make_raster(labels, "truth.tif")
    data = prepare_data(
        [str(image)], [str(truth)], classes={1: "building"}, chip_size=64,
        out_dir=tmp_path / "chips",
    )  # fmt: skip
    scene = recipe.Scene([], [], [image], [truth], {1: "building"})
    names = ["background", "building"]
    for options, split, pred in (({}, True, 2), ({"separate": False}, False, 1)):
        options = {"classes": {1: "building"}, **options}
        part = recipe.score_class_raster(truth, data, scene, 0, names, options)
        summary = recipe.summarize([part], names)
        assert summary["separated"] == [split]
        assert summary["pred_buildings"] == pred and summary["true_buildings"] == 1
        assert summary["building_f1"] == (1.0 if pred == 1 else 0.0)
