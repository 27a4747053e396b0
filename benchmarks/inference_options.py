"""Inference options measured on saved recipe runs: classify or vectorize again, no training.

``benchmarks/recipe.py`` keeps each run's model (``SCENE/model``), class rasters and
probability rasters under ``--out``. This script scores every given run twice: as the run
left it (its own class raster, ``vectorize`` with its defaults) and with other options:
``--classify KEY=VALUE`` classifies the test part again with the run's saved model and those
``classify`` keywords (e.g. ``tta=flips``); ``--vectorize KEY=VALUE`` passes keywords to
``vectorize`` (e.g. ``separate=False``; with ``probabilities=True`` the run's probability
raster is given to it). Both are scored exactly as the protocol does (pixel IoU per class,
mIoU, building object F1, predicted and true building counts; road completeness,
correctness, quality and APLS on the road scenes), and the differences are
averaged over the runs. So an inference default is judged on many trained models at the cost
of classifying only.

Since 2026-12-02 ``classify`` names its probability raster in the class raster, and
``vectorize`` then drops buildings the network was never sure of. Class rasters saved before
that are vectorized "as saved" without the probabilities, while a class raster classified
again here has them: with ``--classify`` on such runs, also give ``--vectorize
probabilities=True`` to compare like with like. ``--vectorize probabilities=True`` alone on
them measures that filter (the fourteenth round of ``benchmarks/README.md``).

Usage::

    python benchmarks/inference_options.py --scene oam_zanzibar --classify tta=flips \\
        bench_out/run_seed1 bench_out/run_seed2
    python benchmarks/inference_options.py --scene oam_kampala --vectorize separate=False RUN
    python benchmarks/inference_options.py --scene vegas_roads_rgb --vectorize gap_m=0 RUN

The last line is one JSON object. Needs ``../shared/data`` (the truth) and runs of
``recipe.py`` made with the same scene.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ensemble import load_recipe  # beside this script, like _common for the others
from rasterio.errors import NotGeoreferencedWarning

#: Figures whose difference (options minus as saved) is averaged over the runs (the road
#: scenes have the road figures, the others the building ones).
COMPARED = ("building_f1", "building_iou", "miou", "road_iou", "road_quality", "apls")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="--out folders of recipe.py runs")
    p.add_argument("--scene", required=True, help="the scene the runs share")
    p.add_argument("--data", type=Path, default=None, help="the shared data folder")
    p.add_argument("--classify", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--vectorize", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if not args.classify and not args.vectorize:
        raise SystemExit("give --classify KEY=VALUE and/or --vectorize KEY=VALUE to compare")
    return args


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The compared figures and counts of a scene summary (``recipe.summarize``)."""
    iou = {k.lower(): v for k, v in summary["iou"].items()}
    if "apls" in summary:  # a road scene: centre lines, no buildings
        keys = ("road_completeness", "road_correctness", "road_quality", "apls", "road_lines")
        return {"road_iou": iou.get("road"), "miou": summary["miou"]} | {
            k: summary[k] for k in keys
        }
    return {
        "building_f1": summary["building_f1"],
        "building_iou": iou.get("building"),
        "miou": summary["miou"],
        "buildings": f"{summary['pred_buildings']} / {summary['true_buildings']}",
    }


def mean_differences(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure of :data:`COMPARED`: mean, lowest and highest difference, runs up and down.

    Each row holds ``"saved"`` and ``"options"`` figures (:func:`figures`) of one run.

    Example:
        >>> rows = [{"saved": {"building_f1": 0.5}, "options": {"building_f1": 0.6}},
        ...         {"saved": {"building_f1": 0.5}, "options": {"building_f1": 0.4}}]
        >>> mean_differences(rows)["building_f1"]["up"]
        1
    """
    out: dict[str, dict[str, float]] = {}
    for key in COMPARED:
        diffs = [
            r["options"][key] - r["saved"][key]
            for r in rows
            if r["options"].get(key) is not None and r["saved"].get(key) is not None
        ]
        if diffs:
            out[key] = {
                "mean": round(sum(diffs) / len(diffs), 4),
                "min": round(min(diffs), 4),
                "max": round(max(diffs), 4),
                "up": sum(d > 0 for d in diffs),
                "down": sum(d < 0 for d in diffs),
            }
    return out


def score_run(
    recipe: Any,
    run: Path,
    name: str,
    scene: Any,
    data: Any,
    options: dict[str, dict[str, Any]],
    work: Path,
) -> dict[str, Any]:
    """Run ``run`` of scene ``name`` scored as saved and with ``options``.

    ``scene`` is that scene cut as the protocol cuts it, ``data`` its training chips (for the
    class names and the truth's classes), ``options`` ``{"classify": {...}, "vectorize":
    {...}}``.
    """
    folder = run / name
    names = list(data.classes)
    vec = dict(options["vectorize"])
    use_probabilities = bool(vec.pop("probabilities", False))
    saved, again = [], []
    t0 = time.perf_counter()
    model = recipe.UnetClassifier.from_model(folder / "model") if options["classify"] else None
    for i in range(len(scene.test_images)):
        classified = folder / f"classified_{i:02d}.tif"
        probabilities = folder / f"probabilities_{i:02d}.tif"
        if not classified.is_file():
            raise SystemExit(f"{classified}: missing (a run of recipe.py for {name}?)")
        saved.append(recipe.score_class_raster(classified, data, scene, i, names))
        if model is not None:  # classified again with the run's model (loaded once)
            classified = work / f"{run.name}_{i:02d}.tif"
            probabilities = work / f"{run.name}_{i:02d}_probabilities.tif"
            model.classify(
                scene.test_images[i],
                classified,
                overwrite=True,
                progress=False,
                allow_no_crs=scene.allow_no_crs,
                probabilities=probabilities,
                **options["classify"],
            )
        extra = {"probabilities": probabilities} if use_probabilities else {}
        again.append(recipe.score_class_raster(classified, data, scene, i, names, {**vec, **extra}))
    return {
        "run": str(run),
        "saved": figures(recipe.summarize(saved, names)),
        "options": figures(recipe.summarize(again, names)),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Score each run as saved and with the options; the last line is one JSON object."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipe = load_recipe()
    options = {
        "classify": recipe.parse_overrides(args.classify, "--classify"),
        "vectorize": recipe.parse_overrides(args.vectorize, "--vectorize"),
    }
    if args.scene not in recipe.SCENES:
        raise SystemExit(f"--scene {args.scene}: expected one of {sorted(recipe.SCENES)}")
    work = Path(tempfile.mkdtemp(prefix="geounet-inference-options-"))
    scene = recipe.SCENES[args.scene](args.data or recipe.DEFAULT_DATA, work)
    data = recipe.prepare_data(
        [str(x) for x in scene.train_images],
        [str(x) for x in scene.train_labels],
        classes=scene.classes,
        allow_no_crs=scene.allow_no_crs,
    )
    rows = [score_run(recipe, r, args.scene, scene, data, options, work) for r in args.runs]
    for r in rows:
        print(f"{r['run']}: saved {r['saved']} | options {r['options']} ({r['seconds']} s)")
    result = {"scene": args.scene, "options": options, "runs": rows}
    print(json.dumps({**result, "differences": mean_differences(rows)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
