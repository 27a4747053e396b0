"""``geounet export``: a model folder as ONNX (QGIS Deepness), .dlpk (ArcGIS Pro) or TorchScript."""

from __future__ import annotations

from pathlib import Path

import click

from geounet.cli.options import overlap_opt, overwrite_opt, tile_size_opt


@click.command("export")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "dlpk", "torchscript"]),
    required=True,
    help="onnx: QGIS Deepness / onnxruntime; dlpk: ArcGIS Pro; torchscript: plain torch.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file (default: the model folder's name with .onnx, .dlpk or .pt).",
)
@tile_size_opt
@overlap_opt
@overwrite_opt
def command(
    model_dir: Path, fmt: str, out: Path | None, tile_size: int, overlap: int, overwrite: bool
) -> None:
    """Export MODEL_DIR for QGIS (ONNX), ArcGIS Pro (.dlpk) or TorchScript.

    \b
    Examples:
      geounet export models/buildings --format onnx --out buildings.onnx
      geounet export models/buildings --format dlpk --out buildings.dlpk
    """
    from geounet.app.export import export_model

    path = export_model(
        model_dir, fmt, out, tile_size=tile_size, overlap=overlap, overwrite=overwrite
    )
    click.echo(f"wrote {path}")
