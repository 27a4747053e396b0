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
from geounet.viz.batches import rgb_bands
from geounet.viz.plots import mask_to_rgb

__all__ = ["rgb_band_indices", "save_quicklook", "stretch"]


def rgb_band_indices(band_names: Sequence[str]) -> list[int]:
    """0-based positions of red, green, blue among ``band_names`` (else the first three/one)."""
    return (rgb_bands(band_names) * 3)[:3]  # one band: grey, drawn three times


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

    Args:
        image: The scene.
        classified: Its class raster (same grid).
        out_png: PNG to write.
        classes: Class list (colours).
        vectors: ``{class name: GeoDataFrame}`` in the raster's CRS (optional third panel).
        max_size: Longest side of the rendered panels in pixels.
        overwrite: Replace an existing PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    info = open_raster(image, allow_no_crs=True)
    rgb_pos = rgb_band_indices(info.band_names)
    data = _read_decimated(info.path, [info.data_bands[i] for i in rgb_pos], max_size)
    valid = ~np.all(data == info.nodata, axis=0) if info.nodata is not None else None
    rgb = stretch(data, valid)
    cls = _read_decimated(Path(classified), [1], max_size)[0]
    x0, y0, x1, y1 = info.bounds
    extent = (x0, x1, y0, y1)
    n = 3 if vectors else 2
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 6.4), constrained_layout=True)
    axes[0].imshow(rgb, extent=extent)
    axes[0].set_title(Path(image).name)
    axes[1].imshow(rgb, extent=extent)
    overlay = mask_to_rgb(cls, classes, alpha=0.6, background_alpha=0.0)
    axes[1].imshow(overlay, extent=extent, interpolation="nearest")
    axes[1].set_title("prediction")
    if vectors:
        axes[2].imshow(rgb, extent=extent)
        colors = {c.name: c.color for c in classes}
        for name, gdf in vectors.items():
            if len(gdf):
                style = {"facecolor": "none"} if name != "road" else {}
                gdf.plot(
                    ax=axes[2],
                    edgecolor=colors.get(name, "#00FFFF"),
                    color=colors.get(name) if name == "road" else None,
                    linewidth=1.2,
                    **style,
                )
        axes[2].set_title("vectors")
    for ax in axes:  # geopandas relabels and rescales its axes: keep all panels alike
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_xticks([])
        ax.set_yticks([])
    with atomic_output(out_png, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(out_png)
