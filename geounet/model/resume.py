"""Resumable training: the whole state of a fit run after each epoch, saved as data.

After every epoch :meth:`geounet.model.training.Trainer.fit` can write a state folder:
``fit_state.safetensors`` (the weights, the optimiser's moments, the best epoch's weights and
the random generators' states) and ``fit_state.json`` (schedule, early-stopping rule, history,
clock, settings). ``fit(..., resume=True)`` reads it back and continues with the next epoch;
on the CPU the result is the same, to the bit, as a run that was never interrupted. Nothing
is unpickled: the folder is safetensors + JSON, like a model folder.

Example:
    Not run as a doctest: it needs a classifier and chips.

    >>> model.fit(epochs=30)  # doctest: +SKIP
    ... # interrupted in epoch 12 (Ctrl-C, a crash), then:
    >>> model.fit(epochs=30, resume=True)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geounet.core.errors import InvalidParameterError, ModelFileError
from geounet.core.types import PathLike
from geounet.io.write import atomic_output
from geounet.model.files import check_not_pickle

__all__ = [
    "STATE_FILE",
    "STATE_JSON",
    "clear_fit_state",
    "load_fit_state",
    "read_fit_key",
    "save_fit_state",
]

STATE_FILE = "fit_state.safetensors"
STATE_JSON = "fit_state.json"
_FORMAT = "geounet-fit-state"


def _generators(train_dl: Any) -> dict[str, torch.Generator]:
    """The random generators a training pass draws from besides the global ones."""
    gens = {}
    if isinstance(getattr(train_dl, "generator", None), torch.Generator):
        gens["rng.loader"] = train_dl.generator
    aug = getattr(getattr(train_dl, "dataset", None), "_gen", None)
    if isinstance(aug, torch.Generator):
        gens["rng.augment"] = aug
    return gens


def _tensors(trainer: Any, loop: Any, best: Any, train_dl: Any) -> dict[str, torch.Tensor]:
    out = {f"net.{k}": v for k, v in trainer.network.state_dict().items()}
    for idx, slots in loop.opt.state_dict()["state"].items():
        out.update({f"opt.{idx}.{name}": t for name, t in slots.items()})
    for k, v in (best.state or {}).items():
        out[f"best.{k}"] = v
    if loop.average is not None:
        out.update({f"avg.{k}": v for k, v in loop.average.tensors().items()})
    out["rng.torch"] = torch.get_rng_state()
    out.update({k: g.get_state() for k, g in _generators(train_dl).items()})
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def save_fit_state(
    folder: PathLike, trainer: Any, run: dict[str, Any], key: dict[str, Any], train_dl: Any
) -> None:
    """Write the state of a fit run after an epoch (atomically: old or new, never half).

    Args:
        folder: The state folder (replaced).
        trainer: The :class:`~geounet.model.training.Trainer`.
        run: ``{"loop", "rule", "best", "rows"}``: the run's schedule and clock, stop rule,
            best epoch and history rows.
        key: The settings a resumed run must share (epochs, learning rate, batches...).
        train_dl: The training loader (its shuffling and augmentation generators).
    """
    from safetensors.torch import save_file

    loop, best = run["loop"], run["best"]
    groups = loop.opt.state_dict()["param_groups"]
    meta = {
        "format": _FORMAT,
        "key": key,
        "epochs_done": len(run["rows"]),
        "rows": run["rows"],
        "param_groups": groups,
        "schedule": loop.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rule": dataclasses.asdict(run["rule"]),
        "average": None if loop.average is None else loop.average.describe(),
        "best": {
            "score": best.score,
            "epoch": best.epoch,
            "has_state": best.state is not None,
            "late": best.late,
            "confusion": None if best.confusion is None else best.confusion.tolist(),
        },
        "clock": {"elapsed": time.perf_counter() - loop.start, "valid": loop.valid_seconds},
        "rng_numpy": _numpy_state(),
        "rng_python": _python_state(),
    }
    tensors = _tensors(trainer, loop, best, train_dl)
    with atomic_output(folder, overwrite=True, replaceable=_is_state_folder) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / STATE_FILE))
        (tmp / STATE_JSON).write_text(json.dumps(meta))


def _is_state_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a fit run's saved state: the one a new save replaces."""
    return (folder / STATE_JSON).is_file()


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def read_fit_key(folder: PathLike) -> dict[str, Any] | None:
    """The settings recorded in a state folder, or None when there is no saved state.

    Raises:
        ModelFileError: The state's JSON is unreadable or not a geounet fit state.
    """
    path = Path(folder) / STATE_JSON
    if not path.is_file():
        return None
    return _read_meta(path)["key"]


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"{path}: the saved training state is unreadable ({exc}); delete its folder "
            f"{path.parent} and train again without resume."
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ModelFileError(
            f"{path}: not a geounet training state; delete its folder {path.parent} and train "
            "again without resume."
        )
    return meta


