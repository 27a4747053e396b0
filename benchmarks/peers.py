"""geounet ``classify`` side by side with what users would pick instead, on the same scene.

On an N x N 4-band uint16 scene (``--size``, default 4096; generated once,
:func:`_common.inference_scene`) with the same ResNet34 U-Net weights (``--network``), the same
tile (512) and overlap (64), each contender runs in its own process (so that its peak RSS is its
own). The weights are trained once on a pointwise rule (:func:`_common.trained_model_dir`), so
that agreement with the naive result measures each contender's arithmetic, not its blending
(``--untrained`` uses random weights, whose near-tie scores make any blending disagree):

- ``naive``: the raster read into memory, normalised, cut into overlapping tiles that run
  ``--batch`` at a time through PyTorch eager float32 (NCHW); probabilities averaged in a
  full-scene array; the class raster written with rasterio;
- ``monai``: MONAI's ``sliding_window_inference`` (Gaussian blending) on the raster read into
  memory, written with rasterio (``pip install monai``; skipped when it is not installed);
- ``geounet-first``: what ``geounet classify scene.tif --model DIR`` runs
  (:func:`geounet.app.workflows.classify_scene`: the model folder opened for inference,
  :class:`geounet.model.saved.SavedModel`) with ``engine="auto"``, geounet's default batch size
  and an empty engine cache: it measures the installed engines, exports and caches, then
  classifies;
- ``geounet``: the same once the decision is cached (every later run of that model): with a
  cached ONNX Runtime / OpenVINO engine it never imports torch;
- ``geoai``: geoai-py's ``semantic_segmentation`` (``geoai.train``: ``window_size``, ``overlap``
  and ``batch_size`` as above), run by ``_geoai_child.py`` with the Python of an environment of
  its own (``--geoai-python``, or ``$GEOUNET_GEOAI_PYTHON``; skipped without one): geoai-py
  pulls a large geospatial stack and its own pins, so it is not installed beside geounet. It
  loads the same weights (a ``torch.save`` state dict) into its own segmentation-models-pytorch
  U-Net. geoai-py divides every pixel by 255 and takes no per-band statistics, so it is given
  the scene already normalised with the model's statistics, times 255, as float32 (made once,
  ``scene_N_geoai.tif``): the same network input as the others; it reads twice the bytes of
  the uint16 scene for it.

Reported: wall time, peak RSS and the share of pixels whose class equals the naive result, each
also as a ratio to the naive run. The last line is a JSON object.

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/peers.py
    flock /tmp/geounet-bench.lock python benchmarks/peers.py --size 8192
    python -m venv /tmp/geoai && /tmp/geoai/bin/pip install torch==2.14.1 geoai-py
    python benchmarks/peers.py --geoai-python /tmp/geoai/bin/python
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    NETWORKS,
    add_scene_args,
    cached_scene,
    emit,
    inference_scene,
    make_model,
    parser,
    peak_rss_mb,
    trained_model_dir,
    work_dir,
)

CONTENDERS = ("naive", "monai", "geoai", "geounet-first", "geounet")


def read_normalised(scene: Path, model: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole scene in memory, normalised with the model's statistics; its profile."""
    import rasterio

    with rasterio.open(scene) as src:
        data = src.read().astype(np.float32)
        profile = src.profile
    mean = np.asarray(model.config.stats["mean"], np.float32)[:, None, None]
    std = np.asarray(model.config.stats["std"], np.float32)[:, None, None]
    data -= mean
    data /= std
    return data, profile


def write_classes(path: Path, classes: np.ndarray, profile: dict[str, Any]) -> None:
    """A uint8 class raster on the scene's grid, written with rasterio."""
    import rasterio

    out = {**profile, "count": 1, "dtype": "uint8", "nodata": 255, "predictor": 1}
    with rasterio.open(path, "w", **out) as dst:
        dst.write(classes.astype(np.uint8), 1)


