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

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

NETWORKS = {
    "tiny": {"arch": "unet-classic", "backbone": None, "unet_kwargs": {"base_channels": 4}},
    "lite0": {"arch": "unet", "backbone": "efficientnet-lite0", "unet_kwargs": {}},
    "resnet18": {"arch": "unet", "backbone": "resnet18", "unet_kwargs": {}},
}


def rss_mb() -> float:
    """Current resident set size in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, size: int, block: int = 1024) -> None:
    """An N x N 4-band uint16 tiled, deflate-compressed GeoTIFF with smooth patterns."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16",
        "crs": CRS.from_epsg(32616), "transform": from_origin(500000, 3800000, 0.5, 0.5),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "predictor": 2, "BIGTIFF": "YES", "nodata": 0,
    }  # fmt: skip
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                yy, xx = np.mgrid[r : r + h, c : c + w]
                base = (np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 400 + 1200
                band = np.stack(
                    [base + 150 * b + ((xx // 64 + yy // 64) % 3) * 90 for b in range(4)]
                )
                dst.write(band.astype(np.uint16), window=Window(c, r, w, h))
    tmp.rename(path)


def make_model(network: str) -> SimpleNamespace:
    """An untrained model object (network, config, device) for 4 uint16 bands, 2 classes."""
    import torch

    from geounet.core.classes import make_classes
    from geounet.model.files import ModelConfig, build_network

    spec = NETWORKS[network]
    config = ModelConfig(
        arch=spec["arch"], backbone=spec["backbone"], in_channels=4,
        classes=make_classes({1: "building"}), bands=[1, 2, 3, 4],
        band_names=["blue", "green", "red", "nir"],
        stats={"mean": [1300.0] * 4, "std": [400.0] * 4, "p2": [500.0] * 4, "p98": [2100.0] * 4},
        chip_size=256, gsd_m=0.5, source_dtype="uint16", unet_kwargs=dict(spec["unet_kwargs"]),
    )  # fmt: skip
    torch.manual_seed(0)
    return SimpleNamespace(network=build_network(config), config=config, device=torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000, help="scene side N in pixels")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="tiny")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work", default="bench_out", help="folder for the scene and output")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        t0 = time.perf_counter()
        proc = mp.get_context("spawn").Process(target=generate, args=(scene, args.size))
        proc.start()
        proc.join()
        if proc.exitcode:
            raise SystemExit(f"generating {scene} failed")
        print(f"generated {scene} in {time.perf_counter() - t0:.0f} s", flush=True)

    from geounet.inference.classify import classify_raster

    model = make_model(args.network)
    before = rss_mb()
    t0 = time.perf_counter()
    out = classify_raster(
        model, scene, work / f"classified_{args.size}.tif", tile_size=args.tile,
        overlap=args.overlap, batch_size=args.batch, overwrite=True, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    mpx = args.size**2 / 1e6
    print(
        f"{args.size} x {args.size} ({mpx:.0f} Mpx), network {args.network}: {seconds:.0f} s, "
        f"{mpx / seconds:.2f} Mpx/s, RSS before classify {before:.0f} MiB, peak {peak:.0f} MiB"
    )
    out.unlink()
    print(
        json.dumps(
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
