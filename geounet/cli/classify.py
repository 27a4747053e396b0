"""``geounet classify``: classify a scene with a saved model."""

from __future__ import annotations

from pathlib import Path

import click

from geounet.cli.options import (
    allow_no_crs_opt,
    batch_size_opt,
    blend_opt,
    device_opt,
    engine_opt,
    overlap_opt,
    overwrite_opt,
    tile_size_opt,
    tta_opt,
)


@click.command("classify")
@click.argument("image", type=str)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Model folder (default: $GEOUNET_MODEL, else the model `geounet demo` trained).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output class raster (default: <image stem>_classified.tif beside the image).",
)
@click.option(
    "--vector",
    type=click.Path(path_type=Path),
    default=None,
    help="Also vectorize to this file (.gpkg, .geojson, .shp, .fgb, .parquet).",
)
@tile_size_opt
@overlap_opt
@batch_size_opt
@blend_opt
@tta_opt
@click.option(
    "--probabilities",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write per-class probabilities (uint8 0-255, one band per class).",
)
@click.option("--cog", is_flag=True, help="Write a Cloud Optimized GeoTIFF with overviews.")
@click.option(
    "--asset",
    default=None,
    help="Asset key when IMAGE is a STAC Item (JSON file or URL), e.g. --asset visual.",
)
@device_opt
@engine_opt
@allow_no_crs_opt
@overwrite_opt
@click.pass_context
def command(
    ctx: click.Context,
    image: str,
    model: Path | None,
    out: Path | None,
    vector: Path | None,
    tile_size: int,
    overlap: int,
    batch_size: int,
    blend: str,
    tta: str | None,
    probabilities: Path | None,
    cog: bool,
    asset: str | None,
    device: str | None,
    engine: str,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Classify IMAGE into a georeferenced class raster.

    IMAGE is a path, an http(s):// URL of a (Cloud-Optimized) GeoTIFF, an s3:// gs:// or
    az:// URI (credentials from the environment), or a STAC Item with --asset; remote
    images are read with range requests.

    \b
    Example:
      geounet classify scene.tif --model models/buildings --vector buildings.gpkg
      geounet classify https://host/item.json --asset visual --out scene_classes.tif
    """
    from geounet.app.workflows import classify_scene
    from geounet.inference.options import ClassifyOptions

    options = ClassifyOptions(
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        blend=blend,
        tta=tta,
        probabilities=probabilities,
        output_format="COG" if cog else "GTiff",
        overwrite=overwrite,
        progress=not ctx.obj.get("quiet"),
        allow_no_crs=allow_no_crs,
        engine=engine,
        asset=asset,
    )
    result = classify_scene(
        image, model=model, out=out, vector=vector, device=device, options=options
    )
    for kind, path in result.items():
        click.echo(f"{kind}: {path}")
