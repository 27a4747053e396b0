"""``geounet info``: describe a raster, a model folder or a chip folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def command(path: Path) -> None:
    """Describe PATH: a raster, a model folder or a chip folder, as a table.

    \b
    Example:
      geounet info sample_data/train.tif
    """
    from geounet.app.workflows import describe

    rows = describe(path)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
