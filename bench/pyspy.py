"""py-spy and perf on the router under load, for ``proxy_bench.py``: where its Python CPU goes
(only the thread holding the GIL), which threads are busy, how many threads it creates per
request. Both tools are optional: without them the profile is skipped."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from harness import BIN, TMP
from load import Run

# Leaf frames of threads that are only waiting: py-spy does not always see them as idle.
WAITING_LEAVES = ("_worker (concurrent/futures/thread.py)", "Condition.wait (threading.py)",
                  "Event.wait (threading.py)", "Thread._wait_for_tstate_lock (threading.py)")


def classify(frame: str) -> str:
    """Which part of the stack a py-spy frame (``function (path)``) belongs to."""
    path = frame.rpartition("(")[2]
    for needle, area in (("psycopg", "psycopg (database driver)"),
                         ("django/db", "django ORM"),
                         ("aiohttp", "aiohttp (upstream client)"),
                         ("uvicorn", "uvicorn / httptools (server)"),
                         ("asgiref", "asgiref (sync_to_async)"),
                         ("concurrent/futures", "threads"), ("threading.py", "threads"),
                         ("django/", "django (request, response, other)"),
                         ("adrf", "adrf / DRF"), ("rest_framework", "adrf / DRF"),
                         ("asyncio", "asyncio / uvloop"), ("uvloop", "asyncio / uvloop"),
                         ("quicktok", "token counting"), ("proxy/ground/tokens", "token counting"),
                         ("proxy/", "proxy app"), ("billing/", "billing app"),
                         ("accounts/", "accounts app"), ("orjson", "orjson"),
                         ("logging", "logging")):
        if needle in path:
            return area
    return "other"


def thread_kind(root: str) -> str:
    """What a thread is, from py-spy's ``thread (tid): name`` root frame."""
    name = root.rpartition(": ")[2]
    if name == "MainThread":
        return "event loop"
    if name.startswith(("uvloop_", "asyncio_")):
        return "default executor (sync_to_async)"
    if name.startswith("ThreadPoolExecutor-"):
        return "one-off executors (asgiref ThreadSensitiveContext)"
    if name.endswith("(join)"):
        return "executor joiners (asgiref)"
    return "other threads"


def parse_raw(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;...;leaf count`` per line."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def shares(counter: Counter[str], total: int, n: int) -> list[tuple[str, float]]:
    return [(key, round(100 * c / total, 1)) for key, c in counter.most_common(n)] if total \
        else []


def summarize_cpu(raw: str) -> dict[str, Any]:
    """From a ``--gil`` profile: where the router's Python CPU goes."""
    leaf: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for frames, count in parse_raw(raw):
        frames = frames[1:] if frames[0].startswith("thread (") else frames
        if not frames:
            continue
        total += count
        leaf[frames[-1]] += count
        areas[classify(frames[-1])] += count
        for frame in set(frames):
            if any(p in frame for p in ("(proxy/", "(billing/", "(accounts/")):
                own[frame] += count
    return {"samples": total, "areas_pct": shares(areas, total, 20),
            "top_self_pct": shares(leaf, total, 20),
            "top_own_inclusive_pct": shares(own, total, 20)}


def summarize_threads(raw: str) -> dict[str, Any]:
    """From an all-threads profile: which threads are busy."""
    kinds: Counter[str] = Counter()
    total = 0
    for frames, count in parse_raw(raw):
        if frames[-1] in WAITING_LEAVES:
            continue
        kinds[thread_kind(frames[0])] += count
        total += count
    return {"samples": total, "threads_pct": shares(kinds, total, 10)}


async def count_thread_creations(pid: int, seconds: float) -> int | None:
    """Threads the router's existing threads create in ``seconds`` (perf, if installed).

    Exact where py-spy can only guess: short-lived threads are rarely sampled.
    """
    perf = shutil.which("perf")
    if perf is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        perf, "stat", "-x", ",", "-e", "sched:sched_process_fork", "-p", str(pid), "--",
        "sleep", f"{seconds:g}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    for line in err.decode(errors="replace").splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "sched:sched_process_fork" and fields[0].isdigit():
            return int(fields[0])
    return None


def make_profiler(router_pid: int, cpu: int | None
                  ) -> Callable[[float, Run], Awaitable[dict[str, Any] | None]]:
    py_spy = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists()
                                        else None)
    rate = 67

    async def record(name: str, seconds: int, *flags: str) -> str | dict[str, str]:
        assert py_spy is not None
        out = TMP / f"proxy_bench-router.pyspy-{name}.txt"
        # Blocking (py-spy pauses the router for each sample): --nonblocking reads stacks
        # while they change and returned long runs of one stale stack. A low rate keeps the
        # pauses from changing the regime too much; the router still slows down somewhat.
        argv = [py_spy, "record", "--pid", str(router_pid), "--duration", str(seconds),
                "--rate", str(rate), "--format", "raw", "--nolineno", "--threads",
                *flags, "--output", str(out)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"error": "py-spy did not finish"}
        if proc.returncode != 0 or not out.exists():
            return {"error": output.decode(errors="replace")[-500:]}
        return out.read_text()

    async def profile(seconds: float, load: Run) -> dict[str, Any] | None:
        """Half the time only the thread holding the GIL (where Python CPU goes), half all
        busy threads (which threads work, and how many are created)."""
        if py_spy is None:
            print("  py-spy is not installed: no profile (pip install py-spy)", flush=True)
            return None
        half = max(1, round(seconds / 2))
        # perf first, alone: py-spy's pauses would slow the router but not change this count.
        before = load.ok + sum(load.errors.values())
        forks = await count_thread_creations(router_pid, 2)
        requests = load.ok + sum(load.errors.values()) - before
        cpu_raw = await record("gil", half, "--gil")
        threads_raw = await record("threads", half)
        report: dict[str, Any] = {
            "seconds_each": half, "rate_hz": rate,
            "threads_created_per_request": (forks / requests if forks is not None and requests
                                            else None)}
        report["cpu"] = cpu_raw if isinstance(cpu_raw, dict) else summarize_cpu(cpu_raw)
        report["threads"] = (threads_raw if isinstance(threads_raw, dict)
                             else summarize_threads(threads_raw))
        report["raw"] = str(TMP / "proxy_bench-router.pyspy-{gil,threads}.txt")
        return report

    return profile


# --------------------------------------------------------------------------- report
