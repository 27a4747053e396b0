"""Class lists: values, names, colours, colour tables and their JSON form."""

from __future__ import annotations

import json

import pytest

from geounet.core.classes import (
    PALETTE,
    ClassSpec,
    classes_from_json,
    classes_to_json,
    colormap,
    hex_to_rgb,
    make_classes,
)
from geounet.core.errors import InvalidParameterError


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
    assert [c.value for c in cls] == ["#FFFFFF", "#ff0000", "#0000FF"]
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
