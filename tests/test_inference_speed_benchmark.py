"""``benchmarks/inference_speed.py`` times the bare network as the engine runs it."""

from __future__ import annotations

import pytest
import torch
from benchmark_modules import benchmark_module

from geounet.inference.engines import CPU_TILES_PER_CALL


@pytest.fixture(scope="module")
def speed():
    with benchmark_module("inference_speed.py", "inference_speed_benchmark") as module:
        yield module


class _Recorder(torch.nn.Module):
    """A network that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return self.conv(x)


def test_the_bare_forward_runs_as_many_tiles_a_call_as_the_engine_on_a_cpu(speed) -> None:
    class Model:
        network = _Recorder()

    batches = [torch.zeros(4, 3, 8, 8), torch.zeros(3, 3, 8, 8)]
    wall, cpu, tiles = speed.time_network(Model(), iter(batches))
    assert tiles == 7 and wall > 0 and cpu >= 0
    step = CPU_TILES_PER_CALL
    expected = [min(step, n - k) for n in (4, 3) for k in range(0, n, step)]
    assert Model.network.calls == expected
