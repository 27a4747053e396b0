"""The tile loop of tiled inference and the one function that calls the network.

:func:`run_network` is the only place the network runs (inference mode, channels-last,
CUDA mixed precision, test-time augmentation), so that another engine (ONNX Runtime,
TensorRT...) can be swapped in. :func:`run_tiles` reads tiles in a reader thread, runs them in
batches, blends them into a :class:`geounet.inference.blending.RowAccumulator` and hands finished
rows to a sink.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geounet.core.errors import ModelFileError
from geounet.core.types import TTA_MODES, TTAMode, check_choice
from geounet.data.normalize import normalize_valid
from geounet.inference.blending import RowAccumulator, TilePlan
from geounet.inference.options import ClassifyOptions
from geounet.inference.streams import Prefetch, Sink

__all__ = ["prepare_network", "run_network", "run_tiles"]


# ----------------------------------------------------------------------------- network


def _tta_ops(tta: TTAMode | None) -> list[tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """``(forward, inverse)`` pairs of image transforms acting on the last two axes."""
    if tta is None:
        return [(lambda t: t, lambda t: t)]
    check_choice("tta", tta, TTA_MODES)
    if tta == "flips":
        dims: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)]
        return [
            (lambda t, d=d: t.flip(d) if d else t, lambda t, d=d: t.flip(d) if d else t)
            for d in dims
        ]
    ops = []
    for k in range(4):
        ops.append(
            (
                lambda t, k=k: torch.rot90(t, k, (-2, -1)),
                lambda t, k=k: torch.rot90(t, -k, (-2, -1)),
            )
        )
        ops.append(
            (
                lambda t, k=k: torch.rot90(t.transpose(-2, -1), k, (-2, -1)),
                lambda t, k=k: torch.rot90(t, -k, (-2, -1)).transpose(-2, -1),
            )
        )
    return ops


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def run_network(model: Any, batch: np.ndarray, tta: TTAMode | None = None) -> np.ndarray:
    """Class probabilities of a batch of normalised tiles: the one place the network runs.

    Runs under ``torch.inference_mode`` in channels-last layout, with CUDA mixed precision
    on a GPU; test-time augmentation averages the probabilities of the flipped (4) or
    dihedral (8) versions after transforming them back. Swap this function to use another
    engine.

    Args:
        model: Object with ``network`` and ``device``.
        batch: ``float32 [B, C, h, w]`` normalised tiles.
        tta: None, ``"flips"`` or ``"dihedral"``.

    Returns:
        ``float32 [B, K, h, w]`` softmax probabilities.
    """
    device = torch.device(model.device)
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    ops = _tta_ops(tta)
    with torch.inference_mode(), _autocast(device):
        total = torch.zeros((), device=device)
        for forward, inverse in ops:
            xin = forward(x).contiguous(memory_format=torch.channels_last)
            total = total + inverse(torch.softmax(model.network(xin).float(), dim=1))
        if len(ops) > 1:
            total = total / len(ops)
    return total.float().cpu().numpy()


def prepare_network(model: Any) -> None:
    """Evaluation mode and channels-last weights, once per call."""
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
    """Read, mirror-pad and normalise tiles, ``batch_size`` at a time (in the reader thread)."""
    with open_source() as source:
        for k in range(0, len(tiles), batch_size):
            chunk = list(tiles[k : k + batch_size])
            valids, has, xs = [], [], []
            for i, j in chunk:
                region = plan.region(i, j)
                data, valid = source.read(region.row, region.col, plan.tile_h, plan.tile_w)
                valids.append(valid)
                has.append(bool(valid.any()))
                if has[-1]:
                    # nodata at the training mean, as the training loader feeds it
                    x = normalize_valid(data, stats, valid)
                    xs.append(x)
            shape = (0, 0, plan.tile_h, plan.tile_w)
            x = np.stack(xs) if xs else np.zeros(shape, np.float32)
            yield _Batch(chunk, valids, has, x)


def run_tiles(
    model: Any,
    plan: TilePlan,
    tile_rows: range,
    open_source: Callable[[], Any],
    sink: Sink,
    opts: ClassifyOptions,
    runner: Callable[[Any, np.ndarray, str | None], np.ndarray] | None = None,
) -> None:
    """Run the tile rows ``tile_rows`` of ``plan`` and pass finished rows to ``sink``.

    Args:
        model: Object with ``network``, ``config`` and ``device``.
        plan: The tile grid.
        tile_rows: Consecutive tile rows to run (all of them for a whole raster).
        open_source: Returns a context manager giving an object with ``read(row, col, h, w)``;
            it is called in the reader thread.
        sink: Receives the finished rows.
        opts: The options (tiling, batch size, test-time augmentation, progress bar).
        runner: The network call (default :func:`run_network`).
    """
    runner = runner or run_network
    ncols = len(plan.col_starts)
    tiles = [(i, j) for i in tile_rows for j in range(ncols)]
    if not tiles:
        return
    row0 = plan.span(tile_rows[0])[0]
    acc = RowAccumulator(model.config.n_classes, plan.width, plan.tile_h, row0=row0)
    stats = model.config.stats

    def batches() -> Iterator[_Batch]:
        return _batches(open_source, plan, tiles, opts.batch_size, stats)

    bar = tqdm(total=len(tiles), unit="tile", desc="classify", disable=not opts.progress)
    with bar, Prefetch(batches) as stream:
        for batch in stream:
            probs = runner(model, batch.x, opts.tta) if len(batch.x) else None
            if probs is not None and probs.shape[1] != acc.sums.shape[0]:
                raise ModelFileError(
                    f"the network gives {probs.shape[1]} class scores per pixel but the model "
                    f"file lists {acc.sums.shape[0]} classes ({model.config.class_names}); "
                    "the model's weights and its geounet.json do not belong together."
                )
            k = 0
            for (i, j), valid, has in zip(batch.tiles, batch.valid, batch.has_data):
                p = None
                if has and probs is not None:
                    p, k = probs[k], k + 1
                acc.add(plan.region(i, j), p, valid, plan.weights, plan.height)
                if j == ncols - 1:
                    popped = acc.pop(plan.finished_row(i))
                    if popped is not None:
                        sink.put(*popped)
            bar.update(len(batch.tiles))
