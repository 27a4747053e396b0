"""Which engine runs a model: built on request, or measured once and cached (``engine="auto"``).

``engine="auto"`` runs every installed candidate (:func:`candidates`) on a few tiles of the scene,
keeps those whose class map agrees with PyTorch float32 on at least :data:`AGREEMENT_MIN` of the
pixels, there and on the validation chips kept with the model (:mod:`geounet.model.samples`),
and picks the fastest. The exported ONNX network, its int8 copy and the decision are
cached in a folder keyed by the weights' hash, the tile shape, the device and the versions of
the engines (:func:`cache_folder`): ``<model folder>/.engines/<key>/`` when the model came from a
writable folder, else the user cache (``$XDG_CACHE_HOME/geounet/engines``). A later run with the
same key reuses the decision and the artefacts; an artefact or decision that cannot be read is
rebuilt. The int8 engine is calibrated on the training chips kept with the model; a model
without them (saved before they were kept, or never trained here) is calibrated on the scene's
first tiles (the first run's scene) and checked on those only.

Example:
    >>> variant("onnx"), variant("onnx-int8")
    ('onnx-fp32', 'onnx-int8')
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geounet.core.errors import GeounetError
from geounet.core.types import check_choice, import_optional
from geounet.inference.engines import (
    ENGINE_CHOICES,
    ENGINE_FAMILIES,
    Engine,
    OnnxEngine,
    OpenVinoEngine,
    TorchEngine,
    cpu_has_bf16,
    device_type,
    openvino_has_bf16,
    run_engine,
)
from geounet.model.digest import file_digest, state_digest
from geounet.model.samples import model_samples, mosaic

if TYPE_CHECKING:  # torch is imported only where a PyTorch network is used
    import torch

__all__ = [
    "AGREEMENT_MIN",
    "AUTO_MIN_MEGAPIXELS",
    "AUTO_SAMPLE_TILES",
    "ENGINE_FORMAT",
    "ENGINE_TAG",
    "agreement",
    "cache_folder",
    "candidates",
    "choose_engine",
    "clear_idle_engines",
    "make_engine",
    "measure",
    "release_engine",
    "variant",
    "weights_digest",
]

log = logging.getLogger(__name__)

#: Version of the cached artefacts and decision; bumping it invalidates every cache.
ENGINE_FORMAT = 1
#: An engine is accepted when its class map agrees with PyTorch float32 on this share of pixels.
AGREEMENT_MIN = 0.995
#: ``auto`` measures engines only for runs of at least this many megapixels of tiles (64 tiles of
#: 512 x 512, about a 4000 x 4000 scene) or with a cached decision; smaller runs use PyTorch
#: float32, since measuring (and exporting) would cost more than it saves.
AUTO_MIN_MEGAPIXELS = 16.0
#: Tiles of the scene ``auto`` measures on (and the int8 engine is calibrated on).
AUTO_SAMPLE_TILES = 4
#: The output raster tag naming the engine that ran.
ENGINE_TAG = "GEOUNET_ENGINE"
DECISION_FILE = "decision.json"
ONNX_FILE = "network.onnx"
INT8_FILE = "network-int8.onnx"
#: OpenVINO's cache of compiled networks (its ``CACHE_DIR``), in the engine cache folder.
OPENVINO_CACHE = "openvino"
#: Built ONNX Runtime / OpenVINO engines kept, idle, for the next job of the same network,
#: tile shape and engine in this process (:func:`release_engine`). Loading one again costs
#: 0.06 s on the calling thread and 0.2-0.35 s of CPU in all (OpenVINO int8 ResNet34 U-Net
#: from its compiled cache, 2 cores), which many small jobs (row bands, ArcGIS blocks, a loop
#: over scenes) would pay each time, and which competes with the first tiles of a scene.
IDLE_ENGINES = 2
#: ``(variant, cache folder) -> engine``, least recently released first; an engine is taken
#: out while a job uses it, so two jobs never share one (an engine is not thread-safe).
_IDLE: OrderedDict[tuple[str, str], Engine] = OrderedDict()
_IDLE_LOCK = threading.Lock()
#: The pool key of each engine built by :func:`make_engine` (torch engines are not pooled).
_POOL_KEY: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def variant(choice: str) -> str:
    """The engine variant a user's choice names (``"onnx"`` -> ``"onnx-fp32"``); not ``auto``."""
    check_choice("engine", choice, ENGINE_CHOICES)
    return ENGINE_FAMILIES.get(choice, choice)


