"""geounet's own thread pools: how many threads, results in order, bounded look-ahead."""

from __future__ import annotations

import threading
import time

import pytest

from geounet.core.threads import ordered_map, worker_threads


def test_worker_threads_follow_the_users_setting(monkeypatch):
    """GEOUNET_NUM_THREADS first, then OMP/MKL; nonsense is ignored; else the cores."""
    for key in ("GEOUNET_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    cores = worker_threads()
    assert cores >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads() == 3
    monkeypatch.setenv("GEOUNET_NUM_THREADS", "5")
    assert worker_threads() == 5
    monkeypatch.setenv("GEOUNET_NUM_THREADS", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "four")
    assert worker_threads() == cores


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_ordered_map_keeps_the_order_of_the_items(threads):
    """Items that finish out of order still come back in the order they were given."""

    def slow_first(i: int) -> int:
        time.sleep(0.002 * ((7 * i) % 5))
        return i * i

    assert list(ordered_map(slow_first, range(40), threads=threads)) == [i * i for i in range(40)]


def test_ordered_map_draws_items_in_the_calling_thread_and_only_a_few_ahead():
    """The items (reads from files) are drawn here, at most twice the pool ahead of the results."""
    drawn, workers = [], set()
    caller = threading.get_ident()

    def items():
        for i in range(30):
            assert threading.get_ident() == caller
            drawn.append(i)
            yield i

    def work(i: int) -> int:
        workers.add(threading.get_ident())
        return i

    results = ordered_map(work, items(), threads=2)
    for got in results:
        assert len(drawn) <= got + 1 + 2 * 2  # never more than 4 ahead of what was returned
    assert drawn == list(range(30))
    assert caller not in workers


def test_ordered_map_raises_the_work_error_in_order():
    """The first failing item's exception reaches the caller, after the results before it."""

    def work(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for value in ordered_map(work, range(10), threads=2):
            got.append(value)
    assert got == [0, 1, 2]
