"""Scale-out on Dask distributed: many scenes, or one huge scene in row bands, on a cluster.

:func:`classify_many` runs on any Dask cluster (a :class:`distributed.Client`, a scheduler
address, or a local cluster it starts), with the same result as one machine:

- **many scenes**: one task per scene; a worker classifies its scene into a temporary file and
  returns the bytes, which the driver writes to ``<out_dir>/<scene stem>_classified.tif``;
- **one huge scene**: row bands; a worker classifies the rows ``[a, b)`` with
  :func:`~geounet.inference.classify.classify_rows` (which reads the halo of context above and
  below the band, so the rows are those of a whole-scene run) and returns finished ``uint8``
  class rows, which the driver writes in order into one GeoTIFF
  (:func:`~geounet.inference.classify.class_writer`). Bands are submitted as the writer
  consumes them (at most two per worker thread in flight), so memory stays bounded.

Either way the class probabilities are written beside each output by default
(``<scene stem>_classified_probabilities.tif``, named in its tag, as one machine writes them),
so that ``vectorize`` of each output drops the buildings the network was never sure of.

The model folder's two files are scattered to every worker once (no shared file system is
needed); each worker process loads the model once (:func:`worker_model`, keyed by the files'
hash) and keeps it for every later task. A task lost with its worker is recomputed elsewhere by
Dask; a task that raises is retried ``retries`` times. Scenes are read where they lie: local
paths (on a shared file system), COG URLs, ``s3://``/``gs://``/``az://`` or STAC Items.

Example:
    Not run as a doctest: it starts a cluster and needs a model and scenes.

    >>> from distributed import Client                                     # doctest: +SKIP
    >>> with Client("tcp://scheduler:8786") as client:                     # doctest: +SKIP
    ...     classify_many("models/buildings", ["s3://bucket/a.tif", "s3://bucket/b.tif"],
    ...                   "classified/", client=client)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.errors import InputNotFoundError, InvalidParameterError, OutputExistsError
from geounet.core.types import IGNORE_INDEX, PathLike, check_choice, import_optional
from geounet.inference.classify import (
    class_writer,
    classify_rows,
    classify_with_options,
    probability_writer,
)
from geounet.inference.engines import ENGINE_FAMILIES
from geounet.inference.options import ClassifyOptions
from geounet.inference.streams import probs_to_uint8
from geounet.io.raster import open_raster
from geounet.io.remote import check_local_output, is_remote
from geounet.io.write import atomic_output
from geounet.model.files import CONFIG_FILE, WEIGHTS_FILE, read_config

__all__ = [
    "BAND_PIXELS",
    "SPLITS",
    "ModelPayload",
    "band_ranges",
    "check_scenes",
    "classify_many",
    "dask_client",
    "default_band_rows",
    "model_loads",
    "output_name",
    "worker_model",
]

#: How work is split: ``"scenes"`` (one task per scene), ``"bands"`` (row bands of each
#: scene), ``"auto"`` (bands for a single scene, scenes otherwise).
SPLITS = ("auto", "scenes", "bands")
#: Target pixels of a row band (its rows are a whole number of tile strides in between
#: :data:`MIN_BAND_STRIDES` and :data:`MAX_BAND_STRIDES`); see the scale study in
#: benchmarks/README.md for the trade-off between recomputed halo tiles and worker memory.
BAND_PIXELS = 64 * 2**20
MIN_BAND_STRIDES, MAX_BAND_STRIDES = 2, 16
_MODELS: dict[tuple[str, str | None], Any] = {}
_LOADS: list[int] = [0]
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelPayload:
    """A model folder's files as bytes, shipped to workers that share no file system.

    Attributes:
        digest: BLAKE2b hash of the files (the cache key on the workers).
        files: ``{file name: bytes}`` (``geounet.json`` and ``model.safetensors``).
        device: The device workers run on (None: CUDA when the worker has one).
    """

    digest: str
    files: dict[str, bytes] = field(repr=False)
    device: str | None = None

    @classmethod
    def from_folder(cls, folder: PathLike, device: str | None = None) -> ModelPayload:
        """Read a model folder (validated with :func:`~geounet.model.files.read_config`)."""
        read_config(folder)  # a clear ModelFileError for a folder that is not a model
        base = Path(folder)
        base = base.parent if base.is_file() else base
        files = {}
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (base / name).is_file():
                raise InputNotFoundError(
                    f"{base}: the model folder has no {name}; give the folder written by "
                    "UnetClassifier.save()."
                )
            files[name] = (base / name).read_bytes()
        h = hashlib.blake2b(digest_size=12)
        for name, data in files.items():
            h.update(name.encode() + b"\0" + data)
        return cls(h.hexdigest(), files, device)


def _materialize(payload: ModelPayload) -> Path:
    """The model folder of ``payload`` in this machine's temporary folder (written once)."""
    folder = Path(tempfile.gettempdir()) / "geounet-models" / payload.digest
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in payload.files.items():
        target = folder / name
        if not target.is_file() or target.stat().st_size != len(data):
            tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}"
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: another worker process may write it too
    return folder


