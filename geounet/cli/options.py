"""Options shared by several commands, and the parsers they need."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geounet.core.errors import InvalidParameterError
from geounet.core.types import BLEND_MODES, ENGINE_CHOICES, TTA_MODES, VAL_STRIPS

__all__ = [
    "IMAGE",
    "OUTPUT",
    "ImageSource",
    "LocalOutput",
    "allow_no_crs_opt",
    "asset_opt",
    "batch_size_opt",
    "blend_opt",
    "classes_opt",
    "device_opt",
    "engine_opt",
    "given_options",
    "overlap_opt",
    "overwrite_opt",
    "parse_bands",
    "parse_value_map",
    "resolve_image",
    "split_opts",
    "tile_size_opt",
    "tta_opt",
]

allow_no_crs_opt = click.option(
    "--allow-no-crs",
    is_flag=True,
    help="Accept rasters without a CRS: work in pixel coordinates (outputs have no CRS).",
)
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
    help="Test-time augmentation: the tile and its half turn (rot180), 4 flips, 8 dihedral.",
)
engine_opt = click.option(
    "--engine",
    type=click.Choice(ENGINE_CHOICES),
    default="auto",
    show_default=True,
    help="What runs the network: auto (the fastest installed engine that agrees with PyTorch "
    "float32, measured once and cached beside the model), torch, onnx (pip install "
    '"geounet[onnx]"), openvino (pip install "geounet[openvino]") or a variant.',
)
device_opt = click.option(
    "--device",
    default=None,
    metavar="DEVICE",
    help="cpu, cuda or cuda:N (default: CUDA when present, else CPU).",
)


class ImageSource(click.ParamType):
    """An image argument: a local path, a URL or object-store URI, or a STAC Item.

    ``click.Path`` would fold the ``//`` of ``https://host/scene.tif``; remote names are kept
    as the string typed (opened with range requests, see :mod:`geounet.io.remote`), local
    ones become :class:`~pathlib.Path`.
    """

    name = "image"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``value`` unchanged when remote, else a :class:`~pathlib.Path`."""
        from geounet.io.remote import is_remote

        if isinstance(value, Path) or is_remote(str(value)):
            return value
        return Path(value)


class LocalOutput(click.ParamType):
    """An output path: local (or a mounted file system); URLs and object stores are refused.

    Checked on the string typed, before :class:`~pathlib.Path` folds ``s3://b/x`` into
    ``s3:/b/x`` (which would write into a local folder named ``s3:``).
    """

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """A :class:`~pathlib.Path`; :class:`InvalidParameterError` for a remote name."""
        from geounet.io.remote import check_local_output

        check_local_output(str(value))
        return Path(value)


#: The type of every image argument and option (local, URL, s3/gs/az, STAC Item).
IMAGE = ImageSource()
#: The type of every output path option.
OUTPUT = LocalOutput()
label_area_opt = click.option(
    "--label-area",
    type=click.Path(path_type=Path),
    default=None,
    help="Polygon file outlining where the labels are complete (you labelled part of the "
    "images and will map the rest): only that part is chipped, the rest is not background.",
)


def split_opts(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--stride``, ``--val-fraction``, ``--val-strip``, ``--nodata``, ``--min-valid-fraction``.

    How images are chipped and split.

    Each defaults to None, so a command passes on only the values given (``prepare_data``'s
    defaults, named in the help, apply to the rest) and can refuse them where no image is
    chipped.
    """
    options = [
        click.option(
            "--stride",
            type=click.IntRange(1, 4096),
            default=None,
            help="Step between chips (default: half a chip on a small area, else the chip size).",
        ),
        click.option(
            "--val-fraction",
            type=click.FloatRange(0, 0.9),
            default=None,
            help="Share of each image's longer side held out for validation (default: 0.2).",
        ),
        click.option(
            "--val-strip",
            type=click.Choice(VAL_STRIPS),
            default=None,
            help="Where each image's validation strip lies along its longer side (put it away "
            "from the area you will map; default auto: away from the part --label-area leaves "
            "out, else the end, moved where the labels' classes are like the whole's if a "
            "class is scarce there).",
        ),
        click.option(
            "--nodata",
            type=float,
            default=None,
            help="The images' nodata value where the files declare none (e.g. 0 for a black "
            "border): those pixels are neither trained on nor counted in the statistics.",
        ),
        click.option(
            "--min-valid-fraction",
            type=click.FloatRange(0, 1),
            default=None,
            help="Share of a chip's pixels that must hold data and a label to keep the chip "
            "(default: 0.5).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


asset_opt = click.option(
    "--asset",
    default=None,
    help="Asset key when an image is a STAC Item (JSON file or URL), e.g. --asset visual.",
)


def given_options(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None), to pass on over the callee's defaults.

    Example:
        >>> given_options(stride=128, val_strip=None)
        {'stride': 128}
    """
    return {key: value for key, value in values.items() if value is not None}


def resolve_image(source: Any, asset: str | None) -> Any:
    """``source``, or the asset ``asset`` of the STAC Item ``source`` when one is given.

    Raises:
        InvalidParameterError: ``asset`` for an input that is not a STAC Item, or an asset
            the Item does not have (its keys are named).
    """
    if asset is None:
        return source
    from geounet.io.remote import gdal_path

    return gdal_path(source, asset)


def classes_opt(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--classes`` option (parsed by :func:`geounet.core.classes.parse_classes`).

    Args:
        what: What the classes name in this command (the start of the help text).
    """
    return click.option(
        "--classes",
        default=None,
        metavar="VALUE=NAME,...",
        help=f"{what}: raster value to class name, e.g. 1=building,2=road ('#3C1098=Building' "
        "for colour masks); names only (building,road) mean the values 1, 2, ...",
    )


def parse_bands(text: str | None, option: str = "--bands") -> list[int] | None:
    """Parse ``"3,2,1"`` into 1-based band numbers for ``option`` (None: all bands).

    Raises:
        InvalidParameterError: An item that is not an integer >= 1.
    """
    if not text:
        return None
    bands: list[int] = []
    for item in (s.strip() for s in text.split(",")):
        try:
            band = int(item)
        except ValueError:
            band = 0
        if band < 1:
            raise InvalidParameterError(
                f"{option} {text!r}: {item!r} is not a band number; give 1-based band numbers "
                f"separated by commas (as in GDAL), e.g. {option} 3,2,1."
            )
        bands.append(band)
    return bands


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
