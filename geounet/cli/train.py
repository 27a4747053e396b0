"""``geounet train``: train a U-Net and save the model folder."""

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
    given_options,
    label_area_opt,
    overwrite_opt,
    resolve_image,
    split_opts,
)
from geounet.core.classes import parse_classes
from geounet.core.types import DEFAULT_BACKBONE

#: How ``geounet train`` names what ended the training (``fit``'s ``stopped_by``).
_ENDED = {"time budget": "its time budget", "early stopping": "early stopping"}


@click.command("train")
@click.argument("inputs", nargs=-1, required=True, type=IMAGE)
@click.option(
    "--labels",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Label raster or vector file per image (not with a chip folder).",
)
@click.option("--out", required=True, type=OUTPUT, help="Model folder.")
@classes_opt("Label classes (with --labels)")
@click.option(
    "--label-field",
    default=None,
    help="Vector attribute holding each feature's class (with vector --labels).",
)
@label_area_opt
@click.option(
    "--backbone",
    default=DEFAULT_BACKBONE,
    show_default=True,
    help="Encoder: efficientnet-lite0, -lite1, -lite2 (offline ImageNet weights), resnet34...",
)
@click.option(
    "--from",
    "start_from",
    type=click.Path(path_type=Path),
    default=None,
    metavar="MODEL_DIR",
    help="Fine-tune this saved model on the labels (another area, more labels): its network "
    "and weights, the new data's statistics; --backbone/--weights are then unused, and a new "
    "class list re-initialises the head.",
)
@click.option(
    "--weights",
    "encoder_weights",
    default="imagenet",
    show_default=True,
    help="Encoder weights: imagenet, none, or a local weights file.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 10000),
    default=None,
    help="Maximum epochs (default: planned from the data and the device, see fit()).",
)
@click.option("--lr", type=float, default=None, help="Learning rate (default: LR finder).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--chip-size", type=click.IntRange(32, 4096), default=256, show_default=True)
@split_opts
@click.option(
    "--budget-min",
    type=click.FloatRange(0.1, 100000),
    default=None,
    help="Training time budget in minutes; the schedule follows the clock (default: planned "
    "from the data and the device, at most 14 minutes on a CPU, 15 on a GPU).",
)
@click.option(
    "--refit-on-all",
    is_flag=True,
    help="Then train again on the training and validation chips for the epochs validation "
    "picked: every label in the final model (worth it on a small labelled area), about twice "
    "the time, and no held-out score for the final weights.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="Seed the training (the same run again on the same machine).",
)
@click.option(
    "--ddp",
    is_flag=True,
    help="Distributed data parallel in the processes torchrun starts (gloo on CPU, NCCL on "
    "GPUs; --batch-size chips per process); needs a chip folder; rank 0 writes --out.",
)
@click.option(
    "--augment",
    "augment_items",
    multiple=True,
    metavar="KEY=VALUE|off",
    help="Change the training augmentation (fields of geounet.data.augment.AugmentOptions, "
    "repeat the option), e.g. --augment rotate=45 --augment scale=0.9,1.1; --augment off "
    "turns it off (default: flips and quarter turns, scale jitter, per-band tints).",
)
@asset_opt
@allow_no_crs_opt
@overwrite_opt
def command(
    inputs: tuple[Path | str, ...],
    labels: tuple[Path, ...],
    out: Path,
    classes: str | None,
    label_field: str | None,
    label_area: Path | None,
    backbone: str,
    start_from: Path | None,
    encoder_weights: str,
    epochs: int | None,
    lr: float | None,
    batch_size: int,
    chip_size: int,
    stride: int | None,
    val_fraction: float | None,
    val_strip: str | None,
    nodata: float | None,
    min_valid_fraction: float | None,
    budget_min: float | None,
    refit_on_all: bool,
    seed: int | None,
    ddp: bool,
    augment_items: tuple[str, ...],
    asset: str | None,
    allow_no_crs: bool,
    overwrite: bool,
) -> None:
    """Train on a chip folder (from `geounet prepare`) or on IMAGES with --labels.

    An IMAGE may be an http(s):// URL, an s3:// gs:// or az:// URI or a STAC Item (with
    --asset); the model folder is local.

    \b
    Examples:
      geounet train chips/ --out models/buildings --epochs 20
      geounet train scene.tif --labels buildings.gpkg --classes building --out models/b
      torchrun --standalone --nproc_per_node 2 -m geounet train chips/ --out models/b --ddp
      geounet train chips/ --out models/b --augment rotate=45
      geounet train scene.tif --labels b.gpkg --classes building --out models/b --refit-on-all
      geounet train area2.tif --labels b2.gpkg --from models/b --out models/b2
    """
    from geounet.app.workflows import train_model
    from geounet.data.augment import augment_from_text

    augment = augment_from_text(augment_items)  # a bad item fails before any reading

    result = train_model(
        [resolve_image(i, asset) for i in inputs],
        out,
        labels=list(labels) or None,
        classes=parse_classes(classes),
        backbone=backbone,
        start_from=start_from,
        encoder_weights=None if encoder_weights == "none" else encoder_weights,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        chip_size=chip_size,
        overwrite=overwrite,
        ddp=ddp,
        augment=augment,
        allow_no_crs=allow_no_crs,
        fit_options=_fit_options(budget_min, refit_on_all, seed),
        **given_options(
            label_field=label_field,
            label_area=label_area,
            stride=stride,
            val_fraction=val_fraction,
            val_strip=val_strip,
            nodata=nodata,
            min_valid_fraction=min_valid_fraction,
        ),
    )
    if result["written"]:  # else another rank of a distributed run reports and writes
        _report(result)


def _report(result: dict[str, Any]) -> None:
    """Print what :func:`~geounet.app.workflows.train_model` did: epochs, metrics, folder."""
    if result.get("epochs"):
        ended = _ENDED.get(result.get("stopped_by"), "its planned epochs")
        kept = result.get("kept_epoch")
        kept_text = f"; weights kept from epoch {kept}" if kept else ""
        click.echo(f"epochs: {result['epochs']} (ended by {ended}){kept_text}")
    from geounet.app.workflows import metric_rows

    for key, value in metric_rows(result["metrics"]):
        click.echo(f"{key}: {value:.4f}")
    click.echo(f"model: {result['model']}")


def _fit_options(budget_min: float | None, refit_on_all: bool, seed: int | None) -> dict[str, Any]:
    """The ``fit`` keywords the options gave (none: ``fit``'s defaults); ``-q``: no bars."""
    quiet = (click.get_current_context().find_root().obj or {}).get("quiet")
    return given_options(
        time_budget_s=None if budget_min is None else budget_min * 60,
        refit_on_all=refit_on_all or None,
        seed=seed,
        progress=False if quiet else None,
    )
