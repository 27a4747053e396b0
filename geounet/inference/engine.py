"""The tile loop of tiled inference and the one function that calls the network.

:func:`run_network` is the only place the network runs (test-time augmentation around an
:class:`~geounet.inference.engines.Engine`: PyTorch eager, ONNX Runtime or OpenVINO);
:func:`select_engine` picks that engine for a job (``ClassifyOptions.engine``, ``"auto"``
measuring the installed ones once, see :mod:`geounet.inference.engine_choice`).
:func:`run_tiles` reads tiles in a reader thread, runs them in batches, blends them into a
:class:`geounet.inference.blending.RowAccumulator` and hands finished rows to a sink.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from geounet.core.errors import InvalidParameterError, ModelFileError
from geounet.core.types import TTA_MODES, TTAMode, check_choice
from geounet.data.normalize import normalize_valid
from geounet.inference.blending import RowAccumulator, TilePlan
from geounet.inference.engine_choice import AUTO_SAMPLE_TILES, choose_engine, release_engine
from geounet.inference.engines import Engine, TorchEngine, run_engine
from geounet.inference.options import ClassifyOptions
from geounet.inference.streams import Drain, Prefetch, Sink

__all__ = [
    "TileStream",
    "job_engine",
    "prepare_network",
    "run_network",
    "run_tiles",
    "select_engine",
]


# ----------------------------------------------------------------------------- network

#: The axes each flip of a TTA mode made of flips reverses (``()``: the tile itself).
_FLIP_DIMS: dict[str, list[tuple[int, ...]]] = {
    "rot180": [(), (-2, -1)],  # a half turn is both flips
    "flips": [(), (-1,), (-2,), (-2, -1)],
}


def _tta_ops(tta: TTAMode | None) -> list[tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """``(forward, inverse)`` pairs of numpy image transforms acting on the last two axes."""
    if tta is None:
        return [(lambda t: t, lambda t: t)]
    check_choice("tta", tta, TTA_MODES)
    if tta in _FLIP_DIMS:
        return [
            (lambda t, d=d: np.flip(t, d) if d else t, lambda t, d=d: np.flip(t, d) if d else t)
            for d in _FLIP_DIMS[tta]
        ]
    ops = []
    for k in range(4):
        ops.append(
            (
                lambda t, k=k: np.rot90(t, k, (-2, -1)),
                lambda t, k=k: np.rot90(t, -k, (-2, -1)),
            )
        )
        ops.append(
            (
                lambda t, k=k: np.rot90(np.swapaxes(t, -2, -1), k, (-2, -1)),
                lambda t, k=k: np.swapaxes(np.rot90(t, -k, (-2, -1)), -2, -1),
            )
        )
    return ops


def run_network(
    model: Any, batch: np.ndarray, tta: TTAMode | None = None, engine: Engine | None = None
) -> np.ndarray:
    """Class probabilities of a batch of normalised tiles: the one place the network runs.

    The ``engine`` runs it (default: PyTorch eager in channels-last layout on the model's
    device, with CUDA mixed precision on a GPU; see :mod:`geounet.inference.engines`), one tile
    per call on a CPU (:func:`~geounet.inference.engines.run_engine`);
    test-time augmentation averages the probabilities of the tile and its half turn (2), its
    flipped (4) or dihedral (8) versions after transforming them back.

    Args:
        model: Object with ``network`` and ``device``.
        batch: ``float32 [B, C, h, w]`` normalised tiles.
        tta: None, ``"rot180"``, ``"flips"`` or ``"dihedral"``.
        engine: The engine (:func:`select_engine`); default a
            :class:`~geounet.inference.engines.TorchEngine` of ``model``.

    Returns:
        ``float32 [B, K, h, w]`` softmax probabilities.
    """
    engine = engine or TorchEngine(model)
    if tta is None:  # no sum of versions: the engine's own array, not two more copies
        return run_engine(engine, np.ascontiguousarray(batch, dtype=np.float32))
    ops = _tta_ops(tta)
    versions = (
        inverse(run_engine(engine, np.ascontiguousarray(forward(batch), dtype=np.float32)))
        for forward, inverse in ops
    )
    total = sum(versions, np.zeros((), np.float32))
    return np.ascontiguousarray(total / len(ops), dtype=np.float32)


def prepare_network(model: Any) -> None:
    """Evaluation mode and channels-last weights, once per call.

    A network not loaded yet (``model.unloaded_weights``: a model folder read lazily) is left
    alone: its loader gives it prepared when an engine first uses it (a cached ONNX Runtime or
    OpenVINO engine never does).
    """
    if getattr(model, "unloaded_weights", None) is not None:
        return
    import torch

    model.network.eval()
    model.network.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- engine


@dataclass
class _Batch:
    tiles: list[tuple[int, int]]
    valid: list[np.ndarray]
    has_data: list[bool]
    x: np.ndarray


def _batches(
    open_source: Callable[[], Any],
    plan: TilePlan,
    tiles: Sequence[tuple[int, int]],
    batch_size: int,
    stats: dict[str, list[float]],
) -> Iterator[_Batch]:
    """Read, mirror-pad and normalise tiles, ``batch_size`` at a time (in the reader thread).

    Each read says where the next row of tiles starts, so a file source can let go of the
    decoded blocks above it.
    """
    planned = set(tiles)
    with open_source() as source:
        for k in range(0, len(tiles), batch_size):
            chunk = list(tiles[k : k + batch_size])
            valids, has, raw = [], [], []
            for i, j in chunk:
                region = plan.region(i, j)
                below = plan.region(i + 1, j).row if (i + 1, j) in planned else plan.height
                data, valid = source.read(
                    region.row, region.col, plan.tile_h, plan.tile_w, next_row=below
                )
                valids.append(valid)
                has.append(bool(valid.any()))
                if has[-1]:
                    raw.append((data, valid))
            n_bands = raw[0][0].shape[0] if raw else 0
            x = np.empty((len(raw), n_bands, plan.tile_h, plan.tile_w), np.float32)
            for slot, (data, valid) in zip(x, raw):
                # nodata at the training mean, as the training loader feeds it
                normalize_valid(data, stats, valid, out=slot)
            yield _Batch(chunk, valids, has, x)


def _strip_jobs(
    plan: TilePlan, tile_rows: range, strips_ok: bool
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """The column strips, and the ``(tile row, tile column, strip)`` to run in order.

    Strip by strip (one strip of the whole width unless ``strips_ok``), row by row.
    """
    strips = plan.column_strips() if strips_ok else [(0, plan.width)]
    jobs = [
        (i, j, s)
        for s, (a, b) in enumerate(strips)
        for i in tile_rows
        for j in plan.tile_cols_for(a, b)
    ]
    return strips, jobs


class TileStream:
    """The tiles of a job, read ahead in the reader thread from the moment it is entered.

    Entered before the engine is loaded and the outputs are opened, the first batch is read
    while they are (:func:`run_tiles` takes the stream as ``tiles``); otherwise
    :func:`run_tiles` makes its own.

    Args:
        model: Object with ``config`` (the normalisation statistics).
        plan: The tile grid.
        tile_rows: Consecutive tile rows to run.
        open_source: As for :func:`run_tiles`.
        opts: The options (batch size).
        column_strips: The tiles strip by strip, for a sink whose ``column_strips`` is true
            (see :func:`run_tiles`); else row by row over the whole width.
    """

    def __init__(
        self,
        model: Any,
        plan: TilePlan,
        tile_rows: range,
        open_source: Callable[[], Any],
        opts: ClassifyOptions,
        column_strips: bool,
    ) -> None:
        self.tile_rows, self.column_strips = tile_rows, column_strips
        self.strips, self.jobs = _strip_jobs(plan, tile_rows, column_strips)
        tiles = [(i, j) for i, j, _ in self.jobs]
        stats = model.config.stats
        self._prefetch = Prefetch(
            lambda: _batches(open_source, plan, tiles, opts.batch_size, stats)
        )
        self.batches: Iterator[_Batch] | None = None

    def __enter__(self) -> TileStream:
        if self.jobs:
            self.batches = self._prefetch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.batches is not None:
            self._prefetch.__exit__(*exc)


def run_tiles(
    model: Any,
    plan: TilePlan,
    tile_rows: range,
    open_source: Callable[[], Any],
    sink: Sink,
    opts: ClassifyOptions,
    runner: Callable[..., np.ndarray] | None = None,
    engine: Engine | None = None,
    tiles: TileStream | None = None,
) -> None:
    """Run the tile rows ``tile_rows`` of ``plan`` and pass finished rows to ``sink``.

    A sink with a true ``column_strips`` attribute takes the rows of a raster wider than
    :data:`~geounet.inference.blending.STRIP_COLUMNS` strip by strip (each strip from its top
    row down, ``put(..., col=a)``), so the blended band is never wider than a strip; any
    other sink gets whole rows.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        plan: The tile grid.
        tile_rows: Consecutive tile rows to run (all of them for a whole raster).
        open_source: Returns a context manager giving an object with ``read(row, col, h, w)``;
            it is called in the reader thread.
        sink: Receives the finished rows.
        opts: The options (tiling, batch size, test-time augmentation, progress bar).
        runner: The network call (default :func:`run_network`), called as
            ``runner(model, batch, tta, engine)``.
        engine: The engine (:func:`select_engine`; default PyTorch on the model's device).
        tiles: The job's tiles already being read (an entered :class:`TileStream` of the
            same tile rows and strip order as ``sink`` takes), or None to read them here.

    Raises:
        InvalidParameterError: ``tiles`` is not entered, or its tile rows or strip order are
            not the job's.
    """
    runner = runner or run_network
    strips_ok = bool(getattr(sink, "column_strips", False))
    with contextlib.ExitStack() as stack:
        if tiles is None:
            tiles = stack.enter_context(
                TileStream(model, plan, tile_rows, open_source, opts, strips_ok)
            )
        elif tiles.tile_rows != tile_rows or tiles.column_strips != strips_ok:
            raise InvalidParameterError(
                f"run_tiles: the tiles read ahead cover tile rows {tiles.tile_rows} "
                f"{'strip by strip' if tiles.column_strips else 'row by row'}, but the job "
                f"runs {tile_rows} {'strip by strip' if strips_ok else 'row by row'}; make the "
                "TileStream with the job's tile rows and its sink's column_strips."
            )
        if not tiles.jobs:
            return
        if tiles.batches is None:
            raise InvalidParameterError(
                "run_tiles: the TileStream given is not entered; use it in a with-block."
            )
        _run_batches(model, plan, tile_rows, sink, opts, runner, engine, tiles, tiles.batches)


def _run_batches(
    model: Any,
    plan: TilePlan,
    tile_rows: range,
    sink: Sink,
    opts: ClassifyOptions,
    runner: Callable[..., np.ndarray],
    engine: Engine | None,
    tiles: TileStream,
    batches: Iterator[_Batch],
) -> None:
    """The network over the stream's batches; blending and writing in the writer thread."""
    n_classes = model.config.n_classes
    blend = _Blend(model, plan, tile_rows, sink, tiles.strips, tiles.jobs)
    bar = tqdm(total=len(tiles.jobs), unit="tile", desc="classify", disable=not opts.progress)
    # depth 1: the writer is much faster than the network, and each waiting item holds
    # a batch of probabilities (8 MB for 4 tiles of 512² and 2 classes)
    with bar, Drain(blend, depth=1) as drain:
        for batch in batches:
            probs = runner(model, batch.x, opts.tta, engine) if len(batch.x) else None
            if probs is not None and probs.shape[1] != n_classes:
                raise ModelFileError(
                    f"the network gives {probs.shape[1]} class scores per pixel but the model "
                    f"file lists {n_classes} classes ({model.config.class_names}); "
                    "the model's weights and its geounet.json do not belong together."
                )
            drain.put((batch.valid, batch.has_data, probs))  # not the input batch: memory
            bar.update(len(batch.tiles))


