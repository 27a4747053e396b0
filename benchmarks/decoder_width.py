"""Cost of the U-Net decoder's width: a training step and an inference forward, side by side.

For each ``--widths`` entry (the ``decoder_channels`` of an smp U-Net on the efficientnet-lite0
encoder, 3 bands, 2 classes; ``256,128,64,32,16`` is smp's default, ``128,64,32,16,8`` the
library's :data:`geounet.app.classifier.DECODER_CHANNELS`) this times, in the same process:

- a training step as ``fit`` runs it (:meth:`geounet.model.training.Trainer.train_step`:
  forward, CE+Dice loss, backward, gradient clipping, AdamW) on a batch of ``--train-batch``
  random chips of ``--chip`` pixels;
- an inference forward as ``classify`` runs it (inference mode, channels-last) on a batch of
  ``--batch`` tiles of ``--tile`` pixels.

The networks take turns for ``--rounds`` rounds (after one warm-up call each), so a change of
machine load weighs on all of them alike; the median time per call is kept. The parameter
count and each width's speed-up against the first width are printed; the last line is a JSON
object. The weights are random: the width, not the weights, sets the cost.

Usage::

    python benchmarks/decoder_width.py
    python benchmarks/decoder_width.py --widths 256,128,64,32,16 128,64,32,16,8 64,32,16,16,8
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch
from _common import emit, parser

DEFAULT_WIDTHS = ("256,128,64,32,16", "128,64,32,16,8")


def parse_args(argv: list[str] | None) -> Any:
    """Command-line arguments."""
    p = parser(__doc__)
    p.add_argument("--widths", nargs="+", default=list(DEFAULT_WIDTHS), help="decoder_channels")
    p.add_argument("--chip", type=int, default=256, help="training chip side in pixels")
    p.add_argument("--train-batch", type=int, default=3, help="chips per training step")
    p.add_argument("--tile", type=int, default=512, help="inference tile side in pixels")
    p.add_argument("--batch", type=int, default=4, help="tiles per inference call")
    p.add_argument("--rounds", type=int, default=5, help="timed calls per network and kind")
    args = p.parse_args(argv)
    args.widths = [tuple(int(c) for c in w.split(",")) for w in args.widths]
    return args


def make_trainer(channels: tuple[int, ...]) -> Any:
    """A :class:`~geounet.model.training.Trainer` of an untrained lite0 U-Net of this width."""
    from geounet.model.backbones import build_unet
    from geounet.model.losses import build_loss
    from geounet.model.training import Trainer

    torch.manual_seed(0)
    net = build_unet("efficientnet-lite0", 3, 2, decoder_channels=channels)
    trainer = Trainer(net, build_loss("ce+dice"), 2, torch.device("cpu"))
    trainer.optimizer = trainer._optimizer(1e-3)  # as fit builds it (training_speed.py too)
    return trainer


def timed(call: Any) -> float:
    """Seconds one call of ``call()`` takes."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def measure(args: Any) -> dict[str, Any]:
    """Median seconds per training step and per inference call of each width."""
    gen = torch.Generator().manual_seed(0)
    xb = torch.randn(args.train_batch, 3, args.chip, args.chip, generator=gen)
    yb = torch.randint(0, 2, (args.train_batch, args.chip, args.chip), generator=gen)
    tiles = torch.randn(args.batch, 3, args.tile, args.tile, generator=gen)
    tiles = tiles.contiguous(memory_format=torch.channels_last)
    trainers = [make_trainer(w) for w in args.widths]

    def step(trainer: Any) -> None:
        trainer.network.train()
        trainer.train_step((xb, yb), trainer.optimizer)

    def forward(trainer: Any) -> None:
        trainer.network.eval()
        with torch.inference_mode():
            trainer.network(tiles)

    times: dict[str, list[list[float]]] = {k: [[] for _ in trainers] for k in ("train", "infer")}
    for t in trainers:  # warm-up: first calls allocate and pick kernels
        step(t)
        forward(t)
    for _ in range(args.rounds):
        for i, t in enumerate(trainers):
            times["train"][i].append(timed(lambda t=t: step(t)))
            times["infer"][i].append(timed(lambda t=t: forward(t)))
    rows = []
    for i, (w, t) in enumerate(zip(args.widths, trainers, strict=True)):
        train, infer = (statistics.median(times[k][i]) for k in ("train", "infer"))
        params = sum(p.numel() for p in t.network.parameters())
        row = {"decoder_channels": list(w), "params": params}
        rows.append({**row, "train_step_s": train, "infer_call_s": infer})
    for row in rows:
        row["train_speedup"] = rows[0]["train_step_s"] / row["train_step_s"]
        row["infer_speedup"] = rows[0]["infer_call_s"] / row["infer_call_s"]
    return {"threads": torch.get_num_threads(), "rounds": args.rounds, "widths": rows}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one line per width, then the JSON object."""
    args = parse_args(argv)
    result = measure(args)
    print(f"{'decoder_channels':<20} {'params':>10} {'train step':>11} {'x':>5} {'infer':>9} x")
    for r in result["widths"]:
        name = "-".join(map(str, r["decoder_channels"]))
        train = f"{r['train_step_s']:>10.3f}s {r['train_speedup']:>5.2f}"
        infer = f"{r['infer_call_s']:>8.3f}s {r['infer_speedup']:.2f}"
        print(f"{name:<20} {r['params']:>10,} {train} {infer}")
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