#: ``network -> (version counters of its tensors, digest)``: a network is hashed again only when
#: a tensor of it changed in place (training) or was replaced; inference tensors, which have no
#: version counter, are hashed every time.
_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def weights_digest(network: torch.nn.Module) -> str:
    """A 16-hex-digit BLAKE2b hash of the network's state (names, dtypes, shapes, values).

    Remembered per network object until one of its tensors changes (torch's version counters),
    so that many small jobs (ArcGIS blocks, row bands) do not hash the weights each time.
    """
    state = network.state_dict()
    try:
        versions = tuple(t._version for t in state.values())
    except RuntimeError:  # inference tensors (made under inference_mode) have no counter
        versions = None
    known = _DIGESTS.get(network)
    if versions is not None:
        versions += tuple(t.data_ptr() for t in state.values())
        if known is not None and known[0] == versions:
            return known[1]
    digest = state_digest(state.items())
    if versions is not None:
        _DIGESTS[network] = (versions, digest)
    return digest


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions() -> dict[str, Any]:
    return dict(_installed_versions())


@cache  # installed packages do not change under a running process (0.01 s a call)
def _installed_versions() -> tuple[tuple[str, Any], ...]:
    names = ("torch", "onnx", "onnxscript", "onnxruntime", "openvino")
    return (("format", ENGINE_FORMAT), *((n, _version(n)) for n in names))


def _user_cache() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "geounet" / "engines"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return True
    except OSError:
        return False


def _cache_folders(model: Any, tile_shape: tuple[int, int]) -> list[Path]:
    """Where the cache of ``model`` for ``tile_shape`` may be, in order of preference."""
    versions = hashlib.blake2b(json.dumps(_versions()).encode(), digest_size=4).hexdigest()
    device = device_type(model)
    unloaded = getattr(model, "unloaded_weights", None)  # a model folder read lazily
    digest = file_digest(unloaded) if unloaded else weights_digest(model.network)
    key = f"{digest}-{tile_shape[0]}x{tile_shape[1]}-{device}-{versions}"
    roots = [_user_cache()]
    if getattr(model, "model_dir", None):
        roots.insert(0, Path(model.model_dir) / ".engines")
    return [root / key for root in roots]


def cache_folder(model: Any, tile_shape: tuple[int, int]) -> Path:
    """The cache folder of ``model``'s engines for tiles of ``tile_shape`` (created).

    Args:
        model: Object with ``network``, ``device`` and optionally ``model_dir`` (the folder it
            was loaded from).
        tile_shape: ``(height, width)`` of the tiles.

    Returns:
        ``<model_dir>/.engines/<key>`` when that is writable, else ``<user cache>/<key>`` (else
        a temporary folder); the key holds the weights' hash, the tile shape, the device type
        and a hash of the engines' versions.
    """
    folders = _cache_folders(model, tile_shape)
    for folder in folders:
        if _writable(folder):
            return folder
    return Path(tempfile.mkdtemp(prefix=f"geounet-engines-{folders[0].name}-"))


def _decided_folder(model: Any, tile_shape: tuple[int, int]) -> Path | None:
    """The first cache folder of ``model`` that holds a decision (none is created)."""
    folders = _cache_folders(model, tile_shape)
    return next((f for f in folders if (f / DECISION_FILE).is_file()), None)


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Run ``write(tmp)`` on a temporary path beside ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _load_or_build(
    path: Path, build: Callable[[Path], Any], load: Callable[[Path], Engine]
) -> Engine:
    """``load(path)``; when the file is missing or unreadable, ``build`` it first."""
    if path.exists():
        try:
            return load(path)
        except GeounetError:
            raise
        except Exception as exc:  # a truncated or foreign file: rebuild it
            log.info("engine cache %s is unreadable (%s); rebuilding it", path, exc)
    _atomic(path, build)
    return load(path)


def _export(model: Any, shape: tuple[int, int, int]) -> Callable[[Path], Any]:
    def build(tmp: Path) -> None:
        from geounet.model.onnx_export import cpu_copy, export_onnx

        log.info("exporting the network to ONNX (%d x %d tiles)", shape[1], shape[2])
        export_onnx(cpu_copy(model.network), tmp, shape, output_name="logits")

    return build


