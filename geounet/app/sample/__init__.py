"""Deterministic synthetic sample data: two aerial-like scenes with labels and vectors.

The scenes imitate 4-band (blue, green, red, near-infrared) aerial imagery at 0.5 m in UTM
zone 16N: textured ground with vegetation bright in the near-infrared, a connected network of
asphalt roads with sidewalks, markings and cars, rectangular and L-shaped buildings with roof
tones, gabled and flat roofs and cast shadows, trees, blur and sensor noise. Everything is
drawn from geometry made in map coordinates, so labels and vectors agree exactly.

The same seed gives bit-identical pixels and identical features: every random draw comes from
:func:`numpy.random.default_rng` seeded per scene and all coordinates are rounded to the
millimetre before anything is drawn from them.

Example:
    Not run as a doctest: it writes the sample scenes, which takes seconds.

    >>> paths = generate_sample_data("sample_data", overwrite=True)   # doctest: +SKIP
    >>> sorted(paths)                                                  # doctest: +SKIP
    ['quicklook', 'test', 'test_buildings', 'test_labels', 'test_roads', 'train', ...]

From the shell: ``python -m geounet.app.sample sample_data [--overwrite]``.
"""

from __future__ import annotations

from geounet.app.sample.files import (
    BANDS,
    DEFAULT_SEED,
    EPSG,
    NODATA_STRIP,
    SAMPLE_FILES,
    ensure_sample_data,
    generate_sample_data,
    main,
)

__all__ = [
    "BANDS",
    "DEFAULT_SEED",
    "EPSG",
    "NODATA_STRIP",
    "SAMPLE_FILES",
    "ensure_sample_data",
    "generate_sample_data",
    "main",
]
