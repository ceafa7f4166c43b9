"""Throughput and added latency of the billed router over a sweep of concurrency.

    .venv/bin/python bench/sweep.py [--levels 1,16,64,256] [--duration S] [--database-url URL]

One run recreates a bench database, starts the cheap local upstream and the router (one
worker process, as in proxy_bench.py: pinned to CPU 0 while the upstream and this load
generator share CPU 1; full billing on PostgreSQL), then at each concurrency runs closed
loops straight to the upstream (the baseline) and through the router, in alternating
blocks, and prints requests/s both ways with their ratio, p50/p99 latency both ways and
what the router adds. Finally it checks that every request the router answered was billed
exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    DEFAULT_SERVER,
    ROUTER_MODEL,
    SERVERS,
    TMP,
    UPSTREAM_MODEL,
    Service,
    can_pin,
    check_billing,
    flush_redis_db,
    free_port,
    git_state,
    prepare_database,
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
    ratio,
    sequential,
    session_for,
    table,
)
from measure import (
    Meter,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Options:
    levels: list[int]
    duration: float
    rounds: int
    users: int
    server: str
    database_url: str
    redis_url: str
    pin: bool
    out: Path
    router_env: list[str]


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,16,64,256",
                        help="concurrency levels, comma-separated (default 1,16,64,256)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of load per target at each level (default 8)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating blocks per target at each level (default 2)")
    parser.add_argument("--users", type=int, default=64,
                        help="wallets the router load is spread over (default 64; 1 puts "
                             "every hold on one wallet row)")
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")
    parser.add_argument("--redis-url", default="",
                        help="give the router Redis (this database is flushed at the start); "
                             "default: none, as in proxy_bench.py")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--out", type=Path, default=TMP / "sweep.json")
    parser.add_argument("--router-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(level) for level in args.levels.split(",")]
    except ValueError:
        parser.error("--levels takes numbers, e.g. 1,16,64,256")
    if min(args.levels) < 1 or args.rounds < 1 or args.users < 1 or args.duration <= 0:
        parser.error("levels, rounds, users and duration must be positive")
    return Options(**vars(args))


async def run_load(options: Options, direct: Target, router: Target,
                   meters: dict[str, Meter]) -> tuple[dict[int, dict[str, Run]], Run]:
    """The runs at each level, by target; and the router's warm-up (billed too)."""
    levels: dict[int, dict[str, Run]] = {}
    warmup = {"direct": Run(), "router": Run()}
    async with session_for(max(options.levels)) as session:
        # Connections, the router's caches and its database pool at the highest level.
        for target in (direct, router):
            await sequential(session, target, 200, warmup[target.name])
            await closed_loop(session, target, max(options.levels), 2.0, warmup[target.name])
        for level in options.levels:
            print(f"concurrency {level}: {options.duration:g} s per target ...", flush=True)
            runs = levels.setdefault(level, {})
            for target in abba((direct, router), options.rounds):
                run = runs.setdefault(target.name, Run())
                await meters[target.name].measure(run, closed_loop(
                    session, target, level, options.duration / options.rounds, run))
    return levels, warmup["router"]


def build_report(levels: dict[int, dict[str, Run]]) -> list[dict[str, Any]]:
    rows = []
    for level, runs in levels.items():
        direct, router = runs["direct"].summary(), runs["router"].summary()
        rows.append({"concurrency": level, "direct": direct, "router": router,
                     "rps_ratio": ratio(router["rps"], direct["rps"]),
                     "added_p50_ms": diff(router["p50_ms"], direct["p50_ms"]),
                     "added_p99_ms": diff(router["p99_ms"], direct["p99_ms"])})
    return rows


def print_report(rows: list[dict[str, Any]]) -> None:
    header = ("concurrency", "direct req/s", "router req/s", "router/direct",
              "direct p50 / p99", "router p50 / p99", "added p50 / p99", "router CPU/req")
    lines = [(str(row["concurrency"]), fmt(row["direct"]["rps"], "", 0),
              fmt(row["router"]["rps"], "", 0), fmt(row["rps_ratio"], "", 3),
              f"{fmt(row['direct']['p50_ms'])} / {fmt(row['direct']['p99_ms'])}",
              f"{fmt(row['router']['p50_ms'])} / {fmt(row['router']['p99_ms'])}",
              f"{fmt(row['added_p50_ms'])} / {fmt(row['added_p99_ms'])}",
              fmt(row["router"]["router_cpu_us_per_request"], "us", 0)) for row in rows]
    print()
    print(table(header, lines))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    pin = options.pin and can_pin()
    router_cpu, side_cpu = (0, 1) if pin else (None, None)
    env = router_env(options.database_url, options.router_env, redis_url=options.redis_url)
    upstream_port, router_port = free_port(), free_port()

    print(f"database {options.database_url}: recreate, migrate, seed ...", flush=True)
    prepare_database(options.database_url)
    if options.redis_url:
        flush_redis_db(options.redis_url)
    keys = seed(env, upstream_port, options.users)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(upstream_port), env, side_cpu)
        services.append(upstream)
        router = start_service("router", router_argv(options.server, router_port, 1), env,
                               router_cpu)
        services.append(router)
        if pin:
            os.sched_setaffinity(0, {1})  # the load generator shares CPU 1 with the upstream
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        wait_ready(router, f"http://127.0.0.1:{router_port}/v1/models",
                   {"Authorization": f"Bearer {keys[0]}"})
        print(f"upstream :{upstream_port}, router :{router_port} ({options.server}, 1 worker"
              f"{', pinned to CPU 0' if pin else ''}); load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        direct = make_target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                             UPSTREAM_MODEL, [])
        routed = make_target("router", f"http://127.0.0.1:{router_port}/v1/chat/completions",
                             ROUTER_MODEL, keys)
        meters = {"direct": Meter(None, options.database_url),
                  "router": Meter(router.proc.pid, options.database_url)}
        levels, warmup = run_async(run_load(options, direct, routed, meters), RUN_TIMEOUT_S)
        answered = sum(runs["router"].ok for runs in levels.values()) + warmup.ok
        billing = check_billing(options.database_url, answered)
        warnings = router.warnings()
    finally:
        for service in reversed(services):
            stop_service(service)

    rows = build_report(levels)
    print_report(rows)
    errors = {f"c={row['concurrency']} {name}: {error}": n for row in rows
              for name in ("direct", "router") for error, n in row[name]["errors"].items()}
    print(f"\nerrors: {sum(errors.values())}" + (f" {errors}" if errors else ""))
    print(f"billing: {billing.describe(answered)}")
    if warnings:
        print(f"router log: {warnings} warning/error lines, see {router.log_path}")
    report = {"options": {k: str(v) for k, v in vars(options).items()}, "levels": rows,
              "errors": errors, "billing": vars(billing) | {"expected": answered},
              "environment": {"cpus": os.cpu_count(), "git": git_state(),
                              "python": sys.version.split()[0], "pinned": pin}}
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    return 0 if billing.ok(answered) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
