"""Capacity: thousands of streams in flight at once through one router process, against an
upstream that takes seconds per answer.

    .venv/bin/python bench/capacity.py [--streams 5000] [--answer-seconds 10] [--redis-url URL]

One run recreates a bench database, starts the local upstream with every answer taking
``--answer-seconds`` (a stream sends its first content at once, the rest when the time is
up) and the router (one worker process, full billing on PostgreSQL), then opens
``--streams`` streams over ``--ramp`` seconds, so that all of them are in flight together:
first straight to the upstream (the baseline), then through the router. It prints errors,
how many were in flight at the peak, time to first token and to the end both ways, the
router's peak resident memory, its CPU per stream (in all, and until every stream had its
first token: the starts, when the answers take longer than the burst) and its cycle
collector's passes (``gc_watch.py``); then checks that every stream the router answered
was billed exactly. The settings are chosen so that the run is about capacity: the worker
takes every stream, a request would wait long for a slot rather than be refused, and the
database pool is sized for bursts (all printed).
``--profile OUT.pstats`` profiles the router through its phase (``profiled_router.py``),
to see where a stream's CPU goes; with ``--profile-starts``, only until every stream had
its first token. ``--floor`` puts ``floor_app.py``'s relay (``floor.py``) where the
router was, nothing billed: what the server and the upstream client alone add to the
same streams, in runs alternated with the router's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from builds import add_api_option, direct_target, router_target
from floor import floor_argv, floor_env
from gc_watch import read_passes
from harness import (
    DEFAULT_SERVER,
    SERVERS,
    TMP,
    Service,
    check_billing,
    flush_redis_db,
    free_port,
    git_state,
    prepare_database,
    raise_open_files_limit,
    router_argv,
    router_env,
    run_async,
    seed,
    seed_anthropic,
    start_service,
    stop_service,
    upstream_argv,
    wait_ready,
)
from load import Run, Target, diff, fmt, ratio, table, timed_stream
from measure import (
    peak_rss_bytes,
    process_tree,
    tree_cpu_seconds,
)
from profiled_router import stats_written

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
MIB = 1024 * 1024
GC_LOG = TMP / "capacity-gc.jsonl"  # the router's collector passes (gc_watch.py)


@dataclass(frozen=True)
class Options:
    streams: int
    answer_seconds: float
    ramp: float
    users: int
    pool: int
    warm: bool
    capacity_wait_ms: int
    server: str
    database_url: str
    redis_url: str
    api: str
    out: Path
    profile: Path | None = None
    profile_starts: bool = False
    floor: bool = False
    workers: int = 1


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--answer-seconds", type=float, default=10.0)
    parser.add_argument("--ramp", type=float, default=8.0,
                        help="seconds over which the streams are opened; below the answer "
                             "time, so all are in flight together (default 8)")
    parser.add_argument("--users", type=int, default=100,
                        help="wallets the streams are spread over (default 100)")
    parser.add_argument("--pool", type=int, default=20,
                        help="ROUTER_DB_POOL_SIZE of the router (default 20)")
    parser.add_argument("--capacity-wait-ms", type=int, default=30000,
                        help="ROUTER_CAPACITY_WAIT_MS of the router (default 30000)")
    parser.add_argument("--cold", dest="warm", action="store_false",
                        help="skip the warm-up (one stream per key before the phases), so "
                             "the streams also pay for the router's first lookup of each key")
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--workers", type=int, default=1,
                        help="the server's processes (default 1; `make serve` runs one per "
                             "core)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")
    parser.add_argument("--redis-url", default="",
                        help="give the router Redis (this database is flushed at the start)")
    add_api_option(parser)
    parser.add_argument("--out", type=Path, default=TMP / "capacity.json")
    parser.add_argument("--profile", type=Path, metavar="PSTATS",
                        help="run the router under profiled_router.py and write cProfile's "
                             "statistics of its phase (the streams through it) to PSTATS; "
                             "its CPU figures then include the profiler's cost")
    parser.add_argument("--profile-starts", action="store_true",
                        help="with --profile: stop profiling once every stream has its "
                             "first token (the streams' starts only)")
    parser.add_argument("--floor", action="store_true",
                        help="instead of the router, floor_app.py's relay (floor.py): the "
                             "least the router's server and upstream client add, nothing "
                             "billed")
    args = parser.parse_args(argv)
    if args.floor and args.api != "chat":
        parser.error("--floor relays chat completions only")
    if (args.streams < 1 or args.users < 1 or args.workers < 1 or args.answer_seconds <= 0
            or args.ramp < 0):
        parser.error("streams, users and answer seconds must be positive")
    if args.profile_starts and args.profile is None:
        parser.error("--profile-starts needs --profile")
    return Options(**vars(args))


@dataclass
class Phase:
    """One target's streams, all opened within the ramp."""

    run: Run = field(default_factory=Run)
    in_flight: int = 0  # streams that have their first token and have not ended
    peak_in_flight: int = 0
    wall: float = 0.0
    router_cpu: float = 0.0  # CPU seconds of the router process(es) during the phase
    first_tokens: int = 0  # streams that got their first token
    # CPU seconds of the router process(es) from the phase's start until every stream had
    # its first token: the streams' starts (their rest comes ``--answer-seconds`` later),
    # which issue 19's target 6 bounds per stream; None if some stream never got one.
    router_cpu_starts: float | None = None
    ended_before: int = 0  # streams that ended before then (their ends are in that CPU)
    # time.monotonic() at the phase's start, when every stream had its first token, its end
    started_at: float = 0.0
    starts_done_at: float | None = None
    ended_at: float = 0.0
    rss_samples: list[int] = field(default_factory=list)


