"""One rank of a distributed fit of a tiny U-Net, started by ``torchrun`` from test_ddp.py.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT``
trains each configuration of :data:`CONFIGS` with ``fit(..., ddp=True)`` (each one creates
and destroys its process group) and writes, per configuration, every rank's final weights
(``<name>_rank<R>.safetensors``) and history (``<name>_rank<R>.json``); ``model.save`` writes
``<name>_model`` (rank 0 only).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_fakes import make_fake_data

#: Chips per rank and step; epochs; peak learning rate (one-cycle).
BATCH, EPOCHS, LR = 2, 2, 1e-2
#: Time budget (s) of the run planned by ``fit`` itself (no epochs, no learning rate).
BUDGET_S = 3.0
#: name -> UnetClassifier keywords. Without BatchNorm and with the pixel-mean CE loss the
#: average of the ranks' gradients is the gradient of the global batch ("exact"); the Dice
#: term is a ratio of sums, and the mean of two half-batch Dice losses is not the Dice loss
#: of the whole batch ("dice"); BatchNorm on the CPU normalises with each rank's half-batch
#: statistics (no SyncBatchNorm on gloo), so even the forward pass differs ("bn_dice").
#: "average" is "exact" with a moving average of the weights validated and kept.
CONFIGS: dict[str, dict[str, Any]] = {
    "exact": {"loss": "ce", "batchnorm": False},
    "dice": {"loss": "ce+dice", "batchnorm": False},
    "bn_dice": {"loss": "ce+dice", "batchnorm": True},
    "average": {"loss": "ce", "batchnorm": False, "weight_average": 0.9},
}


@contextlib.contextmanager
def weight_average(name: str) -> Iterator[None]:
    """``WEIGHT_AVERAGE`` of configuration ``name`` in force inside the block (then restored)."""
    from geounet.app import classifier

    before = classifier.WEIGHT_AVERAGE
    classifier.WEIGHT_AVERAGE = CONFIGS[name].get("weight_average")
    try:
        yield
    finally:
        classifier.WEIGHT_AVERAGE = before


def build(data: Any, name: str) -> Any:
    """The classifier of configuration ``name`` (seeded; dropout off)."""
    from geounet import UnetClassifier

    cfg = CONFIGS[name]
    return UnetClassifier(
        data, backbone=None, loss=cfg["loss"], seed=0, base_channels=4, depth=2,
        batchnorm=cfg["batchnorm"], dropout=0.0,
    )  # fmt: skip


def fit_options() -> dict[str, Any]:
    """The ``fit`` keywords of both the distributed and the reference run."""
    return {"lr": LR, "seed": 0, "progress": False, "early_stopping": None, "checkpoint": False}


def _write(out: Path, name: str, clf: Any, history: Any) -> None:
    """This rank's weights and history, and the model folder (written by rank 0 only)."""
    rank = int(os.environ["RANK"])
    state = {k: v.detach().contiguous() for k, v in clf.network.state_dict().items()}
    save_file(state, str(out / f"{name}_rank{rank}.safetensors"))
    (out / f"{name}_rank{rank}.json").write_text(json.dumps(history.to_dict("list")))
    clf.save(out / f"{name}_model")


def main(out: Path) -> None:
    """Train every configuration distributed and write each rank's results into ``out``.

    Last, ``budget``: ``fit`` plans the run (400 epochs), rank 0 runs the LR finder and
    its clock ends the run after :data:`BUDGET_S` seconds, with early stopping on.
    """
    torch.set_num_threads(1)
    for name in CONFIGS:
        with weight_average(name):
            clf = build(make_fake_data(batch_size=BATCH), name)
            _write(out, name, clf, clf.fit(EPOCHS, ddp=True, **fit_options()))
    clf = build(make_fake_data(batch_size=BATCH), "bn_dice")
    history = clf.fit(time_budget_s=BUDGET_S, ddp=True, seed=0, progress=False)
    _write(out, "budget", clf, history)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
