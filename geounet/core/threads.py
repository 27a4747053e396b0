"""How many threads compute may use, without importing torch.

:func:`available_cores` honours the affinity mask and a cgroup v2 CPU quota (containers often
report more cores than their quota allows); :func:`engine_threads` is the thread count of the
ONNX Runtime and OpenVINO engines: torch's count when torch is loaded (geounet sets it from the
same rules, :func:`geounet.model.training.configure_cpu_threads`), else the user's setting,
else the available physical cores.

Example:
    >>> available_cores() >= 1 and engine_threads() >= 1
    True
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

__all__ = ["THREADS_ENV", "available_cores", "engine_threads", "physical_cores"]

#: Environment variables by which a user chooses the thread count.
THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GEOUNET_NUM_THREADS")


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


def engine_threads() -> int:
    """Threads for ONNX Runtime and OpenVINO (see the module docs)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, torch.get_num_threads())
    for key in ("GEOUNET_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(available_cores(), physical_cores()))
