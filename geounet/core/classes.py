"""Class definitions shared by data, model files, inference and vectorizing.

A class has a label ``value`` (what the source label raster or attribute holds), a ``name``
and a ``color`` (``"#RRGGBB"``). Everywhere inside geounet a class is addressed by its
*index* in the class list: chips and classified rasters store indices, 255 means nodata.
Index 0 is always ``background``.

``classes`` means ``{raster value: name}`` in every entry point (``prepare_data``,
``vectorize``, ``evaluate_rasters`` and the CLI's ``--classes 1=building,2=road``); a list of
names is shorthand for the values 1, 2, ... (0 is background). :func:`parse_classes` is the one
parser of every spelling, :func:`parse_classes_tag` the one parser of the ``CLASSES`` tag that
class rasters carry.

Example:
    >>> cls = make_classes({1: "building", 2: "road"})
    >>> [c.name for c in cls]
    ['background', 'building', 'road']
    >>> parse_classes("1=building,2=road") == parse_classes(["building", "road"])
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from geounet.core.errors import InvalidParameterError, InvalidRasterError
from geounet.core.types import IGNORE_INDEX

__all__ = [
    "CANONICAL_NAMES",
    "PALETTE",
    "ClassSpec",
    "classes_from_json",
    "classes_tag",
    "classes_to_json",
    "colormap",
    "hex_to_rgb",
    "inferred_name",
    "make_classes",
    "parse_classes",
    "parse_classes_tag",
    "special_class",
]

#: Spellings of the classes the pipeline treats specially (``vectorize`` regularizes and
#: splits ``building`` and draws ``road`` as centre lines), as file names and label values
#: spell them: ``buildings.geojson`` labels ``building``.
CANONICAL_NAMES = {
    "building": "building",
    "buildings": "building",
    "road": "road",
    "roads": "road",
}

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
    mapping: Mapping[Any, str] | Sequence[str] | str,
    colors: Mapping[str, str] | None = None,
) -> list[ClassSpec]:
    """Build the class list, background first.

    Args:
        mapping: ``{label value: name}`` (values are ints, or ``"#RRGGBB"`` colours for
            colour-coded masks, whose colour then is the class colour), or a list of names
            or a text that :func:`parse_classes` reads (values 1, 2, ...; a list that starts
            with ``"background"`` counts from 0).
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
    mapping = parse_classes(mapping) or {}  # every spelling, keys normalised
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


def parse_classes(
    classes: Mapping[Any, Any] | Sequence[str] | str | None,
    *,
    integer_values: bool = False,
) -> dict[int | str, str] | None:
    """Normalise any spelling of ``classes`` into ``{raster value: name}`` (None stays None).

    Accepted spellings, the same in every entry point:

    - a mapping ``{value: name}``: integer values (also ``2.0``, ``"2"`` or numpy integers),
      ``"#RRGGBB"`` colours of colour-coded masks (returned upper case) or, with vector labels,
      attribute values (other strings, kept as they are);
    - a list of names: values 1, 2, ... (0 is background; a list whose first name is
      ``"background"`` counts from 0);
    - a single name: ``{1: name}``;
    - the command-line text: ``"1=building,2=road"``, ``"#3C1098=Building"`` or
      ``"building,road"`` (names only, the list shorthand).

    Args:
        classes: One of the spellings above.
        integer_values: Require integer raster values (class rasters: ``vectorize``,
            ``evaluate_rasters``); colours and attribute values are refused.

    Returns:
        ``{value: name}`` in the order given, or None.

    Raises:
        InvalidParameterError: An empty or duplicate name, a value that is not allowed, or a
            command-line text mixing ``VALUE=NAME`` items and bare names.

    Example:
        >>> parse_classes("1=building,2=road")
        {1: 'building', 2: 'road'}
        >>> parse_classes(["background", "building"])
        {0: 'background', 1: 'building'}
        >>> parse_classes({"#3c1098": "Building", 255.0: "road"})
        {'#3C1098': 'Building', 255: 'road'}
    """
    if classes is None:
        return None
    if isinstance(classes, str):
        items = _text_items(classes)
    elif isinstance(classes, Mapping):
        items = list(classes.items())
    else:
        names = [str(n) for n in classes]
        first = 0 if names and names[0] == "background" else 1
        items = list(enumerate(names, start=first))
    out: dict[int | str, str] = {}
    for key, name in items:
        value = _class_value(key, integer_values)
        if not str(name).strip():
            raise InvalidParameterError(
                f"classes: value {key!r} has an empty name; give each class a name, e.g. "
                "classes={1: 'building'} (--classes 1=building)."
            )
        if value in out:
            raise InvalidParameterError(
                f"classes: value {key!r} is given twice; give each raster value once, e.g. "
                "--classes 1=building,2=road."
            )
        out[value] = str(name).strip()
    return out