def worker_model(payload: ModelPayload) -> Any:
    """The model of ``payload``, loaded once per process and kept (thread-safe).

    Args:
        payload: The model files.

    Returns:
        A :class:`~geounet.model.saved.SavedModel` on ``payload.device`` (torch is imported
        only when the PyTorch network runs: not with a cached ONNX Runtime / OpenVINO engine).
    """
    key = (payload.digest, payload.device)
    with _LOCK:
        if key not in _MODELS:
            from geounet.model.saved import SavedModel

            folder = _materialize(payload)
            _MODELS[key] = SavedModel.open(folder, device=payload.device)
            _LOADS[0] += 1
        return _MODELS[key]


def model_loads() -> int:
    """How many times this process loaded a model through :func:`worker_model`."""
    return _LOADS[0]


def _scene_task(
    payload: ModelPayload, scene: PathLike, options: ClassifyOptions, name: str
) -> tuple[bytes, bytes | None]:
    """Classify one scene on a worker; the bytes of the class raster (and its probabilities).

    The files are written under their final names (``name``, and the probabilities beside it
    when ``options.probabilities`` is True), so the class raster's tag names its probabilities
    as the driver lays them side by side.
    """
    model = worker_model(payload)
    with tempfile.TemporaryDirectory(prefix="geounet-scene-") as tmp:
        out = Path(tmp) / name
        opts = options.for_output(out)
        classify_with_options(model, scene, out, opts)
        probs = Path(opts.probabilities).read_bytes() if opts.probabilities else None
        return out.read_bytes(), probs


def _band_task(
    payload: ModelPayload, scene: PathLike, rows: tuple[int, int], options: ClassifyOptions
) -> tuple[np.ndarray, np.ndarray | None]:
    """Classify the rows ``[a, b)`` of a scene on a worker.

    Returns ``uint8 (b - a, W)`` classes and, when ``options.probabilities`` is set, the
    probabilities as written, ``uint8 (K, b - a, W)`` (else None).
    """
    model = worker_model(payload)
    classes, probs = classify_rows(model, scene, rows[0], rows[1], options)
    return classes, (probs_to_uint8(probs) if options.probabilities else None)


