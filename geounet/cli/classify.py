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
@click.argument("image", type=click.Path(path_type=Path))
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
@device_opt
@engine_opt
@allow_no_crs_opt
@overwrite_opt
@click.pass_context
def command(
    ctx: click.Context,
    image: Path,
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
    device: str | None,
    engine: str,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Classify IMAGE into a georeferenced class raster.

    \b
    Example:
      geounet classify scene.tif --model models/buildings --vector buildings.gpkg
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
    )
    result = classify_scene(
        image, model=model, out=out, vector=vector, device=device, options=options
    )
    for kind, path in result.items():
        click.echo(f"{kind}: {path}")
