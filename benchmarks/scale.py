"""Scale-out on Dask: speed-up of 2 workers over 1, memory per worker, and a scale study.

Measured (issue 16), on a LocalCluster of single-threaded worker processes:

1. **many scenes**: 2 generated N x N 4-band uint16 scenes, one task per scene
   (:func:`geounet.app.scale.classify_many`), on 2 workers and on 1 worker: wall time,
   speed-up and each worker's peak resident memory;
2. **one scene in bands**: the first scene split into row bands, on 2 workers and on 1;
3. **per-task scheduler overhead**: 400 empty tasks on the 2-worker cluster;
4. **per-tile cost and data volume**: seconds per network tile on one worker thread (from the
   1-worker run), compressed input bytes per output pixel (file size / pixels).

Then a **simulated scale study** extrapolates these to 1 000 km² at 0.5 m (4 000 Mpx) on N
workers, with stated assumptions for what cannot be measured here (object-store throughput per
worker and per bucket), and the recomputed-halo overhead and memory of row bands of
``k`` tile strides for the scale study's band-height choice. The last line is a JSON object.

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/scale.py --size 1536 --network lite0 \\
        --imagery ../shared/data/oam_zanzibar/image.tif
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    NETWORKS,
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

#: 1 000 km² at 0.5 m.
STUDY_MPX = 1000e6 / 0.25 / 1e6
#: Assumed sustained object-store read throughput of one worker (MB/s) and of one bucket
#: prefix (MB/s); typical S3 figures, not measured here.
WORKER_MBPS, BUCKET_MBPS = 100.0, 5000.0


def _worker_peak_mb() -> float:
    """A worker's own peak RSS (``VmHWM``; ``ru_maxrss`` would include its parent's)."""
    from pathlib import Path

    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cluster(n: int) -> Any:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )
    return cluster, Client(cluster)


def _run(n: int, model_dir: Path, scenes: list[Path], out: Path, opts: Any, split: str) -> dict:
    """Classify on a fresh cluster of ``n`` workers: seconds and peak memory per worker."""
    from geounet.app.scale import classify_many

    cluster, client = _cluster(n)
    with cluster, client:
        client.run(_warm)  # imports outside the timing
        idle = sorted(client.run(_worker_peak_mb).values())
        t0 = time.perf_counter()
        classify_many(model_dir, scenes, out, client=client, options=opts, split=split)
        seconds = time.perf_counter() - t0
        peaks = sorted(client.run(_worker_peak_mb).values())
        overhead = _task_overhead(client) if n > 1 else None
    return {"workers": n, "seconds": round(seconds, 2), "worker_peak_mb": [round(p) for p in peaks],
            "worker_after_import_mb": [round(p) for p in idle],
            "task_overhead_ms": overhead}  # fmt: skip


def _warm() -> None:
    """Import what a worker needs (torch, smp: the fixed cost of a worker)."""
    import importlib

    for module in ("geounet.app.classifier", "geounet.app.scale"):
        importlib.import_module(module)


def _noop(i: int) -> int:
    return i


def _task_overhead(client: Any, n: int = 400) -> float:
    """Milliseconds of wall time per empty task (submit, schedule, run, gather)."""
    t0 = time.perf_counter()
    client.gather(client.map(_noop, range(n), pure=False))
    return round((time.perf_counter() - t0) / n * 1000, 3)


def band_overhead(height: int, width: int, opts: Any, strides: int) -> tuple[float, float]:
    """Tiles computed by bands of ``strides`` tile strides / tiles of one pass, and band MiB.

    The band memory is the worker's class-probability accumulator of a band (float32 per
    class, 2 classes) plus its uint8 class rows.
    """
    from geounet.inference.blending import TilePlan

    plan = TilePlan.build(height, width, tile_size=opts.tile_size, overlap=opts.overlap,
                          blend=opts.blend)  # fmt: skip
    rows = strides * (opts.tile_size - opts.overlap)
    computed = sum(
        len(plan.tile_rows_for(a, min(height, a + rows))) for a in range(0, height, rows)
    )
    return computed / len(plan.row_starts), rows * width * (4 * 2 + 1) / 2**20


def _options_for(scene: int, opts: Any) -> list[tuple[str, int, float, float]]:
    """(name, tasks per scene, tiles computed / tiles of one pass, band MiB) per split."""
    found = [("scene", 1, 1.0, opts.tile_size * scene * 9 / 2**20)]  # streamed: a tile high
    stride = opts.tile_size - opts.overlap
    for k in (16, 8, 4, 2):
        over, mb = band_overhead(scene, scene, opts, k)
        found.append((f"bands of {k} strides", -(-scene // (k * stride)), over, mb))
    return found


def study(t_tile: float, bytes_px: float, task_ms: float, opts: Any) -> list[dict]:
    """Hours for 1 000 km² at 0.5 m (40 scenes of 10 000 px) on N workers, and its limit.

    For each N the split with the shortest time is kept (whole scenes, or row bands of 16, 8,
    4 or 2 tile strides): tasks run in waves of N; each costs its tiles (halo included) times
    the measured seconds per tile; storage reads the input (with the halo re-read) at
    ``min(N * WORKER_MBPS, BUCKET_MBPS)``; the scheduler spends ``task_ms`` per task.
    """
    scene, n_scenes = 10_000, int(STUDY_MPX * 1e6 / 10_000**2)
    stride = opts.tile_size - opts.overlap
    tiles_scene = math.ceil(scene / stride) ** 2
    rows = []
    for n in (1, 8, 64, 512):
        best = None
        for name, per_scene, over, mb in _options_for(scene, opts):
            tasks = n_scenes * per_scene
            compute = math.ceil(tasks / n) * tiles_scene * over / per_scene * t_tile
            storage = STUDY_MPX * 1e6 * bytes_px * over / 1e6 / min(n * WORKER_MBPS, BUCKET_MBPS)
            terms = {"compute": compute, "storage": storage, "scheduler": tasks * task_ms / 1e3}
            limit = max(terms, key=terms.get)
            hours = round(terms[limit] / 3600, 2)
            row = {"workers": n, "split": name, "tasks": tasks, "hours": hours,
                   "limit": limit, "halo_overhead": round(over, 3), "band_mib": round(mb),
                   **{f"{k}_h": round(v / 3600, 4) for k, v in terms.items()}}  # fmt: skip
            row["seconds"] = terms[limit]
            if best is None or row["seconds"] < best["seconds"]:
                best = row
        rows.append(best)
        best["seconds"] = round(best["seconds"])
    return rows


def _bytes_per_px(path: Path) -> float:
    import rasterio

    with rasterio.open(path) as src:
        return path.stat().st_size / (src.width * src.height)


def _save_model(network: str, folder: Path) -> Path:
    from geounet.model.files import save_model

    model = make_model(network)
    return save_model(folder, model.network, model.config, overwrite=True)


def _measure(args: Any, work: Path, scenes: list[Path], model_dir: Path, opts: Any) -> dict:
    runs = {}
    for split, use in (("scenes", scenes), ("bands", scenes[:1])):
        for n in (1, 2):
            out = work / f"scale_{split}_{n}"
            with contextlib.suppress(FileNotFoundError):
                for f in out.iterdir():
                    f.unlink()
            runs[f"{split}_{n}"] = _run(n, model_dir, use, out, opts, split)
            print(split, runs[f"{split}_{n}"], flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=1536)
    add_tiling_args(p, network="lite0")
    p.add_argument("--imagery", type=Path, default=None,
                   help="real image whose compressed bytes per pixel the study uses "
                        "(default: the generated scene's)")  # fmt: skip
    args = p.parse_args(argv)
    work = work_dir(args.work)
    scenes = []
    for i in range(2):
        make = partial(inference_scene, size=args.size)
        scenes.append(cached_scene(work / f"scale_scene_{args.size}_{i}.tif", make, child=True))
    model_dir = _save_model(args.network, work / f"scale_model_{args.network}")
    opts = classify_options(args, engine="torch")
    runs = _measure(args, work, scenes, model_dir, opts)

    from geounet.inference.blending import TilePlan

    plan = TilePlan.build(
        args.size, args.size, tile_size=args.tile, overlap=args.overlap, blend=opts.blend
    )
    t_tile = runs["scenes_1"]["seconds"] / (2 * plan.n_tiles)
    bytes_px = _bytes_per_px(args.imagery or scenes[0])
    rows = study(t_tile, bytes_px, runs["scenes_2"]["task_overhead_ms"], opts)
    bands = {k: band_overhead(10_000, 10_000, opts, k) for k in (1, 2, 4, 8, 16)}
    speed = {s: round(runs[f"{s}_1"]["seconds"] / runs[f"{s}_2"]["seconds"], 2)
             for s in ("scenes", "bands")}  # fmt: skip
    print(f"speed-up 2 vs 1 worker: {speed}; {t_tile:.3f} s/tile ({args.network}, 1 thread), "
          f"{bytes_px:.2f} input bytes/pixel")  # fmt: skip
    for k, (over, mb) in bands.items():
        print(f"bands of {k:2d} strides of a 10 000 px scene: {over:.3f} x tiles, {mb:.0f} MiB")
    stride = args.tile - args.overlap
    storage_ms = bytes_px * stride**2 / (WORKER_MBPS * 1e6) * 1000
    print(f"storage-bound below {storage_ms:.1f} ms per tile per worker ({WORKER_MBPS:.0f} MB/s "
          f"each), or beyond {BUCKET_MBPS / WORKER_MBPS * t_tile / (storage_ms / 1000):.0f} "
          f"workers at the measured tile cost ({BUCKET_MBPS:.0f} MB/s per bucket)")  # fmt: skip
    for r in rows:
        print(r)
    emit({"benchmark": "scale", "size": args.size, "network": args.network,
          "arch": NETWORKS[args.network]["arch"], "tile": args.tile, "overlap": args.overlap,
          "runs": runs, "speedup": speed, "s_per_tile": round(t_tile, 4),
          "bytes_per_px": round(bytes_px, 3), "storage_bound_ms_per_tile": round(storage_ms, 2),
          "band_strides": {k: [round(o, 3), round(m)] for k, (o, m) in bands.items()},
          "study": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
