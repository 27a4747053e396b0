"""Train a small building model on part of a scene (top half of ``oam_kampala``), classify the rest.

The model feeds :mod:`benchmarks.separation` (touching-building separation, test-time
augmentation and cleaning measured on a real model's predictions). Steps: crop the image into
``top.tif`` / ``bottom.tif``; ``prepare_data(top.tif, buildings.geojson, classes=["building"],
chip_size=128, stride=64, val_fraction=0.1)``; ``UnetClassifier(data,
backbone="efficientnet-lite0")``; ``fit(epochs, lr=1e-3, early_stopping=None,
time_budget_s=...)``; save; then ``classify`` the bottom half without and with ``tta="flips"``,
writing class and probability rasters, and the seconds each took.

Usage::

    flock /tmp/geounet-bench.lock python benchmarks/separation_model.py --out bench_out/kampala
    flock /tmp/geounet-bench.lock python benchmarks/separation_model.py --out bench_out/zanzibar \
        --data ../shared/data/oam_zanzibar --train-part left:0.667
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

from geounet.app.classifier import UnetClassifier
from geounet.data.prepare import prepare_data

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "oam_kampala"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="oam_kampala folder")
    p.add_argument("--out", type=Path, default=Path("bench_out/kampala"))
    p.add_argument("--budget-min", type=float, default=6.0, help="training CPU minutes")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--stride", type=int, default=64, help="chip stride (chips are 128 px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-part",
        default="top:0.5",
        help="'top:F' trains on the top fraction F, 'left:F' on the left fraction F",
    )
    p.add_argument("--skip-train", action="store_true", help="classify with the saved model")
    return p.parse_args(argv)


def crop(src_path: Path, out: Path, win: Window) -> Path:
    """Write a window of a raster to ``out`` (georeferenced)."""
    with rasterio.open(src_path) as src:
        profile = src.profile | {
            "height": win.height,
            "width": win.width,
            "transform": src.window_transform(win),
        }
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return out


def train(args: argparse.Namespace, top: Path) -> tuple[UnetClassifier, float]:
    """Chip the top half, train for the budget, save the model."""
    data = prepare_data(
        top,
        args.data / "buildings.geojson",
        classes=["building"],
        chip_size=128,
        stride=args.stride,
        val_fraction=0.1,
        out_dir=args.out / "chips",
        overwrite=True,
        seed=args.seed,
    )
    model = UnetClassifier(data, backbone="efficientnet-lite0", seed=args.seed)
    t0 = time.perf_counter()
    model.fit(
        args.epochs,
        lr=1e-3,
        early_stopping=None,
        time_budget_s=args.budget_min * 60,
        progress=False,
        seed=args.seed,
    )
    train_s = time.perf_counter() - t0
    model.save(args.out / "model", overwrite=True)
    return model, train_s


def main(argv: list[str] | None = None) -> int:
    """Train, save and classify; print one JSON line."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    image = args.data / "image.tif"
    side, fraction = args.train_part.split(":")
    with rasterio.open(image) as src:
        h, w = src.height, src.width
    if side == "top":
        cut = round(h * float(fraction))
        wins = Window(0, 0, w, cut), Window(0, cut, w, h - cut)
    else:
        cut = round(w * float(fraction))
        wins = Window(0, 0, cut, h), Window(cut, 0, w - cut, h)
    top = crop(image, args.out / "top.tif", wins[0])
    bottom = crop(image, args.out / "bottom.tif", wins[1])
    if args.skip_train:
        model, train_s = UnetClassifier.from_model(args.out / "model"), 0.0
    else:
        model, train_s = train(args, top)
    epochs = len(model.config.history) or len(model.history)
    result = {"train_s": round(train_s, 1), "epochs": epochs}
    for tta in (None, "flips"):
        tag = tta or "plain"
        t0 = time.perf_counter()
        model.classify(
            bottom,
            args.out / f"classified_{tag}.tif",
            tta=tta,
            probabilities=args.out / f"prob_{tag}.tif",
            overwrite=True,
        )
        result[f"classify_{tag}_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
