"""The human views of chipped data: the summary table and ``show_batch``.

Example:
    Not run as a doctest: it needs a ``GeoData`` from ``prepare_data``.

    >>> fig = data.show_batch(rows=2)      # doctest: +SKIP
    >>> fig.savefig("batch.png")           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from geounet.core.classes import hex_to_rgb
from geounet.core.types import IGNORE_INDEX, check_choice
from geounet.viz.bands import rgb_bands

__all__ = ["ChipData", "mask_overlay", "show_batch", "stretch", "summary_frame"]


@runtime_checkable
class ChipData(Protocol):
    """What the pictures read from chipped data (``GeoData`` has it; viz never imports it)."""

    manifest: Mapping[str, Any]
    train_ds: Sequence[Any]
    valid_ds: Sequence[Any]
    classes: list[str]
    colors: list[str]
    class_pixel_counts: Sequence[int]
    class_weights: Sequence[float]
    band_names: list[str]
    stats: Mapping[str, Sequence[float]]
    seed: int | None

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        ...


def summary_frame(data: ChipData) -> Any:
    """The table of :meth:`GeoData.summary` (a pandas DataFrame)."""
    import pandas as pd

    m = data.manifest
    n_train, n_valid = len(data.train_ds), len(data.valid_ds)
    dropped = m.get("dropped_chips", {})
    rows: dict[str, list[Any]] = {
        "chips": [n_train, n_valid, n_train + n_valid, ""],
        "dropped: low valid fraction": ["", "", dropped.get("low_valid_fraction", 0), ""],
        "dropped: split gap": [dropped.get("split_gap", 0), "", dropped.get("split_gap", 0), ""],
    }
    cost = m.get("split_cost")
    if cost:  # what the split took from training, in labelled pixels
        v, g = 100 * cost["valid_pixel_share"], 100 * cost["gap_pixel_share"]
        rows["split cost: % labelled px"] = [round(100 - v - g, 2), round(v, 2), f"gap {g:.2f}", ""]
    strips = m.get("val_strip_choice")
    if strips:  # where val_strip="auto" put each image's strip
        rows["validation strip"] = ["", "; ".join(map(_strip_text, strips)), "", ""]
    by_split = m.get("class_pixel_counts_by_split") or {}
    cols = [
        np.asarray(by_split.get("train") or [0] * data.n_classes, np.float64),
        np.asarray(by_split.get("valid") or [0] * data.n_classes, np.float64),
        np.asarray(data.class_pixel_counts, np.float64),
    ]
    shares = [100 * c / c.sum() if c.sum() else np.zeros_like(c) for c in cols]
    for i, name in enumerate(data.classes):
        weight = round(float(data.class_weights[i]), 3)
        rows[f"% {name}"] = [round(float(s[i]), 2) for s in shares] + [weight]
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["train", "valid", "total", "class_weight"], dtype=object
    )


def _strip_text(choice: dict[str, Any]) -> str:
    """``"middle (the end's strip scored 0.11)"`` for a strip moved by ``val_strip="auto"``."""
    preferred = choice["preferred"]
    chosen = choice.get("chosen", preferred)
    if chosen == preferred:
        return chosen
    return f"{chosen} (the {preferred}'s strip scored {choice['scores'][preferred]})"


def stretch(
    image: np.ndarray, bands: Sequence[int], stats: dict[str, Sequence[float]]
) -> np.ndarray:
    """``(H, W, 3)`` float image in [0, 1]: each band stretched between its p2 and p98.

    Args:
        image: A ``(bands, H, W)`` chip in its raw values.
        bands: The 1-based band numbers drawn as red, green and blue
            (:func:`geounet.viz.bands.rgb_bands`).
        stats: Per-band ``p2`` and ``p98`` (else ``mean``) of the dataset.
    """
    lo = np.asarray(stats.get("p2") or stats["mean"], np.float64)
    hi = np.asarray(stats.get("p98") or stats["mean"], np.float64)
    chans = []
    for b in (int(b) - 1 for b in bands):
        span = hi[b] - lo[b] if hi[b] > lo[b] else 1.0
        chans.append(np.clip((image[b].astype(np.float64) - lo[b]) / span, 0, 1))
    out = np.stack(chans, axis=-1)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def mask_overlay(mask: np.ndarray, colors: Sequence[str], alpha: float = 0.45) -> np.ndarray:
    """``(H, W, 4)`` RGBA overlay: class colours, background and no-label transparent.

    The outline of each labelled region is opaque, so a label stays visible on ground of its
    own colour (a red ``building`` on red roofs).

    Example:
        >>> m = np.zeros((5, 5), np.uint8)
        >>> m[1:4, 1:4] = 1
        >>> rgba = mask_overlay(m, ["#000000", "#FF0000"], alpha=0.4)
        >>> rgba[1, 1, 3].item(), rgba[2, 2, 3].item(), rgba[0, 0, 3].item()
        (1.0, 0.4, 0.0)
    """
    lut = np.zeros((256, 4), np.float64)
    for i, c in enumerate(colors[:255]):
        if i > 0:
            lut[i, :3] = np.asarray(hex_to_rgb(c)) / 255.0
            lut[i, 3] = alpha
    lut[IGNORE_INDEX] = 0.0
    rgba = lut[mask.astype(np.intp)]
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    rgba[..., 3] = np.where(edge & (rgba[..., 3] > 0), 1.0, rgba[..., 3])
    return rgba


def show_batch(
    data: ChipData, rows: int = 3, *, cols: int = 3, split: str = "train", alpha: float = 0.45
) -> Any:
    """Draw chips with their masks overlaid (see :meth:`GeoData.show_batch`)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    check_choice("split", split, ("train", "valid"))
    ds = data.train_ds if split == "train" else data.valid_ds
    if len(ds) == 0:
        ds = data.valid_ds if split == "train" else data.train_ds
    n = min(rows * cols, len(ds))
    rng = np.random.default_rng(data.seed)
    picks = sorted(rng.choice(len(ds), size=n, replace=False).tolist()) if n else []
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    bands = rgb_bands(data.band_names)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, picks):
        image, mask = ds.read(i)
        ax.imshow(stretch(image, bands, data.stats), interpolation="nearest")
        ax.imshow(mask_overlay(mask, data.colors, alpha), interpolation="nearest")
        ax.set_title(ds.chips[i]["image"].split("/")[-1], fontsize=8)
    handles = [Patch(color=c, label=name) for name, c in zip(data.classes, data.colors)]
    fig.legend(handles=handles[1:], loc="outside lower center", ncols=min(6, len(handles)))
    return fig
