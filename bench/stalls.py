"""What stops the router under sustained load: the passes of Python's cycle collector and
the tail they leave, for two builds side by side.

    .venv/bin/python bench/stalls.py --baseline /tmp/base [--rounds 3 --seconds 10]

Both routers run in the production configuration of ``ab_routers.py`` (Redis on, key
limits, the worker a max-in-flight; uvicorn with ``make serve``'s flags, one worker each,
pinned to CPU 0), each under ``gc_watch.py``, which logs every pass of the collector. Each
round loads each build in turn (A B, then B A) with a closed loop at ``--concurrency`` for
``--seconds`` without a break: a pause every few seconds would fall between the one-second
blocks of ``ab_routers.py`` or in a block of its own, and the medians never show it. Each
window is measured in the steady state: the same load runs ``--settle-seconds`` before it,
unmeasured (the clients' connections to the build idle through the other's window were
dropped, and reopening 64 at once made the window's first half second its tail). For
each build: requests/s, latency p50, p99 and the longest, and the collector's passes that
took over ``--pause-ms`` within the loaded windows (how many, the longest, and the objects
they freed per request: what the requests left in reference cycles). Every request is
checked to be billed exactly at the end, as in every bench. ``--wallets 64`` spreads the
requests over 64 users' wallets (the issue's "on one wallet and on 64").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
from builds import Builds, add_build_options, prepare_builds, upstream_running
from gc_watch import read_passes, watch_passes
from harness import (
    ROUTER_MODEL,
    TMP,
    check_billing,
    free_port,
    start_wrapped_router,
    stop_service,
    wait_ready,
)
from load import Run, Target, closed_loop, make_target, pct, session_for
from wal import segment_bytes, wal_mark, written_between


@dataclass(frozen=True)
class Window:
    """One loaded spell of one build: its monotonic start and end, its run, and what it
    wrote to PostgreSQL's log (a new segment's creation stops every commit: ``wal.py``)."""

    start: float
    end: float
    run: Run
    wal: dict[str, int]


# This process's own collector passes (the load generator's: it stalls all 64 clients at
# once, and the latencies they measure, as the router's would): when each ended, its length.
_client_passes: list[tuple[float, float]] = []
watch_passes(lambda at, generation, ms, freed: _client_passes.append((at, ms)))


async def load(builds: Builds, ports: dict[str, int], options: argparse.Namespace
               ) -> tuple[dict[str, list[Window]], int]:
    """Each build's loaded windows, and the requests answered outside them (the warm-up
    and the unmeasured seconds before each window)."""
    targets = {name: make_target(name, f"http://127.0.0.1:{port}/v1/chat/completions",
                                 ROUTER_MODEL, builds.keys) for name, port in ports.items()}
    windows: dict[str, list[Window]] = {name: [] for name in targets}
    warmed = 0
    with psycopg.connect(options.database_url, autocommit=True) as db:
        segment = segment_bytes(db)
        async with session_for(options.concurrency) as session:
            warmed = await _load_windows(session, targets, windows, options, db, segment)
    return windows, warmed


async def _load_windows(session: aiohttp.ClientSession, targets: dict[str, Target],
                        windows: dict[str, list[Window]], options: argparse.Namespace,
                        db: psycopg.Connection, segment: int) -> int:
    """Fill ``windows`` round by round; the requests answered outside them."""
    warmed = 0
    for target in targets.values():  # warm-up: caches, connections, code paths
        warm = Run()
        await closed_loop(session, target, options.concurrency, 3.0, warm)
        warmed += warm.ok
    for round_number in range(options.rounds):
        order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
        for name in order:
            # Unmeasured: the clients' connections to this build, idle through the other
            # build's window, were dropped (aiohttp after 4 s, uvicorn after 5 s), and 64
            # new ones at once made the first half second of the window its tail.
            settle = Run()
            await closed_loop(session, targets[name], options.concurrency,
                              options.settle_seconds, settle)
            warmed += settle.ok  # billed like any other
            run = Run()
            before = wal_mark(db)
            started = time.monotonic()
            await closed_loop(session, targets[name], options.concurrency,
                              options.seconds, run)
            ended = time.monotonic()
            if run.errors:
                raise SystemExit(f"{name}: errors {dict(run.errors)}")
            wal = written_between(before, wal_mark(db), segment)
            windows[name].append(Window(started, ended, run, wal))
        print(f"round {round_number + 1}/{options.rounds} done", flush=True)
    return warmed


def passes_within(log: Path, windows: list[Window]) -> list[dict[str, float]]:
    """The collector's passes that ended inside one of ``windows``."""
    return [p for p in read_passes(log)
            if any(w.start <= p["at"] <= w.end for w in windows)]