def naive_windows(network: Any, x: np.ndarray, tile: int, overlap: int, batch: int) -> np.ndarray:
    """Sliding window over an in-memory image, averaged probabilities, eager fp32 NCHW."""
    import torch

    _, h, w = x.shape
    step = tile - overlap
    ph = max(tile, -(-(h - tile) // step) * step + tile)
    pw = max(tile, -(-(w - tile) // step) * step + tile)
    x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode="reflect")
    starts = [(r, c) for r in range(0, ph - tile + 1, step) for c in range(0, pw - tile + 1, step)]
    acc = None
    count = np.zeros((ph, pw), np.float32)
    with torch.inference_mode():
        for k in range(0, len(starts), batch):
            chunk = starts[k : k + batch]
            xb = torch.from_numpy(np.stack([x[:, r : r + tile, c : c + tile] for r, c in chunk]))
            probs = torch.softmax(network(xb), 1).numpy()
            if acc is None:
                acc = np.zeros((probs.shape[1], ph, pw), np.float32)
            for p, (r, c) in zip(probs, chunk):
                acc[:, r : r + tile, c : c + tile] += p
                count[r : r + tile, c : c + tile] += 1
    return (acc / count)[:, :h, :w].argmax(0)


def run_naive(args: Any, model: Any, scene: Path, out: Path) -> None:
    """The naive contender (see the module docs)."""
    x, profile = read_normalised(scene, model)
    write_classes(
        out, naive_windows(model.network, x, args.tile, args.overlap, args.batch), profile
    )


def run_monai(args: Any, model: Any, scene: Path, out: Path) -> None:
    """MONAI's sliding_window_inference with Gaussian blending."""
    import torch
    from monai.inferers import sliding_window_inference

    x, profile = read_normalised(scene, model)
    with torch.inference_mode():
        logits = sliding_window_inference(
            torch.from_numpy(x[None]), (args.tile, args.tile), args.batch, model.network,
            overlap=args.overlap / args.tile, mode="gaussian",
        )  # fmt: skip
    write_classes(out, logits[0].argmax(0).numpy(), profile)


def run_geounet(args: Any, scene: Path, out: Path) -> str:
    """The streamed classify of geounet with the auto engine; the engine it ran."""
    import rasterio

    from geounet.app.workflows import classify_scene
    from geounet.inference.classify import classify_with_options
    from geounet.inference.options import ClassifyOptions

    # The class raster only, as every peer writes (probabilities_cost.py measures the sidecar)
    fields = {
        "tile_size": args.tile,
        "overlap": args.overlap,
        "engine": "auto",
        "probabilities": False,
    }
    opts = ClassifyOptions(overwrite=True, progress=False, **fields)
    if args.trained:  # as `geounet classify` runs it
        classify_scene(scene, model=args.trained, out=out, options=opts)
    else:
        model = make_model(args.network)
        model.model_dir = args.work / f"peers_{args.network}"
        classify_with_options(model, scene, out, opts)
    with rasterio.open(out) as src:
        tag = src.tags()["GEOUNET_ENGINE"]
    return tag + (" (torch not imported)" if "torch" not in sys.modules else "")


def contender(args: Any) -> int:
    """Run one contender in this process; print its JSON line."""
    import logging

    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    name = args.contender
    scene = args.work / f"scene_{args.size}.tif"
    out = args.work / f"peers_{args.size}_{name}.tif"
    t0 = time.perf_counter()
    if name.startswith("geounet"):  # geounet loads and runs its network itself
        engine = run_geounet(args, scene, out)
    else:
        import torch

        model = make_model(args.network, args.trained)  # eager NCHW, evaluation mode
        with torch.inference_mode():
            engine = {"naive": run_naive, "monai": run_monai}[name](args, model, scene, out)
    seconds = time.perf_counter() - t0
    engine = engine or "eager-nchw"
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "engine": engine}))
    return 0


