"""What the router adds on top of its upstream: latency, throughput and time to first token.

    .venv/bin/python bench/proxy_bench.py [--requests N] [--duration S] [--database-url URL]

One run drops and recreates a dedicated PostgreSQL database, migrates and seeds it through
the ops CLI, starts a cheap local upstream (``bench/fast_upstream.py``) and the router
(uvicorn, one worker, full billing on PostgreSQL), then sends the same load straight to the
upstream and through the router, in alternating blocks so that the noise of a shared
machine falls on both alike. It prints added latency at concurrency 1 and 64, requests/s
both ways, streaming time to first token both ways, the targets next to them, and checks
afterwards that the database charged every request the router answered. Everything stays
on 127.0.0.1 and every phase is bounded in count or time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psycopg
from harness import (
    DEFAULT_SERVER,
    ROUTER_MODEL,
    SERVERS,
    TMP,
    UPSTREAM_MODEL,
    BillingCheck,
    Meter,
    Service,
    can_pin,
    check_billing,
    free_port,
    git_state,
    prepare_database,
    process_cpu_seconds,
    process_tree,
    router_argv,
    router_env,
    run_async,
    seed,
    start_service,
    stop_service,
    upstream_argv,
    wait_ready,
)
from load import (
    Run,
    Target,
    abba,
    closed_loop,
    diff,
    fmt,
    make_target,
    pct,
    sequential,
    session_for,
    split,
    verdict,
)
from pyspy import make_profiler, shares

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
RUN_TIMEOUT_S = 1800  # the whole load phase, whatever the options

# The targets of the hot path (DESIGN.md), compared against in the report.
TARGET_ADDED_P50_C1_MS = 2.0
TARGET_ROUTER_RPS = 1000.0
TARGET_TTFT_ADDED_P50_MS = 3.0


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    requests: int
    duration: float
    stream_requests: int
    concurrency: int
    warmup: int
    block: int
    rounds: int
    users: int
    database_url: str
    out: Path
    pin: bool
    profile_seconds: float
    upstream_chunk_delay_ms: float
    router_env: list[str]
    server: str


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000,
                        help="sequential requests per target at concurrency 1 (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of load per target at --concurrency (default 10)")
    parser.add_argument("--stream-requests", type=int, default=500,
                        help="sequential streamed requests per target (default 500)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=200,
                        help="unmeasured requests per target first (default 200)")
    parser.add_argument("--block", type=int, default=100,
                        help="sequential requests per alternating block (default 100)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating blocks per target in the concurrent phase (default 2)")
    parser.add_argument("--users", type=int, default=1,
                        help="users (wallets) the router load is spread over; 1 puts every "
                             "hold on one wallet row (default 1)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated at the start; its name must contain "
                             "'bench'")
    parser.add_argument("--out", type=Path, default=TMP / "proxy_bench.json")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin router / upstream+load generator to CPUs 0 / 1")
    parser.add_argument("--profile-seconds", type=float, default=16.0,
                        help="after the measured phases, sample the router with py-spy "
                             "under the concurrent load for this long (0: skip)")
    parser.add_argument("--upstream-chunk-delay-ms", type=float, default=0.0,
                        help="pause the upstream between stream events (default 0)")
    parser.add_argument("--router-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the router, e.g. ROUTER_DB_POOL_SIZE=40 "
                             "(repeatable)")
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER,
                        help=f"the ASGI server the router runs under (default {DEFAULT_SERVER})")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.router_env):
        parser.error("--router-env takes NAME=VALUE")
    for name in ("requests", "stream_requests", "concurrency", "block", "rounds", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return Options(**vars(args))


# --------------------------------------------------------------------------- database


def probe_commits(database_url: str, count: int = 300) -> dict[str, float]:
    """Round trip of a one-row autocommit UPDATE, one after the other.

    Every reserve and every settle updates the caller's wallet row and keeps its lock until
    the commit (a WAL flush) is done, so for one wallet this is roughly the shortest time
    between two of them: 1 / (2 * p50) requests/s is what one wallet can take at most.
    """
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_probe (id int PRIMARY KEY, "
                     "n bigint NOT NULL)")
        conn.execute("INSERT INTO bench_probe VALUES (1, 0) ON CONFLICT DO NOTHING")
        seconds = []
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("UPDATE bench_probe SET n = n + 1 WHERE id = 1")
            seconds.append(time.perf_counter() - start)
    p50 = pct(seconds, 50) or 0.0
    return {"p50_ms": p50, "p99_ms": pct(seconds, 99) or 0.0,
            "one_wallet_max_rps": 1000 / (2 * p50) if p50 else 0.0}


def router_backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving the bench database (the router's connections)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (name,)).fetchall()
    return [int(r[0]) for r in rows]



@dataclass
class Results:
    c1: dict[str, Run] = field(default_factory=dict)
    cn: dict[str, Run] = field(default_factory=dict)
    stream: dict[str, Run] = field(default_factory=dict)
    warmup: dict[str, Run] = field(default_factory=dict)
    profile: Run = field(default_factory=Run)
    commit_probe: dict[str, dict[str, float]] = field(default_factory=dict)

    def router_ok(self) -> int:
        runs = [self.c1, self.cn, self.stream, self.warmup]
        return sum(r["router"].ok for r in runs if "router" in r) + self.profile.ok

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for runs in (self.c1, self.cn, self.stream, self.warmup):
            for name, run in runs.items():
                total.update({f"{name}: {k}": v for k, v in run.errors.items()})
        total.update({f"router (profiled): {k}": v for k, v in self.profile.errors.items()})
        return total


async def run_load(options: Options, direct: Target, router: Target, meter: Meter,
                   profile: Callable[[float, Run], Awaitable[dict[str, Any] | None]]
                   ) -> tuple[Results, dict[str, Any] | None]:
    results = Results()
    pair = (direct, router)
    async with session_for(options.concurrency) as session:
        # Warm up: connections, the router's caches, thread pool and database connections.
        for target in pair:
            run = results.warmup.setdefault(target.name, Run())
            await sequential(session, target, options.warmup, run)
            await sequential(session, target, max(10, options.warmup // 4), run, stream=True)
            await closed_loop(session, target, options.concurrency, 1.0, run)
        meter.postgres_pids = router_backend_pids(options.database_url)
        results.commit_probe["start"] = probe_commits(options.database_url)

        print(f"concurrency 1: {options.requests} requests per target ...", flush=True)
        blocks = split(options.requests, options.block)
        for i, target in enumerate(abba(pair, len(blocks))):
            run = results.c1.setdefault(target.name, Run())
            await meter.measure(run, sequential(session, target, blocks[i // 2], run))

        print(f"concurrency {options.concurrency}: {options.duration:g} s per target ...",
              flush=True)
        # The pool may have opened more connections since: measure all of them.
        meter.postgres_pids = router_backend_pids(options.database_url)
        for target in abba(pair, options.rounds):
            run = results.cn.setdefault(target.name, Run())
            await meter.measure(run, closed_loop(session, target, options.concurrency,
                                                 options.duration / options.rounds, run),
                                db_waits=target is router)

        print(f"streaming: {options.stream_requests} requests per target ...", flush=True)
        meter.postgres_pids = router_backend_pids(options.database_url)
        blocks = split(options.stream_requests, options.block)
        for i, target in enumerate(abba(pair, len(blocks))):
            run = results.stream.setdefault(target.name, Run())
            await meter.measure(run, sequential(session, target, blocks[i // 2], run,
                                                stream=True))

        results.commit_probe["end"] = probe_commits(options.database_url)

        report = None
        if options.profile_seconds > 0:
            print(f"profiling the router under concurrency {options.concurrency} for "
                  f"{options.profile_seconds:g} s (not measured) ...", flush=True)
            # Longer than the two py-spy passes, which take a moment each to attach.
            load = closed_loop(session, router, options.concurrency,
                               options.profile_seconds + 6, results.profile)
            report, _ = await asyncio.gather(profile(options.profile_seconds, results.profile),
                                             load)
    return results, report


# --------------------------------------------------------------------------- profile


def run_summary(run: Run) -> dict[str, Any]:
    n = run.ok + sum(run.errors.values())
    return {"ok": run.ok, "errors": dict(run.errors), "wall_s": round(run.wall, 3),
            "p50_ms": pct(run.latencies, 50), "p90_ms": pct(run.latencies, 90),
            "p99_ms": pct(run.latencies, 99), "max_ms": pct(run.latencies, 100),
            "ttft_p50_ms": pct(run.ttfts, 50), "ttft_p99_ms": pct(run.ttfts, 99),
            "rps": run.ok / run.wall if run.wall else None,
            "router_cpu_pct": 100 * run.router_cpu / run.wall if run.wall else None,
            "router_cpu_us_per_request": 1e6 * run.router_cpu / n if n else None,
            "postgres_cpu_us_per_request": 1e6 * run.postgres_cpu / n if n else None,
            "machine_busy_pct": 100 * run.busy / run.ticks if run.ticks else None,
            "db_active_backends_mean": (sum(run.db_waits.values()) / run.db_samples
                                        if run.db_samples else None),
            "db_waits_pct": shares(run.db_waits, sum(run.db_waits.values()), 8)}


def build_report(options: Options, results: Results, billing: BillingCheck,
                 profile: dict[str, Any] | None, environment: dict[str, Any]
                 ) -> dict[str, Any]:
    c1 = {k: run_summary(v) for k, v in results.c1.items()}
    cn = {k: run_summary(v) for k, v in results.cn.items()}
    st = {k: run_summary(v) for k, v in results.stream.items()}
    added_c1_p50 = diff(c1["router"]["p50_ms"], c1["direct"]["p50_ms"])
    ttft_added = diff(st["router"]["ttft_p50_ms"], st["direct"]["ttft_p50_ms"])
    router_rps, direct_rps = cn["router"]["rps"], cn["direct"]["rps"]
    expected = results.router_ok()
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "environment": environment,
        "concurrency_1": c1 | {"added_p50_ms": added_c1_p50,
                               "added_p99_ms": diff(c1["router"]["p99_ms"],
                                                    c1["direct"]["p99_ms"])},
        f"concurrency_{options.concurrency}": cn | {
            "added_p50_ms": diff(cn["router"]["p50_ms"], cn["direct"]["p50_ms"]),
            "added_p99_ms": diff(cn["router"]["p99_ms"], cn["direct"]["p99_ms"]),
            "router_to_direct_rps": router_rps / direct_rps if router_rps and direct_rps
            else None},
        "streaming": st | {"ttft_added_p50_ms": ttft_added,
                           "ttft_added_p99_ms": diff(st["router"]["ttft_p99_ms"],
                                                     st["direct"]["ttft_p99_ms"])},
        "targets": {
            "added_p50_c1_ms": [TARGET_ADDED_P50_C1_MS,
                                verdict(added_c1_p50, TARGET_ADDED_P50_C1_MS, at_most=True)],
            "router_rps": [TARGET_ROUTER_RPS,
                           verdict(router_rps, TARGET_ROUTER_RPS, at_most=False)],
            "ttft_added_p50_ms": [TARGET_TTFT_ADDED_P50_MS,
                                  verdict(ttft_added, TARGET_TTFT_ADDED_P50_MS, at_most=True)],
        },
        "postgres_commit_probe": results.commit_probe,
        "errors": dict(results.errors()),
        "billing": vars(billing) | {"expected": expected, "ok": billing.ok(expected)},
        "profile": profile,
    }


def print_report(report: dict[str, Any], concurrency: int) -> None:
    c1, st = report["concurrency_1"], report["streaming"]
    cn = report[f"concurrency_{concurrency}"]
    targets = report["targets"]
    d, r = "direct", "router"
    rows = [
        ("c=1 latency p50", fmt(c1[d]["p50_ms"]), fmt(c1[r]["p50_ms"]),
         fmt(c1["added_p50_ms"]), f"<= {TARGET_ADDED_P50_C1_MS:g} ms  "
         f"{targets['added_p50_c1_ms'][1]}"),
        ("c=1 latency p99", fmt(c1[d]["p99_ms"]), fmt(c1[r]["p99_ms"]),
         fmt(c1["added_p99_ms"]), ""),
        (f"c={concurrency} latency p50", fmt(cn[d]["p50_ms"]), fmt(cn[r]["p50_ms"]),
         fmt(cn["added_p50_ms"]), ""),
        (f"c={concurrency} latency p99", fmt(cn[d]["p99_ms"]), fmt(cn[r]["p99_ms"]),
         fmt(cn["added_p99_ms"]), ""),
        (f"c={concurrency} requests/s", fmt(cn[d]["rps"], "", 0), fmt(cn[r]["rps"], "", 0),
         f"ratio {fmt(cn['router_to_direct_rps'], '', 3)}",
         f">= {TARGET_ROUTER_RPS:,.0f}/s  {targets['router_rps'][1]}"),
        ("stream TTFT p50", fmt(st[d]["ttft_p50_ms"]), fmt(st[r]["ttft_p50_ms"]),
         fmt(st["ttft_added_p50_ms"]), f"<= {TARGET_TTFT_ADDED_P50_MS:g} ms  "
         f"{targets['ttft_added_p50_ms'][1]}"),
        ("stream TTFT p99", fmt(st[d]["ttft_p99_ms"]), fmt(st[r]["ttft_p99_ms"]),
         fmt(st["ttft_added_p99_ms"]), ""),
        ("stream total p50", fmt(st[d]["p50_ms"]), fmt(st[r]["p50_ms"]),
         fmt(diff(st[r]["p50_ms"], st[d]["p50_ms"])), ""),
    ]
    header = ("", "direct", "router", "added", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))

    print("\n(direct requests/s is bounded by the load generator, which shares a CPU with the "
          "upstream: the ratio is an upper bound)")
    print("\nwhere the time goes (router process; PostgreSQL = the bench database's backends)")
    for label, runs in (("c=1", c1), (f"c={concurrency}", cn), ("stream", st)):
        router = runs[r]
        print(f"  {label:<7} router CPU {fmt(router['router_cpu_pct'], '%', 0):>5} of a core, "
              f"{fmt(router['router_cpu_us_per_request'], 'us', 0):>7}/request; PostgreSQL "
              f"{fmt(router['postgres_cpu_us_per_request'], 'us', 0):>7}/request; machine busy "
              f"{fmt(router['machine_busy_pct'], '%', 0)} (direct blocks: "
              f"{fmt(runs[d]['machine_busy_pct'], '%', 0)})")

    waits = cn[r]
    if waits["db_active_backends_mean"] is not None:
        print(f"  c={concurrency} PostgreSQL: {waits['db_active_backends_mean']:.1f} busy backends "
              f"on average, each: " + ", ".join(f"{n} {p}%" for n, p in waits["db_waits_pct"]))
    for when, probe in report["postgres_commit_probe"].items():
        print(f"  PostgreSQL one-row autocommit UPDATE at the {when}: p50 {probe['p50_ms']:.2f} "
              f"ms, p99 {probe['p99_ms']:.2f} ms -> one wallet takes at most "
              f"~{probe['one_wallet_max_rps']:,.0f} requests/s (2 wallet updates each)")

    errors = report["errors"]
    print(f"\nerrors: {sum(errors.values())}" + (f" {errors}" if errors else ""))
    billing = report["billing"]
    print(f"billing: {billing['usage_records']} usage records ({billing['usage_ok']} ok), "
          f"{billing['ledger_charges']} ledger charges, {billing['pending_holds']} pending "
          f"holds, {billing['charged_micros']} micro-USD charged; expected "
          f"{billing['expected']} (router 200s incl. warm-up); ledger = wallets: "
          f"{billing['ledger_matches_wallets']}  -> {'OK' if billing['ok'] else 'MISMATCH'}")

    profile = report["profile"]
    if profile:
        print_profile(profile, concurrency)


def print_profile(profile: dict[str, Any], concurrency: int) -> None:
    cpu, threads = profile["cpu"], profile["threads"]
    print(f"\npy-spy on the router under c={concurrency}, {profile['seconds_each']} s each at "
          f"{profile['rate_hz']} Hz ({profile['raw']})")
    if "error" in threads:
        print(f"  threads: py-spy failed: {threads['error']}")
    else:
        print("  busy threads: " + ", ".join(f"{n} {p}%" for n, p in threads["threads_pct"]))
    if profile.get("threads_created_per_request") is not None:
        print(f"  threads created per request (perf, over 2 s before py-spy): "
              f"{profile['threads_created_per_request']:.2f}")
    if "error" in cpu:
        print(f"  GIL: py-spy failed: {cpu['error']}")
        return
    print(f"  holding the GIL ({cpu['samples']} samples), by area: " + ", ".join(
        f"{n} {p}%" for n, p in cpu["areas_pct"][:10]))
    print("  top self frames:")
    for frame, p in cpu["top_self_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")
    print("  top inclusive frames in proxy/billing/accounts:")
    for frame, p in cpu["top_own_inclusive_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")




def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    pin = options.pin and can_pin()
    router_cpu, side_cpu = (0, 1) if pin else (None, None)
    env = router_env(options.database_url, options.router_env)
    upstream_port, router_port = free_port(), free_port()

    print(f"database {options.database_url}: recreate, migrate, seed ...", flush=True)
    prepare_database(options.database_url)
    keys = seed(env, upstream_port, options.users)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(
            upstream_port, chunk_delay_ms=options.upstream_chunk_delay_ms), env, side_cpu)
        services.append(upstream)
        router = start_service("router", router_argv(options.server, router_port, 1), env,
                               router_cpu)
        services.append(router)
        if pin:
            os.sched_setaffinity(0, {1})  # the load generator shares CPU 1 with the upstream
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        wait_ready(router, f"http://127.0.0.1:{router_port}/v1/models",
                   {"Authorization": f"Bearer {keys[0]}"})
        environment = {
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "pinning": ("router on CPU 0; upstream and load generator on CPU 1; PostgreSQL "
                        "not pinned" if pin else "none"),
            "python": sys.version.split()[0], "aiohttp": aiohttp.__version__,
            "git": git_state(), "router_pid": router.proc.pid,
        }
        print(f"upstream :{upstream_port}, router :{router_port} (pid {router.proc.pid}); "
              f"pinning: {environment['pinning']}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

        direct = make_target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                             UPSTREAM_MODEL, [])
        routed = make_target("router", f"http://127.0.0.1:{router_port}/v1/chat/completions",
                             ROUTER_MODEL, keys)
        meter = Meter(router.proc.pid, options.database_url)
        # granian runs the app in a child of the process it starts as: profile that one
        # (with uvicorn and one worker they are the same process).
        worker_pid = max(process_tree(router.proc.pid), key=process_cpu_seconds)
        results, profile = run_async(run_load(options, direct, routed, meter,
                                              make_profiler(worker_pid, side_cpu)),
                                     RUN_TIMEOUT_S)
        environment["loadavg_end"] = os.getloadavg()
        billing = check_billing(options.database_url, results.router_ok())
        environment["router_log_warnings"] = router.warnings()
    finally:
        for service in reversed(services):
            stop_service(service)

    report = build_report(options, results, billing, profile, environment)
    print_report(report, options.concurrency)
    if environment["router_log_warnings"]:
        print(f"\nrouter log: {environment['router_log_warnings']} warning/error lines, see "
              f"{router.log_path}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    healthy = billing.ok(results.router_ok()) and not report["errors"]
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
