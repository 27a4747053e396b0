"""``geounet prepare``: chip images and labels into a training folder."""

from __future__ import annotations

from pathlib import Path

import click

from geounet.cli.options import (
    IMAGE,
    OUTPUT,
    allow_no_crs_opt,
    asset_opt,
    classes_opt,
    given_options,
    label_area_opt,
    overwrite_opt,
    parse_bands,
    resolve_image,
    split_opts,
)
from geounet.core.classes import parse_classes


@click.command("prepare")
@click.argument("images", nargs=-1, required=True, type=IMAGE)
@click.option(
    "--labels",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Label raster or vector file, one per image (repeat the option).",
)
@click.option("--out", required=True, type=OUTPUT, help="Chip folder.")
@classes_opt("Label classes")
@click.option("--label-field", default=None, help="Vector attribute holding the class.")
@click.option("--chip-size", type=click.IntRange(32, 4096), default=256, show_default=True)
@click.option("--bands", default=None, help="1-based bands to use, e.g. 1,2,3 (default: all).")
@split_opts
@label_area_opt
@asset_opt
@allow_no_crs_opt
@overwrite_opt
def command(
    images: tuple[Path | str, ...],
    labels: tuple[Path, ...],
    out: Path,
    classes: str | None,
    label_field: str | None,
    chip_size: int,
    bands: str | None,
    stride: int | None,
    val_fraction: float | None,
    val_strip: str | None,
    nodata: float | None,
    min_valid_fraction: float | None,
    label_area: Path | None,
    asset: str | None,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Chip IMAGES and their labels into a georeferenced training folder.

    An IMAGE may be an http(s):// URL, an s3:// gs:// or az:// URI or a STAC Item (with
    --asset), read with range requests; the chip folder is local.

    \b
    Example:
      geounet prepare scene.tif --labels buildings.gpkg --classes building --out chips/
      geounet prepare https://host/scene.tif --labels b.gpkg --classes building --out chips/
      geounet prepare scene.tif --labels b.gpkg --label-area labelled.gpkg --out chips/
    """
    from geounet.data.prepare import prepare_data

    band_list = parse_bands(bands)
    data = prepare_data(
        [resolve_image(image, asset) for image in images],
        labels=list(labels),
        classes=parse_classes(classes),
        label_field=label_field,
        chip_size=chip_size,
        bands=band_list,
        label_area=label_area,
        allow_no_crs=allow_no_crs,
        out_dir=out,
        overwrite=overwrite,
        **given_options(
            stride=stride,
            val_fraction=val_fraction,
            val_strip=val_strip,
            nodata=nodata,
            min_valid_fraction=min_valid_fraction,
        ),
    )
    click.echo(str(data.summary()))
    click.echo(f"chips: {data.chip_dir}")