def figures(windows: list[Window], passes: list[dict[str, float]], pause_ms: float
            ) -> dict[str, float | None]:
    latencies = [latency for w in windows for latency in w.run.latencies]
    ok = sum(w.run.ok for w in windows)
    seconds = sum(w.end - w.start for w in windows)
    long = [p for p in passes if p["ms"] > pause_ms]
    p50, p99 = pct(latencies, 50), pct(latencies, 99)
    return {"requests/s": ok / seconds, "p50 ms": p50, "p99 ms": p99,
            "p99 / p50": p99 / p50 if p50 and p99 else None,
            "longest ms": 1000 * max(latencies) if latencies else None,
            f"passes over {pause_ms:g} ms": float(len(long)),
            "longest pass ms": max((p["ms"] for p in long), default=0.0),
            "objects freed per request": sum(p["freed"] for p in passes) / ok if ok else None,
            f"load generator passes > {pause_ms:g} ms": float(sum(
                1 for at, ms in _client_passes if ms > pause_ms
                and any(w.start <= at <= w.end for w in windows))),
            "WAL bytes per request": sum(w.wal["bytes"] for w in windows) / ok if ok else None,
            "WAL segments crossed": float(sum(w.wal["segments crossed"] for w in windows)),
            "WAL segment files added": float(sum(w.wal["segment files added"] for w in windows))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds of unbroken load per build and round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--settle-seconds", type=float, default=1.0,
                        help="the same load, unmeasured, before each window (0: none)")
    parser.add_argument("--wallets", type=int, default=1,
                        help="users with a wallet and a key each, the requests going round them")
    parser.add_argument("--pause-ms", type=float, default=5.0,
                        help="a collector's pass longer than this is counted as a pause")
    add_build_options(parser)
    parser.add_argument("--out", type=Path, default=TMP / "stalls.json")
    options = parser.parse_args(argv)

    builds = prepare_builds(parser, options, wallets=options.wallets)
    names = list(builds.trees)
    ports = {name: free_port() for name in names}
    logs = {name: TMP / f"stalls-{name.replace(' ', '_')}.jsonl" for name in names}
    results: dict[str, dict[str, float | None]] = {}
    with upstream_running(builds):
        routers = {name: start_wrapped_router("gc_watch.py", logs[name], name.replace(" ", "_"),
                                              builds.trees[name], ports[name], builds.env)
                   for name in names}
        try:
            for name, router in routers.items():
                wait_ready(router, f"http://127.0.0.1:{ports[name]}/v1/models",
                           {"Authorization": f"Bearer {builds.keys[0]}"})
            windows, warmed = asyncio.run(load(builds, ports, options))
        finally:
            for router in routers.values():
                stop_service(router)
    for name in names:
        results[name] = figures(windows[name], passes_within(logs[name], windows[name]),
                                options.pause_ms)
    answered = warmed + sum(w.run.ok for runs in windows.values() for w in runs)
    billing = check_billing(options.database_url, answered)
    lines = [f"{'':<30} {'baseline':>10} {'this build':>10}"]
    for key in results["baseline"]:
        a, b = results["baseline"][key], results["this build"][key]
        lines.append(f"{key:<30} {a if a is not None else float('nan'):>10.2f} "
                     f"{b if b is not None else float('nan'):>10.2f}")
    print("\n".join(lines))
    print(f"billing: {billing.describe(answered)}")
    options.out.write_text(json.dumps({"results": results, "report": lines,
                                       "billing_ok": billing.ok(answered)}, indent=1))
    return 0 if billing.ok(answered) else 1


if __name__ == "__main__":
    sys.exit(main())
