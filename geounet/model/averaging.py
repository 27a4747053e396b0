"""An exponential moving average of a network's weights, for validation and the final model.

On a small labelled area the weights after the last optimiser step fit the training chips
more closely than anything else; an average of the recent weights sits in a flatter part of
the loss surface and maps the rest of the area better (Polyak averaging; the "EMA" of
timm and of most detection and segmentation recipes). :class:`WeightAverage` keeps that
average beside the network: floating-point parameters and buffers (batch-norm running
statistics included) are averaged, integer buffers (``num_batches_tracked``) copied.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the
first steps, far from any useful weights, are forgotten quickly.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> _ = torch.nn.init.zeros_(net.weight)
    >>> avg = WeightAverage(net, decay=0.99)
    >>> _ = torch.nn.init.ones_(net.weight)
    >>> avg.update(net)  # the first update forgets 9 / 11 of the start (warm-up)
    >>> round(float(avg.state_dict()["weight"]), 3)
    0.818
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geounet.core.errors import InvalidParameterError

__all__ = ["WeightAverage", "check_decay"]


def check_decay(decay: float, name: str = "decay") -> None:
    """Refuse a decay outside ``(0, 1)``, naming the argument ``name`` in the message.

    Raises:
        InvalidParameterError: ``decay`` is not strictly between 0 and 1.
    """
    if not 0.0 < decay < 1.0:
        raise InvalidParameterError(
            f"{name}={decay} must lie strictly between 0 and 1 (0.99 averages about the last "
            "100 steps); use None to train without weight averaging."
        )


class WeightAverage:
    """Exponential moving average of a network's state (parameters and buffers).

    Args:
        network: The network whose state is averaged (its current state is the start).
        decay: Weight of the old average at each update, in ``(0, 1)``; the average spans
            about ``1 / (1 - decay)`` optimiser steps.

    Attributes:
        decay: The decay.
        updates: Number of :meth:`update` calls so far.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        check_decay(decay)
        self.decay = float(decay)
        self.updates = 0
        state = network.state_dict()
        self._dtypes = {k: v.dtype for k, v in state.items()}
        self._avg = {
            k: v.detach().to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
            for k, v in state.items()
        }

    def current_decay(self) -> float:
        """The decay of the next update (warmed up over the first steps)."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the average towards the network's current state."""
        weight = 1.0 - self.current_decay()
        for name, value in network.state_dict().items():
            avg = self._avg[name]
            if avg.is_floating_point():
                avg.lerp_(value.detach().float(), weight)
            else:
                avg.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the averaged state, in the network's dtypes (for ``load_state_dict``)."""
        return {k: v.to(self._dtypes[k], copy=True) for k, v in self._avg.items()}

    def tensors(self) -> dict[str, torch.Tensor]:
        """A copy of the average as kept (float32), for saving a training state."""
        return {k: v.clone() for k, v in self._avg.items()}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        """Restore an average saved with :meth:`tensors` after ``updates`` updates.

        Raises:
            InvalidParameterError: The saved tensors are not those of this network.
        """
        if set(tensors) != set(self._avg):
            raise InvalidParameterError(
                "the saved weight average belongs to another network; resume with the same "
                "model, or delete the training state to start again."
            )
        for k, v in tensors.items():
            self._avg[k].copy_(v)
        self.updates = int(updates)

    def describe(self) -> dict[str, Any]:
        """Decay and update count (for a training state's JSON)."""
        return {"decay": self.decay, "updates": self.updates}
