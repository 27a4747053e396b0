"""What ``fit()``'s learning-rate sweep picks on the real scenes' training parts.

``fit()`` with no ``lr`` runs a short sweep (:meth:`UnetClassifier.lr_find`, 16 steps) and
trains at its suggestion. This script prepares each scene's training part as
``benchmarks/recipe.py`` does, runs ``fit(1, seed=N)`` (the sweep, then one epoch) and prints
what the sweep saw: the suggestion, whether it was the fallback of a sweep that never
diverged, the steepest and lowest points, and the smoothed losses.

Usage::

    python benchmarks/lr_sweep.py --scene oam_zanzibar --scene oam_kampala --seeds 1 2 3
    python benchmarks/lr_sweep.py --scene oam_zanzibar --pretrained-path MODEL_DIR

The last line is one JSON object. Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ensemble import load_recipe  # the recipe's scenes, loaded as ensemble.py loads them


def sweep(
    recipe: Any, name: str, data_root: Path, out: Path, seeds: list[int], **model: Any
) -> list[dict[str, Any]]:
    """The sweep's record for each seed on one scene's training part."""
    from geounet import prepare_data

    scene = recipe.SCENES[name](data_root, out)
    images, labels, _ = recipe.training_inputs(scene, out, False)
    data = prepare_data(images, labels, classes=scene.classes, allow_no_crs=scene.allow_no_crs)
    rows = []
    for seed in seeds:
        clf, _ = recipe.make_model(data, **model)
        clf.fit(1, seed=seed, progress=False)
        r = clf.lr_find_result
        rows.append(
            {
                "seed": seed,
                "suggestion": r.suggestion,
                "fallback": bool(r.extra.get("fallback")),
                "steepest": r.steepest,
                "minimum": r.minimum,
                "divergence": r.extra.get("divergence"),
                "lrs": [float(f"{x:.3g}") for x in r.lrs],
                "losses": [round(float(x), 3) for x in r.losses],
            }
        )
        print(
            f"{name} seed {seed}: suggestion {r.suggestion:.3g}"
            f"{' (fallback: no divergence seen)' if rows[-1]['fallback'] else ''}, steepest "
            f"{r.steepest:.3g}, lowest at {r.minimum:.3g}; smoothed loss "
            f"{rows[-1]['losses'][0]} -> {rows[-1]['losses'][-1]} at LR {r.lrs[-1]:.3g}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the sweep on each scene and seed; the last line is one JSON object."""
    recipe = load_recipe()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", action="append", choices=sorted(recipe.SCENES), default=None)
    p.add_argument("--data", type=Path, default=recipe.DEFAULT_DATA)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--pretrained-path", default=None, help="start from this saved model")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: the shared data folder is missing", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.simplefilter("ignore")
    model = {"pretrained_path": args.pretrained_path} if args.pretrained_path else {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="geounet-lr-sweep-") as tmp:
        for name in args.scene or ["oam_zanzibar", "oam_kampala"]:
            results[name] = sweep(recipe, name, args.data, Path(tmp) / name, args.seeds, **model)
    print(json.dumps({"scenes": results, "pretrained_path": args.pretrained_path}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
