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

from geounet.core.errors import InvalidParameterError
from geounet.core.types import IGNORE_INDEX

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
    """``"#3C1098"`` -> ``(60, 16, 152)`` (the ``#`` may be left out).

    Raises:
        InvalidParameterError: If ``color`` is not six hexadecimal digits.
    """
    c = color.removeprefix("#") if isinstance(color, str) else ""
    if len(c) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in c):
        raise InvalidParameterError(f"colour {color!r} is not of the form '#RRGGBB'.")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def make_classes(
    mapping: Mapping[Any, str] | Sequence[str],
    colors: Mapping[str, str] | None = None,
) -> list[ClassSpec]:
    """Build the class list, background first.

    Args:
        mapping: ``{label value: name}`` (values are ints, or ``"#RRGGBB"`` colours for
            colour-coded masks, whose colour then is the class colour), or a list of names
            (values 1, 2, ...; a list that starts with ``"background"`` counts from 0).
            A value 0 (or a name ``"background"``) names the background; without one the
            background has value 0 (so ``{255: "building"}`` reads 0/255 masks).
        colors: Optional ``{name: "#RRGGBB"}`` overrides.

    Returns:
        ``[background, class 1, class 2, ...]`` in the order given.

    Raises:
        InvalidParameterError: Duplicate names, two backgrounds or a malformed colour.

    Example:
        >>> [c.value for c in make_classes({255: "building"})]
        [0, 255]
    """
    if not isinstance(mapping, Mapping):
        names = list(mapping)
        first = 0 if names and names[0] == "background" else 1
        mapping = {i + first: name for i, name in enumerate(names)}
    colors = {str(k): _check_color(v) for k, v in (colors or {}).items()}
    backgrounds = [v for v, name in mapping.items() if name == "background" or _is_zero(v)]
    if len(backgrounds) > 1:
        raise InvalidParameterError(
            f"only one background class is allowed, got values {backgrounds}; "
            "name one class 'background' (or give it the value 0)."
        )
    bg_value: int | str = backgrounds[0] if backgrounds else 0
    bg_color = colors.get("background") or (_value_color(bg_value) or PALETTE[0])
    specs = [ClassSpec(bg_value, "background", bg_color)]
    others = [(v, str(name)) for v, name in mapping.items() if not backgrounds or v != bg_value]
    for i, (value, name) in enumerate(others, start=1):
        default = _value_color(value) or PALETTE[1 + (i - 1) % (len(PALETTE) - 1)]
        specs.append(ClassSpec(value, name, colors.get(name) or default))
    if len({c.name for c in specs}) != len(specs):
        raise InvalidParameterError(f"class names must be unique, got {[c.name for c in specs]}.")
    return specs


def _is_zero(value: Any) -> bool:
    return not isinstance(value, str | bool) and value == 0


def _value_color(value: Any) -> str | None:
    """The colour of a colour-coded label value (``"#RRGGBB"``), else None."""
    if isinstance(value, str) and value.startswith("#"):
        return _check_color(value)
    return None


def _check_color(color: str) -> str:
    """``color`` as ``"#RRGGBB"`` in upper case, or a clear error."""
    r, g, b = hex_to_rgb(color)
    return f"#{r:02X}{g:02X}{b:02X}"


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
