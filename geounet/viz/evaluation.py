"""Figures of an evaluation: confusion matrix, per-class scores, error map, building sizes.

Each function takes plain numbers and arrays (nothing from ``geounet.evaluation``) and returns
a :class:`matplotlib.figure.Figure` drawn on an Agg canvas, without touching pyplot's global
state; :func:`figure_png` turns one into PNG bytes for an HTML report.

Example:
    >>> import numpy as np
    >>> fig = confusion_figure(np.array([[5, 1], [2, 7]]), ["background", "building"])
    >>> figure_png(fig)[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "confusion_figure",
    "error_map_figure",
    "figure_png",
    "per_class_figure",
    "size_figure",
]

_METRIC_COLORS = {"precision": "#4363D8", "recall": "#F58231", "f1": "#3CB44B", "iou": "#911EB4"}


def _figure(width: float, height: float) -> Any:
    """A Figure with an Agg canvas, not registered with pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


def confusion_figure(cm: np.ndarray, labels: Sequence[str]) -> Any:
    """Heat map of a confusion matrix normalised by row (truth), with the counts written in.

    Args:
        cm: ``(K, K)`` counts, rows truth, columns prediction.
        labels: ``K`` class names.
    """
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    fig = _figure(1.6 + 1.1 * k, 1.2 + 0.9 * k)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(cm[i, j]):,}\n{share[i, j]:.1%}", ha="center", va="center",
                    fontsize=8, color=color)  # fmt: skip
    ax.set_xticks(range(k), labels, rotation=30, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    return fig


def per_class_figure(
    per_class: Mapping[str, Mapping[str, float | None]], labels: Sequence[str]
) -> Any:
    """Grouped bars of precision, recall, F1 and IoU for each class.

    Args:
        per_class: ``{metric: {class: value}}`` (missing or None values are left out).
        labels: The classes, in order.
    """
    metrics = [m for m in _METRIC_COLORS if m in per_class]
    fig = _figure(max(5.0, 1.4 * len(labels) + 2), 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(metrics))
    x = np.arange(len(labels))
    for i, m in enumerate(metrics):
        vals = [per_class[m].get(c) for c in labels]
        vals = [np.nan if v is None else float(v) for v in vals]
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=m,
               color=_METRIC_COLORS[m])  # fmt: skip
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=len(metrics), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return fig


def error_map_figure(
    codes: np.ndarray,
    names: Mapping[int, str],
    colors: Mapping[int, Sequence[int]],
) -> Any:
    """A picture of an error map with a legend.

    Args:
        codes: ``(h, w)`` uint8 error codes (255: not scored, drawn mid grey).
        names: ``{code: meaning}`` for the legend.
        colors: ``{code: (r, g, b, a)}``; transparent codes are drawn white.
    """
    from matplotlib.patches import Patch

    lut = np.full((256, 3), 255, dtype=np.uint8)
    for code, rgba in colors.items():
        lut[code] = rgba[:3] if (len(rgba) < 4 or rgba[3] > 0) else (255, 255, 255)
    lut[255] = (170, 170, 170)
    h, w = codes.shape
    fig = _figure(8.0, max(2.5, 8.0 * h / max(w, 1)) + 0.6)
    ax = fig.add_subplot()
    ax.imshow(lut[codes], interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(facecolor=np.array(lut[c]) / 255, edgecolor="0.5", label=n)
               for c, n in names.items()]  # fmt: skip
    handles.append(Patch(facecolor=np.array(lut[255]) / 255, edgecolor="0.5", label="not scored"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01),
              ncols=len(handles), frameon=False, fontsize=8)  # fmt: skip
    return fig


def size_figure(by_size: Sequence[Mapping[str, Any]]) -> Any:
    """Bars of building F1 by size bucket, with true and predicted counts on top."""
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    names = [str(b["bucket"]) for b in by_size]
    f1 = [np.nan if b["f1"] is None else float(b["f1"]) for b in by_size]
    bars = ax.bar(range(len(names)), np.nan_to_num(f1), color="#E6194B")
    for bar, b in zip(bars, by_size):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02,
                f"{b['n_truth']} true / {b['n_pred']} pred", ha="center", fontsize=8)  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("building F1")
    ax.grid(axis="y", alpha=0.3)
    return fig
