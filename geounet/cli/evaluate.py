"""``geounet evaluate``: pixel, building and road accuracy of a map against the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geounet.cli.options import (
    IMAGE,
    OUTPUT,
    allow_no_crs_opt,
    asset_opt,
    classes_opt,
    overwrite_opt,
    parse_value_map,
    resolve_image,
)
from geounet.core.classes import parse_classes
from geounet.core.errors import OutputExistsError


@click.command("evaluate")
@click.argument("pred", type=IMAGE)
@click.option(
    "--truth",
    required=True,
    type=IMAGE,
    help="Truth: a class raster (same class indices, or see --truth-values) or a vector file "
    "(a layer per class, or a 'class' field).",
)
@classes_opt("Classes of PRED when it has no geounet metadata")
@click.option(
    "--truth-values",
    default=None,
    help="Truth raster value to class index, e.g. 0=0,255=1 for a 0/255 mask.",
)
@click.option(
    "--building-class", default="building", show_default=True, help="Class scored as buildings."
)
@click.option("--road-class", default="road", show_default=True, help="Class scored as roads.")
@click.option(
    "--iou-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="Smallest IoU of a building match (SpaceNet: 0.5).",
)
@click.option(
    "--road-buffer",
    "road_buffer_m",
    type=click.FloatRange(0.0, min_open=True),
    default=3.0,
    show_default=True,
    help="Road tolerance in metres (length metrics and APLS node snapping).",
)
@click.option(
    "--json",
    "--out",
    "json_path",
    type=OUTPUT,
    default=None,
    help="Write every figure as JSON (--out: the same, as the other commands name outputs).",
)
@click.option(
    "--report",
    type=OUTPUT,
    default=None,
    help="Write a single-file HTML report.",
)
@click.option(
    "--error-map",
    type=OUTPUT,
    default=None,
    help="Write a GeoTIFF of true/false positives and false negatives (styled for QGIS).",
)
@click.option(
    "--objects",
    type=OUTPUT,
    default=None,
    help="Write the scored buildings (layers matched, missed, false_positive; each miss with "
    "what the map holds under it) to this vector file (.gpkg, .geojson, .shp...).",
)
@asset_opt
@allow_no_crs_opt
@overwrite_opt
def command(
    pred: Path | str,
    truth: Path | str,
    classes: str | None,
    truth_values: str | None,
    building_class: str,
    road_class: str,
    iou_threshold: float,
    road_buffer_m: float,
    json_path: Path | None,
    report: Path | None,
    error_map: Path | None,
    objects: Path | None,
    asset: str | None,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Score PRED against --truth: pixels, buildings (SpaceNet F1) and roads (APLS).

    PRED and --truth may each be a class raster or a vector file (GeoPackage, GeoJSON...).
    A raster may be an http(s):// URL, an s3:// gs:// or az:// URI or a STAC Item (PRED's
    asset: --asset); the outputs are local files.

    \b
    Example:
      geounet evaluate scene_classified.tif --truth labels.gpkg --report report.html
      geounet evaluate scene_classified.tif --truth labels.gpkg --objects scored.gpkg
    """
    from geounet.evaluation.evaluate import evaluate
    from geounet.evaluation.scores import write_report

    if json_path is not None and json_path.exists() and not overwrite:
        raise OutputExistsError(
            f"{json_path}: output already exists; pass --overwrite to replace it or choose "
            "another name."
        )
    result = evaluate(
        resolve_image(pred, asset),
        truth,
        classes=parse_classes(classes),
        building_class=building_class,
        road_class=road_class,
        iou_threshold=iou_threshold,
        road_buffer_m=road_buffer_m,
        report=report,
        error_map=error_map,
        objects=objects,
        truth_values=parse_value_map(truth_values, "--truth-values"),
        overwrite=overwrite,
        allow_no_crs=allow_no_crs,
    )
    _echo(result)
    if json_path:
        write_report(result, json_path, overwrite=overwrite)
    written = ", ".join(result.get("objects") or []) or None
    for label, path in (
        ("json", json_path),
        ("report", report),
        ("error map", error_map),
        ("objects", written),
    ):
        if path is not None:
            click.echo(f"{label}: {path}")


def _num(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def _echo(result: dict[str, Any]) -> None:
    """Print the figures: a per-class table, then one line per object kind."""
    pc = result.get("per_class")
    if pc:
        click.echo(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'iou':>10}")
        for name in result["classes"]:
            vals = [pc[m].get(name) for m in ("precision", "recall", "f1", "iou")]
            click.echo(f"{name:<16}" + "".join(f"{_num(v):>10}" for v in vals))
        click.echo(
            f"pixel accuracy {_num(result['pixel_accuracy'])}   mIoU {_num(result['miou'])}"
            f"   kappa {_num(result['kappa'])}"
        )
    b = result.get("buildings")
    if b:
        click.echo(
            f"buildings: F1 {_num(b['f1'])}  precision {_num(b['precision'])}  recall "
            f"{_num(b['recall'])}  (TP {b['tp']}, FP {b['fp']}, FN {b['fn']}; "
            f"{b['n_truth']} true, {b['n_pred']} predicted)"
        )
    r = result.get("roads")
    if r:
        click.echo(
            f"roads: completeness {_num(r['completeness'])}  correctness "
            f"{_num(r['correctness'])}  quality {_num(r['quality'])}  APLS {_num(r['apls'])}"
        )
    for note in result.get("notes", []):
        click.echo(f"note: {note}")
