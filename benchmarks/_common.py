"""What the benchmarks share: argument parsing, work folders, generated scenes, models, output.

Each benchmark stays a script (``python benchmarks/X.py --help``); it imports this module from
its own folder (``sys.path`` holds the script's folder when a script runs). The shared pieces:

- :func:`parser` and the ``add_*_args`` helpers: the same flags mean the same thing in every
  benchmark (``--size``, ``--work``, ``--network``, ``--tile``, ``--overlap``, ``--batch``,
  ``--backbone``, ``--lr``, ``--device``, ``--seed``, ``--data``);
- :func:`cached_scene` and :func:`write_scene`: a generated GeoTIFF written window by window
  once into the work folder (optionally in a child process, so that its memory does not count);
- :func:`make_model`: an untrained model object of the right shape for 4 uint16 bands;
- :func:`classify_options`: the :class:`~geounet.inference.options.ClassifyOptions` of the
  tiling flags;
- :func:`peak_rss_mb`, :func:`rss_mb` and :func:`emit` (the JSON line printed last).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

#: Networks of the inference benchmarks: the paper U-Net with 4 base channels (the pipeline's
#: cost, not the network's), the efficientnet-lite0 U-Net with smp's decoder (``lite0``, the
#: network of the recorded figures) and with the half-width decoder a model trained by
#: ``fit()`` has (``lite0-half``: ``geounet.app.classifier.DECODER_CHANNELS``), and resnet18 /
#: resnet34 U-Nets.
NETWORKS = {
    "tiny": {"arch": "unet-classic", "backbone": None, "unet_kwargs": {"base_channels": 4}},
    "lite0": {"arch": "unet", "backbone": "efficientnet-lite0", "unet_kwargs": {}},
    "lite0-half": {
        "arch": "unet",
        "backbone": "efficientnet-lite0",
        "unet_kwargs": {"decoder_channels": (128, 64, 32, 16, 8)},
    },
    "resnet18": {"arch": "unet", "backbone": "resnet18", "unet_kwargs": {}},
    "resnet34": {"arch": "unet", "backbone": "resnet34", "unet_kwargs": {}},
}
#: The generated scenes lie in UTM zone 16N at 0.5 m.
EPSG = 32616
RES = 0.5
BAND_NAMES = ("blue", "green", "red", "nir")


# ----------------------------------------------------------------------------- arguments


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first line of the benchmark's docstring."""
    return argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])


def add_scene_args(
    p: argparse.ArgumentParser,
    *,
    size: int,
    work: str | None = "bench_out",
    size_help: str = "scene side N in pixels",
) -> None:
    """``--size`` (scene side) and ``--work`` (see :func:`add_work_arg`)."""
    p.add_argument("--size", type=int, default=size, help=size_help)
    add_work_arg(p, work)


def add_work_arg(p: argparse.ArgumentParser, work: str | None = "bench_out") -> None:
    """``--work``: the folder for generated scenes and outputs (None: a temporary one)."""
    where = "a temporary one" if work is None else work
    p.add_argument(
        "--work",
        type=Path,
        default=None if work is None else Path(work),
        help=f"folder for the scene and outputs (default: {where})",
    )


def add_tiling_args(p: argparse.ArgumentParser, *, network: str = "lite0") -> None:
    """``--network`` (see :data:`NETWORKS`), ``--tile``, ``--overlap`` and ``--batch``."""
    p.add_argument("--network", choices=sorted(NETWORKS), default=network)
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    p.add_argument("--overlap", type=int, default=64, help="overlap of tiles in pixels")
    p.add_argument("--batch", type=int, default=4, help="tiles per network call")


def add_training_args(
    p: argparse.ArgumentParser,
    *,
    lr: float,
    backbone: str = "efficientnet-lite0",
    device: bool = True,
) -> None:
    """``--backbone``, ``--lr``, ``--seed`` (and ``--device``) of a benchmark that trains."""
    p.add_argument("--backbone", default=backbone, help="encoder of the U-Net")
    p.add_argument("--lr", type=float, default=lr, help="peak one-cycle learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda... (default: CUDA if present)")


def add_chip_args(
    p: argparse.ArgumentParser, *, chip_size: int = 256, stride: int | None = None
) -> None:
    """``--chip-size`` (and ``--stride`` when it has a default) of ``prepare_data``."""
    p.add_argument("--chip-size", type=int, default=chip_size, help="chip side in pixels")
    if stride is not None:
        p.add_argument("--stride", type=int, default=stride, help="step between chips")


