"""Pipeline overhead: end-to-end ``classify`` against the bare forward of its engine, same tiles.

On an N x N 4-band uint16 scene (``--size``, default 4096; generated once) and an untrained
network (``--network``, default lite0: the weights do not change the speed), in one process:

1. the engine ``classify`` runs is chosen once (``--engine``, default ``auto``; its decision is
   cached in the work folder, so the first, unreported end-to-end run is also the warm-up);
2. the batches ``classify`` feeds that engine are made by the pipeline's own reader
   (:func:`geounet.inference.engine._batches`: same tiles, same mirror padding and
   normalisation, same batch composition, empty tiles skipped) and kept in memory;
3. ``--rounds`` times, back to back (so that a change of machine load weighs on both):
   :func:`geounet.inference.classify.classify_with_options` end to end (scene read, blended,
   class raster written; the engine is the one the previous job gave back, as for any later
   job in a process, :func:`geounet.inference.engine_choice.release_engine`), then
   ``engine.probabilities`` alone over the batches in memory (the bare forward, softmax
   included, as every engine returns it). Each figure is the best of the rounds; the
   overhead is ``end_to_end / bare - 1`` (target <= 10 %), also given by the medians;
4. three end-to-end runs with no engine kept (a process's first job: the engine loaded from
   its disk cache), and a cProfile of one more end-to-end run (main thread: the network,
   and the time it waited for the reader and writer threads) and the busy time of the
   reader thread (read, pad, normalise) and of the writer thread (blend, pop, write);
5. the pipeline without the network (its CPU time, replaying the bare forward's probabilities)
   and the overhead it implies with the cores shared perfectly: ``bare + CPU / cores``;
6. the open question (a bare forward timed separately was slower than inside the pipeline):
   the same batches through a fresh engine (cold: its first call included), through the warm
   engine with the reading done in the same thread between batches (how
   ``inference_speed.py`` times it), and, for the torch engine, with NCHW input.

The last line is a JSON object.

Usage::

    python benchmarks/pipeline_overhead.py                      # 4096², lite0, auto engine
    python benchmarks/pipeline_overhead.py --engine torch --size 2048
    python benchmarks/pipeline_overhead.py --network resnet34 --trained   # auto: int8 accepted
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    add_scene_args,
    add_tiling_args,
    cached_scene,
    classify_options,
    emit,
    inference_scene,
    make_model,
    parser,
    trained_model_dir,
    work_dir,
)

import geounet.inference.engine as engine_module
from geounet.inference.classify import _open_input, _opener, _plan, classify_with_options
from geounet.inference.engine import prepare_network, select_engine
from geounet.inference.engine_choice import clear_idle_engines
from geounet.inference.engines import run_engine

#: End-to-end time at most this much above the bare forward (issue 13).
TARGET = 0.10
#: Profile categories: (label, substrings of ``file:function`` of the main thread's callees).
CATEGORIES = (
    ("network (engine.probabilities)", ("engines.py:probabilities",)),
    ("waiting for the reader thread", ("streams.py:_iterate",)),
    ("waiting for the writer thread", ("streams.py:put",)),  # Drain.put; sinks run there
    ("engine choice and build", ("engine.py:select_engine",)),
    ("input checks (open, range sample)", ("classify.py:_open_input",)),
    ("closing the output (flush, rename)", ("write.py:__exit__",)),
)


def pipeline_engine(model: Any, scene: Path, options: Any) -> tuple[Any, Callable[[], Any]]:
    """The engine ``classify`` picks (built as it builds it), and its batch generator."""
    info, bands, grid = _open_input(model, scene, options)
    plan = _plan(grid, options)
    rows = range(len(plan.row_starts))
    opener = _opener(info, bands, grid)
    engine = select_engine(model, plan, rows, opener, options)
    tiles = [(i, j) for i in rows for j in range(len(plan.col_starts))]
    stats = model.config.stats

    def batches() -> Iterator[np.ndarray]:
        gen = engine_module._batches(opener, plan, tiles, options.batch_size, stats)
        return (b.x for b in gen if len(b.x))

    return engine, batches


def bare(engine: Any, batches: list[np.ndarray]) -> float:
    """Seconds of the engine over the batches (as the pipeline calls it: ``run_engine``)."""
    t0 = time.perf_counter()
    for x in batches:
        run_engine(engine, x)
    return time.perf_counter() - t0


def end_to_end(model: Any, scene: Path, out: Path, options: Any) -> float:
    """Seconds of one ``classify_with_options`` run."""
    t0 = time.perf_counter()
    classify_with_options(model, scene, out, options)
    return time.perf_counter() - t0


@contextlib.contextmanager
def reader_clock() -> Iterator[list[float]]:
    """Seconds the reader thread spends making batches (patched into the tile loop)."""
    spent: list[float] = []
    real = engine_module._batches

    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        gen = real(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                spent.append(time.perf_counter() - t0)
                return
            if threading.current_thread().name == "geounet-reader":
                spent.append(time.perf_counter() - t0)
            yield item

    engine_module._batches = timed
    try:
        yield spent
    finally:
        engine_module._batches = real


@contextlib.contextmanager
def writer_clock() -> Iterator[list[float]]:
    """Seconds the writer thread spends blending, popping and writing (``_Blend.__call__``)."""
    spent: list[float] = []
    real = engine_module._Blend.__call__

    def timed(self: Any, item: Any) -> None:
        t0 = time.perf_counter()
        try:
            real(self, item)
        finally:
            spent.append(time.perf_counter() - t0)

    engine_module._Blend.__call__ = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        engine_module._Blend.__call__ = real  # type: ignore[method-assign]


def profile_run(model: Any, scene: Path, out: Path, options: Any) -> dict[str, Any]:
    """Profile one end-to-end run (cProfile): seconds per category, thread busy times, the top.

    The profile covers the main thread (the network); the reader and writer threads are
    timed apart.
    """
    prof = cProfile.Profile()
    with reader_clock() as reader, writer_clock() as writer:
        t0 = time.perf_counter()
        prof.runcall(classify_with_options, model, scene, out, options)
        wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    cum: dict[str, float] = {}
    for (file, _, func), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{func}"
        cum[key] = max(cum.get(key, 0.0), ct)
    found = {
        label: round(sum(v for k, v in cum.items() if any(k.endswith(m) for m in keys)), 2)
        for label, keys in CATEGORIES
    }
    own = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
    top = [f"{Path(f).name}:{fn} {v[2]:.2f} s" for (f, _, fn), v in own]
    return {"wall_s": round(wall, 2), "categories": found, "reader_busy_s": round(sum(reader), 2),
            "writer_busy_s": round(sum(writer), 2), "top_tottime": top}  # fmt: skip


def pipeline_cpu(
    model: Any, scene: Path, out: Path, options: Any, engine: Any, batches: list[np.ndarray]
) -> dict[str, float]:  # fmt: skip
    """CPU seconds of the pipeline without the network, and what they would cost on the cores.

    One more end-to-end run in which the network call returns the probabilities the bare
    forward computed for the same batch (kept from one bare pass), so the process CPU time is
    everything but the network (whose softmax is in the bare forward): input checks, engine
    build, reading, padding, normalising, blending, writing. With the cores shared perfectly,
    the end-to-end time would be about ``bare + cpu / cores`` (an estimate: replayed at full
    speed, the reader and writer threads also compete with each other).
    """
    kept = [run_engine(engine, x) for x in batches]
    served = iter(kept)
    real = engine_module.run_network
    engine_module.run_network = lambda *a, **k: next(served).copy()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        classify_with_options(model, scene, out, options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        engine_module.run_network = real
    t0 = time.process_time()
    for p in kept:  # what the replay itself cost (one copy per batch): not the pipeline's
        p.copy()
    cpu -= time.process_time() - t0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "cores": cores or 1}


def open_question(
    model: Any, engine: Any, batches: list[np.ndarray], remake: Callable[[], Any],
    lazy: Callable[[], Iterator[np.ndarray]],
) -> dict[str, float]:  # fmt: skip
    """Bare forward variants on the same batches: cold engine, reading interleaved, NCHW."""
    out = {"warm": bare(engine, batches)}
    t0 = time.perf_counter()
    fresh = remake()
    out["fresh_engine_build"] = time.perf_counter() - t0
    out["fresh_engine_first_pass"] = bare(fresh, batches)
    t0, busy = time.perf_counter(), 0.0
    for x in lazy():
        t1 = time.perf_counter()
        run_engine(engine, x)
        busy += time.perf_counter() - t1
    out["reading_in_same_thread_forward"] = busy
    out["reading_in_same_thread_total"] = time.perf_counter() - t0
    if engine.name.startswith("torch"):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                torch.softmax(model.network(torch.from_numpy(x)), 1).numpy()  # NCHW input
        out["torch_nchw_input"] = time.perf_counter() - t0
    return {k: round(v, 2) for k, v in out.items()}


def report(args: Any, e2e: list[float], net: list[float], prof: dict, q: dict, name: str) -> dict:
    """Print the table; the JSON result."""
    best_e2e, best_net = min(e2e), min(net)
    overhead = best_e2e / best_net - 1
    mpx = args.size**2 / 1e6
    print(f"{args.size}² ({mpx:.1f} Mpx), {args.network}, engine {name}, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print("| run | rounds (s) | best s | Mpx/s |\n|---|---|---|---|")
    for label, xs in (("end-to-end classify", e2e), ("bare forward, same tiles", net)):
        print(f"| {label} | {', '.join(f'{x:.1f}' for x in xs)} | {min(xs):.1f} | "
              f"{mpx / min(xs):.3f} |")  # fmt: skip
    met = "met" if overhead <= TARGET else "not met"
    print(f"overhead {100 * overhead:.1f} % (target <= {100 * TARGET:.0f} %: {met}); medians "
          f"{100 * (float(np.median(e2e)) / float(np.median(net)) - 1):.1f} %")  # fmt: skip
    first = prof["first_job_s"]
    print(f"a process's first job (engine loaded from its disk cache, not kept from an earlier "
          f"job): {', '.join(f'{x:.2f}' for x in first)} s, best "
          f"{100 * (min(first) / best_net - 1):.1f} %, median "
          f"{100 * (float(np.median(first)) / float(np.median(net)) - 1):.1f} %")  # fmt: skip
    print(f"profiled run {prof['wall_s']} s; main thread, cumulative s:")
    for label, s in prof["categories"].items():
        print(f"  {label:38s} {s:7.2f}")
    print(f"  reader thread busy (read, pad, normalise) {prof['reader_busy_s']:.2f}")
    print(f"  writer thread busy (blend, pop, write)    {prof['writer_busy_s']:.2f}")
    print("  top own time: " + "; ".join(prof["top_tottime"][:8]))
    free = prof["without_network"]
    floor = best_net + free["cpu_s"] / free["cores"]
    print(f"pipeline without the network: {free['cpu_s']:.2f} s of CPU ({free['wall_s']:.2f} s "
          f"wall); spread over {free['cores']} cores beside the network: {floor:.2f} s, "
          f"overhead {100 * (floor / best_net - 1):.1f} % (an estimate: run at full speed, "
          "the reader and writer also compete with each other)")  # fmt: skip
    print("open question, bare forward variants (s):")
    for k, v in q.items():
        print(f"  {k:34s} {v:7.2f}")
    return {
        "benchmark": "pipeline_overhead", "size": args.size, "network": args.network,
        "engine": name, "threads": torch.get_num_threads(), "end_to_end_s": e2e,
        "bare_forward_s": net, "overhead_fraction": round(overhead, 4),
        "target_met": overhead <= TARGET, "profile": prof, "open_question": q,
        "overhead_estimate_fraction": round(floor / best_net - 1, 4),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    add_scene_args(p, size=4096)
    add_tiling_args(p, network="lite0")
    p.add_argument("--engine", default="auto", help="engine of classify (auto, torch, onnx...)")
    p.add_argument("--rounds", type=int, default=2, help="end-to-end / bare pairs")
    p.add_argument("--trained", action="store_true", help="the trained pointwise model")
    args = p.parse_args(argv)
    work = work_dir(args.work).resolve()
    scene = cached_scene(work / f"scene_{args.size}.tif", partial(inference_scene, size=args.size))
    trained = trained_model_dir(args.network, work) if args.trained else None
    model = make_model(args.network, trained)
    model.model_dir = work / f"overhead_{args.network}{'_trained' if trained else ''}"
    options = classify_options(args, engine=args.engine)
    out = work / f"overhead_{args.size}.tif"
    first = end_to_end(model, scene, out, options)  # warm-up; fills the engine cache
    print(f"warm-up end-to-end run {first:.1f} s (not counted)", flush=True)
    prepare_network(model)
    engine, lazy = pipeline_engine(model, scene, options)
    batches = list(lazy())
    e2e, net = [], []
    for _ in range(args.rounds):
        e2e.append(round(end_to_end(model, scene, out, options), 2))
        net.append(round(bare(engine, batches), 2))
        print(f"round: end to end {e2e[-1]} s, bare {net[-1]} s", flush=True)
    first_jobs = []
    for _ in range(3):  # a process's first job: its engine loaded from the disk cache
        clear_idle_engines()
        first_jobs.append(round(end_to_end(model, scene, out, options), 2))
    prof = profile_run(model, scene, out, options)
    prof["first_job_s"] = first_jobs
    prof["without_network"] = pipeline_cpu(model, scene, out, options, engine, batches)
    remake = partial(lambda: pipeline_engine(model, scene, options)[0])
    q = open_question(model, engine, batches, remake, lazy)
    out.unlink()
    emit(report(args, e2e, net, prof, q, engine.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