def default_band_rows(width: int, height: int, options: ClassifyOptions, threads: int = 1) -> int:
    """Rows of a band: about :data:`BAND_PIXELS` pixels, a whole number of tile strides.

    Each band recomputes about one row of tiles shared with its neighbour (the halo), so
    bands of ``k`` strides cost about ``1/k`` extra; memory on a worker grows with the band
    (``rows x width x (4 K + 1)`` bytes for ``K`` classes). Bands are made smaller (down to
    :data:`MIN_BAND_STRIDES` strides) until every worker thread gets one.

    Example:
        >>> default_band_rows(60000, 60000, ClassifyOptions())   # 2 strides of 448 rows
        896
        >>> default_band_rows(4000, 4000, ClassifyOptions(), threads=8)  # 8 bands of 1 stride
        896
    """
    stride = max(1, options.tile_size - options.overlap)
    k = min(BAND_PIXELS // max(1, width) // stride, -(-height // (threads * stride)))
    k = min(MAX_BAND_STRIDES, max(MIN_BAND_STRIDES, k))
    return max(1, min(height, k * stride))


def band_ranges(height: int, band_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of ``band_rows`` rows covering ``height`` rows, in order.

    Example:
        >>> band_ranges(10, 4)
        [(0, 4), (4, 8), (8, 10)]
    """
    if band_rows < 1:
        raise InvalidParameterError(f"band_rows={band_rows} is not allowed; use 1 or more.")
    return [(a, min(height, a + band_rows)) for a in range(0, height, band_rows)]


def output_name(scene: PathLike) -> str:
    """``<scene stem>_classified.tif`` for a path, a URL or a STAC Item.

    Example:
        >>> output_name("https://host/items/S2A_31UDQ.json?sig=x")
        'S2A_31UDQ_classified.tif'
    """
    name = os.fspath(scene).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem + "_classified.tif"


@contextlib.contextmanager
def dask_client(
    client: Any = None, scheduler: str | None = None, workers: int | None = None
) -> Iterator[Any]:
    """A Dask client: ``client`` itself, one connected to ``scheduler``, or a local cluster.

    Args:
        client: An existing :class:`distributed.Client` (used as is, not closed).
        scheduler: Address of a running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
        workers: Worker processes of the local cluster started otherwise (one thread each;
            default: the number of CPU cores).

    Yields:
        The client.

    Raises:
        DependencyNotFoundError: Dask distributed is not installed (``pip install
            "geounet[dask]"``).
    """
    if client is not None:
        yield client
        return
    distributed = import_optional("distributed", "dask", package="dask[distributed]")
    if scheduler:
        with distributed.Client(scheduler) as connected:
            yield connected
        return
    n = workers or os.cpu_count() or 1
    with (
        distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as local,
    ):
        yield local


def check_scenes(
    scenes: Sequence[PathLike], out_dir: PathLike, options: ClassifyOptions
) -> list[tuple[PathLike, Path]]:
    """``(scene, output)`` pairs of :func:`classify_many`, every problem refused before any work.

    Raises:
        InvalidParameterError: No scene, a path for ``options.probabilities``, two scenes
            with the same output name, or a remote ``out_dir``.
        InputNotFoundError: A local scene that does not exist.
        OutputExistsError: An output or its probabilities exists (without ``overwrite``).
    """
    check_local_output(out_dir)
    folder = Path(out_dir)
    if not scenes:
        raise InvalidParameterError("classify_many got no scene; give one or more images.")
    if options.probabilities not in (None, True):
        raise InvalidParameterError(
            f"{options.probabilities}: probabilities= names one file, but classify_many "
            "writes one output per scene; leave it True (the probabilities beside each "
            "output) or make it False (none)."
        )
    pairs: list[tuple[PathLike, Path]] = []
    for scene in scenes:
        if not is_remote(scene):
            if not Path(scene).exists():
                raise InputNotFoundError(f"{scene}: no such file; check the path.")
            scene = Path(scene).resolve()  # workers may run in another folder
        out = folder / output_name(scene)
        if any(out == o for _, o in pairs):
            raise InvalidParameterError(
                f"{scene}: another scene has the same name, so both would be written to {out}; "
                "rename one of them or classify them into different folders."
            )
        for path in (out, options.for_output(out).probabilities):
            if path is not None and path.exists() and not options.overwrite:
                raise OutputExistsError(
                    f"{path}: output already exists; pass overwrite=True (--overwrite) to "
                    "replace it or choose another --out-dir."
                )
        pairs.append((scene, out))
    return pairs


def _bar(total: int, unit: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc="classify (dask)", disable=not progress)


@dataclass(frozen=True)
class _Job:
    """What every task of a run shares: the client, the shipped model and the options."""

    client: Any
    payload: Any  # the scattered ModelPayload (a future)
    config: Any
    options: ClassifyOptions
    retries: int


def _run_scenes(job: _Job, pairs: list[tuple[PathLike, Path]]) -> None:
    """One task per scene; each result is written as soon as it arrives."""
    distributed = import_optional("distributed", "dask", package="dask[distributed]")
    opts = job.options
    task_opts = replace(opts, progress=False, overwrite=False)
    submit = job.client.submit
    futures = {
        submit(
            _scene_task, job.payload, scene, task_opts, out.name, retries=job.retries, pure=False
        ): out
        for scene, out in pairs
    }
    with _bar(len(futures), "scene", opts.progress) as bar:
        for fut in distributed.as_completed(futures):
            out = futures[fut]
            data, probs = fut.result()
            prob_path = opts.for_output(out).probabilities
            if probs is not None and prob_path is not None:  # first, as one run writes them
                with atomic_output(prob_path, overwrite=opts.overwrite) as tmp:
                    tmp.write_bytes(probs)
            with atomic_output(out, overwrite=opts.overwrite) as tmp:
                tmp.write_bytes(data)
            fut.release()
            bar.update(1)


def _band_engine(options: ClassifyOptions) -> tuple[ClassifyOptions, str]:
    """Options for band tasks, with one named engine for every band, and its variant name.

    ``"auto"`` decides per process by timing, so bands could end up on different engines;
    bands run PyTorch float32 unless an engine is named.
    """
    engine = "torch" if options.engine == "auto" else options.engine
    return replace(options, engine=engine, progress=False), ENGINE_FAMILIES.get(engine, engine)


def _run_bands(job: _Job, scene: PathLike, out: Path, band_rows: int | None) -> None:
    """Row bands of one scene; the driver writes each band's rows in order as it arrives."""
    client, opts = job.client, job.options.for_output(out)
    info = open_raster(scene, allow_no_crs=opts.allow_no_crs, asset=opts.asset)
    threads = max(1, sum(client.nthreads().values()))
    rows = band_rows or default_band_rows(info.width, info.height, opts, threads)
    ranges = band_ranges(info.height, rows)
    task_opts, engine = _band_engine(opts)
    in_flight = 2 * threads
    todo = iter(ranges)
    pending: deque[tuple[tuple[int, int], Any]] = deque()

    def submit() -> None:
        rows = next(todo, None)
        if rows is not None:
            args = (_band_task, job.payload, scene, rows, task_opts)
            pending.append((rows, client.submit(*args, retries=job.retries, pure=False)))

    for _ in range(in_flight):
        submit()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(class_writer(out, info, job.config, opts, engine))
        prob_writer = None
        if opts.probabilities is not None:
            prob_writer = stack.enter_context(
                probability_writer(opts.probabilities, info, job.config, opts)
            )
        bar = stack.enter_context(_bar(len(ranges), "band", opts.progress))
        while pending:
            (a, _), fut = pending.popleft()
            classes, probs = fut.result()
            writer.write(classes, row=a, col=0)
            if prob_writer is not None and probs is not None:
                prob_writer.write(probs, row=a, col=0, valid=classes != IGNORE_INDEX)
            fut.release()
            bar.update(1)
            submit()


def _payload(model: Any, device: str | None) -> ModelPayload:
    """The model's files: read from its folder, or saved from a loaded model first."""
    if isinstance(model, (str, os.PathLike)):
        return ModelPayload.from_folder(model, device)
    with tempfile.TemporaryDirectory(prefix="geounet-model-") as tmp:
        folder = model.save(Path(tmp) / "model")
        return ModelPayload.from_folder(folder, device)


def classify_many(
    model: Any,
    scenes: Sequence[PathLike],
    out_dir: PathLike,
    client: Any = None,
    *,
    options: ClassifyOptions | None = None,
    split: str = "auto",
    band_rows: int | None = None,
    retries: int = 2,
    device: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Classify many scenes, or one huge scene in row bands, on a Dask cluster.

    The outputs are identical to :func:`~geounet.inference.classify.classify_raster` with the
    same model and options. Row bands of one scene all run one engine: the one
    ``options.engine`` names, PyTorch for ``"auto"`` (which decides per process by timing);
    whole scenes run ``"auto"`` as on one machine, decided once per worker.

    Args:
        model: A model folder, or a loaded model with ``save`` (a ``UnetClassifier``).
        scenes: Paths, COG URLs, ``s3://``/``gs://``/``az://`` URIs or STAC Items
            (``options.asset``). Local paths must be readable by the workers (shared file
            system or a local cluster).
        out_dir: Local folder of the outputs, ``<scene stem>_classified.tif`` each.
        client: A :class:`distributed.Client`; default: connect to ``scheduler`` or start a
            local cluster of ``workers`` single-threaded worker processes.
        options: How to classify (``probabilities``: True, the default, writes each
            output's probabilities beside it, ``<stem>_classified_probabilities.tif``;
            False none; a path is refused: one file per scene).
        split: ``"auto"`` (bands for one scene, one task per scene otherwise), ``"scenes"``
            or ``"bands"``.
        band_rows: Rows per band (default: :func:`default_band_rows`).
        retries: Retries of a task that raises (a task lost with its worker is recomputed
            by Dask anyway).
        device: Device of the workers (default: CUDA when a worker has one).
        scheduler: Scheduler address used when ``client`` is None.
        workers: Local cluster size used when neither ``client`` nor ``scheduler`` is given.

    Returns:
        The output paths, in the order of ``scenes``.

    Raises:
        InvalidParameterError: No scene, two scenes with the same name, ``probabilities``,
            a remote ``out_dir`` or an unknown ``split``.
        OutputExistsError: An output exists and ``options.overwrite`` is False.
        DependencyNotFoundError: Dask distributed is not installed.
    """
    opts = options or ClassifyOptions()
    check_choice("split", split, SPLITS)
    pairs = check_scenes(scenes, out_dir, opts)
    out = Path(out_dir)
    payload = _payload(model, device)
    config = read_config(_materialize(payload))
    out.mkdir(parents=True, exist_ok=True)
    with dask_client(client, scheduler, workers) as c:
        job = _Job(c, c.scatter(payload, broadcast=True, hash=False), config, opts, retries)
        if split == "bands" or (split == "auto" and len(pairs) == 1):
            for scene, target in pairs:
                _run_bands(job, scene, target, band_rows)
        else:
            _run_scenes(job, pairs)
    return [target for _, target in pairs]
