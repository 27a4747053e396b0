"""What an ensemble of recipe runs would map: their probability rasters averaged, then scored.

``benchmarks/recipe.py`` keeps each run's probability rasters (uint8, one band per class)
under ``--out``. This script averages those of several runs of one scene (the same test part,
models trained with other seeds or variants), takes the most probable class per pixel, writes
the class raster with the first run's tags (so ``vectorize`` keeps its settings, e.g. the
smallest building area the training labels suggested), and scores it exactly as the protocol
does: pixel IoU per class, mIoU, building object F1, predicted and true building counts. Each
run alone is scored the same way for comparison, from its own class raster.

Usage::

    python benchmarks/ensemble.py --scene oam_zanzibar bench_out/run_seed1 bench_out/run_seed2

The last line is one JSON object. Needs ``../shared/data`` (the truth) and two or more runs
of ``recipe.py`` made with the same scene.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

HERE = Path(__file__).resolve().parent


def load_recipe() -> Any:
    """The ``recipe.py`` module beside this script (scenes, truth and scoring)."""
    spec = importlib.util.spec_from_file_location("recipe_benchmark", HERE / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def average_classes(prob_paths: list[Path], like: Path, out: Path) -> Path:
    """Write the arg-max of the mean of ``prob_paths`` as a class raster shaped like ``like``.

    Pixels that are nodata in ``like`` (the first run's class raster) stay nodata.
    """
    total = None
    for path in prob_paths:
        with rasterio.open(path) as src:
            band = src.read().astype(np.float32)
        if total is not None and band.shape != total.shape:
            raise SystemExit(f"{path}: shape {band.shape} differs from the first run's")
        total = band if total is None else total + band
    with rasterio.open(like) as src:
        profile, tags, first, nodata = src.profile, src.tags(), src.read(1), src.nodata
    classes = np.argmax(total, axis=0).astype(first.dtype)
    if nodata is not None:
        classes = np.where(first == nodata, first, classes)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes, 1)
        dst.update_tags(**tags)
    return out


def main(argv: list[str] | None = None) -> int:
    """Score each run, then their ensemble; the last line is one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="--out folders of recipe.py runs")
    p.add_argument("--scene", required=True, help="the scene the runs share")
    p.add_argument("--data", type=Path, default=None, help="the shared data folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(args.runs) < 2:
        raise SystemExit("give two or more runs to average")
    recipe = load_recipe()
    data_root = args.data or recipe.DEFAULT_DATA
    if args.scene not in recipe.SCENES:
        raise SystemExit(f"--scene {args.scene}: expected one of {sorted(recipe.SCENES)}")
    work = Path(tempfile.mkdtemp(prefix="geounet-ensemble-"))
    scene = recipe.SCENES[args.scene](data_root, work)
    data = recipe.prepare_data(
        [str(x) for x in scene.train_images],
        [str(x) for x in scene.train_labels],
        classes=scene.classes,
        allow_no_crs=scene.allow_no_crs,
    )
    names = list(data.classes)
    parts: dict[str, list[dict[str, Any]]] = {str(r): [] for r in args.runs}
    parts["ensemble"] = []
    for i in range(len(scene.test_images)):
        probs = [r / args.scene / f"probabilities_{i:02d}.tif" for r in args.runs]
        missing = [str(x) for x in probs if not x.is_file()]
        if missing:
            raise SystemExit(f"missing probability rasters: {missing} (runs of recipe.py?)")
        for r in args.runs:
            own = r / args.scene / f"classified_{i:02d}.tif"
            parts[str(r)].append(recipe.score_class_raster(own, data, scene, i, names))
        like = args.runs[0] / args.scene / f"classified_{i:02d}.tif"
        mean = average_classes(probs, like, work / f"ensemble_{i:02d}.tif")
        parts["ensemble"].append(recipe.score_class_raster(mean, data, scene, i, names))
    results = {k: recipe.summarize(v, names) for k, v in parts.items()}
    for k, v in results.items():
        print(f"{k}: F1 {v['building_f1']}, mIoU {v['miou']}, buildings {v['pred_buildings']}")
    print(json.dumps({"scene": args.scene, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
