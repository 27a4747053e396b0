"""Simulated scale study: measured per-tile costs, extrapolated to 1 000 km² at 0.5 m.

Measures on this machine (issue 16):

1. **seconds per 512² tile** of the default efficientnet-lite0 U-Net on one CPU thread
   (``classify_raster`` with ``engine="torch"`` over a generated 4-band scene, whole pass
   divided by its tiles);
2. **bytes read per tile from a served COG**: real RGB imagery (``--imagery``, mirrored into a
   ``--cog-size`` square) written as a Cloud-Optimized GeoTIFF with JPEG and with deflate
   compression, served by the loopback range-request server of ``tests/http_range_server.py``
   and classified through ``/vsicurl/`` (a cheap 3x3-convolution network: the reads do not
   depend on the network): bytes served / tiles, plus one isolated 512² window of a freshly
   opened file (a task's first read: header and edge blocks);
3. **scheduler overhead of a Dask LocalCluster** (2 single-threaded worker processes): the
   round trip of one empty task (submit, run, result; sequential) and the cost per task of
   400 empty tasks submitted at once.

Then it extrapolates to 1 000 km² at 0.5 m (4 000 Mpx: 40 scenes of 10 000 x 10 000) on N =
10, 100 and 1 000 workers: tasks (whole scenes while N <= 40, else row bands, as many as
workers, with the halo recomputed: :func:`scale.band_overhead`), hours of compute, data volume
read, storage time at an assumed ``min(N x 100 MB/s, 5 GB/s)`` (typical object-store figures,
not measured), the scheduler's share, and what limits the run. The last line is a JSON object.

Usage::

    nice -n 19 python benchmarks/scale_study.py --imagery ../shared/data/oam_zanzibar/image.tif
"""

from __future__ import annotations

import math
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from _common import cached_scene, emit, inference_scene, make_model, parser, work_dir
from scale import BUCKET_MBPS, STUDY_MPX, WORKER_MBPS, band_overhead

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TILE, OVERLAP = 512, 64
SCENE = 10_000


def _options(**fields: Any) -> Any:
    from geounet.inference.options import ClassifyOptions

    base = {"tile_size": TILE, "overlap": OVERLAP, "progress": False, "overwrite": True}
    base["probabilities"] = False  # the class raster only: what the recorded figures timed
    return ClassifyOptions(**{**base, **fields})


def seconds_per_tile(work: Path, size: int) -> float:
    """Seconds per tile of the lite0 U-Net, one thread, eager torch (a whole-scene pass)."""
    import torch

    from geounet.inference.blending import TilePlan
    from geounet.inference.classify import classify_with_options

    torch.set_num_threads(1)
    scene = cached_scene(work / f"study_scene_{size}.tif", partial(inference_scene, size=size))
    model = make_model("lite0")
    opts = _options(engine="torch", batch_size=1)
    classify_with_options(model, scene, work / "study_warm.tif", opts)  # warm-up
    t0 = time.perf_counter()
    classify_with_options(model, scene, work / "study_lite0.tif", opts)
    plan = TilePlan.build(size, size, tile_size=TILE, overlap=OVERLAP, blend=opts.blend)
    return (time.perf_counter() - t0) / plan.n_tiles


