"""``geounet info``: describe a raster, a vector file, a model folder or a chip folder."""

from __future__ import annotations

from pathlib import Path

import click

from geounet.cli.options import IMAGE, asset_opt, resolve_image


@click.command("info")
@click.argument("path", type=IMAGE)
@asset_opt
def command(path: Path | str, asset: str | None) -> None:
    """Describe PATH: a raster, a vector file, a model folder or a chip folder, as a table.

    A raster may be an http(s):// URL, an s3:// gs:// or az:// URI or a STAC Item (with
    --asset); only its header is read.

    \b
    Example:
      geounet info sample_data/train.tif
      geounet info buildings.gpkg
      geounet info https://host/item.json --asset visual
    """
    from geounet.app.workflows import describe

    rows = describe(resolve_image(path, asset))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
