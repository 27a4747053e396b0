"""Quicklook pictures: a scene, its classification and its vectors side by side (matplotlib).

Rasters are read decimated (``out_shape``) so a quicklook of a huge scene stays small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geounet.core.classes import ClassSpec
from geounet.core.types import PathLike
from geounet.io.raster import atomic_output, open_raster
from geounet.viz.bands import rgb_bands
from geounet.viz.plots import mask_to_rgb

__all__ = ["save_quicklook", "stretch"]


def stretch(array: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """2-98 percentile stretch of ``(3, h, w)`` bands to an ``(h, w, 3)`` float image in [0, 1]."""
    out = np.zeros((*array.shape[1:], 3), dtype=np.float32)
    for i in range(3):
        band = array[i].astype(np.float32)
        vals = band[valid] if valid is not None and valid.any() else band.ravel()
        lo, hi = np.percentile(vals, (2, 98)) if vals.size else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def _read_decimated(path: Path, bands: list[int], max_size: int) -> np.ndarray:
    with rasterio.open(path) as src:
        scale = max(src.width, src.height) / max_size
        shape = (len(bands), src.height, src.width)
        if scale > 1:
            shape = (len(bands), int(src.height / scale), int(src.width / scale))
        return src.read(bands, out_shape=shape, resampling=Resampling.nearest)


def save_quicklook(
    image: PathLike,
    classified: PathLike,
    out_png: PathLike,
    classes: Sequence[ClassSpec],
    *,
    vectors: Mapping[str, Any] | None = None,
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Save ``image | prediction overlay | vectors over the image`` as a PNG.

    The picture is drawn on its own Agg canvas: matplotlib's backend and the figures open in
    pyplot (a notebook's) are left as they are. The bands named red, green and blue are shown
    as RGB (:func:`geounet.viz.bands.rgb_bands`).

    Args:
        image: The scene.
        classified: Its class raster (same grid).
        out_png: PNG to write.
        classes: Class list (colours).
        vectors: ``{class name: GeoDataFrame}`` in the raster's CRS (optional third panel).
        max_size: Longest side of the rendered panels in pixels.
        overwrite: Replace an existing PNG.

    Returns:
        The written PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    info = open_raster(image, allow_no_crs=True)
    bands = [info.data_bands[b - 1] for b in rgb_bands(info.band_names)]
    data = _read_decimated(info.path, bands, max_size)
    valid = ~np.all(data == info.nodata, axis=0) if info.nodata is not None else None
    rgb = stretch(data, valid)
    cls = _read_decimated(Path(classified), [1], max_size)[0]
    n = 3 if vectors else 2
    fig = Figure(figsize=(6 * n, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n)
    extent = (info.bounds[0], info.bounds[2], info.bounds[1], info.bounds[3])
    for ax in axes:
        ax.imshow(rgb, extent=extent)
    axes[0].set_title(Path(image).name)
    overlay = mask_to_rgb(cls, classes, alpha=0.6, background_alpha=0.0)
    axes[1].imshow(overlay, extent=extent, interpolation="nearest")
    axes[1].set_title("prediction")
    if vectors:
        _draw_vectors(axes[2], vectors, classes)
    for ax in axes:  # geopandas relabels and rescales its axes: keep all panels alike
        _frame(ax, extent)
    with atomic_output(out_png, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return Path(out_png)


def _draw_vectors(ax: Any, vectors: Mapping[str, Any], classes: Sequence[ClassSpec]) -> None:
    """Polygon outlines (roads filled) in their class colours."""
    colors = {c.name: c.color for c in classes}
    for name, gdf in vectors.items():
        if len(gdf):
            style = {"facecolor": "none"} if name != "road" else {}
            gdf.plot(
                ax=ax,
                edgecolor=colors.get(name, "#00FFFF"),
                color=colors.get(name) if name == "road" else None,
                linewidth=1.2,
                **style,
            )
    ax.set_title("vectors")


def _frame(ax: Any, extent: tuple[float, float, float, float]) -> None:
    """The scene's extent, equal aspect, no ticks or axis labels."""
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_xticks([])
    ax.set_yticks([])