def work_dir(path: Path) -> Path:
    """``path``, created if needed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def classify_options(args: argparse.Namespace, **fields: Any) -> Any:
    """The :class:`~geounet.inference.options.ClassifyOptions` of ``--tile/--overlap/--batch``.

    Outputs are replaced, no progress bar is drawn and only the class raster is written (no
    probabilities beside it: the peers and the recorded figures write class maps only; what the
    probabilities cost is ``probabilities_cost.py``'s measure); ``fields`` set other options.
    """
    from geounet.inference.options import ClassifyOptions

    base = {"overwrite": True, "progress": False, "probabilities": False, **fields}
    return ClassifyOptions(tile_size=args.tile, overlap=args.overlap, batch_size=args.batch, **base)


# ----------------------------------------------------------------------------- scenes


def write_scene(
    path: Path,
    size: int,
    block_values: Callable[[int, int, int, int], np.ndarray],
    *,
    origin: tuple[float, float] = (500000.0, 3800000.0),
    block: int = 1024,
    **profile: Any,
) -> None:
    """Write a ``size`` x ``size`` 4-band uint16 tiled GeoTIFF one block at a time.

    Args:
        path: Output file.
        size: Side in pixels.
        block_values: ``(row, col, height, width) -> uint16 (4, height, width)``, called for
            the blocks in row-major order.
        origin: Upper-left corner (UTM 16N metres).
        block: Side of the blocks written at once.
        **profile: More (or other) GTiff creation options.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    full = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint16",
        "crs": CRS.from_epsg(EPSG), "transform": from_origin(*origin, RES, RES), "nodata": 0,
        "tiled": True, "blockxsize": 512, "blockysize": 512, **profile,
    }  # fmt: skip
    with rasterio.open(path, "w", **full) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                dst.write(block_values(r, c, h, w), window=Window(c, r, w, h))
        dst.descriptions = BAND_NAMES


