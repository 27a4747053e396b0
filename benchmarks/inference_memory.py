"""Peak memory of streamed classification: it must not grow with the scene.

Generates an N x N 4-band uint16 tiled GeoTIFF window by window (in a child process, so its
memory does not count), builds an untrained network of the right shape with
:func:`geounet.model.files.build_network`, classifies the scene with
:func:`geounet.inference.classify.classify_raster` and prints ``peak_rss_mb`` (the process's maximum
resident set size) next to the RSS just before classifying. The last line is a JSON object.

``--network tiny`` (the default) is the paper U-Net with 4 base channels, so that the network
time stays small on a CPU and the figure measures the pipeline; ``lite0`` (efficientnet-lite0
U-Net) and ``resnet18`` are the real thing.

Usage::

    python benchmarks/inference_memory.py --size 5000
    python benchmarks/inference_memory.py --size 20000 --network tiny
"""

from __future__ import annotations

import sys
import time
from functools import partial

from _common import (
    add_scene_args,
    add_tiling_args,
    cached_scene,
    classify_options,
    emit,
    inference_scene,
    make_model,
    parser,
    peak_rss_mb,
    rss_mb,
    work_dir,
)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=5000)
    add_tiling_args(p, network="tiny")
    args = p.parse_args(argv)

    work = work_dir(args.work)
    scene = cached_scene(
        work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size), child=True
    )

    from geounet.inference.classify import classify_with_options

    model = make_model(args.network)
    before = rss_mb()
    t0 = time.perf_counter()
    out = work / f"classified_{args.size}.tif"
    classify_with_options(model, scene, out, classify_options(args))
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    mpx = args.size**2 / 1e6
    print(
        f"{args.size} x {args.size} ({mpx:.0f} Mpx), network {args.network}: {seconds:.0f} s, "
        f"{mpx / seconds:.2f} Mpx/s, RSS before classify {before:.0f} MiB, peak {peak:.0f} MiB"
    )
    out.unlink()
    emit(
        {
            "benchmark": "inference_memory",
            "size": args.size,
            "network": args.network,
            "tile": args.tile,
            "overlap": args.overlap,
            "batch": args.batch,
            "seconds": round(seconds, 1),
            "mpx_per_s": round(mpx / seconds, 3),
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