def _quantize(fp32: Path, sample: np.ndarray) -> Callable[[Path], Any]:
    def build(tmp: Path) -> None:
        q = import_optional("onnxruntime.quantization", extra="onnx", package="onnxruntime")
        name = OnnxEngine(fp32).input

        class Reader(q.CalibrationDataReader):  # one tile per calibration step
            def __init__(self) -> None:
                self.feeds = iter([{name: sample[i : i + 1]} for i in range(len(sample))])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.feeds, None)

        log.info("quantizing the network to int8 (calibrated on %d tiles)", len(sample))
        source = tmp.with_name(f"{tmp.stem}-pre.onnx")  # shapes inferred, graph optimised
        try:
            q.shape_inference.quant_pre_process(str(fp32), str(source))
        except Exception as exc:  # pre-processing only helps; quantize the export as it is
            log.debug("int8 pre-processing failed (%s); quantizing the export directly", exc)
            source.unlink(missing_ok=True)
        q.quantize_static(
            str(source if source.exists() else fp32),
            str(tmp),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
        )
        source.unlink(missing_ok=True)

    return build


def make_engine(
    name: str,
    model: Any,
    folder: Path,
    shape: tuple[int, int, int],
    sample: Callable[[], np.ndarray],
) -> Engine:
    """Build the engine ``name``, exporting (or reusing) its artefacts in ``folder``.

    Args:
        name: An engine variant (:data:`~geounet.inference.engines.ENGINE_NAMES`) or family.
        model: Object with ``network`` and ``device``.
        folder: The cache folder (:func:`cache_folder`).
        shape: ``(channels, height, width)`` of one tile.
        sample: Returns normalised tiles ``[N, C, h, w]`` (the int8 calibration set).

    Returns:
        The engine.

    Raises:
        DependencyNotFoundError: The engine's extra is not installed; the message names
            ``pip install "geounet[onnx]"`` or ``"geounet[openvino]"``.
    """
    name = variant(name)
    if name.startswith("torch"):
        return TorchEngine(model, bf16=name == "torch-bf16")
    key = (name, str(folder))
    with _IDLE_LOCK:
        idle = _IDLE.pop(key, None)
    if idle is not None:
        return idle
    engine = _build_engine(name, model, folder, shape, sample)
    _POOL_KEY[engine] = key
    return engine


def release_engine(engine: Engine) -> None:
    """Give an engine back after a job: the next job of the same kind takes it, not a new one.

    Engines :func:`make_engine` did not build (PyTorch ones: they wrap the model) are let go.
    At most :data:`IDLE_ENGINES` are kept; the least recently released goes first.
    """
    try:
        key = _POOL_KEY.get(engine)
    except TypeError:  # not weakly referable: not one make_engine built
        return
    if key is None:
        return
    with _IDLE_LOCK:
        _IDLE.pop(key, None)
        _IDLE[key] = engine
        while len(_IDLE) > IDLE_ENGINES:
            _IDLE.popitem(last=False)


def clear_idle_engines() -> None:
    """Let go of every idle engine (their memory; a later job loads its engine again)."""
    with _IDLE_LOCK:
        _IDLE.clear()


def _build_engine(
    name: str,
    model: Any,
    folder: Path,
    shape: tuple[int, int, int],
    sample: Callable[[], np.ndarray],
) -> Engine:
    """:func:`make_engine` of an ONNX Runtime or OpenVINO variant, loaded or built."""
    family = name.split("-")[0]
    import_optional(family if family == "openvino" else "onnxruntime", extra=family)
    onnx_path, export = folder / ONNX_FILE, _export(model, shape)
    if name == "onnx-fp32":
        return _load_or_build(onnx_path, export, OnnxEngine)
    compiled = folder / OPENVINO_CACHE
    if name.endswith("-int8"):

        def quantize(tmp: Path) -> None:  # only when the int8 copy is missing or unreadable
            _load_or_build(onnx_path, export, OnnxEngine)  # a readable float32 export
            _quantize(onnx_path, sample())(tmp)

        load: Callable[[Path], Engine] = (
            partial(OnnxEngine, name="onnx-int8")
            if name == "onnx-int8"
            else partial(OpenVinoEngine, cache_dir=compiled, int8=True)
        )
        return _load_or_build(folder / INT8_FILE, quantize, load)
    # no ONNX Runtime session here: it cost 0.1-0.3 s and 90-230 MiB for nothing
    bf16 = name == "openvino-bf16"
    return _load_or_build(onnx_path, export, lambda p: OpenVinoEngine(p, bf16, compiled))


