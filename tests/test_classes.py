"""Class lists: values, names, colours, colour tables and their JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geounet.core.classes import (
    PALETTE,
    ClassSpec,
    classes_from_json,
    classes_to_json,
    colormap,
    hex_to_rgb,
    make_classes,
    parse_classes,
    parse_classes_tag,
)
from geounet.core.errors import InvalidParameterError, InvalidRasterError


def _names(classes):
    return [c.name for c in classes]


def test_make_classes_from_ints():
    cls = make_classes({1: "building", 2: "road"})
    assert _names(cls) == ["background", "building", "road"]
    assert [c.value for c in cls] == [0, 1, 2]
    assert [c.color for c in cls] == list(PALETTE[:3])


def test_make_classes_with_named_zero_keeps_value():
    cls = make_classes({0: "background", 3: "water", 7: "forest"})
    assert [(c.value, c.name) for c in cls] == [(0, "background"), (3, "water"), (7, "forest")]


def test_make_classes_for_0_255_masks():
    cls = make_classes({255: "building"})
    assert [(c.value, c.name) for c in cls] == [(0, "background"), (255, "building")]
    cls = make_classes({0: "background", 255: "building"})
    assert [c.value for c in cls] == [0, 255]


def test_make_classes_from_names():
    assert [c.value for c in make_classes(["building", "road"])] == [0, 1, 2]
    listed = make_classes(["background", "building", "road"])  # index = value
    assert [(c.value, c.name) for c in listed] == [(0, "background"), (1, "building"), (2, "road")]


def test_make_classes_with_colour_keys_keeps_colours():
    cls = make_classes({"#FFFFFF": "background", "#ff0000": "building", "#0000FF": "water"})
    assert [c.value for c in cls] == ["#FFFFFF", "#FF0000", "#0000FF"]  # parse_classes: upper
    assert [c.color for c in cls] == ["#FFFFFF", "#FF0000", "#0000FF"]
    no_bg = make_classes({"#3C1098": "building"})
    assert no_bg[0] == ClassSpec(0, "background", PALETTE[0])
    assert no_bg[1].color == "#3C1098"


def test_make_classes_colour_overrides_and_validation():
    cls = make_classes({1: "building"}, colors={"building": "#00ff00", "background": "#101010"})
    assert cls[1].color == "#00FF00" and cls[0].color == "#101010"
    with pytest.raises(InvalidParameterError, match="RRGGBB"):
        make_classes({1: "building"}, colors={"building": "green"})


def test_make_classes_names_unique_and_one_background():
    with pytest.raises(InvalidParameterError, match="unique"):
        make_classes({1: "building", 2: "building"})
    with pytest.raises(InvalidParameterError, match="background"):
        make_classes({0: "background", 9: "background"})


def test_palette_never_reuses_the_background_colour():
    cls = make_classes([f"c{i}" for i in range(40)])
    assert all(c.color != PALETTE[0] for c in cls[1:])
    assert len({c.color for c in cls[1:16]}) == 15


def test_hex_to_rgb():
    assert hex_to_rgb("#3C1098") == (60, 16, 152)
    assert hex_to_rgb("ffffff") == (255, 255, 255)
    for bad in ("#12345", "#GGGGGG", "#1234567", "", "##123456"):
        with pytest.raises(InvalidParameterError, match="RRGGBB"):
            hex_to_rgb(bad)


def test_colormap_has_transparent_nodata():
    cls = make_classes({1: "building", 2: "road"})
    cmap = colormap(cls)
    assert cmap[0] == (0, 0, 0, 255)
    assert cmap[1] == (*hex_to_rgb(cls[1].color), 255)
    assert cmap[255] == (0, 0, 0, 0)
    assert sorted(cmap) == [0, 1, 2, 255]


@pytest.mark.parametrize(
    "mapping", [{1: "building", 2: "road"}, {"#000000": "background", "#FF0000": "roof"}]
)
def test_json_round_trip(mapping):
    cls = make_classes(mapping)
    text = json.dumps(classes_to_json(cls))
    assert json.loads(text)[1].keys() == {"value", "name", "color"}
    assert classes_from_json(json.loads(text)) == cls


# --------------------------------------------------------------- one parser for every spelling
SPELLINGS = [
    {1: "building", 2: "road"},
    {"1": "building", 2.0: "road"},
    ["building", "road"],
    ("building", "road"),
    ["background", "building", "road"],
    "1=building,2=road",
    " 1 = building , 2=road ",
    "building,road",
    "background,building,road",
    {0: "background", 1: "building", 2: "road"},
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_of_classes_means_the_same_classes(spelling):
    parsed = parse_classes(spelling)
    assert {k: v for k, v in parsed.items() if v != "background"} == {1: "building", 2: "road"}
    assert all(k == 0 for k, v in parsed.items() if v == "background")
    assert make_classes(spelling) == make_classes({1: "building", 2: "road"})


def test_parse_classes_values():
    assert parse_classes(None) is None
    assert parse_classes("building") == {1: "building"}
    assert parse_classes({np.uint8(255): "building"}) == {255: "building"}
    assert parse_classes("#3c1098=Building") == {"#3C1098": "Building"}
    assert parse_classes({"residential": "building"}) == {"residential": "building"}
    assert parse_classes("residential=building") == {"residential": "building"}


@pytest.mark.parametrize(
    ("spelling", "match"),
    [
        ("1=building,road", "mixes VALUE=NAME items with bare names"),
        ({1: "building", "1": "road"}, "given twice"),
        ({1: ""}, "empty name"),
        ({2.5: "building"}, "not an integer raster value"),
        ({True: "building"}, "not an integer raster value"),
    ],
)
def test_parse_classes_refuses_with_the_fix(spelling, match):
    with pytest.raises(InvalidParameterError, match=match) as err:
        parse_classes(spelling)
    assert "1=building" in str(err.value)  # the message shows the allowed form


@pytest.mark.parametrize("key", ["#3C1098", "x", 2.5])
def test_parse_classes_integer_values_for_class_rasters(key):
    with pytest.raises(InvalidParameterError, match="integer raster value"):
        parse_classes({key: "building"}, integer_values=True)


def test_parse_classes_tag_reads_both_forms_and_names_the_file():
    assert parse_classes_tag('{"0": "background", "1": "building"}', "p.tif") == {
        0: "background",
        1: "building",
    }
    listed = '[{"value": 0, "name": "background"}, {"value": 255, "name": "roof"}]'
    assert parse_classes_tag(listed, "p.tif") == {0: "background", 1: "roof"}  # index order
    for bad in ("not json", "[1, 2]", '{"x": "building"}', "{}", '"building"'):
        with pytest.raises(InvalidRasterError, match=r"p\.tif: the CLASSES tag"):
            parse_classes_tag(bad, "p.tif")


# ------------------------------------------------- the entry points read classes the same way
@pytest.fixture
def labelled_scene(make_raster):
    """A 64 x 64 image and a label raster holding 0 (background), 1 and 2."""
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.uint8)
    labels[8:30, 8:30] = 1
    labels[40:44, :] = 2
    image = rng.integers(1, 200, (3, 64, 64)).astype(np.uint8)
    image[:, labels == 1] += 50
    return make_raster(image, "img.tif"), make_raster(labels, "labels.tif")


@pytest.mark.parametrize("spelling", ["1=building,2=road", ["background", "building", "road"]])
def test_prepare_data_reads_every_spelling(labelled_scene, spelling):
    """Before: a text became one class named "1=building,2=road"; a list starting with
    background gave background the value 1 and refused the labels."""
    from geounet.data.prepare import prepare_data

    image, labels = labelled_scene
    data = prepare_data(image, labels, classes=spelling, chip_size=32, augment=False)
    values = [(c.value, c.name) for c in data.class_specs]
    assert values == [(0, "background"), (1, "building"), (2, "road")]


@pytest.mark.parametrize("spelling", [["building", "road"], "1=building,2=road", "building,road"])
def test_vectorize_reads_every_spelling(labelled_scene, spelling):
    """Before: vectorize refused anything but a mapping."""
    from geounet.vectorizing.pipeline import vectorize

    _, labels = labelled_scene
    reference = vectorize(labels, classes={1: "building", 2: "road"}, regularize=False)
    layers = vectorize(labels, classes=spelling, regularize=False)
    assert list(layers) == ["building", "road"]
    for name, gdf in layers.items():
        assert gdf.geometry.geom_equals(reference[name].geometry).all()
        assert len(gdf) == len(reference[name]) > 0


def test_evaluate_reads_a_list_of_names(labelled_scene):
    """Before: evaluate_rasters(classes=["building", "road"]) failed on dict(list)."""
    from geounet.evaluation.scores import evaluate_rasters

    _, labels = labelled_scene
    report = evaluate_rasters(labels, labels, classes=["building", "road"])
    assert report["classes"] == ["background", "building", "road"]
    assert report["per_class"]["iou"]["road"] == pytest.approx(1.0)


def test_class_rasters_carry_the_tag_the_parser_reads(tmp_path):
    """One writer (classes_tag) and one parser (parse_classes_tag) of the CLASSES tag."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from geounet.core.classes import classes_tag
    from geounet.io.raster import write_raster

    names = {0: "background", 1: "building", 255: "nodata-free"}
    assert parse_classes_tag(classes_tag(names), "x.tif") == names
    path = write_raster(
        tmp_path / "c.tif",
        np.zeros((4, 4), np.uint8),
        CRS.from_epsg(32616),
        Affine(0.5, 0, 500000, 0, -0.5, 3700000),
        class_names={0: "background", 1: "building"},
    )
    with rasterio.open(path) as src:
        tag = src.tags()["CLASSES"]
    assert parse_classes_tag(tag, path) == {0: "background", 1: "building"}
