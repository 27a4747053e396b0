"""Loading a script of ``benchmarks/`` as a module in a test (it is not a package)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

#: The benchmark scripts' folder.
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@contextlib.contextmanager
def benchmark_module(filename: str, name: str) -> Iterator[ModuleType]:
    """``benchmarks/filename`` loaded as module ``name``, its folder on ``sys.path`` meanwhile.

    The scripts import their neighbours (``_common``, ``ensemble``) from their own folder, as
    they do when run; the folder leaves ``sys.path`` again on exit.
    """
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
