"""A single-file HTML report of an evaluation: tables, figures and the error map, offline.

Every figure is embedded as a base64 PNG and the style sheet is inline, so the file opens in
any browser without a network or other files, and can be mailed or archived as it is.

Example:
    Not run as a doctest: it needs a classified raster and its truth on disk.

    >>> result = evaluate("classified.tif", "truth.gpkg")                # doctest: +SKIP
    >>> write_html_report(result, "report.html")                          # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.types import PathLike
from geounet.core.version import __version__
from geounet.evaluation.errormap import ERROR_CODES, ERROR_COLORS
from geounet.io.raster import atomic_output
from geounet.viz.evaluation import (
    confusion_figure,
    error_map_figure,
    figure_png,
    per_class_figure,
    size_figure,
)

__all__ = ["render_html", "write_html_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:32px}.sub{color:#666;margin-top:4px;font-size:.9em;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.card{background:#f4f6fa;
border-radius:8px;padding:10px 16px;min-width:120px}.card b{display:block;font-size:1.5em}
.card span{color:#555;font-size:.85em}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#f4f6fa}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
img.half{max-width:calc(50% - 12px)}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.note{color:#555;
font-size:.9em}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _img(fig: Any, alt: str, css: str = "") -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cards(result: Mapping[str, Any]) -> str:
    items: list[tuple[str, Any]] = []
    pixel, b, r = result, result.get("buildings"), result.get("roads")
    if pixel.get("per_class"):
        items += [("pixel accuracy", pixel["pixel_accuracy"]), ("mIoU", pixel["miou"])]
        items += [("Cohen's kappa", pixel["kappa"])]
    if b:
        items += [
            ("building F1", b["f1"]),
            ("buildings true / pred", f"{b['n_truth']} / {b['n_pred']}"),
        ]
    if r:
        items += [("road completeness", r["completeness"]), ("road correctness", r["correctness"])]
        items += [("road quality", r["quality"]), ("APLS", r["apls"])]
    cards = "".join(f"<div class=card><b>{_fmt(v, 3)}</b><span>{k}</span></div>" for k, v in items)
    return f"<div class=cards>{cards}</div>"


def _pixel_section(pixel: Mapping[str, Any]) -> str:
    labels = list(pixel["classes"])
    pc = pixel["per_class"]
    metrics = ["precision", "recall", "f1", "iou", "support"]
    rows = [[c, *(pc[m].get(c) for m in metrics)] for c in labels]
    cm = np.asarray(pixel["confusion_matrix"])
    cm_rows = [[f"truth: {c}", *cm[i].tolist()] for i, c in enumerate(labels)]
    return (
        "<h2>Pixels</h2>"
        f"<p class=note>{pixel['pixels']:,} pixels scored; nodata and 255 are not scored. "
        f"Overall accuracy {_fmt(pixel['pixel_accuracy'])}, mIoU {_fmt(pixel['miou'])}, "
        f"Cohen's kappa {_fmt(pixel['kappa'])}.</p>"
        "<div class=row><div>"
        + _table(["class", *metrics], rows)
        + "<h3>Confusion matrix (rows truth, columns prediction)</h3>"
        + _table(["", *(f"pred: {c}" for c in labels)], cm_rows)
        + "</div>"
        + _img(per_class_figure(pc, labels), "per-class scores", "half")
        + "</div>"
    )


def _overview(result: Mapping[str, Any], preview: np.ndarray | None) -> str:
    """The error map beside the confusion matrix (the two pictures a GIS team looks at)."""
    if preview is None or not result.get("errors"):
        return ""
    labels = list(result["classes"])
    cm = np.asarray(result["confusion_matrix"])
    where = (
        f" Written to <code>{html.escape(result['error_map'])}</code>."
        if result.get("error_map")
        else ""
    )
    counts = ", ".join(f"{k} {v:,}" for k, v in result["errors"].items())
    return (
        "<h2>Where the map is right and wrong</h2>"
        f"<p class=note>Pixels by outcome: {counts}.{where}</p><div class=row>"
        + _img(error_map_figure(preview, ERROR_CODES, ERROR_COLORS), "error map", "half")
        + _img(confusion_figure(cm, labels), "confusion matrix", "half")
        + "</div>"
    )


def _building_section(b: Mapping[str, Any] | None) -> str:
    if not b:
        return ""
    keys = ["n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "mean_iou"]
    sizes = [[s["bucket"], *(s[k] for k in keys[:8])] for s in b["by_size"]]
    return (
        "<h2>Buildings</h2>"
        f"<p class=note>SpaceNet metric: predicted and true polygons matched one-to-one, "
        f"greedily by IoU, at IoU &ge; {_fmt(b['iou_threshold'], 2)}.</p>"
        + _table(["", *keys], [["all buildings", *(b[k] for k in keys)]])
        + "<h3>By building size (true positives and misses by the true area)</h3>"
        + _table(["size", *keys[:8]], sizes)
        + _img(size_figure(b["by_size"]), "building F1 by size")
    )


def _road_section(r: Mapping[str, Any] | None) -> str:
    if not r:
        return ""
    rows = [
        ["completeness (true length found)", r["completeness"]],
        ["correctness (predicted length that is road)", r["correctness"]],
        ["quality", r["quality"]],
        ["APLS", r["apls"]],
        ["APLS truth → prediction", r["apls_truth_to_pred"]],
        ["APLS prediction → truth", r["apls_pred_to_truth"]],
        ["true length (m)", r["truth_length"]],
        ["predicted length (m)", r["pred_length"]],
    ]
    return (
        "<h2>Roads</h2>"
        f"<p class=note>Lengths within {_fmt(r['buffer_m'], 1)} m of the other network; APLS "
        f"(SpaceNet-3) with nodes snapped within {_fmt(r['snap_m'], 1)} m and control nodes "
        "every 50 m.</p>" + _table(["metric", "value"], rows)
    )


def render_html(result: Mapping[str, Any], preview: np.ndarray | None = None) -> str:
    """The report of an :func:`~geounet.evaluation.evaluate.evaluate` result as HTML text.

    Args:
        result: The dict ``evaluate`` returns.
        preview: A small error-code array to draw as the error map (optional).
    """
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.get("notes", []))
    settings = _table(["setting", "value"], list(result.get("settings", {}).items()))
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>geounet evaluation</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>geounet evaluation</h1>",
        f"<p class=sub>prediction: {html.escape(result['prediction'])}<br>",
        f"truth: {html.escape(result['truth'])}<br>{when} · geounet {__version__}</p>",
        _cards(result),
        _overview(result, preview),
        _pixel_section(result) if result.get("per_class") else "",
        _building_section(result.get("buildings")),
        _road_section(result.get("roads")),
        "<h2>Settings</h2>" + settings,
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html_report(
    result: Mapping[str, Any],
    path: PathLike,
    *,
    preview: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`render_html` to ``path`` atomically.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    text = render_html(result, preview)
    with atomic_output(path, overwrite=overwrite) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)