def candidates(model: Any) -> list[str]:
    """The engine variants ``auto`` measures for ``model``: those installed and sensible here."""
    if device_type(model) != "cpu":
        return ["torch-fp32"]
    names = ["torch-fp32"] + (["torch-bf16"] if cpu_has_bf16() else [])
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        names += ["onnx-fp32", "onnx-int8"]
        if importlib.util.find_spec("openvino"):
            names += ["openvino-fp32"] + (["openvino-bf16"] if openvino_has_bf16() else [])
            names += ["openvino-int8"]
    return names


def agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    """Share of pixels whose most probable class is the same in ``probs`` and ``reference``."""
    return float(np.mean(probs.argmax(1) == reference.argmax(1)))


def measure(engine: Engine, sample: np.ndarray, repeats: int = 2) -> tuple[float, np.ndarray]:
    """Throughput of ``engine`` on ``sample`` (Mpx/s, best of ``repeats`` after a warm-up).

    Returns:
        ``(megapixels per second, probabilities of the sample)``.
    """
    probs = run_engine(engine, sample)  # warm-up: lazy initialisation, caches
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run_engine(engine, sample)
        best = min(best, time.perf_counter() - t)
    pixels = sample.shape[0] * sample.shape[2] * sample.shape[3]
    return pixels / 1e6 / max(best, 1e-9), probs


def _kept_tiles(model: Any, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The model's kept chips laid into tiles of ``shape`` (``calibration``, ``validation``)."""
    return {k: mosaic(v, shape[1], shape[2]) for k, v in model_samples(model).items()}


def _calibration(
    model: Any, shape: tuple[int, int, int], sample: Callable[[], np.ndarray]
) -> Callable[[], np.ndarray]:
    """The int8 calibration tiles, read when called: the kept training chips, else the scene's."""

    def tiles() -> np.ndarray:
        kept = _kept_tiles(model, shape).get("calibration")
        return sample() if kept is None else kept

    return tiles


def _measure_candidates(
    model: Any, folder: Path, shape: tuple[int, int, int], sample: np.ndarray
) -> tuple[Engine, dict[str, Any]]:
    """Run every candidate on ``sample``; the fastest agreeing one and the decision record.

    A candidate must agree with the first (PyTorch float32) on the scene's tiles and on the
    validation chips kept with the model, when there are some. Only the fastest accepted
    engine so far is kept alive: the others are let go as soon as they are measured, so the
    first run holds two engines at most, not every candidate.
    """
    rows: list[dict[str, Any]] = []
    kept: tuple[float, Engine] | None = None  # the fastest accepted engine so far
    reference: np.ndarray | None = None
    chips = _kept_tiles(model, shape)
    validation, checked = chips.get("validation"), None
    calibrate = (lambda: chips["calibration"]) if "calibration" in chips else (lambda: sample)
    for name in candidates(model):
        row: dict[str, Any] = {"engine": name}
        onnx_failed = next(
            (r["error"] for r in rows if r["engine"] == "onnx-fp32" and "error" in r), None
        )
        if onnx_failed and not name.startswith("torch"):  # needs the export that failed
            rows.append({**row, "error": onnx_failed, "accepted": False})
            continue
        try:
            engine = make_engine(name, model, folder, shape, calibrate)
            row["mpx_s"], probs = measure(engine, sample)
            vprobs = None if validation is None else run_engine(engine, validation)
        except GeounetError:
            raise
        except Exception as exc:  # an engine that cannot run this network is left out
            row.update(error=f"{type(exc).__name__}: {exc}"[:300], accepted=False)
            rows.append(row)
            log.debug("engine %s failed: %s", name, row["error"])
            continue
        reference = probs if reference is None else reference  # torch-fp32 comes first
        row["agreement"] = agreement(probs, reference)
        agree = [row["agreement"]]
        if vprobs is not None:
            checked = vprobs if checked is None else checked
            row["validation_agreement"] = agreement(vprobs, checked)
            agree.append(row["validation_agreement"])
        row["accepted"] = min(agree) >= AGREEMENT_MIN
        if row["accepted"] and (kept is None or row["mpx_s"] > kept[0]):
            kept = (row["mpx_s"], engine)
        del engine  # a slower or refused engine is freed now
        rows.append(row)
        log.debug("engine %s: %.3f Mpx/s, agreement %s", name, row["mpx_s"], agree)
    if kept is None:  # not even the reference ran
        errors = "; ".join(f"{r['engine']}: {r.get('error')}" for r in rows)
        raise RuntimeError(f"no inference engine could run the network ({errors})")
    decision = {
        "engine": kept[1].name,
        "versions": _versions(),
        "tile": list(shape),
        "sample_tiles": len(sample),
        "validation_tiles": 0 if validation is None else len(validation),
        "int8_calibration": "kept training chips" if "calibration" in chips else "scene tiles",
        "candidates": rows,
    }
    return kept[1], decision


def _read_decision(folder: Path) -> str | None:
    """The engine a cached decision names, or None when there is none or it is unreadable."""
    path = folder / DECISION_FILE
    try:
        decision = json.loads(path.read_text())
        name = decision["engine"]
        check_choice("engine", name, ENGINE_CHOICES)
        return str(name) if decision.get("versions") == _versions() else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, GeounetError) as exc:
        log.info("engine decision %s is unreadable (%s); measuring again", path, exc)
        return None