def _mirror(imagery: Path, size: int) -> np.ndarray:
    """The image (first 3 bands) mirrored into a ``size`` square: real texture, any size."""
    import rasterio

    with rasterio.open(imagery) as src:
        arr = src.read([1, 2, 3])
    reps = (1, -(-size // arr.shape[1]) + 1, -(-size // arr.shape[2]) + 1)
    return np.pad(arr, [(0, 0), (0, reps[1] * arr.shape[1]), (0, reps[2] * arr.shape[2])],
                  mode="symmetric")[:, :size, :size]  # fmt: skip


def _write_cog(path: Path, arr: np.ndarray, compress: str) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    profile = {
        "driver": "COG", "width": arr.shape[2], "height": arr.shape[1], "count": 3,
        "dtype": "uint8", "crs": "EPSG:32633", "transform": from_origin(5e5, 37e5, 0.5, 0.5),
        "blocksize": 512, "compress": compress,
    }  # fmt: skip
    if compress == "JPEG":
        profile["quality"] = 85
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def _cheap_model() -> Any:
    """A 3x3 convolution with the model interface (reads do not depend on the network)."""
    import torch

    from geounet.core.classes import make_classes
    from geounet.model.files import ModelConfig

    config = ModelConfig(
        arch="unet", backbone=None, in_channels=3, classes=make_classes({1: "thing"}),
        bands=[1, 2, 3], band_names=["r", "g", "b"],
        stats={"mean": [128.0] * 3, "std": [40.0] * 3, "p2": [0.0] * 3, "p98": [250.0] * 3},
        chip_size=256, gsd_m=0.5, source_dtype="uint8",
    )  # fmt: skip
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, 3, padding=1)
    return SimpleNamespace(network=net, config=config, device=torch.device("cpu"))


def served_bytes(work: Path, imagery: Path, size: int) -> dict[str, dict[str, float]]:
    """Bytes served per tile of a classification pass, per compression, and of one window."""
    import rasterio

    from geounet.inference.blending import TilePlan
    from geounet.inference.classify import classify_with_options
    from geounet.io.raster import open_raster, read_window
    from tests.http_range_server import RangeServer

    root = work / "study_bucket"
    root.mkdir(exist_ok=True)
    arr = _mirror(imagery, size)
    n_tiles = TilePlan.build(size, size, tile_size=TILE, overlap=OVERLAP, blend="spline").n_tiles
    server = RangeServer(root, lifetime_s=1800).start()
    out: dict[str, dict[str, float]] = {}
    try:
        for compress in ("JPEG", "DEFLATE"):
            name = f"study_{compress.lower()}_{size}.tif"
            _write_cog(root / name, arr, compress)
            server.reset()
            classify_with_options(_cheap_model(), server.url(name), work / "study_served.tif",
                                  _options(engine="torch"))  # fmt: skip
            per_tile = server.bytes_served[name] / n_tiles
            requests = server.requests[name] / n_tiles
            server.reset()
            info = open_raster(server.url(name))
            with rasterio.open(info.path) as src:
                read_window(src, size // 2 - 100, size // 2 - 300, TILE, TILE, [1, 2, 3])
            out[compress] = {
                "file_bytes_per_px": (root / name).stat().st_size / size**2,
                "bytes_per_tile": per_tile,
                "requests_per_tile": requests,
                "one_window_bytes": server.bytes_served[name],
            }
            print(compress, out[compress], flush=True)
    finally:
        server.stop()
    return out


def _noop(i: int) -> int:
    return i


def scheduler_overhead() -> dict[str, float]:
    """Round trip of one empty task, and cost per task of 400 at once (milliseconds)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.gather(client.map(_noop, range(50), pure=False))  # warm
        t0 = time.perf_counter()
        for i in range(200):
            client.submit(_noop, i, pure=False).result()
        rtt = (time.perf_counter() - t0) / 200 * 1000
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(400), pure=False))
        batch = (time.perf_counter() - t0) / 400 * 1000
    return {"round_trip_ms": rtt, "per_task_ms": batch}


def extrapolate(t_tile: float, bytes_tile: float, task_ms: float) -> list[dict[str, Any]]:
    """1 000 km² at 0.5 m on N = 10, 100, 1 000 workers (see the module docstring)."""
    n_scenes = round(STUDY_MPX * 1e6 / SCENE**2)
    stride = TILE - OVERLAP
    tiles_scene = math.ceil(SCENE / stride) ** 2
    opts = SimpleNamespace(tile_size=TILE, overlap=OVERLAP, blend="spline")
    rows = []
    for n in (10, 100, 1000):
        per_scene = max(1, math.ceil(n / n_scenes))
        strides = max(1, math.ceil(SCENE / per_scene) // stride)
        over = 1.0 if per_scene == 1 else band_overhead(SCENE, SCENE, opts, strides)[0]
        per_scene = 1 if per_scene == 1 else math.ceil(SCENE / (strides * stride))
        tasks = n_scenes * per_scene
        task_s = tiles_scene * over / per_scene * t_tile
        compute = math.ceil(tasks / n) * task_s
        volume = n_scenes * tiles_scene * over * bytes_tile
        storage = volume / 1e6 / min(n * WORKER_MBPS, BUCKET_MBPS)
        sched = tasks * task_ms / 1e3
        terms = {"compute": compute, "storage": storage, "scheduler": sched}
        rows.append({
            "workers": n, "split": "scenes" if per_scene == 1 else f"bands of {strides} strides",
            "tasks": tasks, "task_s": round(task_s, 1), "halo": round(over, 2),
            "hours": round(max(terms.values()) / 3600, 3), "limit": max(terms, key=terms.get),
            "compute_h": round(compute / 3600, 3), "storage_h": round(storage / 3600, 4),
            "scheduler_h": round(sched / 3600, 5), "data_gb": round(volume / 1e9, 1),
            "scheduler_busy": round(n * task_ms / 1e3 / task_s, 4),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--imagery", type=Path, required=True, help="real RGB image (uint8)")
    p.add_argument("--cog-size", type=int, default=4096, help="side of the served COG")
    p.add_argument("--size", type=int, default=1536, help="side of the timed lite0 scene")
    p.add_argument("--work", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    work = work_dir(args.work)
    sched = scheduler_overhead()
    print("scheduler", sched, flush=True)
    served = served_bytes(work, args.imagery, args.cog_size)
    t_tile = seconds_per_tile(work, args.size)
    print(f"lite0, 1 thread, eager torch: {t_tile:.3f} s per {TILE}² tile", flush=True)
    study = {c: extrapolate(t_tile, v["bytes_per_tile"], sched["per_task_ms"])
             for c, v in served.items()}  # fmt: skip
    for compress, rows in study.items():
        for row in rows:
            print(compress, row)
    emit({"benchmark": "scale_study", "s_per_tile": round(t_tile, 4), "served": served,
          "scheduler": sched, "study": study})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
