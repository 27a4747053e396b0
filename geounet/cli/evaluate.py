"""``geounet evaluate``: pixel metrics of a classified raster against a truth raster."""

from __future__ import annotations

from pathlib import Path

import click

from geounet.cli.options import overwrite_opt, parse_value_map
from geounet.core.classes import parse_classes


@click.command("evaluate")
@click.argument("pred", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    required=True,
    type=click.Path(path_type=Path),
    help="Truth raster holding the same class indices (or see --truth-values).",
)
@click.option(
    "--classes",
    default=None,
    help="Index to name when PRED has no geounet metadata, e.g. 0=background,1=building.",
)
@click.option(
    "--truth-values",
    default=None,
    help="Truth value to class index, e.g. 0=0,255=1 for a 0/255 mask.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the full report as JSON.",
)
@overwrite_opt
def command(
    pred: Path,
    truth: Path,
    classes: str | None,
    truth_values: str | None,
    json_path: Path | None,
    overwrite: bool,
) -> None:
    """Per-class precision, recall, F1 and IoU of PRED against --truth.

    \b
    Example:
      geounet evaluate scene_classified.tif --truth scene_labels.tif --json metrics.json
    """
    from geounet.evaluation.scores import evaluate_rasters, write_report

    report = evaluate_rasters(
        pred,
        truth,
        classes=parse_classes(classes),
        truth_values=parse_value_map(truth_values, "--truth-values"),
    )
    click.echo(f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'iou':>10}")
    pc = report["per_class"]
    for name in report["classes"]:
        vals = [pc[m].get(name) for m in ("precision", "recall", "f1", "iou")]
        click.echo(
            f"{name:<16}" + "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in vals)
        )
    click.echo(f"pixel accuracy {report['pixel_accuracy']:.4f}   mIoU {report['miou']:.4f}")
    if json_path:
        write_report(report, json_path, overwrite=overwrite)
        click.echo(f"report: {json_path}")
