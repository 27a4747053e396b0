"""Inference engines side by side: the same tiles through every engine, in one run.

For each network (``--networks``, default the efficientnet-lite0 U-Net and the ResNet34 U-Net,
untrained, or ``--trained`` on the pointwise rule of :func:`_common.trained_model_dir`, 4 uint16
bands, 2 classes) the benchmark reads ``--tiles`` tiles of ``--tile`` pixels
from the generated inference scene (:func:`_common.inference_scene`), normalises them as the
pipeline does and runs them, ``--batch`` at a time, through:

- ``eager-nchw``: PyTorch eager float32 on contiguous (NCHW) tensors, the naive baseline;
- every engine of :mod:`geounet.inference.engines` that is installed (``torch-fp32`` is the
  channels-last eager engine geounet uses, ``torch-bf16``, ``onnx-fp32``, ``onnx-int8``,
  ``openvino-fp32``, ``openvino-bf16``, ``openvino-int8``), built by
  :func:`geounet.inference.engine_choice.make_engine` exactly as ``engine=...`` builds them;
- ``torch-compile`` (``--compile``): ``torch.compile`` of the channels-last network.

Each engine gets a warm-up batch, then ``--repeats`` passes over all tiles; the best pass gives
Mpx/s. Agreement is the share of pixels whose class is the one eager float32 NCHW gives. The int8
engine is calibrated on the first ``AUTO_SAMPLE_TILES`` tiles, which are not among the measured
ones. ``auto`` is what ``engine="auto"`` would pick from these figures (the fastest engine of
geounet that agrees on >= 99.5 % of pixels). Build time (export, quantization, compilation) is
reported apart; geounet caches the artefacts, so it is paid once per model. The last line is a
JSON object.

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/engines.py
    python benchmarks/engines.py --networks lite0 --tiles 4 --repeats 1
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import time
from functools import partial
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
    trained_model_dir,
    work_dir,
)


class EagerNCHW:
    """The naive baseline: PyTorch eager float32 on a contiguous (NCHW) copy of the network."""

    name = "eager-nchw"

    def __init__(self, network: Any) -> None:
        import torch

        self.network = copy.deepcopy(network).to(memory_format=torch.contiguous_format).eval()

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities of a normalised batch."""
        import torch

        with torch.inference_mode():
            return torch.softmax(self.network(torch.from_numpy(batch)), 1).numpy()


