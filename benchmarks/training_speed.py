"""Training throughput: chips per second of ``UnetClassifier.fit`` against the bare steps.

A generated ``--size`` x ``--size`` 4-band uint16 scene (default 2816) with a label raster of
squares is chipped once with :func:`geounet.prepare_data` (chips of 256, its default stride of
128); the first ``--chips`` (default 256) training chips and every validation chip are loaded
as :class:`~geounet.data.geodata.GeoData` (batch 8, augmentation on). In one process,
``--rounds`` times back to back (so that a change of machine load weighs on both):

- ``fit``: :meth:`geounet.UnetClassifier.fit` for ``--epochs`` epochs at a fixed learning
  rate (no LR sweep, no early stopping, no checkpoint, no progress bar). Its training chips
  per second are the training chips seen over the wall time of ``fit`` less its validation
  passes (timed by wrapping the trainer's ``evaluate``); the figure with validation is
  printed too;
- ``fit`` again with the datasets' chip cache off (every epoch reads the chip files, as before
  :data:`geounet.data.geodata.CHIP_CACHE_MB`); the chip cache is otherwise warm from the
  earlier runs, as it is after a training's first epoch;
- ``bare``: the same trainer's ``train_step`` (forward, loss, backward, gradient clipping,
  optimiser step) over one epoch of training batches made by the same loader beforehand and
  kept in memory (augmented, so the same kind of batch), for the same number of epochs.

The training loader alone is timed too (one pass, cache off and on). The ratio ``fit / bare``
is the share of the compute speed that ``fit`` keeps (target >= 0.9: data loading and
augmentation hidden behind compute). The last line is a JSON object.

Usage::

    python benchmarks/training_speed.py
    python benchmarks/training_speed.py --size 1024 --chips 16 --epochs 1 --rounds 1  # quick
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    EPSG,
    RES,
    _waves,
    add_scene_args,
    cached_scene,
    emit,
    parser,
    work_dir,
    write_scene,
)

#: ``fit`` keeps at least this share of the bare steps' chips per second (issue 13).
TARGET = 0.90


def make_scene(path: Path, size: int) -> None:
    """The image: the inference benchmarks' waves, deflate."""
    write_scene(path, size, _waves, compress="deflate", predictor=2)


def make_labels(path: Path, size: int) -> None:
    """Label raster on the scene's grid: 0 background, 1 in 40-px squares every 96 px."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    yy, xx = np.mgrid[0:size, 0:size]
    lab = (((yy % 96) < 40) & ((xx % 96) < 40)).astype(np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": CRS.from_epsg(EPSG), "transform": from_origin(500000.0, 3800000.0, RES, RES),
        "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(lab, 1)


def chips(work: Path, size: int, batch: int, n_train: int) -> Any:
    """GeoData of the chip folder (made once): its first ``n_train`` training chips."""
    from geounet import prepare_data
    from geounet.data.geodata import GeoData
    from geounet.data.manifest import load_manifest

    folder = work / f"training_chips_{size}"
    if not (folder / "manifest.json").exists():
        scene = cached_scene(work / f"train_scene_{size}.tif", partial(make_scene, size=size))
        labels = cached_scene(work / f"train_labels_{size}.tif", partial(make_labels, size=size))
        prepare_data(scene, labels, classes={1: "building"}, chip_size=256, out_dir=folder,
                     overwrite=True)  # fmt: skip
    manifest = dict(load_manifest(folder))
    train = [c for c in manifest["chips"] if c["split"] == "train"][:n_train]
    manifest["chips"] = train + [c for c in manifest["chips"] if c["split"] == "valid"]
    return GeoData(folder, manifest, batch_size=batch, augment=True)


def timed_fit(model: Any, epochs: int, lr: float) -> tuple[float, float, int]:
    """Wall seconds of ``fit``, seconds of its validation passes, training steps."""
    trainer = model._trainer
    spent = [0.0]
    steps = [0]
    real_eval, real_step = trainer.evaluate, trainer.train_step

    def evaluate(loader: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_eval(loader)
        finally:
            spent[0] += time.perf_counter() - t0

    def train_step(batch: Any, optimizer: Any) -> float:
        steps[0] += 1
        return real_step(batch, optimizer)

    trainer.evaluate, trainer.train_step = evaluate, train_step
    t0 = time.perf_counter()
    try:
        model.fit(
            epochs, lr, early_stopping=None, checkpoint=False, progress=False, seed=0
        )  # fmt: skip
    finally:
        del trainer.evaluate, trainer.train_step  # the class's methods again
    return time.perf_counter() - t0, spent[0], steps[0]


def bare_steps(model: Any, batches: list[Any], epochs: int, lr: float) -> float:
    """Seconds of the trainer's ``train_step`` over the batches in memory, ``epochs`` times."""
    trainer = model._trainer
    opt = trainer._optimizer(lr)
    model.network.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            trainer.train_step(batch, opt)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=2816)
    p.add_argument("--chips", type=int, default=256, help="training chips used (at most)")
    p.add_argument("--backbone", default="efficientnet-lite0", help="encoder of the U-Net")
    p.add_argument("--batch", type=int, default=8, help="chips per batch")
    p.add_argument("--epochs", type=int, default=2, help="epochs per fit and per bare run")
    p.add_argument("--rounds", type=int, default=2, help="fit / bare pairs")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of fit")
    args = p.parse_args(argv)
    work = work_dir(args.work).resolve()
    data = chips(work, args.size, args.batch, args.chips)

    from geounet import UnetClassifier

    model = UnetClassifier(data, backbone=args.backbone, device="cpu", seed=0)
    n_train = len(data.train_ds)
    batches = list(data.train_dl)  # one augmented epoch, in memory
    bare_steps(model, batches[:2], 1, args.lr)  # warm-up
    runs: dict[str, list[Any]] = {"fit": [], "fit_uncached": [], "bare": [], "loader": []}
    for _ in range(args.rounds):
        for cached in (False, True):
            chip_cache(data, cached)
            wall, valid_s, steps = timed_fit(model, args.epochs, args.lr)
            fit = {"wall_s": round(wall, 2), "valid_s": round(valid_s, 2), "steps": steps}
            runs["fit" if cached else "fit_uncached"].append(fit)
            print(f"fit, chip cache {'on' if cached else 'off'}: {wall:.1f} s "
                  f"({valid_s:.1f} s validating)", flush=True)  # fmt: skip
        runs["bare"].append(round(bare_steps(model, batches, args.epochs, args.lr), 2))
        runs["loader"].append(loader_seconds(data))
        print(f"bare {runs['bare'][-1]} s, loader alone {runs['loader'][-1]}", flush=True)
    return report(args, n_train, len(batches), runs)