def _auto(
    model: Any, shape: tuple[int, int, int], sample: Callable[[], np.ndarray], n_tiles: int
) -> Engine:
    """The engine ``auto`` picks: the cached decision, else measured (large runs only)."""
    if device_type(model) != "cpu":
        return TorchEngine(model)
    folder = _decided_folder(model, shape[1:])
    cached = _read_decision(folder) if folder else None
    if folder and cached:
        try:
            calibrate = _calibration(model, shape, sample)
            engine = make_engine(cached, model, folder, shape, calibrate)
            log.info("engine: %s (auto, decision cached in %s)", engine.name, folder)
            return engine
        except GeounetError:
            raise
        except Exception as exc:
            log.info("cached engine %s does not load (%s); measuring again", cached, exc)
    megapixels = n_tiles * shape[1] * shape[2] / 1e6
    if megapixels < AUTO_MIN_MEGAPIXELS:
        log.info("engine: torch-fp32 (auto: %.1f Mpx of tiles, too few to measure)", megapixels)
        return TorchEngine(model)
    tiles = sample()
    if not len(tiles):
        return TorchEngine(model)
    folder = cache_folder(model, shape[1:])
    engine, decision = _measure_candidates(model, folder, shape, tiles)
    _atomic(folder / DECISION_FILE, lambda p: p.write_text(json.dumps(decision, indent=2)))
    best = next(r for r in decision["candidates"] if r["engine"] == engine.name)
    log.info(
        "engine: %s (auto: fastest agreeing of %d measured on %d tiles, %.2f Mpx/s, "
        "agreement %.4f; cached in %s)",
        engine.name,
        len(decision["candidates"]),
        len(tiles),
        best["mpx_s"],
        best["agreement"],
        folder,
    )
    return engine


def choose_engine(
    model: Any,
    choice: str,
    shape: tuple[int, int, int],
    sample: Callable[[], np.ndarray],
    n_tiles: int,
) -> Engine:
    """The engine that runs ``model`` for a job: the one asked for, or ``auto``'s pick.

    Args:
        model: Object with ``network``, ``device`` and optionally ``model_dir``; the network is
            prepared (eval mode, channels-last).
        choice: ``"auto"``, a family (``"torch"``, ``"onnx"``, ``"openvino"``: their float32
            variant) or a variant (e.g. ``"onnx-int8"``).
        shape: ``(channels, height, width)`` of one tile.
        sample: Returns a few normalised tiles of the scene ``[N, C, h, w]`` (called only when
            measuring, or calibrating a model without kept training chips).
        n_tiles: Tiles in the job (``auto`` measures only from :data:`AUTO_MIN_MEGAPIXELS` on).

    Returns:
        The engine; its ``name`` is logged and tagged in the output.

    Raises:
        InvalidParameterError: ``choice`` is not an engine.
        DependencyNotFoundError: An engine asked for by name is not installed.
    """
    check_choice("engine", choice, ENGINE_CHOICES)
    if choice == "auto":
        return _auto(model, shape, sample, n_tiles)
    if variant(choice).startswith("torch"):
        engine = make_engine(choice, model, Path(), shape, sample)
    else:
        folder = cache_folder(model, shape[1:])
        engine = make_engine(choice, model, folder, shape, _calibration(model, shape, sample))
    log.info("engine: %s (asked for)", engine.name)
    return engine
