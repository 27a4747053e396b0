"""Which bands a picture shows as red, green and blue: the one helper every picture uses.

Bands are picked by name (the band descriptions ``red``, ``green``, ``blue``, in any case), so
a blue-green-red-NIR image is drawn in true colour; without those names the first three bands
are drawn, and a single band is drawn as grey. Band numbers are 1-based, as in GDAL and
rasterio.

Example:
    >>> rgb_bands(["blue", "green", "red", "nir"])
    (3, 2, 1)
    >>> rgb_bands(["band_1", "band_2", "band_3", "band_4"])
    (1, 2, 3)
    >>> rgb_bands(["pan"])
    (1, 1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

from geounet.core.errors import InvalidParameterError

__all__ = ["RGB_NAMES", "rgb_bands"]

#: Band descriptions drawn as the red, green and blue channels.
RGB_NAMES = ("red", "green", "blue")


def rgb_bands(band_names: Sequence[str | None]) -> tuple[int, int, int]:
    """The 1-based numbers of the bands drawn as red, green and blue.

    Args:
        band_names: A name per band, in band order (band descriptions; None for unnamed).

    Returns:
        ``(red, green, blue)`` band numbers: the bands named red, green and blue when all
        three are named, else ``(1, 2, 3)``, else ``(1, 1, 1)`` (grey) for fewer bands.

    Raises:
        InvalidParameterError: No band at all.
    """
    names = [str(n or "").strip().lower() for n in band_names]
    if not names:
        raise InvalidParameterError(
            "an image without bands cannot be drawn; give the names of its bands "
            "(e.g. ['red', 'green', 'blue'])."
        )
    if all(c in names for c in RGB_NAMES):
        red, green, blue = (names.index(c) + 1 for c in RGB_NAMES)
        return red, green, blue
    return (1, 2, 3) if len(names) >= 3 else (1, 1, 1)
