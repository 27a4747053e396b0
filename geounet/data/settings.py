"""The chipping settings of :func:`~geounet.data.prepare.prepare_data`, checked once.

:func:`~geounet.data.prepare.prepare_data` takes these as keyword arguments (documented there,
its public entry point) and passes one :class:`PrepareSettings` to the steps below it, which
read typed attributes instead of looking up keys in a dict.

Example:
    >>> s = PrepareSettings(classes={1: "building"}, chip_size=128)
    >>> s.stride, s.split
    (None, 'spatial')
    >>> s.for_area([(1000, 1500)]).stride      # 8 x 12 chips: a small area, half-chip steps
    64
    >>> s.for_area([(10000, 10000)]).stride    # plenty of chips side by side
    128
    >>> PrepareSettings(classes=None, val_fraction=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geounet.core.errors.InvalidParameterError: val_fraction=1.0 must be a number in [0, 1)...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from geounet.core.errors import InvalidParameterError
from geounet.core.types import VAL_STRIPS, check_choice
from geounet.data.chipping import SPLITS, check_chip_size, check_stride

__all__ = ["SMALL_AREA_CHIPS", "PrepareSettings"]

#: Below this many chips side by side, ``prepare_data`` without a stride steps by half a chip.
#: A small labelled area gives few chips (``oam_zanzibar``'s left two thirds: 28 of 256 px),
#: and chips side by side show each building at one place only; half-chip steps gave the
#: recipe's model building IoU 0.66 instead of 0.38 and object F1 0.47 instead of 0.39 on
#: the right third (``benchmarks/recipe.py``, same budget). On large areas the chips side by
#: side are already plenty, and four times the chips would cost disk and chipping time.
SMALL_AREA_CHIPS = 200


@dataclass(frozen=True)
class PrepareSettings:
    """What ``prepare_data`` chips and how; see :func:`~geounet.data.prepare.prepare_data`.

    Attributes:
        classes: The parsed class mapping (``{label value or "#RRGGBB": name}``), or None to
            infer the classes from the labels.
        label_field: Vector attribute holding each feature's class.
        chip_size: Chip size in pixels, a multiple of 32.
        stride: Step between chips; None: chosen from the area by :meth:`for_area`.
        bands: 1-based bands to use (None: all but alpha).
        nodata: Image nodata value overriding the files'.
        val_fraction: Share of chips set aside for validation, in [0, 1).
        split: ``"spatial"``, ``"rows"`` or ``"random"``.
        val_strip: Where ``split="spatial"`` puts an image's validation strip: ``"auto"``
            (away from the rest of the image a ``label_area`` leaves unlabelled, else the
            end; elsewhere if the strip there misrepresents a class,
            :mod:`geounet.data.strips`), ``"end"``, ``"middle"`` or ``"start"`` of its
            longer side.
        label_area: Polygon file outlining where the labels are complete (None: the whole
            images).
        min_valid_fraction: Chips with a smaller share of valid, labelled pixels are dropped.
        line_width_m: Width in metres given to line (and point) features.
        separate_touching: Class whose touching vector polygons are parted by a background
            gap in the masks (None: off).
        allow_no_crs: Accept images without a CRS.
        seed: Seed of the split (and of the statistics' sampling).

    Raises:
        InvalidParameterError: A value is out of range (raised on construction, before any
            file is opened); the message names the value and what is allowed.
    """

    classes: Mapping[Any, str] | None
    label_field: str | None = None
    chip_size: int = 256
    stride: int | None = None
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    val_fraction: float = 0.2
    split: str = "spatial"
    val_strip: str = "auto"
    label_area: str | None = None
    min_valid_fraction: float = 0.5
    line_width_m: float = 4.0
    separate_touching: str | None = "building"
    allow_no_crs: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_chip_size(self.chip_size)
        if self.stride is not None:
            object.__setattr__(self, "stride", check_stride(self.stride, self.chip_size))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        check_choice("split", self.split, SPLITS)
        check_choice("val_strip", self.val_strip, VAL_STRIPS)
        _check_fraction("val_fraction", self.val_fraction, closed=False)
        _check_fraction("min_valid_fraction", self.min_valid_fraction, closed=True)
        width = self.line_width_m
        if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
            raise InvalidParameterError(f"line_width_m={width!r} must be > 0 metres.")

    def for_area(self, sizes: Sequence[tuple[int, int]]) -> PrepareSettings:
        """These settings with the stride fixed for images of ``sizes`` ``(height, width)``.

        A stride given by the user is kept. Otherwise a small area, fewer than
        :data:`SMALL_AREA_CHIPS` chips side by side, is chipped with half-chip steps (four
        times the chips, each building seen at several places in a chip), and a larger one
        with chips side by side.
        """
        if self.stride is not None:
            return self
        cs = self.chip_size
        n = sum(math.ceil(h / cs) * math.ceil(w / cs) for h, w in sizes)
        return replace(self, stride=cs // 2 if n < SMALL_AREA_CHIPS else cs)


def _check_fraction(name: str, value: Any, *, closed: bool) -> None:
    """``value`` in ``[0, 1]`` (``closed``) or ``[0, 1)``, else an error naming ``name``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (0 <= value < 1 or (closed and value == 1)):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise InvalidParameterError(f"{name}={value!r} must be a number in {interval}.")
