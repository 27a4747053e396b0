"""Peak memory of streamed classification: it must not grow with the scene.

Generates an N x N 4-band uint16 tiled GeoTIFF window by window (in a child process, so its
memory does not count), builds an untrained network of the right shape with
:func:`geounet.model.files.build_network`, classifies the scene with
:func:`geounet.inference.classify.classify_raster` and prints ``peak_rss_mb`` (the process's maximum
resident set size) next to the RSS just before classifying. The last line is a JSON object.

``--network tiny`` (the default) is the paper U-Net with 4 base channels, so that the network
time stays small on a CPU and the figure measures the pipeline; ``lite0`` (efficientnet-lite0
U-Net) and ``resnet18`` are the real thing.

``--sizes`` runs several sizes side by side, each in its own process (after one unreported
warm-up run of the smallest, which fills the engine cache of ``--engine auto``), and prints
their peak RSS in one table with the spread (target: within 10 %).

Usage::

    python benchmarks/inference_memory.py --size 5000
    python benchmarks/inference_memory.py --size 20000 --network tiny
    python benchmarks/inference_memory.py --sizes 4096 12000 20000 --network lite0 --engine auto
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from typing import Any

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

#: Peak RSS of the largest scene at most this much above the smallest's (issue 13).
FLAT_TARGET = 0.10


def classify_one(args: argparse.Namespace) -> dict[str, Any]:
    """Classify the ``--size`` scene in this process; its figures (peak RSS, seconds, engine)."""
    import rasterio

    from geounet.inference.classify import classify_with_options

    work = work_dir(args.work)
    scene = cached_scene(
        work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size), child=True
    )
    model = make_model(args.network)
    model.model_dir = work / f"memory_{args.network}"  # the auto engine's cache
    before = rss_mb()
    t0 = time.perf_counter()
    out = work / f"classified_{args.size}.tif"
    classify_with_options(model, scene, out, classify_options(args, engine=args.engine))
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as src:
        engine = src.tags().get("GEOUNET_ENGINE", "?")
    out.unlink()
    mpx = args.size**2 / 1e6
    return {
        "size": args.size,
        "engine": engine,
        "seconds": round(seconds, 1),
        "mpx_per_s": round(mpx / seconds, 3),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def launch(args: argparse.Namespace, size: int) -> dict[str, Any]:
    """Run :func:`classify_one` for ``size`` in a child process; its JSON result."""
    cmd = [sys.executable, __file__, "--size", str(size), "--work", str(args.work)]
    cmd += ["--network", args.network, "--engine", args.engine, "--tile", str(args.tile)]
    cmd += ["--overlap", str(args.overlap), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise SystemExit(f"size {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    """One child per size (after an unreported warm-up that fills the engine cache)."""
    sizes = sorted(args.sizes)
    for size in sizes:  # generated before any measure, each in a child process
        cached_scene(
            work_dir(args.work) / f"scene_{size}.tif",
            partial(inference_scene, size=size),
            child=True,
        )
    warm = launch(args, sizes[0])
    print(f"warm-up {sizes[0]}: {warm['seconds']} s ({warm['engine']}), not reported", flush=True)
    runs = []
    for size in sizes:
        r = launch(args, size)
        runs.append(r)
        print(f"{size}: {r['seconds']} s, peak RSS {r['peak_rss_mb']} MiB", flush=True)
    low = min(r["peak_rss_mb"] for r in runs)
    print(f"network {args.network}, engine {args.engine}, tile {args.tile}, batch {args.batch}")
    print("| scene | Mpx | engine | seconds | Mpx/s | RSS before MiB | peak RSS MiB | vs lowest |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        r["peak_vs_lowest"] = round(r["peak_rss_mb"] / low, 3)
        print(
            f"| {r['size']}² | {r['size'] ** 2 / 1e6:.0f} | {r['engine']} | {r['seconds']} | "
            f"{r['mpx_per_s']} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_vs_lowest']:.3f} |"
        )
    spread = max(r["peak_rss_mb"] for r in runs) / low - 1
    met = "met" if spread <= FLAT_TARGET else "not met"
    print(f"peak RSS spread {100 * spread:.1f} % (target <= {100 * FLAT_TARGET:.0f} %: {met})")
    return {"runs": runs, "peak_rss_spread": round(spread, 4), "target_met": spread <= FLAT_TARGET}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=5000)
    add_tiling_args(p, network="tiny")
    p.add_argument("--engine", default="torch", help="torch, onnx, openvino, auto... (classify)")
    p.add_argument("--sizes", type=int, nargs="+", help="several sizes, each in its own process")
    args = p.parse_args(argv)
    args.work = work_dir(args.work).resolve()
    head = {"benchmark": "inference_memory", "network": args.network, "engine": args.engine}
    head |= {"tile": args.tile, "overlap": args.overlap, "batch": args.batch}
    if args.sizes:
        emit(head | side_by_side(args))
        return 0
    r = classify_one(args)
    mpx = args.size**2 / 1e6
    print(
        f"{args.size} x {args.size} ({mpx:.0f} Mpx), network {args.network}, engine "
        f"{r['engine']}: {r['seconds']:.0f} s, {r['mpx_per_s']:.2f} Mpx/s, RSS before "
        f"classify {r['rss_before_mb']:.0f} MiB, peak {r['peak_rss_mb']:.0f} MiB"
    )
    emit(head | r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
