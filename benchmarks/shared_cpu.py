"""Training on a shared CPU: how idle OpenMP threads wait, alone and beside other work.

torch on Linux runs its CPU kernels on GNU libgomp threads, which spin for a while before they
sleep when they run out of work. Alone, spinning saves the wake-up; beside another busy
process, the spinning threads take the cores the other threads need, and each parallel region
waits for a thread the scheduler has put aside. ``import geounet`` therefore sets
``GOMP_SPINCOUNT`` to :data:`geounet.core.threads.SPIN_COUNT` (unless the user chose how
threads wait, or torch is already loaded).

Each measurement is a child process that imports geounet, builds the default network of
``fit()`` (``--backbone``, efficientnet-lite0 with the half-width decoder, no pretrained
weights: their values do not change the cost) and times ``--steps`` training steps (AdamW,
cross-entropy, ``--batch`` chips of 256 px) after three warm-up steps, with every core torch
would use. Three waits:

- ``libgomp``: the library's default (``GOMP_SPINCOUNT=300000``, what torch does without
  geounet);
- ``geounet``: nothing set, so geounet's setting applies;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once).

Three situations: ``alone``; ``busy``: beside a Python busy loop (one core taken by another
program); ``two``: two such trainings at once (their steps averaged). ``--rounds`` times
in turn, so a change of machine load weighs on all. Printed: seconds per step (median over
the rounds) and each situation's slowdown against ``alone`` of the same wait; the last line
is a JSON object. Run it with the machine otherwise idle.

Usage::

    python benchmarks/shared_cpu.py
    python benchmarks/shared_cpu.py --steps 5 --rounds 1  # quick
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

from _common import emit, parser

#: The environment each wait sets (and the variables it removes first).
WAITS: dict[str, dict[str, str]] = {
    "libgomp": {"GOMP_SPINCOUNT": "300000"},
    "geounet": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
SITUATIONS = ("alone", "busy", "two")

CHILD = """
import sys, time
import geounet  # first: its OpenMP setting applies before torch loads
import torch
from geounet.app.classifier import DECODER_CHANNELS
from geounet.model.backbones import build_unet

backbone, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = build_unet(backbone, 3, 2, None, decoder_channels=DECODER_CHANNELS)
opt = torch.optim.AdamW(net.parameters(), 1e-3)
x, y = torch.randn(batch, 3, 256, 256), torch.randint(0, 2, (batch, 256, 256))

def step():
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t) / steps)
"""


def child_env(wait: str) -> dict[str, str]:
    """The environment of a training child under ``wait``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(WAITS[wait])
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def measure(wait: str, situation: str, args: Any) -> float:
    """Seconds per training step of one child (the mean of two when ``situation="two"``)."""
    cmd = [sys.executable, "-c", CHILD, args.backbone, str(args.batch), str(args.steps)]
    hog = None
    if situation == "busy":
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    n = 2 if situation == "two" else 1
    try:
        kids = [
            subprocess.Popen(cmd, env=child_env(wait), stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        outs = [kid.communicate()[0] for kid in kids]
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if any(kid.returncode for kid in kids):
        raise SystemExit(f"a training child failed under {wait}/{situation}")
    return statistics.fmean(float(out.strip().splitlines()[-1]) for out in outs)


def main() -> None:
    """Measure every wait in every situation and print the table and the JSON line."""
    p = parser(__doc__)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--batch", type=int, default=4, help="Chips of 256 px per step.")
    p.add_argument("--steps", type=int, default=10, help="Timed steps per child.")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    seconds: dict[str, dict[str, list[float]]] = {w: {s: [] for s in SITUATIONS} for w in WAITS}
    for _ in range(args.rounds):
        for wait in WAITS:
            for situation in SITUATIONS:
                seconds[wait][situation].append(measure(wait, situation, args))
                print(f"  {wait:8s} {situation:5s} {seconds[wait][situation][-1]:.3f} s/step")
    table = {w: {s: statistics.median(v) for s, v in by.items()} for w, by in seconds.items()}
    print(f"\n{'wait':8s} " + " ".join(f"{s:>12s}" for s in SITUATIONS) + "   (s/step; x alone)")
    for wait, row in table.items():
        cells = [f"{row['alone']:.3f}"] + [
            f"{row[s]:.3f} x{row[s] / row['alone']:.1f}" for s in SITUATIONS[1:]
        ]
        print(f"{wait:8s} " + " ".join(f"{c:>12s}" for c in cells))
    base = table["libgomp"]
    print(
        "geounet against libgomp's default: alone x"
        f"{table['geounet']['alone'] / base['alone']:.2f}, beside a busy loop x"
        f"{base['busy'] / table['geounet']['busy']:.1f} faster, two trainings x"
        f"{base['two'] / table['geounet']['two']:.1f} faster"
    )
    emit({"seconds_per_step": table, "runs": seconds, "cores": os.cpu_count(), **vars(args)})


if __name__ == "__main__":
    main()
