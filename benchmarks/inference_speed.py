"""Speed of streamed classification against the bare network forward over the same tiles.

Generates an N x N 4-band uint16 GeoTIFF (default 8192), classifies it end to end with
:func:`geounet.inference.classify.classify_raster`, and in the same run times the bare network
forward (``network(x)`` under inference mode, channels-last, as many tiles a call as the engine
runs: one on a CPU) over the very tiles the classification runs: the same tile plan is read,
mirror-padded and normalised again (not timed) and only the forward of each batch is timed.
The overhead (reading, mirror padding, normalising, softmax, blending, writing, minus what the
reader thread hides) is ``end_to_end / network - 1``; the target on a CPU is <= 15 %. The bare
forward is timed before and after the end-to-end run and averaged, so that a change of machine
load during the run weighs on both; CPU time of the process (all threads) is reported too, as
it is less sensitive to other processes on a shared machine. On a shared machine whose load
changes between passes, the time spent in :func:`geounet.inference.engine.run_network` inside
the end-to-end run (same window, same load; it includes the softmax and any slowdown from the
reader thread) gives a steadier second figure, ``overhead_vs_in_run_fraction``. The last line
is a JSON object.

The network is an untrained efficientnet-lite0 U-Net (``--network lite0``, the default; the
weights do not change the speed) or ``resnet18``. The run makes three passes of the network
over the scene; on a quiet 2-core CPU one pass over 8192 x 8192 (361 tiles of 512, about
0.4 s each) takes 2.5 minutes, about 8 minutes in all.

Usage::

    python benchmarks/inference_speed.py                       # 8192 x 8192, lite0 U-Net
    python benchmarks/inference_speed.py --size 2048           # quicker
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    add_scene_args,
    add_tiling_args,
    cached_scene,
    classify_options,
    emit,
    inference_scene,
    make_model,
    parser,
    work_dir,
)

import geounet.inference.engine
from geounet.data.normalize import normalize
from geounet.inference.blending import TilePlan
from geounet.inference.classify import classify_with_options
from geounet.inference.engine import prepare_network
from geounet.inference.engines import CPU_TILES_PER_CALL
from geounet.inference.streams import RasterSource
from geounet.io.raster import open_raster


def tile_batches(model: Any, scene: Path, tile: int, overlap: int, batch: int) -> Iterator[Any]:
    """The normalised batches classify_raster runs (all-nodata tiles skipped, like it does)."""
    info = open_raster(scene)
    plan = TilePlan.build(info.height, info.width, tile_size=tile, overlap=overlap, blend="spline")
    chunk: list[np.ndarray] = []
    with RasterSource(info, model.config.bands) as src:
        for i in range(len(plan.row_starts)):
            for j in range(len(plan.col_starts)):
                r = plan.region(i, j)
                data, valid = src.read(r.row, r.col, plan.tile_h, plan.tile_w)
                if not valid.any():
                    continue
                x = normalize(data, model.config.stats)
                x[:, ~valid] = 0.0
                chunk.append(x)
                if len(chunk) == batch:
                    yield torch.from_numpy(np.stack(chunk))
                    chunk = []
    if chunk:
        yield torch.from_numpy(np.stack(chunk))


def time_network(model: Any, batches: Iterator[Any]) -> tuple[float, float, int]:
    """Wall and CPU seconds of the bare forward over the batches (reading not timed); tiles.

    Each batch is run as the engine runs it on a CPU: :data:`CPU_TILES_PER_CALL` tiles a
    call (a GPU takes the whole batch). Timing whole batches instead made this "bare"
    forward slower than the network inside the classification on a 2-core CPU (48.9 s
    against 40.1 s end to end), and the overhead came out negative.
    """
    on_cpu = next(model.network.parameters()).device.type == "cpu"
    wall = cpu = 0.0
    tiles = 0
    for x in batches:
        step = CPU_TILES_PER_CALL if on_cpu else max(len(x), 1)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for k in range(0, len(x), step):
                model.network(x[k : k + step].contiguous(memory_format=torch.channels_last))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        tiles += len(x)
    return wall, cpu, tiles


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=8192)
    add_tiling_args(p, network="lite0")
    args = p.parse_args(argv)

    work = work_dir(args.work)
    scene = cached_scene(work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size))
    model = make_model(args.network)
    prepare_network(model)

    def batches() -> Iterator[Any]:
        return tile_batches(model, scene, args.tile, args.overlap, args.batch)

    time_network(model, iter([next(batches())]))  # warm-up
    net_before, cpu_before, tiles = time_network(model, batches())
    in_run: list[float] = []
    real_runner = geounet.inference.engine.run_network

    def timed_runner(
        model: Any, batch: np.ndarray, tta: str | None = None, engine: Any = None
    ) -> np.ndarray:
        t = time.perf_counter()
        out = real_runner(model, batch, tta, engine)
        in_run.append(time.perf_counter() - t)
        return out

    geounet.inference.engine.run_network = timed_runner  # run_tiles looks it up at call time
    t0, c0 = time.perf_counter(), time.process_time()
    out = classify_with_options(
        model, scene, work / f"speed_{args.size}.tif", classify_options(args, engine="torch")
    )
    e2e, e2e_cpu = time.perf_counter() - t0, time.process_time() - c0
    geounet.inference.engine.run_network = real_runner
    net_in_run = sum(in_run)
    net_after, cpu_after, _ = time_network(model, batches())
    out.unlink()

    net, net_cpu = (net_before + net_after) / 2, (cpu_before + cpu_after) / 2
    mpx = args.size**2 / 1e6
    overhead, overhead_cpu = e2e / net - 1, e2e_cpu / net_cpu - 1
    print(
        f"{args.size} x {args.size} ({mpx:.1f} Mpx, {tiles} tiles of {args.tile}, "
        f"network {args.network}, {torch.get_num_threads()} threads)\n"
        f"  end to end      {e2e:8.1f} s wall {e2e_cpu:8.1f} s CPU  {mpx / e2e:6.3f} Mpx/s\n"
        f"  bare forward    {net:8.1f} s wall {net_cpu:8.1f} s CPU  {mpx / net:6.3f} Mpx/s  "
        f"(wall before {net_before:.1f} s, after {net_after:.1f} s)\n"
        f"  overhead        {100 * overhead:8.1f} % wall, {100 * overhead_cpu:.1f} % CPU time, "
        "of the bare forward (target <= 15 %)\n"
        f"  in-run network  {net_in_run:8.1f} s wall (run_network inside the end-to-end run); "
        f"the rest of the run: {100 * (e2e / net_in_run - 1):.1f} % of it"
    )
    emit(
        {
            "benchmark": "inference_speed",
            "size": args.size,
            "network": args.network,
            "tile": args.tile,
            "overlap": args.overlap,
            "batch": args.batch,
            "tiles": tiles,
            "threads": torch.get_num_threads(),
            "end_to_end_s": round(e2e, 2),
            "end_to_end_mpx_per_s": round(mpx / e2e, 4),
            "network_s": round(net, 2),
            "network_before_s": round(net_before, 2),
            "network_after_s": round(net_after, 2),
            "network_mpx_per_s": round(mpx / net, 4),
            "end_to_end_cpu_s": round(e2e_cpu, 2),
            "network_cpu_s": round(net_cpu, 2),
            "overhead_fraction": round(overhead, 4),
            "overhead_cpu_fraction": round(overhead_cpu, 4),
            "network_in_run_s": round(net_in_run, 2),
            "overhead_vs_in_run_fraction": round(e2e / net_in_run - 1, 4),
            "target_overhead_fraction": 0.15,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
