"""Resumable classification (``resume=True``, ``geounet classify --resume``).

A long classification can be interrupted (Ctrl-C, a killed job, a reboot) and continued from
the last completed band of rows. The finished rows are kept, every :data:`BAND_ROWS` rows, as
plain ``.npy`` files in a hidden folder beside the output, ``.<name>.resume/`` (each written
atomically, so a band file is whole or absent), with ``key.json`` recording the input, the
model, the options and the engine. A run with ``resume=True`` reuses the bands already there
when the key matches, classifies the rest (the tiles around the restart row are run again,
so the rows are the same as in a run that was never interrupted) and finally writes the
output in one go, atomically, and removes the folder. The result is identical, byte for
byte, to that of an uninterrupted run.

Example:
    Not run as a doctest: it needs a trained model and a scene on disk.

    >>> model.classify("scene.tif", "classified.tif", resume=True)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from geounet.core.errors import InvalidParameterError
from geounet.core.types import ENGINE_CHOICES, IGNORE_INDEX, PathLike
from geounet.inference.engine import job_engine, prepare_network, run_tiles
from geounet.inference.options import ClassifyOptions
from geounet.inference.streams import probs_to_uint8
from geounet.io.write import atomic_output, output_lock

__all__ = ["BAND_ROWS", "classify_resumable", "resume_dir"]

#: Rows per saved band: the most work an interruption loses (and the rows held in memory).
BAND_ROWS = 512
KEY_FILE = "key.json"


def resume_dir(out_raster: PathLike) -> Path:
    """The folder keeping the finished bands of ``out_raster``: ``.<name>.resume`` beside it."""
    out = Path(out_raster)
    return out.with_name(f".{out.name}.resume")


def _band_file(folder: Path, k: int, what: str) -> Path:
    return folder / f"band_{k:06d}.{what}.npy"


class BandSink:
    """Receives finished rows from row ``start`` on; saves each band of :data:`BAND_ROWS` rows.

    Rows before ``start`` (the context the restart needs) are dropped.
    """

    def __init__(self, folder: Path, start: int, height: int, probs: bool) -> None:
        self.folder, self.next, self.height = folder, start, height
        self.wants_probs = probs
        self.column_strips = False  # bands of whole rows
        self._classes: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def put(
        self,
        row: int,
        classes: np.ndarray,
        probs: np.ndarray | None,
        valid: np.ndarray,
        col: int = 0,
    ) -> None:
        """Keep the rows from ``self.next`` on; save every band they complete (whole rows)."""
        skip = self.next + sum(len(c) for c in self._classes) - row
        if skip >= classes.shape[0]:
            return
        self._classes.append(classes[max(skip, 0) :])
        if self.wants_probs and probs is not None:
            self._probs.append(probs_to_uint8(probs[:, max(skip, 0) :]))
        while self._buffered() >= min(BAND_ROWS, self.height - self.next):
            self._save()
            if self.next >= self.height:
                break

    def _buffered(self) -> int:
        return sum(len(c) for c in self._classes)

    def _save(self) -> None:
        n = min(BAND_ROWS, self.height - self.next)
        classes = np.concatenate(self._classes, axis=0)
        k = self.next // BAND_ROWS
        _save_npy(_band_file(self.folder, k, "classes"), classes[:n])
        self._classes = [classes[n:]] if len(classes) > n else []
        if self.wants_probs:
            probs = np.concatenate(self._probs, axis=1)
            _save_npy(_band_file(self.folder, k, "probs"), probs[:, :n])
            self._probs = [probs[:, n:]] if probs.shape[1] > n else []
        self.next += n

    def close(self) -> None:
        """Save the last band when it is complete (it ends at the raster's last row)."""
        if self._classes and self.next + self._buffered() >= self.height:
            self._save()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, overwrite=True) as tmp, tmp.open("wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


#: The options that change the pixels a run writes: a resumed run must share them.
_KEYED_OPTIONS = (
    "tile_size",
    "overlap",
    "blend",
    "tta",
    "resample",
    "allow_no_crs",
    "nodata",
    "bands",
)


def _key(model: Any, info: Any, options: ClassifyOptions) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one."""
    digest = hashlib.sha256(json.dumps(model.config.to_json(), default=str).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = Path(str(info.path))
    stat = path.stat() if path.exists() else None
    return {
        "input": str(info.path),
        "input_size": [info.width, info.height],
        "input_mtime_ns": stat.st_mtime_ns if stat else None,
        "model": digest.hexdigest(),
        "options": {f: str(getattr(options, f)) for f in _KEYED_OPTIONS},
        "probabilities": options.probabilities is not None,
        "band_rows": BAND_ROWS,
    }


def _bands_done(folder: Path, height: int, probs: bool) -> int:
    """Rows covered by the consecutive complete band files from the top."""
    k = 0
    while _band_file(folder, k, "classes").is_file() and (
        not probs or _band_file(folder, k, "probs").is_file()
    ):
        k += 1
    return min(k * BAND_ROWS, height)


def _start(folder: Path, key: dict[str, Any], options: ClassifyOptions) -> ClassifyOptions:
    """Check (or create) the folder's key; the options with the engine the run used."""
    path = folder / KEY_FILE
    if not path.is_file():
        shutil.rmtree(folder, ignore_errors=True)  # bands without a key are not trusted
        return options
    saved = json.loads(path.read_text())
    engine = saved.pop("engine", None)
    if saved != key:
        diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
        raise InvalidParameterError(
            f"{folder}: holds an interrupted classification of another input, model or "
            f"options ({', '.join(diff)} differ); resume with the same ones, or delete the "
            "folder (or run without --resume) to start again."
        )
    if engine in ENGINE_CHOICES:
        return dataclasses.replace(options, engine=engine)
    return options


def classify_resumable(
    model: Any, in_raster: PathLike, out_raster: PathLike, options: ClassifyOptions, steps: Any
) -> Path:
    """:func:`~geounet.inference.classify.classify_with_options`, resumable by row bands.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        in_raster: Input image with the model's bands.
        out_raster: Output class raster.
        options: As for ``classify_with_options`` (``options.resume`` is True).
        steps: The steps of :mod:`geounet.inference.classify` this reuses (``check_outputs``,
            ``open_input``, ``gdal_cache``, ``plan``, ``opener``, ``grid_sink``,
            ``open_writers``), passed in so that this module does not import that one.

    Returns:
        The output path.

    Raises:
        InvalidParameterError: The saved bands belong to another input, model or options.
        OutputLockedError: Another run is classifying into the same output.
    """
    outs = steps.check_outputs(Path(out_raster), options)
    info, bands, grid = steps.open_input(model, in_raster, options)
    prepare_network(model)
    folder = resume_dir(outs[0])
    with output_lock(folder), contextlib.ExitStack() as stack:
        stack.enter_context(steps.gdal_cache())
        plan, opener = steps.plan(grid, options), steps.opener(info, bands, grid)
        key = _key(model, info, options)
        opts = _start(folder, key, options)
        probs = options.probabilities is not None
        done = _bands_done(folder, info.height, probs)
        start = (
            int(grid.index_maps(info.width, info.height)[0][done])
            if (grid.resampled and done < info.height)
            else done
        )
        rows = plan.tile_rows_for(start, grid.height)
        engine = stack.enter_context(job_engine(model, plan, rows, opener, opts))
        if not (folder / KEY_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_output(folder / KEY_FILE, overwrite=True) as tmp:
                tmp.write_text(json.dumps({**key, "engine": engine.name}))
        if done < info.height:
            sink = steps.grid_sink(
                stack, BandSink(folder, done, info.height, probs), info, bands, grid, done
            )
            run_tiles(model, plan, rows, opener, sink, opts, engine=engine)
            sink.close()
        _assemble(folder, outs, info, model.config, opts, engine.name, steps.open_writers)
    shutil.rmtree(folder, ignore_errors=True)
    return outs[0]


def _assemble(
    folder: Path,
    outs: list[Path],
    info: Any,
    config: Any,
    options: ClassifyOptions,
    engine: str,
    open_writers: Any,
) -> None:
    """Write the output(s) from the band files, atomically."""
    with contextlib.ExitStack() as stack:
        sink = open_writers(stack, outs, info, config, options, engine)
        for k in range((info.height + BAND_ROWS - 1) // BAND_ROWS):
            row = k * BAND_ROWS
            classes = np.load(_band_file(folder, k, "classes"), allow_pickle=False)
            sink.writer.write(classes, row, 0)
            if sink.prob_writer is not None:
                probs = np.load(_band_file(folder, k, "probs"), allow_pickle=False)
                sink.prob_writer.write(probs, row, 0, valid=classes != IGNORE_INDEX)