def load_fit_state(
    folder: PathLike, trainer: Any, run: dict[str, Any], key: dict[str, Any], train_dl: Any
) -> int:
    """Restore a fit run saved by :func:`save_fit_state`; return the number of epochs done.

    Args:
        folder: The state folder.
        trainer: The :class:`~geounet.model.training.Trainer` (network and scaler restored).
        run: ``{"loop", "rule", "best", "rows"}`` of the new run, restored in place.
        key: This run's settings; they must equal the saved ones.
        train_dl: The training loader (its generators are restored).

    Raises:
        InvalidParameterError: No saved state, or one saved with other settings.
        ModelFileError: The state files are damaged or not geounet's.
    """
    from safetensors.torch import load_file

    path = Path(folder)
    if not (path / STATE_JSON).is_file() or not (path / STATE_FILE).is_file():
        raise InvalidParameterError(
            f"{path}: no saved training state to resume from; train without resume=True."
        )
    meta = _read_meta(path / STATE_JSON)
    if meta["key"] != json.loads(json.dumps(key)):
        raise InvalidParameterError(
            f"{path}: the saved training state was made with {meta['key']}, not {key}; "
            "resume with the same data and settings, or delete the folder to start again."
        )
    check_not_pickle(path / STATE_FILE)
    try:
        tensors = load_file(str(path / STATE_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(
            f"{path / STATE_FILE}: unreadable training state ({exc}); delete {path} and "
            "train again without resume."
        ) from exc
    _restore(meta, tensors, trainer, run, train_dl)
    return int(meta["epochs_done"])


def _pick(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _restore(
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    trainer: Any,
    run: dict[str, Any],
    train_dl: Any,
) -> None:
    loop, best = run["loop"], run["best"]
    trainer.network.load_state_dict(_pick(tensors, "net."))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in _pick(tensors, "opt.").items():
        idx, slot = name.split(".", 1)
        slots.setdefault(int(idx), {})[slot] = t
    groups = [
        {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]
    ]
    loop.opt.load_state_dict({"state": slots, "param_groups": groups})
    loop.schedule.load_state_dict(meta["schedule"])
    if loop.average is not None and meta.get("average"):
        loop.average.load(_pick(tensors, "avg."), meta["average"]["updates"])
    if meta["scaler"]:
        trainer.scaler.load_state_dict(meta["scaler"])
    for name, value in meta["rule"].items():
        setattr(run["rule"], name, value)
    b = meta["best"]
    best.score, best.epoch, best.late = b["score"], b["epoch"], b.get("late", best.late)
    best.confusion = None if b["confusion"] is None else np.asarray(b["confusion"], np.int64)
    best.state = _pick(tensors, "best.") if b["has_state"] else None
    run["rows"][:] = meta["rows"]
    loop.start = time.perf_counter() - meta["clock"]["elapsed"]
    loop.valid_seconds = meta["clock"]["valid"]
    torch.set_rng_state(tensors["rng.torch"])
    for k, g in _generators(train_dl).items():
        if k in tensors:
            g.set_state(tensors[k])
    name, keys, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss))


def clear_fit_state(folder: PathLike) -> None:
    """Remove a state folder (after a run that finished)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
