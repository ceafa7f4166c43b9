"""uvicorn or granian: the same billed load through the router under each, same workers.

    .venv/bin/python bench/server_choice.py [--workers N] [--duration S] [--database-url URL]

One run recreates a bench database, starts the cheap local upstream and the router twice,
once under uvicorn and once under granian, each with ``--workers`` processes (default: one
per core, as ``make serve`` runs it) and full billing on PostgreSQL. It sends the same load
straight to the upstream (the baseline) and through each server, in rotating blocks so that
the noise of a shared machine falls on all three alike: sequential requests (concurrency 1),
a closed loop at ``--concurrency``, and sequential streams. It prints requests/s, what each
server adds to p50/p99 latency and time to first token, CPU per request, and granian's
requests/s over uvicorn's; then checks that every answered request was billed exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness import (
    ROUTER_MODEL,
    SERVERS,
    TMP,
    UPSTREAM_MODEL,
    Service,
    check_billing,
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
    split,
    table,
)
from measure import (
    Meter,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Options:
    workers: int
    requests: int
    duration: float
    concurrency: int
    stream_requests: int
    rounds: int
    users: int
    database_url: str
    out: Path
    router_env: list[str]


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes of each server (default: one per core)")
    parser.add_argument("--requests", type=int, default=600,
                        help="sequential requests per target (default 600)")
    parser.add_argument("--duration", type=float, default=12.0,
                        help="seconds of closed-loop load per target (default 12)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--stream-requests", type=int, default=300,
                        help="sequential streams per target (default 300)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rotating blocks per target in the closed loop (default 4)")
    parser.add_argument("--users", type=int, default=64,
                        help="wallets the load is spread over (default 64)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")
    parser.add_argument("--out", type=Path, default=TMP / "server_choice.json")
    parser.add_argument("--router-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    for name in ("workers", "requests", "concurrency", "stream_requests", "rounds", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(args))


async def run_load(options: Options, targets: list[Target], meters: dict[str, Meter]
                   ) -> dict[str, dict[str, Run]]:
    phases: dict[str, dict[str, Run]] = {"warmup": {}, "c1": {}, "cn": {}, "stream": {}}

    async def measured(phase: str, target: Target,
                       block: Callable[[Run], Awaitable[None]]) -> None:
        run = phases[phase].setdefault(target.name, Run())
        await meters[target.name].measure(run, block(run))

    async with session_for(options.concurrency) as session:
        for target in targets:  # connections, caches, database pools, every worker process
            run = phases["warmup"].setdefault(target.name, Run())
            await sequential(session, target, 100, run)
            await closed_loop(session, target, options.concurrency, 2.0, run)
            await sequential(session, target, 20, run, stream=True)

        print(f"concurrency 1: {options.requests} requests per target ...", flush=True)
        blocks = split(options.requests, 100)
        for i, target in enumerate(abba(targets, len(blocks))):
            await measured("c1", target,
                           partial(sequential, session, target, blocks[i // len(targets)]))

        print(f"concurrency {options.concurrency}: {options.duration:g} s per target ...",
              flush=True)
        for target in abba(targets, options.rounds):
            await measured("cn", target, partial(closed_loop, session, target,
                                                 options.concurrency,
                                                 options.duration / options.rounds))

        print(f"streams: {options.stream_requests} per target ...", flush=True)
        blocks = split(options.stream_requests, 50)
        for i, target in enumerate(abba(targets, len(blocks))):
            await measured("stream", target, partial(
                sequential, session, target, blocks[i // len(targets)], stream=True))
    return phases


def build_report(options: Options, phases: dict[str, dict[str, Run]]) -> dict[str, Any]:
    report: dict[str, Any] = {"options": {k: str(v) for k, v in vars(options).items()}}
    for phase in ("c1", "cn", "stream"):
        runs = {name: run.summary() for name, run in phases[phase].items()}
        direct = runs["direct"]
        for server in SERVERS:
            runs[server]["added_p50_ms"] = diff(runs[server]["p50_ms"], direct["p50_ms"])
            runs[server]["added_p99_ms"] = diff(runs[server]["p99_ms"], direct["p99_ms"])
            runs[server]["added_ttft_p50_ms"] = diff(runs[server]["ttft_p50_ms"],
                                                     direct["ttft_p50_ms"])
            runs[server]["added_ttft_p99_ms"] = diff(runs[server]["ttft_p99_ms"],
                                                     direct["ttft_p99_ms"])
            runs[server]["rps_vs_direct"] = ratio(runs[server]["rps"], direct["rps"])
        runs["granian_over_uvicorn_rps"] = ratio(runs["granian"]["rps"], runs["uvicorn"]["rps"])
        report[phase] = runs
    report["errors"] = {f"{phase}/{name}: {error}": n
                        for phase, runs in phases.items() for name, run in runs.items()
                        for error, n in run.errors.items()}
    return report


def print_report(report: dict[str, Any], concurrency: int) -> None:
    c1, cn, st = report["c1"], report["cn"], report["stream"]
    u, g = "uvicorn", "granian"

    def pair(runs: dict[str, Any], a: str, b: str, server: str) -> str:
        return f"{fmt(runs[server][a])} / {fmt(runs[server][b])}"

    rows = [
        (f"c={concurrency} requests/s", fmt(cn["direct"]["rps"], "", 0),
         fmt(cn[u]["rps"], "", 0), fmt(cn[g]["rps"], "", 0),
         f"{fmt(cn['granian_over_uvicorn_rps'], '', 3)}"),
        (f"c={concurrency} added p50 / p99", "", pair(cn, "added_p50_ms", "added_p99_ms", u),
         pair(cn, "added_p50_ms", "added_p99_ms", g), ""),
        ("c=1 requests/s", fmt(c1["direct"]["rps"], "", 0), fmt(c1[u]["rps"], "", 0),
         fmt(c1[g]["rps"], "", 0), f"{fmt(c1['granian_over_uvicorn_rps'], '', 3)}"),
        ("c=1 added p50 / p99", "", pair(c1, "added_p50_ms", "added_p99_ms", u),
         pair(c1, "added_p50_ms", "added_p99_ms", g), ""),
        ("stream TTFT added p50 / p99", "",
         pair(st, "added_ttft_p50_ms", "added_ttft_p99_ms", u),
         pair(st, "added_ttft_p50_ms", "added_ttft_p99_ms", g), ""),
        (f"router CPU/request at c={concurrency}", "",
         fmt(cn[u]["router_cpu_us_per_request"], "us", 0),
         fmt(cn[g]["router_cpu_us_per_request"], "us", 0), ""),
    ]
    print()
    print(table(("", "direct", "uvicorn", "granian", "granian/uvicorn"), rows))
    errors = report["errors"]
    print(f"\nerrors: {sum(errors.values())}" + (f" {errors}" if errors else ""))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    env = router_env(options.database_url, options.router_env)
    upstream_port = free_port()
    ports = {server: free_port() for server in SERVERS}

    print(f"database {options.database_url}: recreate, migrate, seed ...", flush=True)
    prepare_database(options.database_url)
    keys = seed(env, upstream_port, options.users)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(upstream_port), env)
        services.append(upstream)
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        routers = {}
        for server in SERVERS:
            routers[server] = start_service(server, router_argv(server, ports[server],
                                                                options.workers), env)
            services.append(routers[server])
        for server, service in routers.items():
            wait_ready(service, f"http://127.0.0.1:{ports[server]}/v1/models",
                       {"Authorization": f"Bearer {keys[0]}"})
        print(f"upstream :{upstream_port}; " + ", ".join(
            f"{s} :{ports[s]} ({options.workers} workers)" for s in SERVERS)
            + f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

        targets = [make_target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                               UPSTREAM_MODEL, [])]
        targets += [make_target(s, f"http://127.0.0.1:{ports[s]}/v1/chat/completions",
                                ROUTER_MODEL, keys) for s in SERVERS]
        meters = {s: Meter(routers[s].proc.pid, options.database_url) for s in SERVERS}
        meters["direct"] = Meter(None, options.database_url)
        phases = run_async(run_load(options, targets, meters), RUN_TIMEOUT_S)
        answered = sum(run.ok for runs in phases.values() for name, run in runs.items()
                       if name != "direct")
        billing = check_billing(options.database_url, answered)
        warnings = {s: routers[s].warnings() for s in SERVERS}
    finally:
        for service in reversed(services):
            stop_service(service)

    report = build_report(options, phases)
    report["billing"] = vars(billing) | {"expected": answered, "ok": billing.ok(answered)}
    report["environment"] = {"cpus": os.cpu_count(), "git": git_state(),
                             "python": sys.version.split()[0], "log_warnings": warnings}
    print_report(report, options.concurrency)
    print(f"billing: {billing.describe(answered)}")
    if any(warnings.values()):
        print(f"server logs with warnings/errors: {warnings} (see {TMP}/server_choice-*.log)")
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    return 0 if billing.ok(answered) and not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