class _Blend:
    """Blends each batch into the band of its column strip and passes finished rows on.

    Called in the writer thread (:class:`~geounet.inference.streams.Drain`) with
    ``(validity masks, has-data flags, probabilities)`` of each batch, in tile order.
    """

    def __init__(
        self,
        model: Any,
        plan: TilePlan,
        tile_rows: range,
        sink: Sink,
        strips: list[tuple[int, int]],
        jobs: list[tuple[int, int, int]],
    ) -> None:
        self.model, self.plan, self.sink, self.strips, self.jobs = model, plan, sink, strips, jobs
        self.row0 = plan.span(tile_rows[0])[0]
        self.last_col = {s: plan.tile_cols_for(a, b)[-1] for s, (a, b) in enumerate(strips)}
        self.acc, self.strip, self.n = self._band(0), 0, 0

    def _band(self, s: int) -> RowAccumulator:
        a, b = self.strips[s]
        return RowAccumulator(
            self.model.config.n_classes,
            b - a,
            self.plan.tile_h,
            row0=self.row0,
            decision_weights=getattr(self.model.config, "decision_weights", None),
            col0=a,
        )

    def __call__(self, item: tuple[list[np.ndarray], list[bool], np.ndarray | None]) -> None:
        """Add one batch's tiles; hand the rows each finished tile row completes to the sink."""
        valids, has_data, probs = item
        plan, k = self.plan, 0
        for valid, has in zip(valids, has_data):
            i, j, s = self.jobs[self.n]
            self.n += 1
            if s != self.strip:
                self.acc, self.strip = self._band(s), s
            p = None
            if has and probs is not None:
                p, k = probs[k], k + 1
            self.acc.add(plan.region(i, j), p, valid, plan.weights, plan.height)
            if j == self.last_col[s]:
                popped = self.acc.pop(plan.finished_row(i), probs=self.sink.wants_probs)
                if popped is not None:
                    start, classes, prob, ok = popped
                    self.sink.put(start, classes, prob, ok, col=self.acc.col0)


