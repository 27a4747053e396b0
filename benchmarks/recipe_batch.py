"""Many runs of the recipe protocol at once: scenes x variants x seeds, each on its own cores.

A variant is compared with the defaults over the same seeds (``benchmarks/recipe.py``'s
advice); on a GPU, or a machine with many cores, those runs need not wait for each other. This
script starts one ``benchmarks/recipe.py`` process per scene, variant and seed, at most
``--jobs`` at a time (default 1), each pinned to cores of its own (an equal share) with as
many torch threads (``GEOUNET_NUM_THREADS``; twelve processes with torch's default threads
each would fight over the cores), writes each run's log to ``OUT/NAME.log`` and its crops
and model to ``OUT/NAME/``, prints a line per finished run (object F1, building IoU, mIoU,
buildings predicted / true, epochs, training minutes) and ends with one JSON object holding
every run's figures.

A variant is the extra ``recipe.py`` arguments as one string, given as ``--variant=...``
(the ``=`` keeps its leading ``--`` from being read as an option); ``--variant=`` is the
defaults. The thirty-third round of ``benchmarks/README.md`` (twelve runs on one H200)::

    python benchmarks/recipe_batch.py --scene inria_austin --scene oam_zanzibar \\
        --scene oam_kampala --seeds 1 2 --variant= \\
        --variant="--chip-views 18000 --fit time_budget_s=330" --out runs --jobs 12

On a 2-core CPU keep ``--jobs 1`` (each run then has both cores, as ``recipe.py`` alone): a
run beside another trains fewer epochs within its budget (twenty-second round).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.py"


class Run(NamedTuple):
    """One protocol run: a scene, a variant (extra ``recipe.py`` arguments) and a seed."""

    scene: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        """A file name for the run: ``oam_kampala-defaults-s1``, ``oam_kampala-lr_2e-3-s1``."""
        words = shlex.split(self.variant)
        tag = "_".join(w.lstrip("-") for w in words) or "defaults"
        return f"{self.scene}-{re.sub(r'[^A-Za-z0-9._-]+', '_', tag)}-s{self.seed}"

    def command(self, out: Path, data: Path | None) -> list[str]:
        """The ``recipe.py`` command line of the run."""
        cmd = [sys.executable, str(RECIPE), "--scene", self.scene, "--seed", str(self.seed)]
        cmd += [*shlex.split(self.variant), "--out", str(out / self.name)]
        return cmd + (["--data", str(data)] if data is not None else [])


def plan_runs(scenes: list[str], variants: list[str], seeds: list[int]) -> list[Run]:
    """Every scene x variant x seed, scene by scene (the longest scenes first if listed so)."""
    return [Run(s, v, n) for s in scenes for v in variants for n in seeds]


def cores() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return list(range(os.cpu_count() or 1))


def last_json(log: Path) -> dict[str, Any] | None:
    """The JSON object on the last line of a run's log (None: the run printed none)."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def summary_line(run: Run, rc: int, seconds: float, result: dict[str, Any] | None) -> str:
    """One line for a finished run: its figures, or why there are none."""
    head = f"{run.name}: rc {rc}, {seconds:.0f} s"
    scene = (result or {}).get("scenes", {}).get(run.scene)
    if not scene or "error" in scene:
        return f"{head}, no figures ({(scene or {}).get('error', 'see its log')})"
    if "building_f1" not in scene:
        return f"{head}, mIoU {scene['miou']}, road IoU {scene['iou'].get('road')}"
    return (
        f"{head}, F1 {scene['building_f1']:.3f}, building IoU {scene['iou']['building']:.3f}, "
        f"mIoU {scene['miou']:.3f}, {scene['pred_buildings']} / {scene['true_buildings']} "
        f"buildings, {scene['epochs']} epochs ({scene['stopped_by']}, weights of epoch "
        f"{scene.get('kept_epoch', '?')}), "
        f"{scene['train_minutes']} training minutes"
    )


def core_groups(jobs: int) -> list[tuple[int, ...]]:
    """The usable cores split into ``jobs`` disjoint groups of equal size (one per run)."""
    free = cores()
    jobs = max(1, min(jobs, len(free)))
    size = len(free) // jobs
    return [tuple(free[i * size : (i + 1) * size]) for i in range(jobs)]


def pinned(group: tuple[int, ...]) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps the child on ``group`` (None where affinity is unknown)."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - macOS / Windows
        return None
    return lambda: os.sched_setaffinity(0, set(group))


def run_all(
    runs: list[Run],
    out: Path,
    data: Path | None,
    jobs: int,
    starter: Callable[..., subprocess.Popen] = subprocess.Popen,
) -> list[dict[str, Any]]:
    """Run every run, ``jobs`` at a time, each on cores no other run holds; their records.

    Each run gets an equal share of the cores and as many torch threads
    (``GEOUNET_NUM_THREADS``): one core each for twelve runs on 16 cores, both cores for one
    run at a time on 2, as ``recipe.py`` alone would use them.
    """
    out.mkdir(parents=True, exist_ok=True)
    free: queue.Queue[tuple[int, ...]] = queue.Queue()
    for group in core_groups(jobs):
        free.put(group)

    def one(run: Run) -> dict[str, Any]:
        group = free.get()  # cores of its own for the whole run
        env = {**os.environ, "GEOUNET_NUM_THREADS": str(len(group)), "PYTHONUNBUFFERED": "1"}
        log, t0 = out / f"{run.name}.log", time.perf_counter()
        try:
            with log.open("w") as f:
                cmd = run.command(out, data)
                proc = starter(
                    cmd, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=pinned(group)
                )
                rc = proc.wait()
        finally:
            free.put(group)
        seconds, result = time.perf_counter() - t0, last_json(log)
        print(summary_line(run, rc, seconds, result), flush=True)
        return {
            "run": run.name,
            "scene": run.scene,
            "variant": run.variant,
            "seed": run.seed,
            "cores": list(group),
            "rc": rc,
            "seconds": round(seconds, 1),
            "result": result,
        }

    with ThreadPoolExecutor(max_workers=free.qsize()) as pool:
        return list(pool.map(one, runs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", action="append", required=True, help="a scene (repeatable)")
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        help="extra recipe.py arguments as one string: --variant='--fit lr=2e-3' "
        "(repeatable; --variant= is the defaults, also when none is given)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", type=Path, required=True, help="folder for the logs and runs")
    p.add_argument("--data", type=Path, default=None, help="the shared data folder")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the batch; the last line is one JSON object with every run's record."""
    args = parse_args(argv)
    runs = plan_runs(args.scene, args.variant or [""], args.seeds)
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SystemExit(f"runs named twice (a variant or seed given twice?): {twice}")
    records = run_all(runs, args.out, args.data, args.jobs)
    print(json.dumps({"runs": records}))
    return 0 if all(r["rc"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