def geoai_scene(path: Path, *, scene: Path, stats: dict[str, list[float]]) -> None:
    """The scene normalised with ``stats``, times 255, float32: what geoai-py's /255 undoes."""
    import rasterio

    with rasterio.open(scene) as src:
        profile = {**src.profile, "dtype": "float32", "predictor": 3}
        with rasterio.open(path, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                x = src.read(window=window).astype(np.float32)
                mean = np.asarray(stats["mean"], np.float32)[:, None, None]
                std = np.asarray(stats["std"], np.float32)[:, None, None]
                dst.write((x - mean) / std * 255.0, window=window)


def launch_geoai(args: Any) -> dict[str, Any]:
    """Run geoai-py's contender in its own environment; its result (or why it did not run)."""
    python = args.geoai_python or os.environ.get("GEOUNET_GEOAI_PYTHON")
    if not python:
        return {"error": "no environment with geoai-py: give --geoai-python (see the docs)"}
    import torch

    model = make_model(args.network, args.trained)
    spec = NETWORKS[args.network]
    if spec["arch"] != "unet":
        return {"error": f"geoai-py runs segmentation-models-pytorch U-Nets, not {args.network}"}
    weights = args.work / f"peers_geoai_{args.network}.pt"
    torch.save(model.network.state_dict(), weights)
    stats = model.config.stats
    scene = cached_scene(
        args.work / f"scene_{args.size}_geoai.tif",
        partial(geoai_scene, scene=args.work / f"scene_{args.size}.tif", stats=stats),
    )
    cmd = [
        python, str(Path(__file__).with_name("_geoai_child.py")), str(scene), str(weights),
        str(args.work / f"peers_{args.size}_geoai.tif"), "--encoder", spec["backbone"],
        "--channels", "4", "--classes", str(model.config.n_classes), "--tile", str(args.tile),
        "--overlap", str(args.overlap), "--batch", str(args.batch),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def agreement(a: Path, b: Path) -> float:
    """Share of pixels with the same class in two class rasters."""
    import rasterio

    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        return float(np.mean(ra.read(1) == rb.read(1)))


def launch(args: Any, name: str, argv: list[str]) -> dict[str, Any]:
    """Run contender ``name`` in a child process; its result (or why it did not run)."""
    cmd = [sys.executable, __file__, *argv, "--contender", name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    sys.stderr.write(proc.stderr[-2000:] if name.startswith("geounet") else "")
    return json.loads(lines[-1])


def table(args: Any, results: dict[str, dict[str, Any]]) -> None:
    """Add the ratios to the naive run and agreement; print one line per contender."""
    base = results.get("naive", {})
    for name, r in results.items():
        if "error" in r:
            print(f"{name:14s} did not run: {r['error']}")
            continue
        out, naive = (args.work / f"peers_{args.size}_{n}.tif" for n in (name, "naive"))
        r["agreement_with_naive"] = round(agreement(out, naive), 5) if "seconds" in base else None
        r["mpx_s"] = round(args.size**2 / 1e6 / r["seconds"], 3)
        if "seconds" in base:
            r["speedup_vs_naive"] = round(base["seconds"] / r["seconds"], 2)
            r["rss_vs_naive"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 2)
        print(
            f"{name:14s} {r['seconds']:7.1f} s  {r['mpx_s']:6.3f} Mpx/s  "
            f"peak {r['peak_rss_mb']:7.0f} MiB  x{r.get('speedup_vs_naive', 0):<5.2f} faster  "
            f"x{r.get('rss_vs_naive', 0):<5.2f} memory  agreement "
            f"{100 * (r['agreement_with_naive'] or 0):7.3f} %  ({r['engine']})",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=4096)
    p.add_argument("--network", choices=sorted(NETWORKS), default="resnet34")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    p.add_argument("--overlap", type=int, default=64, help="overlap of tiles in pixels")
    p.add_argument("--batch", type=int, default=4, help="tiles per call of naive and MONAI")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument("--untrained", action="store_true", help="random weights (see the docs)")
    p.add_argument("--contender", choices=CONTENDERS, help=argparse_hidden())
    p.add_argument("--trained", type=Path, help=argparse_hidden())
    p.add_argument("--geoai-python", help="Python of an environment with geoai-py (see docs)")
    args = p.parse_args(argv)
    args.work = work_dir(args.work).resolve()
    if args.contender:
        return contender(args)

    cached_scene(args.work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size))
    args.trained = None if args.untrained else trained_model_dir(args.network, args.work)
    engines = args.trained or args.work / f"peers_{args.network}"
    shutil.rmtree(Path(engines) / ".engines", ignore_errors=True)  # first = measures
    child_argv = [
        "--size", str(args.size), "--work", str(args.work), "--network", args.network,
        "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch),
        *(["--trained", str(args.trained)] if args.trained else []),
    ]  # fmt: skip
    results = {
        name: launch_geoai(args) if name == "geoai" else launch(args, name, child_argv)
        for name in args.contenders
    }
    table(args, results)
    emit({"benchmark": "peers", "size": args.size, "network": args.network, "tile": args.tile,
          "overlap": args.overlap, "trained": bool(args.trained), "results": results})  # fmt: skip
    return 0


def argparse_hidden() -> str:
    """The help of an option that only the benchmark itself passes (to its children)."""
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
