"""How many threads compute may use, and how idle ones wait, without importing torch.

:func:`available_cores` honours the affinity mask and a cgroup v2 CPU quota (containers often
report more cores than their quota allows); :func:`engine_threads` is the thread count of the
ONNX Runtime and OpenVINO engines: torch's count when torch is loaded (geounet sets it from the
same rules, :func:`geounet.model.training.configure_cpu_threads`), else the user's setting,
else the available physical cores (:func:`worker_threads`, which also sizes the pools of
:func:`ordered_map`, geounet's own multithreaded work outside torch).
:func:`limit_spin_waiting` (called by ``import geounet``) makes torch's idle OpenMP threads
sleep sooner, so other work on the machine does not stall it.

Example:
    >>> available_cores() >= 1 and engine_threads() >= 1
    True
"""

from __future__ import annotations

import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = [
    "SPIN_COUNT",
    "THREADS_ENV",
    "WAIT_ENV",
    "available_cores",
    "engine_threads",
    "limit_spin_waiting",
    "ordered_map",
    "physical_cores",
    "worker_threads",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Environment variables by which a user chooses the thread count, first one first.
THREADS_ENV = ("GEOUNET_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Environment variables by which a user chooses how idle OpenMP threads wait.
WAIT_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: Spins an idle OpenMP thread of GNU libgomp (torch's on Linux) makes before it sleeps; the
#: library's default is 300 000. Measured with ``benchmarks/shared_cpu.py`` (2 cores, training
#: steps of the default network): as fast alone (x1.01), 2.3 times faster beside a busy
#: program and 1.9 times faster with two trainings at once, where spinning threads otherwise
#: take the cores the others need (steps 6-7 times slower than alone instead of about 3).
#: ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) is fastest beside other work (x1.4) but 40 %
#: slower alone.
SPIN_COUNT = 10_000


def available_cores() -> int:
    """Cores usable by this process: affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once).

    Read from Linux's CPU topology; elsewhere (or when it cannot be read) the logical count.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1
    siblings = set()
    for cpu in cpus:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            siblings.add(path.read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(siblings))


def limit_spin_waiting() -> bool:
    """Let torch's idle OpenMP threads sleep sooner, so a busy machine does not stall compute.

    Sets ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user chose how threads wait
    (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set) or torch is loaded already (libgomp reads
    them as it loads). ``import geounet`` calls it, so the command line, the QGIS plugin's
    runs and a script that imports geounet before torch have it. torch's Linux wheels load
    GNU libgomp only (MKL on its GNU threading layer), so Intel OpenMP's ``KMP_BLOCKTIME``
    has nothing to act on there.

    Returns:
        Whether it set the variable.
    """
    if any(os.environ.get(k) for k in WAIT_ENV) or "torch" in sys.modules:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


def engine_threads() -> int:
    """Threads for ONNX Runtime and OpenVINO (see the module docs)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, torch.get_num_threads())
    return worker_threads()


def worker_threads() -> int:
    """Threads for compute outside torch: the user's setting, else the available physical cores.

    The setting is the first positive whole number among :data:`THREADS_ENV`
    (``GEOUNET_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``).
    """
    for key in THREADS_ENV:
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(available_cores(), physical_cores()))


def ordered_map(
    fn: Callable[[_T], _R], items: Iterable[_T], threads: int | None = None
) -> Iterator[_R]:
    """``map(fn, items)`` on a pool of threads, results in the order of ``items``.

    ``items`` is drawn in the calling thread (put reads from files there: a rasterio dataset
    is not to be shared between threads) and at most twice ``threads`` of them are taken
    ahead of the results, so memory stays bounded however many there are. Worth it where
    ``fn`` spends its time in code that releases the GIL (SciPy's and scikit-image's
    kernels, GEOS); with one thread it is plain ``map``.

    Args:
        fn: The work for one item; its exception is raised here, in order.
        items: The items, drawn lazily.
        threads: Pool size; None: :func:`worker_threads`.

    Example:
        >>> list(ordered_map(lambda x: x * x, range(5), threads=2))
        [0, 1, 4, 9, 16]
    """
    threads = worker_threads() if threads is None else threads
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads, "geounet-worker") as pool:
        pending: deque[Future[_R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
