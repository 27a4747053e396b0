"""``geounet demo``: the whole job on the bundled sample data."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("geounet_demo"),
    show_default=True,
    help="Folder for the demo outputs.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 1000),
    default=None,
    help="Training epochs (default: as many as fit in the time budget).",
)
@click.option(
    "--budget-min",
    type=click.FloatRange(0.1, 600),
    default=3.0,
    show_default=True,
    help="Training time budget in minutes.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing demo folder.")
@click.pass_context
def command(
    ctx: click.Context, out: Path, epochs: int | None, budget_min: float, overwrite: bool
) -> None:
    """Train on sample_data/train.tif, classify test.tif, vectorize and evaluate.

    Writes classified.tif, features.gpkg, metrics.json and quicklook.png into --out, and keeps
    the model for `geounet classify`.

    \b
    Example:
      geounet demo --out demo/
    """
    from geounet.app.demo import run_demo

    summary = run_demo(
        out,
        epochs=epochs,
        budget_s=budget_min * 60,
        overwrite=overwrite,
        progress=not ctx.obj.get("quiet"),
    )
    click.echo(summary["table"])
