"""Figures of the model stage: training curves, the LR finder, image | truth | prediction.

Every function returns a :class:`matplotlib.figure.Figure` (nothing is shown or saved), so
notebooks display it and scripts can ``fig.savefig(...)``.

Example:
    >>> import pandas as pd
    >>> fig = plot_losses(pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5],
    ...                                 "valid_loss": [1.1, 0.7], "valid_miou": [0.3, 0.5]}))
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from geounet.core.classes import ClassSpec, hex_to_rgb
from geounet.core.types import IGNORE_INDEX
from geounet.viz.bands import rgb_bands

__all__ = ["image_to_rgb", "mask_to_rgb", "plot_losses", "plot_lr_find", "results_figure"]


def _figure(**kwargs: Any) -> Any:
    """A new Figure not registered with pyplot (no GUI, no leak across calls)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def plot_losses(history: pd.DataFrame) -> Any:
    """Training and validation loss per epoch, and validation mIoU / accuracy.

    Args:
        history: The ``history`` DataFrame of a classifier.

    Returns:
        A Figure with two axes.
    """
    fig = _figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    if len(history):
        for col, style in (("train_loss", "-o"), ("valid_loss", "-s")):
            if col in history and history[col].notna().any():
                ax_loss.plot(history["epoch"], history[col], style, label=col.replace("_", " "))
        for col in ("valid_miou", "accuracy"):
            if col in history and history[col].notna().any():
                ax_metric.plot(history["epoch"], history[col], "-o", label=col.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_metric.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0, 1))
    for ax in (ax_loss, ax_metric):
        if ax.lines:
            ax.legend()
        ax.grid(alpha=0.3)
    return fig


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float) -> Any:
    """Smoothed loss against learning rate (log scale), the suggestion marked."""
    fig = _figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="tab:red", ls="--", label=f"suggested lr = {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="LR finder")
    if len(losses):
        lo, hi = float(np.nanmin(losses)), float(np.nanpercentile(losses, 90))
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def image_to_rgb(
    image: np.ndarray,
    stats: Mapping[str, Sequence[float]] | None = None,
    band_names: Sequence[str] | None = None,
) -> Any:
    """A displayable ``(H, W, 3)`` float image from a normalised ``(C, H, W)`` chip.

    The bands named red, green and blue are drawn as RGB (:func:`geounet.viz.bands.rgb_bands`:
    without such names the first three, one band as grey). The chip is de-normalised with
    ``mean``/``std`` when given, then stretched between the dataset's 2nd and 98th
    percentiles (``p2``/``p98``) when known, else the chip's own.

    Args:
        image: A normalised ``(C, H, W)`` chip.
        stats: Per-band ``mean``, ``std``, ``p2``, ``p98`` of the dataset (all bands).
        band_names: A name per band of ``image`` (e.g. ``["blue", "green", "red", "nir"]``).
    """
    x = np.asarray(image, dtype=np.float32)
    idx = [b - 1 for b in rgb_bands(band_names or [""] * x.shape[0])]
    x = x[idx]
    if stats and "mean" in stats and "std" in stats:
        mean = np.asarray(stats["mean"], np.float32)[idx].reshape(3, 1, 1)
        std = np.asarray(stats["std"], np.float32)[idx].reshape(3, 1, 1)
        x = x * std + mean
    if stats and "p2" in stats and "p98" in stats:
        lo = np.asarray(stats["p2"], np.float32)[idx].reshape(3, 1, 1)
        hi = np.asarray(stats["p98"], np.float32)[idx].reshape(3, 1, 1)
    else:
        finite = x[np.isfinite(x)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    out = (x - lo) / np.maximum(hi - lo, 1e-6)
    return np.clip(np.nan_to_num(out), 0, 1).transpose(1, 2, 0)


def mask_to_rgb(
    mask: np.ndarray,
    classes: Sequence[ClassSpec],
    alpha: float = 1.0,
    background_alpha: float | None = None,
) -> np.ndarray:
    """``(H, W, 4)`` RGBA from class indices; 255 (nodata) is transparent.

    Args:
        mask: Class indices.
        classes: The class list (colours).
        alpha: Opacity of the classes.
        background_alpha: Opacity of class 0 (default: ``alpha``); 0 overlays only objects.
    """
    lut = np.zeros((256, 4), np.float32)
    for i, c in enumerate(classes):
        lut[i, :3] = np.asarray(hex_to_rgb(c.color), np.float32) / 255
        lut[i, 3] = alpha
    lut[0, 3] = alpha if background_alpha is None else background_alpha
    lut[IGNORE_INDEX] = 0.0
    return lut[np.asarray(mask, np.uint8)]


def results_figure(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    classes: Sequence[ClassSpec],
    stats: Mapping[str, Sequence[float]] | None = None,
    band_names: Sequence[str] | None = None,
) -> Any:
    """A grid with one row per chip: image | ground truth | prediction.

    Truth and prediction are drawn over the dimmed image; background is left transparent.

    Args:
        images: Normalised ``(C, H, W)`` chips.
        truths: ``(H, W)`` true class indices (255 = no label).
        preds: ``(H, W)`` predicted class indices.
        classes: The class list (colours and names for the legend).
        stats: Normalisation statistics to display the chips in their true colours.
        band_names: A name per chip band; the bands named red, green and blue are drawn as
            RGB (a blue-green-red-NIR chip in true colour).

    Returns:
        A Figure.
    """
    rows = max(len(images), 1)
    fig = _figure(figsize=(9, 3 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, 3, squeeze=False))
    for r, (img, truth, pred) in enumerate(zip(images, truths, preds)):
        rgb = image_to_rgb(img, stats, band_names)
        axes[r, 0].imshow(rgb)
        for col, mask in ((1, truth), (2, pred)):
            axes[r, col].imshow(rgb * 0.6)
            overlay = mask_to_rgb(mask, classes, alpha=0.75, background_alpha=0.0)
            axes[r, col].imshow(overlay, interpolation="nearest")
    for col, title in enumerate(("image", "ground truth", "prediction")):
        axes[0, col].set_title(title)
    for ax in axes.ravel():
        ax.set_axis_off()
    from matplotlib.patches import Patch

    handles = [Patch(color=c.color, label=c.name) for c in classes]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
    return fig
