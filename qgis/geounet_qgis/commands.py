"""The geounet command lines behind each Processing algorithm (no QGIS import: tested alone)."""

from __future__ import annotations

TTA_CHOICES = ("none", "flips", "dihedral", "rot180")  # indices of saved models stay
DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when present, else the CPU
#: ``geounet classify --engine`` (auto: the fastest installed engine that agrees with PyTorch
#: float32, measured once per model); the same names as ``geounet.core.types.ENGINE_CHOICES``
ENGINES = (
    "auto",
    "torch",
    "onnx",
    "openvino",
    "torch-fp32",
    "torch-bf16",
    "onnx-fp32",
    "onnx-int8",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-int8",
)
BACKBONES = ("efficientnet-lite0", "resnet34", "unet-classic")


def classify_args(
    image: str,
    model: str,
    out: str,
    *,
    tile_size: int = 512,
    overlap: int = 64,
    tta: str = "none",
    probabilities: str | None = None,
    vector: str | None = None,
    device: str = "auto",
    nodata: float | None = None,
    allow_no_crs: bool = False,
    engine: str = "auto",
    bands: list[int] | None = None,
) -> list[str]:
    """``geounet classify`` (optionally with ``--vector``), overwriting what QGIS confirmed.

    ``device``: one of :data:`DEVICES`; ``nodata``: the image's nodata value where the file
    declares none (a black border); ``allow_no_crs``: accept an image without a CRS;
    ``engine``: one of :data:`ENGINES`; ``bands``: the image's bands the model reads, in the
    model's order (None or empty: by name, else by position).
    """
    args = ["classify", image, "--out", out, "--tile-size", str(tile_size)]
    args += ["--overlap", str(overlap), "--overwrite"]
    if model:
        args += ["--model", model]
    if tta and tta != "none":
        args += ["--tta", tta]
    if device and device != "auto":
        args += ["--device", device]
    if nodata is not None:
        args += ["--nodata", repr(float(nodata))]
    if allow_no_crs:
        args += ["--allow-no-crs"]
    if engine and engine != "auto":
        args += ["--engine", engine]
    if bands:
        args += ["--bands", ",".join(str(int(b)) for b in bands)]
    if probabilities:
        args += ["--probabilities", probabilities]
    if vector:
        args += ["--vector", vector]
    return args


def vectorize_args(classified: str, out: str, *, min_area_m2: float | None = None) -> list[str]:
    """``geounet vectorize``: one layer per class in ``out``."""
    args = ["vectorize", classified, "--out", out, "--overwrite"]
    if min_area_m2 is not None:
        args += ["--min-area", str(min_area_m2)]
    return args


def train_args(
    image: str,
    labels: str,
    out: str,
    *,
    label_field: str | None = None,
    classes: str | None = None,
    backbone: str = "efficientnet-lite0",
    epochs: int | None = None,
    lr: float | None = None,
    chip_size: int = 256,
    label_area: str | None = None,
    refit_on_all: bool = False,
    start_from: str | None = None,
) -> list[str]:
    """``geounet train IMAGE --labels LABELS``: the model folder ``out``.

    ``label_area``: a polygon file outlining the labelled part of the image (the rest is
    not taught as background). ``refit_on_all``: train again on every label, validation
    strip included, for the epochs validation picked (``--refit-on-all``). ``start_from``:
    a model folder to fine-tune (``--from``).
    """
    args = ["train", image, "--labels", labels, "--out", out, "--backbone", backbone]
    args += ["--chip-size", str(chip_size), "--overwrite"]
    if backbone == "unet-classic":
        args += ["--weights", "none"]
    if label_field:
        args += ["--label-field", label_field]
    if classes:
        args += ["--classes", classes]
    if epochs:
        args += ["--epochs", str(epochs)]
    if lr:
        args += ["--lr", str(lr)]
    if label_area:
        args += ["--label-area", label_area]
    if refit_on_all:
        args += ["--refit-on-all"]
    if start_from:
        args += ["--from", start_from]
    return args


def evaluate_args(
    pred: str,
    truth: str,
    json_out: str,
    *,
    report: str | None = None,
    objects: str | None = None,
) -> list[str]:
    """``geounet evaluate PRED --truth TRUTH --json OUT`` (and ``--report``, ``--objects``)."""
    args = ["evaluate", pred, "--truth", truth, "--json", json_out, "--overwrite"]
    if report:
        args += ["--report", report]
    if objects:
        args += ["--objects", objects]
    return args


def flatten_metrics(metrics: dict, prefix: str = "") -> list[tuple[str, float | str]]:
    """``[(dotted.key, value)]`` for every number or string in a nested metrics dict."""
    rows: list[tuple[str, float | str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten_metrics(value, name + ".")
        elif isinstance(value, bool):
            rows.append((name, str(value)))
        elif isinstance(value, (int, float)):
            rows.append((name, float(value)))
        elif isinstance(value, str):
            rows.append((name, value))
    return rows
