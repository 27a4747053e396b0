"""Normalisation and joint image/mask augmentation.

Normalisation always uses statistics computed over the whole training set (stored in the
chip manifest and in the model file), never per tile, so tiled inference has no seams.

Example:
    >>> import numpy as np
    >>> x = normalize(np.full((1, 2, 2), 10, np.uint16), {"mean": [5.0], "std": [5.0]})
    >>> float(x[0, 0, 0])
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["normalize"]


def normalize(array: np.ndarray, stats: Mapping[str, Sequence[float]]) -> np.ndarray:
    """``(x - mean) / std`` per band, as float32.

    Args:
        array: ``(bands, h, w)`` or ``(batch, bands, h, w)`` in the raster's dtype.
        stats: At least ``mean`` and ``std`` lists, one value per band.

    Returns:
        Float32 array of the same shape.
    """
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    shape = (-1, 1, 1)
    out = array.astype(np.float32, copy=True)
    out -= mean.reshape(shape)
    out /= np.maximum(std, 1e-6).reshape(shape)
    return out
