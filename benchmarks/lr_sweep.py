"""What ``fit()``'s learning-rate sweep picks on the real scenes' training parts.

``fit()`` with no ``lr`` runs a short sweep (:meth:`UnetClassifier.lr_find`, 16 steps) and
trains at its suggestion. This script prepares each scene's training part as
``benchmarks/recipe.py`` does, runs ``fit(1, seed=N)`` (the sweep, then one epoch) and prints
what the sweep saw: the suggestion, whether it was the fallback of a sweep that never
diverged, the steepest and lowest points, and the smoothed losses.

``--raw`` runs a sweep of the same 16 learning rates, seeded as ``fit(seed=)`` seeds its
sweep, but keeps each step's own loss (no smoothing, no stop), then reads those losses as
the sweep would with each smoothing of :data:`SMOOTHINGS`
(:func:`~geounet.model.schedule.smooth_losses`, then
:func:`~geounet.model.schedule.suggest_lr` with the cap of a pretrained encoder and without
one): would a heavier smoothing let 16 steps see where training diverges?

Usage::

    python benchmarks/lr_sweep.py --scene oam_zanzibar --scene oam_kampala --seeds 1 2 3
    python benchmarks/lr_sweep.py --scene oam_zanzibar --pretrained-path MODEL_DIR
    python benchmarks/lr_sweep.py --raw --scene inria_austin --scene dubai_multiclass

The last line is one JSON object. Needs ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ensemble import load_recipe  # the recipe's scenes, loaded as ensemble.py loads them


def sweep(
    recipe: Any,
    name: str,
    data_root: Path,
    out: Path,
    seeds: list[int],
    raw: bool = False,
    **model: Any,
) -> list[dict[str, Any]]:
    """Each seed's record on one scene's training part, prepared as ``recipe.py`` does.

    ``fit()``'s own sweep (:func:`fit_record`), or with ``raw`` every step's loss and its
    readings (:func:`raw_record`).
    """
    from geounet import prepare_data

    scene = recipe.SCENES[name](data_root, out)
    images, labels, _ = recipe.training_inputs(scene, out, False)
    data = prepare_data(images, labels, classes=scene.classes, allow_no_crs=scene.allow_no_crs)
    record = raw_record if raw else fit_record
    return [record(recipe.make_model(data, **model)[0], data, name, seed) for seed in seeds]


def fit_record(clf: Any, data: Any, name: str, seed: int) -> dict[str, Any]:
    """What ``fit(seed=)``'s own sweep saw and suggested (then one epoch)."""
    clf.fit(1, seed=seed, progress=False)
    r = clf.lr_find_result
    row = {
        "seed": seed,
        "suggestion": r.suggestion,
        "fallback": bool(r.extra.get("fallback")),
        "steepest": r.steepest,
        "minimum": r.minimum,
        "divergence": r.extra.get("divergence"),
        "lrs": [float(f"{x:.3g}") for x in r.lrs],
        "losses": [round(float(x), 3) for x in r.losses],
    }
    print(
        f"{name} seed {seed}: suggestion {r.suggestion:.3g}"
        f"{' (fallback: no divergence seen)' if row['fallback'] else ''}, steepest "
        f"{r.steepest:.3g}, lowest at {r.minimum:.3g}; smoothed loss "
        f"{row['losses'][0]} -> {row['losses'][-1]} at LR {r.lrs[-1]:.3g}",
        flush=True,
    )
    return row


#: The smoothings ``--raw`` reads the losses with: ``fit()``'s, and heavier ones.
SMOOTHINGS = (0.05, 0.1, 0.25, 0.5)


def read_raw(lrs: list[float], raw: list[float]) -> dict[str, Any]:
    """What the sweep would suggest from these raw losses with each of :data:`SMOOTHINGS`.

    Keys ``"S/pretrained"`` (capped at ``FINE_TUNE_LR_CAP``) and ``"S/scratch"``; each gives
    the suggestion, whether it is the fallback of a sweep that saw no divergence, and the
    steepest and lowest points of the smoothed curve.
    """
    from geounet.model.schedule import FINE_TUNE_LR_CAP, smooth_losses, suggest_lr

    readings: dict[str, Any] = {}
    for smoothing in SMOOTHINGS:
        losses = smooth_losses(raw, smoothing)
        for start, cap in (("pretrained", FINE_TUNE_LR_CAP), ("scratch", None)):
            r = suggest_lr(lrs[: len(losses)], losses, cap=cap)
            readings[f"{smoothing}/{start}"] = {
                "suggestion": r.suggestion,
                "fallback": bool(r.extra.get("fallback")),
                "steepest": r.steepest,
                "minimum": r.minimum,
            }
    return readings


def raw_record(clf: Any, data: Any, name: str, seed: int) -> dict[str, Any]:
    """``fit()``'s 16-step sweep with every step's loss as it came, and its readings.

    Seeded as ``fit(seed=)`` seeds its sweep; no smoothing and no stop, then read with each
    smoothing by :func:`read_raw`.
    """
    from geounet.model.training import reseed_loader, seed_everything

    seed_everything(seed)
    reseed_loader(data.train_dl, seed)
    r = clf._trainer.lr_find(
        data.train_dl, start_lr=1e-5, num_iter=16, smoothing=1.0, diverge=math.inf,
        progress=False,
    )  # fmt: skip
    readings = read_raw(r.lrs, r.losses)
    lowest = r.lrs[min(range(len(r.losses)), key=r.losses.__getitem__)]
    picks = ", ".join(
        f"{k} {v['suggestion']:.3g}{' (fallback)' if v['fallback'] else ''}"
        for k, v in readings.items()
    )
    print(f"{name} seed {seed}: lowest raw loss at LR {lowest:.3g}; {picks}", flush=True)
    return {
        "seed": seed,
        "lrs": [float(f"{x:.3g}") for x in r.lrs],
        "raw": [round(float(x), 3) for x in r.losses],
        "readings": readings,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sweep on each scene and seed; the last line is one JSON object."""
    recipe = load_recipe()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", action="append", choices=sorted(recipe.SCENES), default=None)
    p.add_argument("--data", type=Path, default=recipe.DEFAULT_DATA)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--pretrained-path", default=None, help="start from this saved model")
    p.add_argument("--raw", action="store_true", help="raw losses, read with each smoothing")
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
            out = Path(tmp) / name
            results[name] = sweep(recipe, name, args.data, out, args.seeds, args.raw, **model)
    print(json.dumps({"scenes": results, "pretrained_path": args.pretrained_path, "raw": args.raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
