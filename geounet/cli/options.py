"""Options shared by several commands, and the parsers they need."""

from __future__ import annotations

from typing import Any

import click

from geounet.core.errors import InvalidParameterError
from geounet.core.types import BLEND_MODES, TTA_MODES

__all__ = [
    "batch_size_opt",
    "blend_opt",
    "device_opt",
    "overlap_opt",
    "overwrite_opt",
    "parse_classes",
    "parse_value_map",
    "tile_size_opt",
    "tta_opt",
]

overwrite_opt = click.option(
    "--overwrite", is_flag=True, help="Replace outputs that already exist (refused otherwise)."
)
tile_size_opt = click.option(
    "--tile-size",
    type=click.IntRange(32, 8192),
    default=512,
    show_default=True,
    help="Tile size in pixels fed to the network.",
)
overlap_opt = click.option(
    "--overlap",
    type=click.IntRange(0, 4096),
    default=64,
    show_default=True,
    help="Overlap between neighbouring tiles in pixels.",
)
batch_size_opt = click.option(
    "--batch-size",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Tiles per network call.",
)
blend_opt = click.option(
    "--blend",
    type=click.Choice(BLEND_MODES),
    default="spline",
    show_default=True,
    help="How overlapping tiles are merged.",
)
tta_opt = click.option(
    "--tta",
    type=click.Choice(TTA_MODES),
    default=None,
    help="Test-time augmentation: 4 flips or 8 dihedral transforms.",
)
device_opt = click.option(
    "--device",
    default=None,
    metavar="DEVICE",
    help="cpu, cuda or cuda:N (default: CUDA when present, else CPU).",
)


def parse_classes(text: str | None) -> dict[Any, str] | None:
    """Parse ``"1=building,2=road"`` or ``"#3C1098=Building,..."`` into a class mapping.

    A single name without ``=`` (``"building"``) is returned as ``{1: name}``.
    """
    if not text:
        return None
    out: dict[Any, str] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            out[len(out) + 1] = item
            continue
        key, name = (s.strip() for s in item.split("=", 1))
        try:
            out[key if key.startswith("#") else int(key)] = name
        except ValueError as exc:
            raise InvalidParameterError(
                f"--classes item {item!r}: the value must be an integer or a '#RRGGBB' colour, "
                "e.g. --classes 1=building,2=road or --classes '#3C1098=Building'."
            ) from exc
    return out


def parse_value_map(text: str | None, option: str) -> dict[int, int] | None:
    """Parse ``"0=0,255=1"`` (integer value to integer class index) for ``option``."""
    if not text:
        return None
    out: dict[int, int] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        try:
            key, value = (int(s) for s in item.split("=", 1))
        except ValueError as exc:
            raise InvalidParameterError(
                f"{option} item {item!r}: expected VALUE=INDEX with two integers, "
                f"e.g. {option} 0=0,255=1."
            ) from exc
        out[key] = value
    return out