async def warm_up(options: Options, target: Target) -> Run:
    """One stream per key, all at once: a router in service has looked its keys up, and a
    burst of streams then measures starting streams, not the first lookup of 100 keys."""
    run = Run()
    timeout = aiohttp.ClientTimeout(total=options.answer_seconds + 120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        for error, seconds, ttft in await asyncio.gather(
                *(timed_stream(session, target) for _ in range(options.users))):
            run.record(error, seconds, ttft)
    return run


async def phase(options: Options, target: Target, router_pids: list[int],
                on_starts: Callable[[], None] | None = None) -> Phase:
    """Open the streams and wait for their ends; ``on_starts`` is called once every stream
    has its first token."""
    result = Phase()
    timeout = aiohttp.ClientTimeout(total=options.answer_seconds + 120)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    start, cpu = time.perf_counter(), tree_cpu_seconds(router_pids)
    result.started_at = time.monotonic()

    def first_token() -> None:
        result.first_tokens += 1
        if result.first_tokens == options.streams:
            result.router_cpu_starts = tree_cpu_seconds(router_pids) - cpu
            result.starts_done_at = time.monotonic()
            if on_starts is not None:
                on_starts()
        result.in_flight += 1
        result.peak_in_flight = max(result.peak_in_flight, result.in_flight)

    async def one(i: int) -> None:
        await asyncio.sleep(options.ramp * i / options.streams)
        error, seconds, ttft = await timed_stream(session, target, first_token)
        if result.router_cpu_starts is None:
            result.ended_before += 1
        if ttft is not None:
            result.in_flight -= 1
        result.run.record(error, seconds, ttft)

    async def sample_memory(done: asyncio.Event) -> None:
        while not done.is_set():
            result.rss_samples.append(sum(_rss(pid) for pid in router_pids))
            with contextlib.suppress(TimeoutError):  # the next sample is due
                await asyncio.wait_for(done.wait(), 0.5)

    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        sampler = asyncio.ensure_future(sample_memory(done))
        await asyncio.gather(*(one(i) for i in range(options.streams)))
        done.set()
        await sampler
    result.wall = time.perf_counter() - start
    result.ended_at = time.monotonic()
    result.router_cpu = tree_cpu_seconds(router_pids) - cpu
    return result


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def collector(result: Phase) -> dict[str, Any]:
    """The router's cycle-collector passes in its phase, and until every stream had its
    first token (``gc_watch.py``'s log)."""
    passes = [p for p in read_passes(GC_LOG) if result.started_at <= p["at"] <= result.ended_at]
    done = result.starts_done_at
    starts = [p for p in passes if done is not None and p["at"] <= done]
    return {"passes": len(passes), "ms": round(sum(p["ms"] for p in passes), 1),
            "longest_ms": max((p["ms"] for p in passes), default=0.0),
            "passes_in_starts": len(starts), "ms_in_starts": round(sum(p["ms"] for p in starts), 1)}


def summary(result: Phase) -> dict[str, Any]:
    return result.run.summary() | {
        "peak_in_flight": result.peak_in_flight, "wall_s": round(result.wall, 2),
        "router_cpu_s": round(result.router_cpu, 2),
        "router_cpu_starts_s": (None if result.router_cpu_starts is None
                                else round(result.router_cpu_starts, 3)),
        "ended_before_starts_done": result.ended_before,
        "rss_peak_sampled_mib": max(result.rss_samples, default=0) / MIB}


def print_report(report: dict[str, Any]) -> None:
    d, r = report["direct"], report["router"]
    name = report["measured"]  # the router, or the floor in its place (``--floor``)
    rows = [
        ("streams answered / errors", f"{d['ok']} / {sum(d['errors'].values())}",
         f"{r['ok']} / {sum(r['errors'].values())}", fmt(ratio(r["ok"], d["ok"]), "", 3)),
        ("in flight at once (peak)", str(d["peak_in_flight"]), str(r["peak_in_flight"]),
         fmt(ratio(r["peak_in_flight"], d["peak_in_flight"]), "", 3)),
        ("time to first token p50", fmt(d["ttft_p50_ms"]), fmt(r["ttft_p50_ms"]),
         f"+{fmt(diff(r['ttft_p50_ms'], d['ttft_p50_ms']))}"),
        ("time to first token p99", fmt(d["ttft_p99_ms"]), fmt(r["ttft_p99_ms"]),
         f"+{fmt(diff(r['ttft_p99_ms'], d['ttft_p99_ms']))}"),
        ("time to the end p50", fmt(d["p50_ms"]), fmt(r["p50_ms"]),
         f"+{fmt(diff(r['p50_ms'], d['p50_ms']))}"),
        ("time to the end p99", fmt(d["p99_ms"]), fmt(r["p99_ms"]),
         f"+{fmt(diff(r['p99_ms'], d['p99_ms']))}"),
    ]
    print()
    print(table(("", "direct", name, f"{name} vs direct"), rows))
    memory = report["router_memory"]
    gc = report.get("router_collector")
    if gc is not None:
        print(f"{name}'s cycle collector: {gc['passes']} passes in its phase, {gc['ms']:.0f} ms "
              f"in all (the longest {gc['longest_ms']:.0f} ms); {gc['passes_in_starts']} "
              f"({gc['ms_in_starts']:.0f} ms) before every stream had its first token")
    print(f"\n{name} CPU {r['router_cpu_s']:.1f} s over the {r['wall_s']:.0f} s of its phase "
          f"({1000 * r['router_cpu_s'] / max(1, r['ok'] + sum(r['errors'].values())):.2f} ms "
          f"per stream)")
    starts = r["router_cpu_starts_s"]
    if starts is not None:
        print(f"  of which until every stream had its first token (the starts): {starts:.2f} s "
              f"({1000 * starts / max(1, r['ok']):.2f} ms per stream start"
              + (f"; {r['ended_before_starts_done']} streams had ended by then, their ends "
                 "included" if r["ended_before_starts_done"] else "") + ")")
    print(f"{name} peak RSS {memory['peak_mib']:.0f} MiB (VmHWM; idle before the load "
          f"{memory['idle_mib']:.0f} MiB: {memory['per_stream_kib']:.0f} KiB per stream in "
          f"flight)")
    errors = {**{f"direct: {k}": v for k, v in d["errors"].items()},
              **{f"{name}: {k}": v for k, v in r["errors"].items()}}
    print(f"errors: {sum(errors.values())}" + (f" {errors}" if errors else ""))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    files = raise_open_files_limit()
    needed = 2 * options.streams + 1000  # the router holds a client and an upstream socket
    if files < needed:
        raise SystemExit(f"the open-files limit is {files}, below the {needed} this run needs "
                         f"(raise the hard limit: ulimit -Hn)")
    settings = {"ROUTER_DB_POOL_SIZE": str(options.pool),
                "ROUTER_CAPACITY_WAIT_MS": str(options.capacity_wait_ms),
                # Past the default hold TTL nothing happens here, but a slow run must not
                # have its holds swept while the streams are still open.
                "ROUTER_HOLD_TTL_SECONDS": "900"}
    env = router_env(options.database_url, [f"{k}={v}" for k, v in settings.items()],
                     redis_url=options.redis_url)
    upstream_port, router_port = free_port(), free_port()

    print(f"database {options.database_url}: recreate, migrate, seed {options.users} users "
          f"...", flush=True)
    prepare_database(options.database_url)
    if options.redis_url:
        flush_redis_db(options.redis_url)
    keys = seed(env, upstream_port, options.users, max_concurrency=2 * options.streams)
    if options.api == "messages":
        seed_anthropic(env, upstream_port, max_concurrency=2 * options.streams)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(
            upstream_port, answer_seconds=options.answer_seconds), env)
        services.append(upstream)
        argv = router_argv(options.server, router_port, options.workers)
        server_env = env
        if options.floor:
            argv = floor_argv(router_port, options.server, options.workers)
            server_env = floor_env(env, "", upstream_port)
        if options.profile:
            argv = [sys.executable, str(Path(__file__).parent / "profiled_router.py"),
                    str(options.profile), *argv]
        else:  # every pass of its cycle collector logged (a pass stops every stream)
            GC_LOG.unlink(missing_ok=True)
            argv = [sys.executable, str(Path(__file__).parent / "gc_watch.py"), str(GC_LOG),
                    *argv]
        router = start_service("floor" if options.floor else "router", argv, server_env)
        services.append(router)
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        wait_ready(router, f"http://127.0.0.1:{router_port}/v1/models",
                   {"Authorization": f"Bearer {keys[0]}"})
        router_pids = process_tree(router.proc.pid)
        idle = sum(_rss(pid) for pid in router_pids)
        if options.floor:
            print("in the router's place: floor_app.py's relay, nothing billed", flush=True)
        print(f"router :{router_port} ({options.server}, {options.workers} worker(s), pid "
              f"{router.proc.pid}); "
              f"settings {settings}, worker max concurrency {2 * options.streams}, "
              f"Redis {'on' if options.redis_url else 'off'}; open files {files}",
              flush=True)
        direct = direct_target(options.api, upstream_port)
        routed = router_target(options.api, "router", router_port, keys)
        results = {}
        warmed = 0
        if options.warm:
            print(f"warm-up: one stream per key ({options.users}) ...", flush=True)
            warm = run_async(warm_up(options, routed), options.answer_seconds + 300)
            if warm.errors:
                raise SystemExit(f"the warm-up failed: {dict(warm.errors)}")
            warmed = warm.ok
            idle = sum(_rss(pid) for pid in router_pids)  # caches filled: the idle figure
        for target in (direct, routed):
            print(f"{target.name}: {options.streams} streams over {options.ramp:g} s, each "
                  f"{options.answer_seconds:g} s ...", flush=True)
            on_starts = None
            if options.profile and target is routed:
                options.profile.unlink(missing_ok=True)  # what the stop writes, whole
                router.proc.send_signal(signal.SIGUSR1)
                if options.profile_starts:
                    def on_starts() -> None:
                        router.proc.send_signal(signal.SIGUSR2)
            results[target.name] = run_async(phase(options, target, router_pids, on_starts),
                                             options.answer_seconds + options.ramp + 300)
        if options.profile:
            if not options.profile_starts:  # else asked once every stream had begun
                router.proc.send_signal(signal.SIGUSR2)
            stats_written(options.profile)
            print(f"profile of the router's phase written to {options.profile}", flush=True)
        peak = sum(peak_rss_bytes(pid) for pid in router_pids)
        # The floor bills nothing: nothing may be found billed either.
        billed = 0 if options.floor else results["router"].run.ok + warmed
        billing = check_billing(options.database_url, billed)
        warnings = router.warnings()
    finally:
        for service in reversed(services):
            stop_service(service)

    report: dict[str, Any] = {
        "options": {k: str(v) for k, v in vars(options).items()},
        "settings": settings | {"worker_max_concurrency": 2 * options.streams,
                                "open_files": files},
        "measured": "floor" if options.floor else "router",
        "direct": summary(results["direct"]), "router": summary(results["router"]),
        "router_memory": {"idle_mib": idle / MIB, "peak_mib": peak / MIB,
                          "per_stream_kib": (peak - idle) / 1024 / options.streams},
        "router_collector": None if options.profile else collector(results["router"]),
        "billing": vars(billing) | {"expected": billed},
        "environment": {"cpus": os.cpu_count(), "git": git_state(),
                        "python": sys.version.split()[0], "router_log_warnings": warnings},
    }
    print_report(report)
    print(f"billing: {billing.describe(billed)}")
    if warnings:
        print(f"router log: {warnings} warning/error lines, see {router.log_path}")
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    healthy = (billing.ok(billed)
               and not results["router"].run.errors and not results["direct"].run.errors)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
