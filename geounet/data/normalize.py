"""Normalisation and joint image/mask augmentation.

Normalisation always uses statistics computed over the whole training set (stored in the
chip manifest and in the model file), never per tile, so tiled inference has no seams.
Training and inference both feed the network :func:`normalize_valid`, so invalid pixels
(nodata, mask band, alpha, NaN, padding) look the same to it in both: 0, the training mean.

Example:
    >>> import numpy as np
    >>> x = normalize(np.full((1, 2, 2), 10, np.uint16), {"mean": [5.0], "std": [5.0]})
    >>> float(x[0, 0, 0])
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["normalize", "normalize_valid"]


def normalize(
    array: np.ndarray, stats: Mapping[str, Sequence[float]], out: np.ndarray | None = None
) -> np.ndarray:
    """``(x - mean) / std`` per band, as float32.

    Args:
        array: ``(bands, h, w)`` or ``(batch, bands, h, w)`` in the raster's dtype.
        stats: At least ``mean`` and ``std`` lists, one value per band.
        out: A float32 array of the same shape to write into (e.g. a slot of a batch), or
            None for a new one.

    Returns:
        Float32 array of the same shape (``out`` when given).
    """
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    shape = (-1, 1, 1)
    if out is None:
        out = np.empty(array.shape, np.float32)
    np.subtract(array, mean.reshape(shape), out=out, dtype=np.float32)
    out /= np.maximum(std, 1e-6).reshape(shape)
    return out


def normalize_valid(
    array: np.ndarray,
    stats: Mapping[str, Sequence[float]],
    valid: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The network input: :func:`normalize`, with invalid pixels at 0 (the training mean).

    Non-finite results (NaN/inf, e.g. from float data of a huge range) become 0 too.

    Args:
        array: ``(bands, h, w)`` in the raster's dtype.
        stats: At least ``mean`` and ``std`` lists, one value per band.
        valid: Boolean ``(h, w)`` mask of valid pixels.
        out: A float32 ``(bands, h, w)`` array to write into, or None for a new one.

    Returns:
        Float32 ``(bands, h, w)`` (``out`` when given).

    Example:
        >>> x = np.array([[[10, 99]]], np.uint16)
        >>> normalize_valid(x, {"mean": [5.0], "std": [5.0]}, np.array([[True, False]])).tolist()
        [[[1.0, 0.0]]]
    """
    out = normalize(array, stats, out)
    invalid = ~np.asarray(valid, bool)
    if invalid.any():  # the scatter costs a pass even when nothing is invalid
        out[:, invalid] = 0.0
    finite_stats = np.isfinite(stats["mean"]).all() and np.isfinite(stats["std"]).all()
    if np.issubdtype(array.dtype, np.integer) and finite_stats:
        # (x - mean) / std of 64-bit integers stays under 1e25 with std >= 1e-6 (normalize):
        # finite in float32, so the pass of nan_to_num would change nothing
        return out
    return np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