def _text_items(text: str) -> list[tuple[Any, str]]:
    """``"1=building,2=road"`` -> pairs; ``"building,road"`` -> the list shorthand."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    pairs = [p for p in parts if "=" in p]
    if not pairs:
        first = 0 if parts and parts[0] == "background" else 1
        return list(enumerate(parts, start=first))
    if len(pairs) != len(parts):
        bare = [p for p in parts if "=" not in p]
        raise InvalidParameterError(
            f"classes {text!r} mixes VALUE=NAME items with bare names {bare}; give either "
            "values and names (--classes 1=building,2=road) or names only (--classes "
            "building,road, values 1, 2, ...)."
        )
    return [tuple(s.strip() for s in p.split("=", 1)) for p in pairs]  # type: ignore[misc]


def _class_value(key: Any, integer_values: bool) -> int | str:
    """A class key as an int, an upper-case ``"#RRGGBB"`` or (vector attributes) a string."""
    if hasattr(key, "item") and not isinstance(key, str):  # numpy scalars
        key = key.item()
    if isinstance(key, str):
        text = key.strip()
        if text.startswith("#") and not integer_values:
            return _check_color(text)
        try:
            return int(text)
        except ValueError:
            if not integer_values:
                return text
    elif isinstance(key, int) and not isinstance(key, bool):
        return key
    elif isinstance(key, float) and key.is_integer():
        return int(key)
    allowed = "an integer raster value" + ("" if integer_values else ", a '#RRGGBB' colour")
    raise InvalidParameterError(
        f"classes key {key!r} is not {allowed}; give {{raster value: name}}, e.g. "
        "classes={1: 'building', 2: 'road'} (--classes 1=building,2=road)."
    )


def classes_tag(names: Mapping[int, str]) -> str:
    """The ``CLASSES`` tag of a class raster: the JSON object ``{"value": name}``.

    The one writer of the tag that :func:`parse_classes_tag` reads.

    Example:
        >>> classes_tag({0: "background", 1: "building"})
        '{"0": "background", "1": "building"}'
        >>> parse_classes_tag(classes_tag({0: "background", 1: "building"}), "p.tif")
        {0: 'background', 1: 'building'}
    """
    return json.dumps({str(int(k)): str(v) for k, v in names.items()})


def parse_classes_tag(tag: str, source: Any) -> dict[int, str]:
    """``{raster value: name}`` from the ``CLASSES`` tag of a class raster.

    The tag is the JSON object ``{"0": "background", "1": "building"}`` written with every
    class raster (a list ``[{"value", "name"}, ...]`` in index order is read as well).

    Args:
        tag: The tag's text.
        source: The raster it was read from (named in the error).

    Raises:
        InvalidRasterError: The tag is not class metadata.

    Example:
        >>> parse_classes_tag('{"0": "background", "1": "building"}', "pred.tif")
        {0: 'background', 1: 'building'}
    """
    try:
        data = json.loads(tag)
        if isinstance(data, list):
            data = {i: d["name"] for i, d in enumerate(data)}
        parsed = parse_classes(data, integer_values=True)
        if not isinstance(data, dict) or not parsed:
            raise ValueError("not a non-empty JSON object")
    except (ValueError, TypeError, KeyError, InvalidParameterError) as exc:
        raise InvalidRasterError(
            f"{source}: the CLASSES tag {tag[:80]!r} is not valid class metadata ({exc}); it "
            'should be a JSON object such as {"0": "background", "1": "building"}. Pass '
            "classes={value: name} (--classes 1=building) explicitly, or fix the tag."
        ) from exc
    return {int(k): v for k, v in parsed.items()}


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


def inferred_name(text: str) -> str:
    """A class name taken from a file name or a label value, as the pipeline knows it.

    ``buildings`` and ``roads`` (any case) become ``building`` and ``road``
    (:data:`CANONICAL_NAMES`); other names are kept as they are.

    Example:
        >>> inferred_name("Buildings"), inferred_name("roads"), inferred_name("trees")
        ('building', 'road', 'trees')
    """
    return CANONICAL_NAMES.get(text.strip().lower(), text)


def special_class(names: Sequence[str], wanted: str) -> str:
    """The class of ``names`` that plays the part of ``wanted`` (``"building"``, ``"road"``).

    ``wanted`` itself if it is one of ``names``, else the one name spelled as it otherwise
    (:func:`inferred_name`: a model trained on ``Buildings``), else ``wanted``.

    Example:
        >>> special_class(["background", "Buildings", "Roads"], "building")
        'Buildings'
        >>> special_class(["background", "building", "Buildings"], "building")
        'building'
    """
    if wanted in names:
        return wanted
    spelled = [n for n in names if inferred_name(n) == wanted]
    return spelled[0] if len(spelled) == 1 else wanted