def select_engine(
    model: Any,
    plan: TilePlan,
    tile_rows: range,
    open_source: Callable[[], Any],
    opts: ClassifyOptions,
) -> Engine:
    """The engine of a job: ``opts.engine``, measured on the job's first tiles for ``"auto"``.

    Args:
        model: Object with ``network``, ``config``, ``device`` (and optionally ``model_dir``,
            where the engine cache goes); the network is prepared (:func:`prepare_network`).
        plan: The tile grid.
        tile_rows: The job's tile rows; its first tiles with data are the sample ``auto``
            measures on (and int8 calibrates on).
        open_source: As for :func:`run_tiles` (read here only when a sample is needed).
        opts: The options (``engine``, ``batch_size``).

    Returns:
        The engine (see :func:`geounet.inference.engine_choice.choose_engine`).
    """
    tiles = [(i, j) for i in tile_rows for j in range(len(plan.col_starts))]

    def sample() -> np.ndarray:
        n = max(1, min(opts.batch_size, AUTO_SAMPLE_TILES))
        found: list[np.ndarray] = []
        with contextlib.closing(_batches(open_source, plan, tiles, n, model.config.stats)) as it:
            for batch in it:
                found.extend(batch.x[: n - len(found)])
                if len(found) >= n:
                    break
        shape = (0, model.config.in_channels, plan.tile_h, plan.tile_w)
        return np.stack(found) if found else np.zeros(shape, np.float32)

    shape = (model.config.in_channels, plan.tile_h, plan.tile_w)
    return choose_engine(model, opts.engine, shape, sample, len(tiles))


@contextlib.contextmanager
def job_engine(
    model: Any,
    plan: TilePlan,
    tile_rows: range,
    open_source: Callable[[], Any],
    opts: ClassifyOptions,
) -> Iterator[Engine]:
    """:func:`select_engine` for one job; after it succeeds the engine is kept for the next.

    The engine goes back to :func:`geounet.inference.engine_choice.release_engine`'s idle
    pool, so the next job of the same network and tile shape in this process does not load
    it again. A job that fails lets its engine go.
    """
    engine = select_engine(model, plan, tile_rows, open_source, opts)
    yield engine
    release_engine(engine)