def _waves(r: int, c: int, h: int, w: int) -> np.ndarray:
    """Smooth waves plus a 64-pixel checkerboard per band, uint16 ``(4, h, w)``."""
    yy, xx = np.mgrid[r : r + h, c : c + w]
    base = (np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 400 + 1200
    band = np.stack([base + 150 * b + ((xx // 64 + yy // 64) % 3) * 90 for b in range(4)])
    return band.astype(np.uint16)


def inference_scene(path: Path, size: int) -> None:
    """The scene of the inference benchmarks: 4-band uint16, deflate, smooth patterns."""
    write_scene(path, size, _waves, compress="deflate", predictor=2, BIGTIFF="YES")


def cached_scene(path: Path, make: Callable[[Path], None], *, child: bool = False) -> Path:
    """``path``, written by ``make(tmp)`` and renamed once complete; reused by later runs.

    Args:
        path: The scene's file.
        make: Writes the scene to the path it is given (a module-level function, or a
            ``functools.partial`` of one, when ``child`` is True).
        child: Generate in a child process (spawned), so that its memory does not count in
            this process's peak RSS.

    Returns:
        ``path``.
    """
    if path.exists():
        return path
    t0 = time.perf_counter()
    tmp = path.with_name(f"{path.stem}.part{path.suffix}")
    if child:
        proc = mp.get_context("spawn").Process(target=make, args=(tmp,))
        proc.start()
        proc.join()
        if proc.exitcode:
            raise SystemExit(f"generating {path} failed")
    else:
        make(tmp)
    tmp.rename(path)
    print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def sample_data(folder: Path) -> Path:
    """``folder`` when it holds the sample scenes, else the generated sample data."""
    folder = Path(folder)
    if (folder / "test.tif").exists():
        return folder
    from geounet.app.sample import ensure_sample_data

    return ensure_sample_data(folder)


# ----------------------------------------------------------------------------- models


def make_model(network: str, trained: Path | None = None) -> SimpleNamespace:
    """A model object (network, config, device) for 4 uint16 bands, 2 classes.

    Untrained, or with the weights of the model folder ``trained`` (:func:`trained_model_dir`).
    """
    import torch

    from geounet.core.classes import make_classes
    from geounet.model.files import ModelConfig, build_network

    spec = NETWORKS[network]
    config = ModelConfig(
        arch=spec["arch"], backbone=spec["backbone"], in_channels=4,
        classes=make_classes({1: "building"}), bands=[1, 2, 3, 4], band_names=list(BAND_NAMES),
        stats={"mean": [1300.0] * 4, "std": [400.0] * 4, "p2": [500.0] * 4, "p98": [2100.0] * 4},
        chip_size=256, gsd_m=RES, source_dtype="uint16", unet_kwargs=dict(spec["unet_kwargs"]),
    )  # fmt: skip
    torch.manual_seed(0)
    network = build_network(config)
    if trained is not None:  # the weights of trained_model_dir
        from geounet.model.files import load_model

        network.load_state_dict(load_model(trained)[0].state_dict())
    return SimpleNamespace(network=network.eval(), config=config, device=torch.device("cpu"))


#: What the trained benchmark models learn (:func:`trained_model_dir`): a pixel is "building"
#: where its first band is above this value. The class depends on the pixel alone, so tile
#: borders and blending cannot change a confident model's answer: a pointwise-consistent model,
#: on which agreement between contenders measures their arithmetic, not their blending.
POINTWISE_THRESHOLD = 1400


def _pointwise_batch(rng: np.random.Generator, n: int, side: int, config: Any) -> tuple[Any, Any]:
    """``n`` random ``side``-pixel crops of the generated scene pattern and their labels."""
    import torch

    mean = np.asarray(config.stats["mean"], np.float32)[:, None, None]
    std = np.asarray(config.stats["std"], np.float32)[:, None, None]
    crops = [_waves(*rng.integers(0, 8192, 2), side, side) for _ in range(n)]
    x = np.stack([(c.astype(np.float32) - mean) / std for c in crops])
    y = np.stack([(c[0] > POINTWISE_THRESHOLD).astype(np.int64) for c in crops])
    return torch.from_numpy(x), torch.from_numpy(y)


def _pointwise_samples(config: Any) -> dict[str, np.ndarray]:
    """Kept chips of a pointwise model: 8 training and 8 validation crops of 256 pixels."""
    return {
        "calibration": _pointwise_batch(np.random.default_rng(2), 8, 256, config)[0].numpy(),
        "validation": _pointwise_batch(np.random.default_rng(3), 8, 256, config)[0].numpy(),
    }


def trained_model_dir(network: str, work: Path, steps: int = 300) -> Path:
    """A geounet model folder of ``network`` trained on the pointwise rule; made once.

    AdamW at 1e-3, cross-entropy, ``steps`` batches of 4 random 256-pixel crops of the pattern
    of :func:`inference_scene` labelled with :data:`POINTWISE_THRESHOLD` (about 5 minutes on
    2 cores for ResNet34); the held-out pixel accuracy is printed. Reused from
    ``work/trained_<network>`` by later runs. Like a model trained by ``fit``, it keeps 8
    training and 8 validation chips (:mod:`geounet.model.samples`), added to a folder made
    before chips were kept.
    """
    import torch

    from geounet.model.files import save_model
    from geounet.model.samples import SAMPLES_FILE, write_samples

    folder = Path(work) / f"trained_{network}"
    if (folder / "geounet.json").is_file():
        if not (folder / SAMPLES_FILE).is_file():
            write_samples(folder, _pointwise_samples(make_model(network).config))
        return folder
    t0, model = time.perf_counter(), make_model(network)
    net, rng = model.network.train(), np.random.default_rng(0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(steps):
        x, y = _pointwise_batch(rng, 4, 256, model.config)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.inference_mode():
        x, y = _pointwise_batch(np.random.default_rng(1), 4, 512, model.config)
        accuracy = float((net(x).argmax(1) == y).float().mean())
    save_model(folder, net, model.config, overwrite=True, samples=_pointwise_samples(model.config))
    took = time.perf_counter() - t0
    print(f"trained {folder} in {took:.0f} s: pixel accuracy {100 * accuracy:.2f} %", flush=True)
    return folder


# ----------------------------------------------------------------------------- measures


def rss_mb() -> float:
    """Current resident set size in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process's own program so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of the memory this program
    mapped. Not ``getrusage``'s ``ru_maxrss``, which Linux carries across ``fork`` and
    ``execve``: a child started by a parent holding 1 GB reported at least 1 GB whatever it
    used itself. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def emit(result: dict[str, Any], **dumps: Any) -> None:
    """Print the benchmark's result as one JSON line (the last line of its output)."""
    print(json.dumps(result, **dumps), flush=True)
