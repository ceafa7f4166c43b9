"""What a benchmark reads off the processes it runs: their CPU time, memory and children,
how busy the whole machine was (all from /proc), and what PostgreSQL's backends wait for."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from load import Run

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's supervisor and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), 0 if it is gone or not visible."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def process_cpu_ns(pid: int) -> int:
    """Nanoseconds the process (all its threads) has run on a CPU, from the scheduler's own
    account (``schedstat``): fine enough for one request, where ``stat``'s ticks are 10 ms."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return 0
    return total


def sleeps(pid: int) -> int:
    """How many times the process's threads have gone to sleep of their own accord
    (``voluntary_ctxt_switches``): for an event loop, each wait for the network that found
    nothing ready, and so each wake-up after it."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, StopIteration):  # a thread that ended
                status = (task / "status").read_text().splitlines()
                total += int(next(line for line in status
                                  if line.startswith("voluntary_ctxt_switches")).split()[1])
    except OSError:
        return 0
    return total


def tree_cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(p) for p in pids)


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process has used so far (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot: how loaded the shared machine is."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


WAITS_SQL = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'running') FROM pg_stat_activity
 WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()
"""


class Meter:
    """Measures one block: wall time, router and PostgreSQL CPU, machine load, and on request
    what the bench database's busy backends are waiting for."""

    def __init__(self, router_pid: int | None, database_url: str) -> None:
        # With several worker processes the router's CPU is that of its whole tree; without a
        # router (the direct baseline) only wall time and machine load are measured.
        self.router_pids = process_tree(router_pid) if router_pid is not None else []
        self.database_url = database_url
        self.postgres_pids: list[int] = []

    def _snapshot(self) -> tuple[float, float, float, int, int]:
        busy, total = machine_busy_ticks()
        return (time.perf_counter(), tree_cpu_seconds(self.router_pids),
                tree_cpu_seconds(self.postgres_pids), busy, total)

    async def measure(self, run: Run, block: Awaitable[None], *, db_waits: bool = False
                      ) -> None:
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self._sample_waits(run, stop)) if db_waits else None
        before = self._snapshot()
        try:
            await block
        finally:
            after = self._snapshot()
            stop.set()
            if sampler is not None:
                await sampler
        run.wall += after[0] - before[0]
        run.router_cpu += after[1] - before[1]
        run.postgres_cpu += after[2] - before[2]
        run.busy += after[3] - before[3]
        run.ticks += after[4] - before[4]

    async def _sample_waits(self, run: Run, stop: asyncio.Event) -> None:
        # Every 20 ms; only under concurrent load, where it cannot shift a latency much.
        name = urlsplit(self.database_url).path.lstrip("/")
        async with await psycopg.AsyncConnection.connect(self.database_url,
                                                         autocommit=True) as conn:
            while not stop.is_set():
                cursor = await conn.execute(WAITS_SQL, (name,))
                run.db_samples += 1
                run.db_waits.update(row[0] for row in await cursor.fetchall())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)