class Compiled:
    """``torch.compile`` of the channels-last network (eager fp32 otherwise)."""

    name = "torch-compile"

    def __init__(self, model: Any) -> None:
        import torch

        from geounet.inference.engines import TorchEngine

        self.engine = TorchEngine(model)
        self.network = torch.compile(model.network)
        self.engine.model = type(model)(**{**vars(model), "network": self.network})

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities of a normalised batch."""
        return self.engine.probabilities(batch)


def read_tiles(scene: Any, model: Any, count: int, tile: int) -> np.ndarray:
    """``count`` normalised tiles of the scene, row by row from the top left."""
    import rasterio
    from rasterio.windows import Window

    from geounet.data.normalize import normalize_valid

    tiles = []
    with rasterio.open(scene) as src:
        per_row = src.width // tile
        for k in range(count):
            r, c = divmod(k, per_row)
            data = src.read(window=Window(c * tile, r * tile, tile, tile)).astype(np.float32)
            valid = np.ones(data.shape[1:], bool)
            tiles.append(normalize_valid(data, model.config.stats, valid))
    return np.stack(tiles).astype(np.float32)


def time_engine(engine: Any, tiles: np.ndarray, batch: int, repeats: int) -> tuple[float, Any]:
    """Best seconds of ``repeats`` passes over ``tiles`` after a warm-up batch; probabilities."""
    engine.probabilities(tiles[:batch])
    best, probs = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = [engine.probabilities(tiles[k : k + batch]) for k in range(0, len(tiles), batch)]
        best = min(best, time.perf_counter() - t)
        probs = np.concatenate(out)
    return best, probs


def build(name: str, model: Any, calibration: np.ndarray) -> Any:
    """The engine ``name``: torch.compile, or a geounet engine (exports cached as geounet does)."""
    from geounet.inference.engine_choice import cache_folder, make_engine

    if name == "torch-compile":
        return Compiled(model)
    shape = tuple(calibration.shape[1:])
    folder = cache_folder(model, shape[1:])
    return make_engine(name, model, folder, shape, lambda: calibration)


def run_network(args: Any, name: str, scene: Any, work: Any) -> dict[str, Any]:
    """Every engine on the same tiles of one network; its table rows and figures."""
    from geounet.inference.engine import prepare_network
    from geounet.inference.engine_choice import AGREEMENT_MIN, AUTO_SAMPLE_TILES, candidates

    trained = trained_model_dir(name, work) if args.trained else None
    model = make_model(name, trained)
    model.model_dir = work / f"engines_{name}{'_trained' if trained else ''}"  # export cache
    baseline = EagerNCHW(model.network)  # before prepare_network makes it channels-last
    prepare_network(model)
    tiles = read_tiles(scene, model, AUTO_SAMPLE_TILES + args.tiles, args.tile)
    calibration, tiles = tiles[:AUTO_SAMPLE_TILES], tiles[AUTO_SAMPLE_TILES:]
    names = ["eager-nchw", *candidates(model)] + (["torch-compile"] if args.compile else [])
    results: dict[str, dict[str, Any]] = {}
    reference = None
    mpx = tiles.shape[0] * tiles.shape[2] * tiles.shape[3] / 1e6
    for engine_name in names:
        t0 = time.perf_counter()
        try:
            engine = baseline if engine_name == "eager-nchw" else build(
                engine_name, model, calibration
            )  # fmt: skip
            seconds, probs = time_engine(engine, tiles, args.batch, args.repeats)
        except Exception as exc:  # an engine that fails here is reported, not fatal
            results[engine_name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            print(f"{name:9s} {engine_name:14s} failed: {results[engine_name]['error']}")
            continue
        total = time.perf_counter() - t0
        reference = probs if reference is None else reference
        row = {
            "mpx_s": round(mpx / seconds, 3),
            "agreement": round(float(np.mean(probs.argmax(1) == reference.argmax(1))), 5),
            "build_s": round(total - seconds * args.repeats, 1),
        }
        row["speedup"] = round(row["mpx_s"] / results.get("eager-nchw", row)["mpx_s"], 2)
        results[engine_name] = row
        print(
            f"{name:9s} {engine_name:14s} {row['mpx_s']:7.3f} Mpx/s  x{row['speedup']:<5.2f} "
            f"agreement {100 * row['agreement']:7.3f} %  build {row['build_s']:6.1f} s",
            flush=True,
        )
    agreeing = {
        k: v["mpx_s"]
        for k, v in results.items()
        if k in candidates(model) and v.get("agreement", 0) >= AGREEMENT_MIN
    }
    return {"engines": results, "auto": max(agreeing, key=agreeing.get), "mpx": round(mpx, 3)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=4096)
    p.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["lite0", "resnet34"])
    p.add_argument("--trained", action="store_true", help="trained pointwise weights (_common)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    p.add_argument("--batch", type=int, default=4, help="tiles per engine call")
    p.add_argument("--tiles", type=int, default=8, help="tiles measured per engine")
    p.add_argument("--repeats", type=int, default=2, help="passes over the tiles (best counts)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = p.parse_args(argv)

    import torch

    work = work_dir(args.work)
    scene = cached_scene(work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size))
    print(f"{args.tiles} tiles of {args.tile}, batch {args.batch}, {torch.get_num_threads()} "
          f"threads; best of {args.repeats} passes", flush=True)  # fmt: skip
    networks = {name: run_network(args, name, scene, work) for name in args.networks}
    emit({
        "benchmark": "engines", "tile": args.tile, "batch": args.batch, "tiles": args.tiles,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "networks": networks,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
