"""Seam score: does tiled classification agree with one whole-image forward pass?

Trains a model briefly on ``sample_data/train.tif`` (or loads one with ``--model``), then
classifies ``sample_data/test.tif`` twice per setting:

- tiled, through :func:`geounet.inference.classify.classify_raster` (written to a GeoTIFF and read
  back), with tile 256 / overlap 64 / spline blending, and with tile 256 / overlap 0 /
  ``blend="none"``;
- as a single tile covering the whole image (one forward pass over the image with the same
  mirror-padded border), the reference.

It prints the share of valid pixels where the two agree (target >= 99.5 % for spline) and the
disagreement rate within 8 px of the tile edges (the internal tile borders; for
``blend="none"`` the lines where the output switches from one tile to the next) versus
elsewhere. The last line is a JSON object.

Usage::

    python benchmarks/seams.py                       # trains efficientnet-lite0 briefly
    python benchmarks/seams.py --model models/demo   # a saved model folder
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from _common import add_training_args, add_work_arg, emit, parser, sample_data

from geounet.inference.blending import MULTIPLE, TilePlan
from geounet.inference.classify import classify_raster, predict_array
from geounet.inference.options import ClassifyOptions
from geounet.io.raster import open_raster, read_window

EDGE_PX = 8


def get_model(args: argparse.Namespace, data_dir: Path, work: Path) -> Any:
    """Load ``--model``, or train a small model briefly on the sample training scene."""
    from geounet.app.classifier import UnetClassifier

    if args.model:
        return UnetClassifier.from_model(args.model, device=args.device)
    from geounet.data.prepare import prepare_data

    data = prepare_data(
        [data_dir / "train.tif"],
        labels=[data_dir / "train_labels.tif"],
        chip_size=256,
        stride=128,
        out_dir=work / "chips",
        batch_size=8,
        overwrite=True,
    )
    model = UnetClassifier(data, backbone=args.backbone, device=args.device, seed=args.seed)
    t0 = time.perf_counter()
    model.fit(
        args.epochs, lr=args.lr, time_budget_s=args.time_budget, progress=False, seed=args.seed
    )
    seconds = time.perf_counter() - t0
    model.save(work / "model", overwrite=True)
    hist = model.history
    last = hist.iloc[-1].to_dict() if len(hist) else {}
    keep = ("valid_loss", "valid_miou", "accuracy")
    model.training_summary = {
        "train_seconds": round(seconds),
        "epochs": len(hist),
        **{k: round(float(v), 4) for k, v in last.items() if k in keep},
    }
    print(f"trained {args.backbone}: {model.training_summary}", flush=True)
    return model


def read_image(path: Path, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The model's bands of the whole image and its validity mask."""
    info = open_raster(path)
    with rasterio.open(path) as src:
        return read_window(src, 0, 0, info.height, info.width, bands, alpha_band=info.alpha_band)


def whole_image(model: Any, arr: np.ndarray, valid: np.ndarray, halo: int) -> np.ndarray:
    """One forward pass over the whole image, mirror-padded by ``halo`` like the tiled run."""
    side = MULTIPLE * math.ceil((max(arr.shape[1:]) + 2 * halo) / MULTIPLE)
    opts = ClassifyOptions(tile_size=side, overlap=2 * halo, blend="none", batch_size=1)
    classes, _ = predict_array(model, arr, opts, valid=valid)
    return classes


def edge_mask(plan: TilePlan) -> np.ndarray:
    """Pixels within ``EDGE_PX`` of an internal tile edge (or core boundary for 'none')."""
    h, w = plan.height, plan.width
    rows: set[int] = set()
    cols: set[int] = set()
    for i in range(len(plan.row_starts)):
        for j in range(len(plan.col_starts)):
            r = plan.region(i, j)
            rows.update((r.row + r.r0, r.row + r.r1))
            cols.update((r.col + r.c0, r.col + r.c1))
    near = np.zeros((h, w), bool)
    for r in rows:
        if 0 < r < h:
            near[max(r - EDGE_PX, 0) : r + EDGE_PX] = True
    for c in cols:
        if 0 < c < w:
            near[:, max(c - EDGE_PX, 0) : c + EDGE_PX] = True
    return near


def compare(
    tiled: np.ndarray, ref: np.ndarray, valid: np.ndarray, plan: TilePlan
) -> dict[str, Any]:
    """Agreement overall, near tile edges and elsewhere (valid pixels only)."""
    same = tiled == ref
    near = edge_mask(plan)
    return {
        "agreement": float(same[valid].mean()),
        "disagree_near_edges": float(1 - same[valid & near].mean()),
        "disagree_elsewhere": float(1 - same[valid & ~near].mean()),
        "tiles": plan.n_tiles,
    }


def run_setting(
    model: Any,
    test: Path,
    arr: np.ndarray,
    valid: np.ndarray,
    work: Path,
    tile: int,
    overlap: int,
    blend: str,
) -> dict[str, Any]:
    """Tiled classification of the test scene against the whole-image pass."""
    out = work / f"tiled_{tile}_{overlap}_{blend}.tif"
    t0 = time.perf_counter()
    classify_raster(
        model, test, out, tile_size=tile, overlap=overlap, blend=blend, overwrite=True,
        progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    with rasterio.open(out) as src:
        tiled = src.read(1)
    plan = TilePlan.build(arr.shape[1], arr.shape[2], tile_size=tile, overlap=overlap, blend=blend)
    ref = whole_image(model, arr, valid, plan.halo)
    result = compare(tiled, ref, valid, plan)
    result["seconds"] = round(seconds, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--model", help="saved model folder (default: train one briefly)")
    p.add_argument("--data", default="sample_data", help="folder with train/test scenes")
    add_training_args(p, lr=3e-3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--time-budget", type=float, default=300.0, help="training seconds")
    add_work_arg(p, None)
    args = p.parse_args(argv)

    data_dir = sample_data(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = get_model(args, data_dir, work)
        test = data_dir / "test.tif"
        arr, valid = read_image(test, model.config.bands)
        results = {}
        for name, tile, overlap, blend in [
            ("spline_256_64", 256, 64, "spline"),
            ("none_256_0", 256, 0, "none"),
        ]:
            r = run_setting(model, test, arr, valid, work, tile, overlap, blend)
            results[name] = r
            print(
                f"{name}: agreement {100 * r['agreement']:.3f} %  disagreement near tile "
                f"edges {100 * r['disagree_near_edges']:.3f} % vs elsewhere "
                f"{100 * r['disagree_elsewhere']:.3f} %  ({r['tiles']} tiles, {r['seconds']} s)",
                flush=True,
            )
    summary = {
        "benchmark": "seams",
        "model": args.model or f"{args.backbone} trained on {data_dir / 'train.tif'}",
        "image": str(test),
        "training": getattr(model, "training_summary", None),
        "target_agreement": 0.995,
        **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
    }
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
