"""Build the network from a config; save and load model folders (geounet.json + safetensors).

A model folder holds ``model.safetensors`` (weights) and ``geounet.json`` (everything needed to
rebuild the network and to use it on a new scene: architecture, bands, classes, normalisation
statistics, chip size, ground sample distance, metrics). Nothing is ever unpickled: a ``.pth``,
``.pt`` or ``.pkl`` file, or any file that starts like a pickle, is refused with
:class:`~geounet.core.errors.ModelFileError`, because unpickling a file can run arbitrary code.

Example:
    Not run as a doctest: it needs a saved model folder.

    >>> net, config = load_model("models/buildings")            # doctest: +SKIP
    >>> save_model("models/copy", net, config)                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from geounet.core.classes import ClassSpec, classes_from_json, classes_to_json
from geounet.core.errors import ModelFileError
from geounet.core.types import PathLike
from geounet.io.raster import atomic_output

if TYPE_CHECKING:  # torch loads only when a network is built (keeps `geounet info` fast)
    from collections.abc import Mapping

    import numpy as np
    from torch import nn

__all__ = [
    "CONFIG_FILE",
    "SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "ModelConfig",
    "build_network",
    "check_meta",
    "check_not_pickle",
    "is_model_folder",
    "load_model",
    "load_network",
    "read_config",
    "reset_head",
    "save_model",
    "weights_file",
]

SCHEMA_VERSION = 1
CONFIG_FILE = "geounet.json"
WEIGHTS_FILE = "model.safetensors"
#: Keys every geounet.json must have.
REQUIRED_KEYS = (
    "schema_version",
    "arch",
    "backbone",
    "in_channels",
    "classes",
    "bands",
    "band_names",
    "stats",
    "chip_size",
)
PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".bin")
#: Largest safetensors header accepted (the limit the safetensors library enforces).
MAX_HEADER_BYTES = 100_000_000
_CONVERT = (
    "Convert it once, in a session where you trust the file: "
    "net.load_state_dict(torch.load(path, weights_only=True)), then "
    "geounet.model.files.save_model(folder, net, config) (or UnetClassifier.save), which writes "
    "model.safetensors + geounet.json."
)


@dataclass
class ModelConfig:
    """Everything about a model except its weights.

    Attributes:
        arch: ``"unet"`` (segmentation-models-pytorch U-Net) or ``"unet-classic"`` (2015 paper).
        backbone: smp encoder name (``"resnet34"``, ``"timm-tf_efficientnet_lite0"``...) or None.
        in_channels: Number of input bands.
        classes: Class list in index order (index 0 = background).
        bands: 1-based source band indices the model reads, in order.
        band_names: A name per band.
        stats: Normalisation statistics ``{"mean", "std", "p2", "p98"}`` (lists per band).
        chip_size: Training chip size in pixels.
        gsd_m: Ground sample distance of the training data in metres (None if unknown).
        source_dtype: Data type of the training imagery (``"uint8"``, ``"uint16"``...).
        source_band_count: Number of bands of the training images, alpha included, which
            ``bands`` index into (None in model files written before it was recorded).
        source_alpha_band: 1-based alpha band of the training images, or None.
        unet_kwargs: Extra keyword arguments given to the network constructor.
        encoder_weights: What the encoder was initialised from before training
            (``"imagenet"``, a file name, or None); informative only, loading never downloads.
        metrics: Validation metrics at save time.
        history: Per-epoch training history records.
        object_sizes: Area distribution of the training labels' objects per class,
            ``{name: {"count", "p5_m2", ...}}`` (see :mod:`geounet.vectorizing.sizes`); the
            default ``min_area_m2`` of vectorizing this model's output. The building class
            also has ``split_objects`` and ``split_share``, the share of its area that the
            watershed split would cut: whether ``vectorize`` splits touching buildings by
            default. Empty in files written before sizes were recorded; no split share in
            files written before it was.
        decision_weights: Per class, the weight its probability gets when a pixel's class is
            decided (the class of highest ``probability x weight``), calibrated on the
            validation chips after training (:mod:`geounet.evaluation.decision`); None (files
            written before it was recorded, or no validation chips): the most probable class.
    """

    arch: str
    backbone: str | None
    in_channels: int
    classes: list[ClassSpec]
    bands: list[int]
    band_names: list[str]
    stats: dict[str, list[float]]
    chip_size: int
    gsd_m: float | None = None
    source_dtype: str | None = None
    source_band_count: int | None = None
    source_alpha_band: int | None = None
    unet_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder_weights: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    object_sizes: dict[str, dict[str, float]] = field(default_factory=dict)
    decision_weights: list[float] | None = None

    @property
    def n_classes(self) -> int:
        """Number of output classes (background included)."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (classes as ``{value, name, color}`` dicts)."""
        d = asdict(self)
        d["classes"] = classes_to_json(self.classes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_json` (unknown keys are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        kw["classes"] = classes_from_json(d["classes"])
        return cls(**kw)


def build_network(config: ModelConfig, encoder_weights: str | PathLike | None = None) -> nn.Module:
    """Build the (untrained) network a config describes.

    Args:
        config: The model configuration (``arch``, ``backbone``, ``in_channels``, classes and
            ``unet_kwargs`` are used).
        encoder_weights: ``"imagenet"``, None (no download, random init) or a local file;
            see :func:`geounet.model.backbones.build_unet`.

    Returns:
        The network on the CPU.
    """
    from geounet.model.backbones import CLASSIC, build_unet

    backbone = None if config.arch == CLASSIC else config.backbone
    return build_unet(
        backbone,
        config.in_channels,
        config.n_classes,
        encoder_weights=encoder_weights,
        **config.unet_kwargs,
    )


def reset_head(network: nn.Module, n_classes: int) -> None:
    """Replace the last 1×1 convolution by a freshly initialised one with ``n_classes`` outputs.

    Used to fine-tune a saved model on data with other classes.

    Raises:
        ModelFileError: The network has no recognisable segmentation head.
    """
    from torch import nn

    holder, key = _head_slot(network)
    old = holder[key] if isinstance(key, int) else getattr(holder, key)
    new = nn.Conv2d(old.in_channels, n_classes, old.kernel_size, padding=old.padding)
    new = new.to(old.weight.device)
    if isinstance(key, int):
        holder[key] = new
    else:
        setattr(holder, key, new)


def _head_slot(network: nn.Module) -> tuple[Any, str | int]:
    """(container, key) of the final convolution of a geounet network."""
    from torch import nn

    seg = getattr(network, "segmentation_head", None)
    if seg is not None and isinstance(seg[0], nn.Conv2d):
        return seg, 0
    if isinstance(getattr(network, "head", None), nn.Conv2d):
        return network, "head"
    raise ModelFileError(f"{type(network).__name__}: no segmentation head to re-initialise.")


def save_model(
    folder: PathLike,
    network: nn.Module,
    config: ModelConfig,
    *,
    overwrite: bool = False,
    samples: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``folder`` with ``model.safetensors`` and ``geounet.json``, atomically.

    Args:
        folder: The model folder to create.
        network: The trained network (any device, any memory format).
        config: Its configuration.
        overwrite: Replace an existing folder.
        samples: Normalised chips kept for choosing engines
            (:mod:`geounet.model.samples`), written as ``engine_samples.safetensors``.

    Returns:
        The folder path.

    Raises:
        OutputExistsError: ``folder`` exists and ``overwrite`` is False.
    """
    from safetensors.torch import save_file

    from geounet.core.version import __version__

    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()
    }
    meta = {
        "schema_version": SCHEMA_VERSION,
        "geounet_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **config.to_json(),
    }
    text = json.dumps(meta, indent=2, default=_json_default)
    with atomic_output(folder, overwrite=overwrite, replaceable=is_model_folder) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
        if samples:
            from geounet.model.samples import write_samples

            write_samples(tmp, samples)
    return Path(folder)


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a geounet model (its ``geounet.json``): one a save may replace."""
    return (folder / CONFIG_FILE).is_file()


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars/arrays and paths found in metrics or history."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _has_safetensors_header(f: BinaryIO, size: int) -> bool:
    """True if ``f`` starts with a safetensors header.

    That is an 8-byte little-endian length ``n`` (at most the rest of the file and
    :data:`MAX_HEADER_BYTES`), then ``n`` bytes of a JSON object. Reads at most ``8 + n`` bytes
    from the start of ``f``, and only 9 unless the ninth is ``{``; nothing is unpickled.
    """
    f.seek(0)
    head = f.read(9)
    if len(head) < 9 or head[8:] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= min(size - 8, MAX_HEADER_BYTES):
        return False
    try:
        header = json.loads((b"{" + f.read(n - 1)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(header, dict)


def _is_pickle(path: Path) -> bool:
    """True for pickle-like files: known suffixes, pickle magic or a torch zip archive.

    A file with a valid safetensors header is never taken for a pickle: the first bytes of its
    header length may be ``0x80, 0x00..0x05``, which is also how a pickle starts.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            if _has_safetensors_header(f, path.stat().st_size):
                return False
            f.seek(0)
            head = f.read(4)
    except OSError:
        return False
    return (len(head) >= 2 and head[0] == 0x80 and head[1] <= 5) or head == b"PK\x03\x04"


def check_not_pickle(path: PathLike) -> None:
    """Refuse pickle files (and folders holding only pickles) with a clear error.

    The file is never given to an unpickler; only its name and first bytes are looked at.

    Raises:
        ModelFileError: ``path`` is, or only contains, pickle-based files.
    """
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file()]
        if files and not (p / CONFIG_FILE).exists() and all(_is_pickle(f) for f in files):
            names = ", ".join(sorted(f.name for f in files)[:5])
            raise ModelFileError(
                f"{p}: holds only pickle-based files ({names}), which geounet never loads "
                f"because unpickling can run arbitrary code. {_CONVERT}"
            )
        return
    if p.is_file() and _is_pickle(p):
        raise ModelFileError(
            f"{p}: is a pickle-based file (.pth/.pt/.pkl); geounet never loads pickles because "
            f"unpickling can run arbitrary code. A geounet model is a folder with "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}. {_CONVERT}"
        )


def _model_folder(path: PathLike) -> Path:
    """The model folder for ``path`` (the folder, its geounet.json or its weights file)."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(
            f"{p}: no such model. A geounet model is a folder with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (written by UnetClassifier.save)."
        )
    check_not_pickle(p)
    if p.is_file() and p.name in (CONFIG_FILE, WEIGHTS_FILE):
        p = p.parent
    if not p.is_dir() or not (p / CONFIG_FILE).is_file():
        raise ModelFileError(
            f"{p}: not a geounet model folder (no {CONFIG_FILE}); pass the folder written by "
            "UnetClassifier.save()."
        )
    return p


def read_config(folder: PathLike) -> ModelConfig:
    """Read and validate ``geounet.json`` of a model folder (the weights are not read).

    Raises:
        ModelFileError: Missing file, bad JSON, missing keys or an unknown schema version.
    """
    path = _model_folder(folder) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not readable JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: expected a JSON object.")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelFileError(
            f"{path}: missing keys {missing}; this is not a complete geounet model file. "
            "Save the model again with UnetClassifier.save()."
        )
    version = meta["schema_version"]
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ModelFileError(
            f"{path}: schema_version {version!r} is not supported by this geounet (it reads "
            f"versions 1 to {SCHEMA_VERSION}); upgrade geounet (pip install -U geounet)."
        )
    check_meta(path, meta)
    try:
        return ModelConfig.from_json(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid model description ({exc}); {_RESAVE}") from exc


_RESAVE = (
    "the file is damaged or was edited by hand: restore the model folder from where it came, "
    "or save the model again with UnetClassifier.save()."
)


def _is_int(v: Any, low: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v
    )


def _meta_problems(meta: dict[str, Any]) -> list[str]:
    """What is wrong with the types and ranges of a geounet.json (empty when it is sound)."""
    n = meta["in_channels"]
    if not _is_int(n):
        return [f"in_channels {n!r} is not an integer >= 1"]
    bad = []
    if not isinstance(meta["arch"], str):
        bad.append(f"arch {meta['arch']!r} is not a string")
    if meta["backbone"] is not None and not isinstance(meta["backbone"], str):
        bad.append(f"backbone {meta['backbone']!r} is not a string or null")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        bad.append("classes is not a list of at least 2 classes (background first)")
    elif not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in classes):
        bad.append("classes holds an entry that is not {value, name, color}")
    bands = meta["bands"]
    if not (isinstance(bands, list) and len(bands) == n and all(_is_int(b) for b in bands)):
        bad.append(f"bands {bands!r} is not {n} band numbers >= 1 (one per in_channels)")
    names = meta["band_names"]
    if not (isinstance(names, list) and all(isinstance(b, str) for b in names)):
        bad.append("band_names is not a list of strings")
    bad += _stats_problems(meta["stats"], n)
    if not _is_int(meta["chip_size"]):
        bad.append(f"chip_size {meta['chip_size']!r} is not an integer >= 1")
    gsd = meta.get("gsd_m")
    if gsd is not None and not (_numbers([gsd]) and gsd > 0):
        bad.append(f"gsd_m {gsd!r} is not a positive number or null")
    if not isinstance(meta.get("unet_kwargs", {}), dict):
        bad.append("unet_kwargs is not an object")
    weights = meta.get("decision_weights")
    if weights is not None and not (
        _numbers(weights)
        and len(weights) == (len(classes) if isinstance(classes, list) else -1)
        and min(weights) > 0
    ):
        bad.append(f"decision_weights {weights!r} is not null or a positive number per class")
    return bad


def _stats_problems(stats: Any, n: int) -> list[str]:
    if not isinstance(stats, dict):
        return [f"stats {stats!r} is not an object of per-band lists"]
    bad = []
    for key in ("mean", "std"):
        if key not in stats:
            bad.append(f"stats has no {key!r}")
    for key, values in stats.items():
        if not (_numbers(values) and len(values) == n):
            bad.append(f"stats[{key!r}] is not {n} finite numbers (one per in_channels)")
        elif key == "std" and min(values) <= 0:
            bad.append(f"stats['std'] {values} has a value <= 0")
    return bad


def check_meta(path: PathLike, meta: dict[str, Any]) -> None:
    """Check the types and ranges of a geounet.json's fields before anything uses them.

    Args:
        path: The file (named in the message).
        meta: Its parsed JSON (with every key of :data:`REQUIRED_KEYS`).

    Raises:
        ModelFileError: A field has the wrong type or an out-of-range value; the message lists
            every such field.
    """
    bad = _meta_problems(meta)
    if bad:
        raise ModelFileError(f"{path}: invalid model description: {'; '.join(bad)}; {_RESAVE}")


def weights_file(folder: PathLike) -> Path:
    """The weights file of a model folder, checked (exists, no pickle, readable safetensors).

    Only the safetensors header and the file's length are checked; the tensors are read when
    the network is built.

    Raises:
        ModelFileError: No such model folder, no weights file, a pickle, or a truncated or
            foreign file.
    """
    from safetensors import SafetensorError, safe_open

    weights = _model_folder(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; the model folder is incomplete.")
    check_not_pickle(weights)
    try:
        with safe_open(str(weights), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(weights, exc) from exc
    return weights


def _unreadable(weights: PathLike, exc: BaseException) -> ModelFileError:
    return ModelFileError(f"{weights}: not a readable safetensors file ({exc}); {_RESAVE}")


def load_network(config: ModelConfig, weights: PathLike) -> nn.Module:
    """Build the network ``config`` describes and load ``weights`` (safetensors) strictly.

    Returns:
        The network, on the CPU, in evaluation mode.

    Raises:
        ModelFileError: An unreadable file, or weights that do not fit the network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(weights, exc) from exc
    network = build_network(config, encoder_weights=None)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(
            f"{weights}: the weights do not fit the network described in {CONFIG_FILE} "
            f"({first} ...)."
        ) from exc
    return network.eval()


def load_model(folder: PathLike) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a saved model without any download and load its weights strictly.

    Args:
        folder: A model folder (or its ``geounet.json`` / ``model.safetensors``).

    Returns:
        ``(network, config)``; the network is on the CPU, in evaluation mode.

    Raises:
        ModelFileError: Missing/invalid files, a pickle, or weights that do not fit.
    """
    config = read_config(folder)
    return load_network(config, weights_file(folder)), config
