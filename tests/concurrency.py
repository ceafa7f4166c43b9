"""Run calls at once from many threads, each thread with its own database connection."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connections

# PostgreSQL allows 100 connections here; stay well below so parallel suites still fit:
# with 40, one xdist worker was seen holding 77 connections at once (its threads, its live
# router's pool and threads), and a test on the other worker starting two routers was
# refused ("too many clients already"). 20 threads still contend on every row they share.
MAX_THREADS = 20


def run_concurrently(
    fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]], *, threads: int = MAX_THREADS
) -> list[Any]:
    """Call ``fn(*args)`` for every args tuple; return results or raised exceptions in order.

    All threads start together behind a barrier, so the calls really contend.
    """
    work: queue.Queue[tuple[int, tuple[Any, ...]]] = queue.Queue()
    calls = list(calls)
    for index, args in enumerate(calls):
        work.put((index, args))
    results: list[Any] = [None] * len(calls)
    count = max(1, min(threads, len(calls)))
    barrier = threading.Barrier(count)

    def worker() -> None:
        try:
            barrier.wait()
            while True:
                try:
                    index, args = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    results[index] = fn(*args)
                except Exception as exc:
                    results[index] = exc
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker) for _ in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in pool), "a worker thread hung"
    return results
