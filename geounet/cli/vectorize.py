"""``geounet vectorize``: class raster to building polygons and road centre lines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from geounet.cli.options import (
    IMAGE,
    OUTPUT,
    allow_no_crs_opt,
    asset_opt,
    classes_opt,
    overwrite_opt,
    resolve_image,
)
from geounet.core.classes import parse_classes, special_class

if TYPE_CHECKING:
    import geopandas as gpd


@click.command("vectorize")
@click.argument("classified", type=IMAGE)
@click.option(
    "--out",
    type=OUTPUT,
    default=None,
    help="Vector file: .gpkg (one layer per class), .geojson, .shp, .fgb, .parquet "
    "(default: <raster stem>.gpkg beside the raster; in the working folder when remote).",
)
@classes_opt("For rasters without geounet metadata")
@click.option(
    "--min-area",
    "min_area_m2",
    type=float,
    default=None,
    help="Drop objects smaller than this (m²) [default: from the model's training labels "
    "(10th percentile of the building areas; half that for buildings when the peak filter "
    "runs), else 5].",
)
@click.option(
    "--simplify",
    "simplify_m",
    type=float,
    default=0.5,
    show_default=True,
    help="Simplification tolerance (m).",
)
@click.option(
    "--building-class",
    default="building",
    show_default=True,
    help="Class whose polygons are regularized.",
)
@click.option(
    "--road-class",
    default="road",
    show_default=True,
    help="Class turned into centre lines.",
)
@click.option(
    "--spur-length",
    "spur_length_m",
    type=click.FloatRange(min=0),
    default=None,
    help="Prune road spurs shorter than this (m); default about twice the road width.",
)
@click.option(
    "--gap",
    "gap_m",
    type=click.FloatRange(min=0),
    default=None,
    help="Bridge breaks in the road network up to this long (m), where dead ends face each "
    "other or point at a road; default six road widths, 0 bridges nothing.",
)
@click.option("--no-regularize", is_flag=True, help="Keep traced building outlines as they are.")
@click.option("--no-centerlines", is_flag=True, help="Roads as polygons, not centre lines.")
@click.option(
    "--separate/--no-separate",
    default=None,
    help="Split touching buildings into one polygon each (watershed), or keep them as one "
    "[default: split, unless the model's training labels draw blocks of buildings as one].",
)
@click.option(
    "--min-separation",
    "min_separation_m",
    type=float,
    default=None,
    help="Smallest width (m) of a building split off a touching one [default: 3].",
)
@click.option(
    "--probabilities",
    type=IMAGE,
    default=None,
    help="Probability raster from classify (default: the one classify wrote and named in "
    "the class raster, <its stem>_probabilities.tif unless chosen): adds mean and peak "
    "confidence, and drops buildings the network was never sure of.",
)
@click.option(
    "--min-peak-confidence",
    type=float,
    default=None,
    help="With probabilities, drop buildings whose most confident pixel is below this "
    "(0-1) [default: 0.98, or the 90th percentile of the scene's building pixels when lower; "
    "0 keeps them all].",
)
@click.option(
    "--min-road-confidence",
    type=float,
    default=None,
    help="With probabilities, drop road lines that end (or stand alone) whose mean road "
    "probability is below this (0-1) [default: 0.9; 0 keeps them all].",
)
@click.option(
    "--grow-confidence",
    type=float,
    default=None,
    help="With probabilities, building outlines take in the background pixels connected to "
    "them whose building probability is at least this (0-1] [default: off; 0.2 raised object "
    "F1 on Zanzibar and Inria].",
)
@asset_opt
@allow_no_crs_opt
@overwrite_opt
def command(
    classified: Path | str,
    out: Path | None,
    classes: str | None,
    min_area_m2: float | None,
    simplify_m: float,
    building_class: str,
    road_class: str,
    spur_length_m: float | None,
    gap_m: float | None,
    no_regularize: bool,
    no_centerlines: bool,
    separate: bool | None,
    min_separation_m: float | None,
    probabilities: Path | None,
    min_peak_confidence: float | None,
    min_road_confidence: float | None,
    grow_confidence: float | None,
    asset: str | None,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Turn a CLASSIFIED raster into polygons (buildings regularized) and road centre lines.

    CLASSIFIED may be a local file, an http(s):// URL, an s3:// gs:// or az:// URI or a STAC
    Item (with --asset); the output is a local file.

    \b
    Example:
      geounet vectorize scene_classified.tif   # -> scene_classified.gpkg beside it
      geounet vectorize scene_classified.tif --out features.gpkg
      geounet vectorize https://host/scene_classified.tif --out features.gpkg
      geounet vectorize labels.tif --classes 1=house,2=street --building-class house \\
          --road-class street --spur-length 10 --out features.fgb
    """
    from geounet.app.workflows import default_output
    from geounet.vectorizing.pipeline import vectorize

    source = resolve_image(classified, asset)
    out = out or default_output(source, ".gpkg")
    extra = {} if min_separation_m is None else {"min_separation_m": min_separation_m}
    layers = vectorize(
        source,
        out,
        classes=parse_classes(classes),
        min_area_m2=min_area_m2,
        simplify_m=simplify_m,
        building_class=building_class,
        road_class=road_class,
        spur_length_m=spur_length_m,
        gap_m=gap_m,
        regularize=not no_regularize,
        road_centerlines=not no_centerlines,
        separate=separate,
        probabilities=probabilities,
        min_peak_confidence=min_peak_confidence,
        min_road_confidence=min_road_confidence,
        grow_confidence=grow_confidence,
        overwrite=overwrite,
        allow_no_crs=allow_no_crs,
        **extra,
    )
    for name, gdf in layers.items():
        click.echo(f"{name}: {len(gdf)} features{_unsure_note(gdf)}")
    _notes(layers.get(special_class(list(layers), building_class)), separate)
    written = dict.fromkeys(str(g.attrs.get("path", out)) for g in layers.values())
    click.echo(f"written: {', '.join(written) or out}")  # a file per class but in GeoPackage


def _unsure_note(layer: gpd.GeoDataFrame) -> str:
    """``" (N the network was unsure of dropped; ...)"`` for a layer the filters thinned."""
    n = layer.attrs.get("unsure_removed") or 0
    if not n:
        return ""
    lines = layer.attrs.get("geometry_type") == "LineString"
    option = "--min-road-confidence" if lines else "--min-peak-confidence"
    what = "road ends" if lines else "objects"
    return f" ({n} {what} the network was unsure of dropped; {option} 0 keeps them)"


def _notes(buildings: gpd.GeoDataFrame | None, separate: bool | None) -> None:
    """Tell on stderr what the defaults did to the building layer that the user may not expect.

    ``separate`` is what the user asked for (None: the default).
    """
    if buildings is None:
        return
    if buildings.attrs.get("min_peak_confidence") is None:
        click.echo(
            "note: no building probabilities, so buildings the network was never sure of are "
            "kept; classify without --no-probabilities (they are written beside the class "
            "raster, <its stem>_probabilities.tif) or give --probabilities PATH to have them "
            "dropped.",
            err=True,
        )
    if separate is None and buildings.attrs.get("separate") is False:
        share = buildings.attrs.get("label_split_share") or 0.0
        click.echo(
            f"note: touching buildings kept whole: the model's training labels draw blocks of "
            f"buildings as one (the split would cut {share:.0%} of their building area); "
            "--separate splits them anyway.",
            err=True,
        )
