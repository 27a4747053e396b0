"""Class definitions shared by data, model files, inference and vectorizing.

A class has a label ``value`` (what the source label raster or attribute holds), a ``name``
and a ``color`` (``"#RRGGBB"``). Everywhere inside geounet a class is addressed by its
*index* in the class list: chips and classified rasters store indices, 255 means nodata.
Index 0 is always ``background``.

Example:
    >>> cls = make_classes({1: "building", 2: "road"})
    >>> [c.name for c in cls]
    ['background', 'building', 'road']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from geounet.errors import InvalidParameterError
from geounet.types import IGNORE_INDEX

__all__ = [
    "PALETTE",
    "ClassSpec",
    "classes_from_json",
    "classes_to_json",
    "colormap",
    "hex_to_rgb",
    "make_classes",
]

#: Fixed palette: background grey-black, then distinct colours (buildings red, roads yellow...).
PALETTE = (
    "#000000",
    "#E6194B",
    "#FFE119",
    "#3CB44B",
    "#4363D8",
    "#F58231",
    "#911EB4",
    "#46F0F0",
    "#F032E6",
    "#BCF60C",
    "#FABEBE",
    "#008080",
    "#E6BEFF",
    "#9A6324",
    "#800000",
    "#AAFFC3",
)


@dataclass(frozen=True)
class ClassSpec:
    """One class: the label ``value`` in the source, its ``name`` and ``color`` (#RRGGBB)."""

    value: int | str
    name: str
    color: str


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#3C1098"`` -> ``(60, 16, 152)``."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise InvalidParameterError(f"colour {color!r} is not of the form '#RRGGBB'.")
    try:
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    except ValueError as exc:
        raise InvalidParameterError(f"colour {color!r} is not of the form '#RRGGBB'.") from exc


def make_classes(
    mapping: Mapping[Any, str] | Sequence[str],
    colors: Mapping[str, str] | None = None,
) -> list[ClassSpec]:
    """Build the class list, background first.

    Args:
        mapping: ``{label value: name}`` (values are ints, or ``"#RRGGBB"`` colours for
            colour-coded masks, whose colour then is the class colour), or a list of names
            (values 1, 2, ...). A value 0 (or a name ``"background"``) names the background.
        colors: Optional ``{name: "#RRGGBB"}`` overrides.

    Returns:
        ``[background, class 1, class 2, ...]`` in the order given.
    """
    if not isinstance(mapping, Mapping):
        mapping = {i + 1: name for i, name in enumerate(mapping)}
    colors = dict(colors or {})
    bg_value: int | str = 0
    out: list[ClassSpec] = []
    for value, name in mapping.items():
        if name == "background" or value == 0:
            bg_value = value
            continue
        out.append((value, str(name)))  # type: ignore[arg-type]
    specs = [ClassSpec(bg_value, "background", colors.get("background", PALETTE[0]))]
    for i, (value, name) in enumerate(out, start=1):
        default = value if isinstance(value, str) and value.startswith("#") else None
        color = colors.get(name) or default or PALETTE[i % len(PALETTE)]
        specs.append(ClassSpec(value, name, color.upper()))
    if len({c.name for c in specs}) != len(specs):
        raise InvalidParameterError(f"class names must be unique, got {[c.name for c in specs]}.")
    return specs


def colormap(classes: Sequence[ClassSpec]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table ``{index: (r, g, b, a)}`` for a class raster; 255 is transparent."""
    cmap = {i: (*hex_to_rgb(c.color), 255) for i, c in enumerate(classes)}
    cmap[IGNORE_INDEX] = (0, 0, 0, 0)
    return cmap


def classes_to_json(classes: Sequence[ClassSpec]) -> list[dict[str, Any]]:
    """The JSON form: ``[{"value", "name", "color"}, ...]`` in index order."""
    return [asdict(c) for c in classes]


def classes_from_json(items: Sequence[Mapping[str, Any]]) -> list[ClassSpec]:
    """Rebuild the class list from :func:`classes_to_json`."""
    return [ClassSpec(d["value"], str(d["name"]), str(d["color"])) for d in items]
