"""Run the registered benchmarks, each in its own process, and print one table of their results.

Every benchmark is a script of this folder that ends its output with one JSON line; this runner
starts it (``sys.executable``, the same arguments every time, ``--work`` in a folder of its
own under ``--work``), keeps that line, and prints one row per benchmark: its status, wall
time and headline figures (the JSON keys listed in :data:`REGISTRY`). ``--quick`` passes each
benchmark's smaller arguments (a check that it runs, not figures to quote); ``--only`` and
``--group`` choose which run. The runner's last line is a JSON object with every result.

Usage::

    python benchmarks/run.py --list
    python benchmarks/run.py --group performance
    python benchmarks/run.py --only pipeline_overhead training_speed
    python benchmarks/run.py --quick --only inference_memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    """One registered benchmark.

    Attributes:
        name: The script's name (``<name>.py`` in this folder).
        group: ``performance`` (issue 13: speed and memory) or ``quality``.
        keys: JSON keys printed in the table (dotted for nested ones).
        argv: Arguments of a full run.
        quick: Arguments of a quick run (``--quick``).
        work: The script takes ``--work`` (its output folder).
    """

    name: str
    group: str
    keys: tuple[str, ...]
    argv: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    work: bool = True


_MEM_FULL = ("--sizes", "4096", "12000", "20000", "--network", "lite0", "--engine", "auto")
_TINY = ("--size", "1024", "--network", "tiny")
REGISTRY: tuple[Bench, ...] = (
    Bench("engines", "performance", ("auto",), quick=("--tiles", "4")),
    Bench(
        "peers",
        "performance",
        ("size", "results.geounet.speedup_vs_naive", "results.geounet.rss_vs_naive"),
        quick=("--size", "1024"),
    ),
    Bench(
        "inference_memory",
        "performance",
        ("peak_rss_spread", "target_met"),
        argv=_MEM_FULL,
        quick=("--sizes", "512", "1024", "--network", "tiny"),
    ),
    Bench(
        "pipeline_overhead",
        "performance",
        ("engine", "overhead_fraction", "target_met"),
        quick=(*_TINY, "--rounds", "1"),
    ),
    Bench("inference_speed", "performance", ("overhead_fraction",), quick=_TINY),
    Bench(
        "training_speed",
        "performance",
        ("fit_chips_per_s", "bare_chips_per_s", "ratio", "target_met"),
        quick=("--size", "1024", "--chips", "16", "--epochs", "1", "--rounds", "1"),
    ),
    Bench("prepare_data", "performance", ("mpx_per_s", "peak_rss_mb"), quick=("--size", "1000")),
    Bench("scale", "performance", (), quick=("--size", "1024", "--network", "tiny")),
    Bench("scale_study", "performance", ()),
    Bench("weight_map", "performance", (), work=False),
    Bench("seams", "quality", ()),
    Bench("vectorize_quality", "quality", ()),
    Bench("separation", "quality", (), work=False),
    Bench("separation_model", "quality", (), work=False),
    Bench("accuracy", "quality", (), work=False),
    Bench("recipe", "quality", (), work=False),
)


def last_json(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def pick(result: dict[str, Any], key: str) -> Any:
    """``result[a][b]...`` for a dotted key, or None."""
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def headline(bench: Bench, result: dict[str, Any]) -> str:
    """The figures printed for a result: its keys, else its first scalar fields."""
    keys = (
        bench.keys
        or tuple(
            k for k, v in result.items() if k != "benchmark" and isinstance(v, int | float | str)
        )[:4]
    )
    return ", ".join(f"{k.split('.')[-1]}={pick(result, k)}" for k in keys)


def run_one(bench: Bench, work: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark; its status, seconds, JSON result and output tail."""
    argv = list(bench.quick if quick else bench.argv)
    cmd = [sys.executable, str(HERE / f"{bench.name}.py"), *argv]
    if bench.work:
        cmd += ["--work", str(work / bench.name)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    seconds = time.perf_counter() - t0
    result = last_json(proc.stdout)
    status = "ok" if proc.returncode == 0 and result is not None else f"failed ({proc.returncode})"
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": status, "seconds": round(seconds, 1), "result": result, "tail": tail}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--only", nargs="+", choices=[b.name for b in REGISTRY], help="these only")
    p.add_argument("--group", choices=sorted({b.group for b in REGISTRY}), help="one group")
    p.add_argument("--quick", action="store_true", help="each benchmark's small arguments")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--work", type=Path, default=Path("bench_out/run"), help="output folder")
    args = p.parse_args(argv)
    chosen = [
        b for b in REGISTRY
        if (not args.only or b.name in args.only) and (not args.group or b.group == args.group)
    ]  # fmt: skip
    if args.list:
        for b in chosen:
            print(f"{b.name:20s} {b.group:12s} {' '.join(b.argv)}")
        return 0
    runs = {}
    print("| benchmark | status | seconds | headline |\n|---|---|---|---|", flush=True)
    for b in chosen:
        r = runs[b.name] = run_one(b, args.work.resolve(), args.quick)
        figures = headline(b, r["result"]) if r["result"] else " / ".join(r["tail"])[-200:]
        print(f"| {b.name} | {r['status']} | {r['seconds']} | {figures} |", flush=True)
    print(json.dumps({"benchmark": "run", "quick": args.quick, "runs": runs}))
    return 0 if all(r["status"] == "ok" for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
