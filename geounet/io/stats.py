"""Per-band statistics streamed window by window: exact moments, percentiles with bounded memory.

Pure numpy, no IO: :func:`geounet.io.raster.band_stats` reads the windows and feeds them to a
:class:`StatsAccumulator`. Percentiles follow ``numpy.percentile`` (linear interpolation):
exact from full histograms for 8- and 16-bit integers, else from a uniform random sample of
at most :data:`STATS_SAMPLE` pixels.

Example:
    >>> import numpy as np
    >>> acc = StatsAccumulator(1, "uint8")
    >>> acc.add(np.array([[1, 2, 3, 4]], np.uint8))
    >>> acc.result().mean
    [2.5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["STATS_SAMPLE", "BandStats", "StatsAccumulator"]

#: Dtypes whose percentiles come from exact full histograms.
HIST_DTYPES = ("uint8", "int8", "uint16", "int16")
#: Pixels kept (a uniform random sample) for the percentiles of other dtypes.
STATS_SAMPLE = 1_000_000
#: A band's standard deviation under this is a constant band (normalised by 1 instead).
MIN_STD = 1e-6


@dataclass
class BandStats:
    """Per-band statistics over valid pixels: mean, standard deviation, 2nd/98th percentile.

    ``std`` is the population standard deviation; a band that does not vary (under
    :data:`MIN_STD`) gets 1, so that it can divide and a value it takes elsewhere later (the
    scene to map) stays on the scale of the data instead of being multiplied a millionfold.
    """

    mean: list[float]
    std: list[float]
    p2: list[float]
    p98: list[float]
    count: int = 0

    def to_dict(self) -> dict[str, list[float]]:
        """The JSON form stored in manifests and model files."""
        return {"mean": self.mean, "std": self.std, "p2": self.p2, "p98": self.p98}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BandStats:
        """Rebuild from :meth:`to_dict`."""
        return cls(*(list(map(float, d[k])) for k in ("mean", "std", "p2", "p98")))


def _lerp(a: float, b: float, t: float) -> float:
    """Linear interpolation exactly as numpy's percentile computes it."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _hist_moments(hist: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Per band mean and sum of squared deviations of histograms, exactly (integer sums).

    Example:
        >>> _hist_moments(np.array([[0, 2, 0, 2]]), 0)
        (array([2.]), array([4.]))
    """
    mean, m2 = np.zeros(len(hist)), np.zeros(len(hist))
    for b, h in enumerate(hist):
        nz = np.flatnonzero(h)
        vals, counts = (nz - offset).tolist(), h[nz].tolist()
        n = sum(counts)
        if n == 0:
            continue
        s1 = sum(v * c for v, c in zip(vals, counts))
        s2 = sum(v * v * c for v, c in zip(vals, counts))
        mean[b], m2[b] = s1 / n, (n * s2 - s1 * s1) / n  # Python ints: exact until divided
    return mean, m2


class StatsAccumulator:
    """Streams windows into exact moments and histograms (or a bounded sample) per band.

    For 8/16-bit integers only the histograms are kept: means and variances come from them
    exactly (integer sums) at the end. Other types merge means and variances window by window
    (Chan et al.), which stays accurate for large values with a small spread. Percentiles
    use numpy's default (linear) definition:
    exactly from full histograms for 8/16-bit integers, else from a uniform random sample of
    at most ``sample_size`` pixels (bottom-k of random keys: every pixel has the same chance,
    whatever window it comes from), which is exact while the raster has fewer valid pixels.
    """

    def __init__(
        self, n_bands: int, dtype: str, seed: int = 0, sample_size: int | None = None
    ) -> None:
        self.n = 0
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)
        self.dtype = np.dtype(dtype)
        self.exact = self.dtype.name in HIST_DTYPES
        self.hist: np.ndarray | None = None
        if self.exact:
            info = np.iinfo(self.dtype)
            self.offset = -int(info.min)
            self.hist = np.zeros((n_bands, int(info.max) + self.offset + 1), np.int64)
        self.k = int(sample_size or STATS_SAMPLE)
        self.keys = np.empty(0)
        self.sample = np.empty((n_bands, 0), self.dtype)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.threshold = math.inf
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        """Add ``(bands, n)`` valid values."""
        m = values.shape[1]
        if m == 0:
            return
        if self.hist is not None:  # moments come exactly from the histograms at the end
            self.n += m
            for b in range(values.shape[0]):
                idx = values[b] if self.offset == 0 else values[b].astype(np.int64) + self.offset
                self.hist[b] += np.bincount(idx, minlength=self.hist.shape[1])
            return
        v = values.astype(np.float64)
        wmean = v.mean(axis=1)
        wm2 = ((v - wmean[:, None]) ** 2).sum(axis=1)
        delta, total = wmean - self.mean, self.n + m
        self.mean = self.mean + delta * (m / total)
        self.m2 = self.m2 + wm2 + delta * delta * (self.n * m / total)
        self.n = total
        self._add_sample(values.astype(self.dtype, copy=False))

    def _add_sample(self, values: np.ndarray) -> None:
        keys = self.rng.random(values.shape[1])
        keep = keys < self.threshold
        self.pending.append((keys[keep], values[:, keep]))
        if sum(k.size for k, _ in self.pending) >= self.k:
            self._merge()

    def _merge(self) -> None:
        keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
        sample = np.concatenate([self.sample, *(v for _, v in self.pending)], axis=1)
        self.pending = []
        if keys.size > self.k:
            idx = np.argpartition(keys, self.k - 1)[: self.k]
            keys, sample = keys[idx], sample[:, idx]
        if keys.size >= self.k:
            self.threshold = float(keys.max())
        self.keys, self.sample = keys, sample

    def _percentile(self, b: int, q: float) -> float:
        if self.hist is None:
            return float(np.percentile(self.sample[b], q))
        cdf = np.cumsum(self.hist[b])
        n = int(cdf[-1])
        qf = q / 100
        h = n * qf + (1 + qf * (1 - 1 - 1)) - 1  # numpy's "linear" virtual index
        lo = math.floor(h)
        # the k-th smallest value (0-based) is the first value whose cumulative count exceeds k
        a = int(np.searchsorted(cdf, lo, side="right")) - self.offset
        b_ = int(np.searchsorted(cdf, min(lo + 1, n - 1), side="right")) - self.offset
        return float(_lerp(float(a), float(b_), h - lo))

    def result(self) -> BandStats:
        """The statistics of everything added."""
        if self.pending:
            self._merge()
        if self.hist is not None:
            self.mean, self.m2 = _hist_moments(self.hist, self.offset)
        n = max(self.n, 1)
        std = np.sqrt(np.maximum(self.m2 / n, 0.0))
        nb = len(self.mean)
        return BandStats(
            mean=[float(x) for x in self.mean],
            std=[float(x) if x >= MIN_STD else 1.0 for x in std],
            p2=[self._percentile(b, 2) for b in range(nb)],
            p98=[self._percentile(b, 98) for b in range(nb)],
            count=int(self.n),
        )