def chip_cache(data: Any, on: bool) -> None:
    """Turn the datasets' chip cache on (as by default) or off (emptied: files read again)."""
    from geounet.data import geodata

    for ds in (data.train_ds, data.valid_ds):
        ds.cache_mb = geodata.CHIP_CACHE_MB if on else 0
        if not on:
            ds._cache.clear()
            ds._cached_bytes = 0


def loader_seconds(data: Any) -> dict[str, float]:
    """Seconds of one pass of the training loader alone, chip cache off and on (warm)."""
    out = {}
    for label, on in (("cache_off", False), ("cache_on", True)):
        chip_cache(data, on)
        for _ in range(2 if on else 1):  # the second pass reads from memory
            t0 = time.perf_counter()
            for _batch in data.train_dl:
                pass
        out[label] = round(time.perf_counter() - t0, 2)
    return out


def report(args: Any, n_train: int, n_batches: int, runs: dict[str, list[Any]]) -> int:
    """Print the table and the JSON line."""
    seen = n_train * args.epochs
    rows = [
        (label, [seen / (f["wall_s"] - f["valid_s"]) for f in runs[key]])
        for label, key in (("fit, training part", "fit"),
                           ("fit, training part, chip cache off (before)", "fit_uncached"))
    ]  # fmt: skip
    rows.append(("fit, validation included", [seen / f["wall_s"] for f in runs["fit"]]))
    rows.append(("bare forward+backward+step", [seen / b for b in runs["bare"]]))
    best = {label: max(each) for label, each in rows}
    fit, before, bare = best[rows[0][0]], best[rows[1][0]], best[rows[3][0]]
    ratio = fit / bare
    threads = torch.get_num_threads()
    print(f"{n_train} training chips of 256 ({n_batches} batches of {args.batch}), "
          f"{args.backbone}, {args.epochs} epochs per run, {threads} threads")  # fmt: skip
    print("| run | chips/s (best of rounds) | per round |\n|---|---|---|")
    for label, each in rows:
        print(f"| {label} | {best[label]:.2f} | {', '.join(f'{x:.2f}' for x in each)} |")
    print(f"loader alone, one epoch (s): {runs['loader']}")
    met = "met" if ratio >= TARGET else "not met"
    print(f"fit / bare = {ratio:.3f} (target >= {TARGET}: {met}); chip cache off: "
          f"{before / bare:.3f}")  # fmt: skip
    emit({
        "benchmark": "training_speed", "size": args.size, "backbone": args.backbone,
        "batch": args.batch, "epochs": args.epochs, "train_chips": n_train,
        "threads": torch.get_num_threads(), "runs": runs, "fit_chips_per_s": round(fit, 3),
        "fit_uncached_chips_per_s": round(before, 3), "bare_chips_per_s": round(bare, 3),
        "ratio": round(ratio, 4), "ratio_uncached": round(before / bare, 4),
        "target_met": ratio >= TARGET,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
