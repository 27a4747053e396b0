"""``geounet classify``: classify a scene with a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from geounet.cli.options import (
    allow_no_crs_opt,
    batch_size_opt,
    blend_opt,
    device_opt,
    engine_opt,
    overlap_opt,
    overwrite_opt,
    parse_bands,
    tile_size_opt,
    tta_opt,
)

if TYPE_CHECKING:
    from geounet.inference.options import ClassifyOptions


@click.command("classify")
@click.argument("images", nargs=-1, required=True, type=str)
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
    "--out-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Classify every IMAGE on Dask into DIR/<stem>_classified.tif (several images need it).",
)
@click.option(
    "--scheduler",
    default=None,
    help="With --out-dir: address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="With --out-dir: start a local Dask cluster of N single-threaded worker processes.",
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
    help="Write the class probabilities (uint8 0-255, one band per class) here "
    "[default: beside OUT, <its stem>_probabilities.tif; vectorize uses them to drop "
    "buildings the network was never sure of].",
)
@click.option(
    "--no-probabilities",
    is_flag=True,
    help="Do not write the class probabilities (vectorize then keeps every building).",
)
@click.option("--cog", is_flag=True, help="Write a Cloud Optimized GeoTIFF with overviews.")
@click.option(
    "--asset",
    default=None,
    help="Asset key when IMAGE is a STAC Item (JSON file or URL), e.g. --asset visual.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep finished rows beside the output (.NAME.resume) and, after an interruption, "
    "continue from the last completed band of rows (same image, model and options).",
)
@click.option(
    "--no-resample",
    is_flag=True,
    help="Classify the image at its own pixel size even when it differs from the model's "
    "(by default it is resampled to the model's; more than 4 times coarser is refused).",
)
@click.option(
    "--nodata",
    type=float,
    default=None,
    help="The image's nodata value, over the file's (e.g. 0 for a black border it does not "
    "declare): those pixels are nodata (255) in the class raster.",
)
@click.option(
    "--bands",
    default=None,
    metavar="N,N,...",
    help="The image's bands the model reads, in the model's order, e.g. 3,2,1 for an RGB "
    "model on a BGR image [default: by band name where both sides name them, else by "
    "position].",
)
@device_opt
@engine_opt
@allow_no_crs_opt
@overwrite_opt
@click.pass_context
def command(
    ctx: click.Context,
    images: tuple[str, ...],
    model: Path | None,
    out: Path | None,
    out_dir: Path | None,
    scheduler: str | None,
    workers: int | None,
    vector: Path | None,
    tile_size: int,
    overlap: int,
    batch_size: int,
    blend: str,
    tta: str | None,
    probabilities: Path | None,
    no_probabilities: bool,
    cog: bool,
    asset: str | None,
    resume: bool,
    no_resample: bool,
    nodata: float | None,
    bands: str | None,
    device: str | None,
    engine: str,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Classify IMAGE into a georeferenced class raster (several IMAGES: on Dask).

    IMAGE is a path, an http(s):// URL of a (Cloud-Optimized) GeoTIFF, an s3:// gs:// or
    az:// URI (credentials from the environment), or a STAC Item with --asset; remote
    images are read with range requests.

    \b
    Example:
      geounet classify scene.tif --model models/buildings --vector buildings.gpkg
      geounet classify https://host/item.json --asset visual --out scene_classes.tif
      geounet classify a.tif b.tif --out-dir classified --workers 2
      geounet classify s3://bucket/huge.tif --out-dir out --scheduler tcp://HOST:8786
    """
    from geounet.app.workflows import classify_scene
    from geounet.inference.options import ClassifyOptions

    options = ClassifyOptions(
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        blend=blend,
        tta=tta,
        probabilities=_probabilities_choice(probabilities, no_probabilities),
        output_format="COG" if cog else "GTiff",
        overwrite=overwrite,
        progress=not ctx.obj.get("quiet"),
        allow_no_crs=allow_no_crs,
        engine=engine,
        asset=asset,
        resume=resume,
        nodata=nodata,
        resample=not no_resample,
        bands=parse_bands(bands),
    )
    if out_dir is not None or len(images) > 1 or scheduler or workers:
        _classify_on_dask(images, model, out_dir, scheduler, workers, device, options, out, vector)
        return
    result = classify_scene(
        images[0], model=model, out=out, vector=vector, device=device, options=options
    )
    files = result.pop("vector_files", None)  # a format of one file per class
    for kind, path in result.items():
        click.echo(f"{kind}: {', '.join(map(str, files)) if kind == 'vector' and files else path}")


def _probabilities_choice(path: Path | None, no_probabilities: bool) -> Path | bool:
    """``ClassifyOptions.probabilities`` from ``--probabilities`` and ``--no-probabilities``."""
    from geounet.core.errors import InvalidParameterError

    if path is not None and no_probabilities:
        raise InvalidParameterError(
            f"--probabilities {path} and --no-probabilities contradict each other; "
            "give one of them."
        )
    return False if no_probabilities else (path or True)


def _classify_on_dask(
    images: tuple[str, ...],
    model: Path | None,
    out_dir: Path | None,
    scheduler: str | None,
    workers: int | None,
    device: str | None,
    options: ClassifyOptions,
    out: Path | None,
    vector: Path | None,
) -> None:
    """``geounet classify IMAGES... --out-dir DIR``: :func:`geounet.app.scale.classify_many`.

    Every check (the images, the outputs, the model) runs before a cluster is started or
    reached.
    """
    from geounet.app.scale import check_scenes, classify_many, dask_client
    from geounet.app.workflows import resolve_model
    from geounet.core.errors import InvalidParameterError

    if out_dir is None or out is not None or vector is not None:
        _output_given_as_image(images, out_dir)
        raise InvalidParameterError(
            f"{' '.join(images)}: several images (or --scheduler/--workers) are classified on "
            "Dask into --out-dir DIR, one <stem>_classified.tif each; give --out-dir and leave "
            "out --out and --vector (vectorize each output afterwards)."
        )
    check_scenes(images, out_dir, options)
    folder = resolve_model(model)
    with dask_client(None, scheduler, workers) as client:
        click.echo(f"dashboard: {client.dashboard_link}", err=True)
        outs = classify_many(folder, images, out_dir, client, options=options, device=device)
    for path in outs:
        click.echo(f"classified: {path}")


def _output_given_as_image(images: tuple[str, ...], out_dir: Path | None) -> None:
    """Refuse ``geounet classify in.tif out.tif`` (GDAL's habit) with the command meant.

    Raises:
        InvalidParameterError: Two images, the first a file and the second none, without
            ``--out-dir``: the second was surely meant as the output.
    """
    from geounet.core.errors import InvalidParameterError
    from geounet.io.remote import is_remote

    if out_dir is not None or len(images) != 2 or any(map(is_remote, images)):
        return
    image, target = images
    if Path(image).is_file() and not Path(target).exists():
        raise InvalidParameterError(
            f"{target}: no such image; geounet classify takes the images to classify, and "
            f"names the output with --out: geounet classify {image} --out {target}"
        )
