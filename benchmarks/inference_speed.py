"""Speed of streamed classification against the bare network forward over the same tiles.

Generates an N x N 4-band uint16 GeoTIFF (default 8192), classifies it end to end with
:func:`geounet.inference.classify_raster`, and in the same run times the bare network forward
(``network(x)`` under inference mode, channels-last) over as many batches of the same shape
as the classification ran. The overhead (reading, mirror padding, normalising, blending,
writing, minus what the reader thread hides) is ``end_to_end / network - 1``; the target on a
CPU is <= 15 %. The bare forward is timed before and after the end-to-end run and averaged,
so that a change of machine load during the run weighs on both; CPU time of the process
(all threads) is reported too, as it is less sensitive to other processes on a shared
machine. The last line is a JSON object.

The network is an untrained efficientnet-lite0 U-Net (``--network lite0``, the default; the
weights do not change the speed) or ``resnet18``. The figure needs four passes of it over the
scene (bare forward before and after, end to end, ``run_network``); on a 2-core CPU one pass
over 8192 x 8192 (361 tiles of 512) takes about 8 minutes, so use ``--size 4096`` (100 tiles,
about 10 minutes in all) there.

Usage::

    python benchmarks/inference_speed.py                       # 8192 x 8192, lite0 U-Net
    python benchmarks/inference_speed.py --size 4096           # a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_memory import NETWORKS, generate, make_model

from geounet.blending import TilePlan
from geounet.engine import prepare_network, run_network
from geounet.inference import classify_raster


def batch_shapes(size: int, tile: int, overlap: int, batch: int) -> list[int]:
    """Batch sizes the classification runs through the network (the last may be short)."""
    plan = TilePlan.build(size, size, tile_size=tile, overlap=overlap, blend="spline")
    n = plan.n_tiles
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def time_network(model, sizes: list[int], tile: int, with_softmax: bool) -> tuple[float, float]:
    """Wall and CPU seconds of the bare forward over batches of the given sizes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(sizes), 4, tile, tile)).astype(np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for b in sizes:
        if with_softmax:
            run_network(model, x[:b])
        else:
            xt = torch.from_numpy(x[:b]).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                model.network(xt)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="scene side N in pixels")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="lite0")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work", default="bench_out", help="folder for the scene and output")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{args.size}.tif"
    if not scene.exists():
        generate(scene, args.size)
    model = make_model(args.network)
    prepare_network(model)
    sizes = batch_shapes(args.size, args.tile, args.overlap, args.batch)
    time_network(model, sizes[:1], args.tile, with_softmax=True)  # warm-up

    net_before, cpu_before = time_network(model, sizes, args.tile, with_softmax=False)
    t0, c0 = time.perf_counter(), time.process_time()
    out = classify_raster(
        model, scene, work / f"speed_{args.size}.tif", tile_size=args.tile,
        overlap=args.overlap, batch_size=args.batch, overwrite=True, progress=False,
    )  # fmt: skip
    e2e, e2e_cpu = time.perf_counter() - t0, time.process_time() - c0
    net_after, cpu_after = time_network(model, sizes, args.tile, with_softmax=False)
    runner, _ = time_network(model, sizes, args.tile, with_softmax=True)
    out.unlink()

    net, net_cpu = (net_before + net_after) / 2, (cpu_before + cpu_after) / 2
    mpx = args.size**2 / 1e6
    overhead, overhead_cpu = e2e / net - 1, e2e_cpu / net_cpu - 1
    print(
        f"{args.size} x {args.size} ({mpx:.1f} Mpx, {sum(sizes)} tiles of {args.tile}, "
        f"network {args.network}, {torch.get_num_threads()} threads)\n"
        f"  end to end      {e2e:8.1f} s wall {e2e_cpu:8.1f} s CPU  {mpx / e2e:6.3f} Mpx/s\n"
        f"  bare forward    {net:8.1f} s wall {net_cpu:8.1f} s CPU  {mpx / net:6.3f} Mpx/s  "
        f"(wall before {net_before:.1f} s, after {net_after:.1f} s)\n"
        f"  run_network     {runner:8.1f} s wall (forward + softmax + copy back)\n"
        f"  overhead        {100 * overhead:8.1f} % wall, {100 * overhead_cpu:.1f} % CPU time, "
        "of the bare forward (target <= 15 %)"
    )
    print(
        json.dumps(
            {
                "benchmark": "inference_speed",
                "size": args.size,
                "network": args.network,
                "tiles": sum(sizes),
                "threads": torch.get_num_threads(),
                "end_to_end_s": round(e2e, 2),
                "end_to_end_mpx_per_s": round(mpx / e2e, 4),
                "network_s": round(net, 2),
                "network_mpx_per_s": round(mpx / net, 4),
                "run_network_s": round(runner, 2),
                "end_to_end_cpu_s": round(e2e_cpu, 2),
                "network_cpu_s": round(net_cpu, 2),
                "overhead_fraction": round(overhead, 4),
                "overhead_cpu_fraction": round(overhead_cpu, 4),
                "target_overhead_fraction": 0.15,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
