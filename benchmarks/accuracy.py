"""Building IoU on real imagery: pretrained efficientnet-lite0 against the same net from scratch.

Data: ``../shared/data/inria_austin`` (1000 x 1000 RGB aerial crop of Austin at 0.3 m, with
``buildings_mask.tif``, 0 / 255). Chips of the top 70 % of the image train, the bottom 30 %
validates (``prepare_data(split="rows", val_fraction=0.3)``: no chip crosses the cut). Each
variant trains on the CPU for the same wall-clock budget (``fit(time_budget_s=...)``; the
one-cycle schedule follows the clock). The score is the building IoU over every pixel of the
bottom 30 %, classified with the tiled inference of :meth:`UnetClassifier.predict` on the whole
image (the top part only lends context at the cut, its labels are never scored).

The last line printed is a JSON object with ``iou_pretrained``, ``iou_scratch``, ``seconds``
and ``epochs`` (per variant) and the settings. Target: ``iou_pretrained >= 0.60`` with 15
minutes each on a 2-core CPU, and the pretrained encoder must win.

Usage::

    python benchmarks/accuracy.py                  # 2 x 15 min
    python benchmarks/accuracy.py --budget-min 1   # smoke run
    python benchmarks/accuracy.py --only pretrained --budget-min 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from _common import add_chip_args, add_training_args, emit, parser

from geounet.app.classifier import UnetClassifier
from geounet.data.prepare import prepare_data
from geounet.evaluation.metrics import confusion_matrix, per_class_metrics

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "inria_austin"
VAL_FRACTION = 0.3
VARIANTS = {"pretrained": "imagenet", "scratch": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="inria_austin folder")
    p.add_argument("--budget-min", type=float, default=15.0, help="CPU minutes per variant")
    p.add_argument("--only", choices=sorted(VARIANTS), help="run one variant")
    add_chip_args(p, stride=128)
    p.add_argument("--batch-size", type=int, default=8)
    add_training_args(p, lr=2e-3, device=False)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    return p.parse_args(argv)


def read_scene(folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Paths of image and mask, the image pixels and the 0/1 building truth."""
    image, mask = folder / "image.tif", folder / "buildings_mask.tif"
    if not image.exists() or not mask.exists():
        sys.exit(f"{folder}: image.tif and buildings_mask.tif are needed (../shared/data).")
    with rasterio.open(image) as src, rasterio.open(mask) as lab:
        return image, mask, src.read(), (lab.read(1) == 255).astype(np.uint8)


def validation_iou(model: UnetClassifier, pixels: np.ndarray, truth: np.ndarray) -> float:
    """Building IoU over the bottom VAL_FRACTION of the scene, classified whole and tiled."""
    classes, _ = model.predict(pixels, tile_size=512, overlap=64)
    cut = round(truth.shape[0] * (1 - VAL_FRACTION))
    cm = confusion_matrix(classes[cut:], truth[cut:], model.config.n_classes)
    return float(per_class_metrics(cm, model.config.class_names).loc["building", "iou"])


def run_variant(
    name: str, data: Any, pixels: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    """Train one variant for the budget; its validation building IoU, seconds and epochs."""
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = UnetClassifier(
        data, backbone=args.backbone, encoder_weights=VARIANTS[name], device="cpu", seed=args.seed
    )
    hist = model.fit(
        100_000,
        args.lr,
        early_stopping=None,
        time_budget_s=args.budget_min * 60,
        progress=False,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    iou = validation_iou(model, pixels, truth)
    chip_iou = model.per_class_metrics().loc["building", "iou"]
    print(
        f"{name}: building IoU {iou:.4f} (validation chips {chip_iou:.4f}), {len(hist)} "
        f"epochs, {seconds:.0f} s training",
        flush=True,
    )
    print(hist.to_string(index=False), flush=True)
    # the last epoch is usually cut short by the budget: the median is a full epoch's time
    per_epoch = float(hist["seconds"].median()) if len(hist) else float("nan")
    return {"iou": iou, "seconds": seconds, "epochs": len(hist), "seconds_per_epoch": per_epoch}


def main(argv: list[str] | None = None) -> int:
    """Run the variants and print the JSON summary as the last line."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image, mask, pixels, truth = read_scene(args.data)
    with tempfile.TemporaryDirectory(prefix="geounet-accuracy-") as tmp:
        data = prepare_data(
            [image],
            [mask],
            classes={255: "building"},
            chip_size=args.chip_size,
            stride=args.stride,
            val_fraction=VAL_FRACTION,
            split="rows",
            batch_size=args.batch_size,
            out_dir=Path(tmp) / "chips",
            seed=args.seed,
        )
        print(data.summary(), flush=True)
        names = [args.only] if args.only else list(VARIANTS)
        results = {n: run_variant(n, data, pixels, truth, args) for n in names}
        n_train, n_valid = len(data.train_ds), len(data.valid_ds)
    out = {
        "iou_pretrained": results.get("pretrained", {}).get("iou"),
        "iou_scratch": results.get("scratch", {}).get("iou"),
        "seconds": {n: round(r["seconds"], 1) for n, r in results.items()},
        "epochs": {n: r["epochs"] for n, r in results.items()},
        "seconds_per_epoch": {n: round(r["seconds_per_epoch"], 1) for n, r in results.items()},
        "device": "cpu",
        "gpu_seconds_per_epoch": None,  # not measurable here (no GPU lent)
        "budget_min": args.budget_min,
        "backbone": args.backbone,
        "chip_size": args.chip_size,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": torch.get_num_threads(),
        "train_chips": n_train,
        "valid_chips": n_valid,
    }
    emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
