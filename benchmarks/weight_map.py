"""Speed of :func:`geounet.model.losses.unet_weight_map` on training-sized chips.

The boundary-weighted loss computes one map per chip and batch (``boundary_weight > 0``), so its
cost adds to every training step. The map is computed per object on a crop around it (see the
function's docstring), so the time grows with the number and size of objects, not with the square
of the chip. This script times chips of ``--size`` pixels holding ``--objects`` random rectangles
and prints one JSON line (milliseconds per map, median of ``--repeat`` runs). Correctness is
checked by ``tests/test_losses.py`` against a brute-force reference; this only measures time.

Usage::

    python benchmarks/weight_map.py                      # 256 x 256, 30 objects
    python benchmarks/weight_map.py --size 512 --objects 120
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from geounet.model.losses import unet_weight_map


def random_mask(size: int, objects: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` mask with ``objects`` rectangles of 5 to 15 pixels a side."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(objects):
        y, x = rng.integers(0, size - 16, 2)
        h, w = rng.integers(5, 16, 2)
        mask[y : y + h, x : x + w] = 1
    return mask


def main() -> None:
    """Time the weight map and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="chip side in pixels")
    parser.add_argument("--objects", type=int, default=30, help="rectangles per chip")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs")
    args = parser.parse_args()
    mask = random_mask(args.size, args.objects)
    unet_weight_map(mask)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        unet_weight_map(mask)
        times.append((time.perf_counter() - t0) * 1000)
    result = {"size": args.size, "objects": args.objects, "ms_median": statistics.median(times)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
