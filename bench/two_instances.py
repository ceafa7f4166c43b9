"""Two router instances sharing PostgreSQL and Redis, behind nothing: the load generator
alternates between them. Limits and balances hold, and what a second instance adds.

    .venv/bin/python bench/two_instances.py --redis-url redis://127.0.0.1:6379/N

One run recreates a bench database and flushes the given Redis database, starts the local
upstream and two router instances (each one worker process, full billing on PostgreSQL,
limits and worker slots in the one Redis), then:

1. throughput: a closed loop against one instance, then the same load alternating between
   the two, in alternating blocks; prints requests/s of each and the ratio;
2. a key limited to N requests per minute gets a burst of more, spread over both instances
   at once: exactly N answered, the rest 429;
3. a wallet funded for exactly K requests (a model priced so that a request's hold and
   charge are both 4 micro-USD) gets a burst of 2K over both instances: exactly K answered,
   the rest 402, and the wallet ends at zero;
4. the database after it all: one usage record and one ledger charge per answered request,
   charges equal to the usage records' costs, every wallet equal to its ledger, no hold
   pending.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from harness import (
    DEFAULT_SERVER,
    EXACT_MODEL,
    ROUTER_MODEL,
    SERVERS,
    TMP,
    Service,
    check_billing,
    flush_redis_db,
    free_port,
    git_state,
    prepare_database,
    router_argv,
    router_env,
    run_async,
    seed,
    seed_users,
    start_service,
    stop_service,
    upstream_argv,
    wait_ready,
)
from load import Run, Target, abba, burst, closed_loop, fmt, make_target, ratio, session_for
from measure import (
    Meter,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
EXACT_COST_MICROS = 4  # max_tokens 4 at 1 micro-USD per output token, 0 per input token
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Options:
    redis_url: str
    duration: float
    rounds: int
    concurrency: int
    users: int
    rpm: int
    wallet_requests: int
    server: str
    database_url: str
    out: Path


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True,
                        help="the Redis database both instances share; flushed at the start")
    parser.add_argument("--duration", type=float, default=12.0,
                        help="seconds of closed-loop load per setup (default 12)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating blocks per setup (default 4)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=64,
                        help="wallets the throughput load is spread over (default 64)")
    parser.add_argument("--rpm", type=int, default=100,
                        help="requests per minute of the limited key (default 100)")
    parser.add_argument("--wallet-requests", type=int, default=100,
                        help="requests the exactly funded wallet covers (default 100)")
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")
    parser.add_argument("--out", type=Path, default=TMP / "two_instances.json")
    args = parser.parse_args(argv)
    if min(args.rounds, args.concurrency, args.users, args.rpm, args.wallet_requests) < 1:
        parser.error("rounds, concurrency, users, rpm and wallet requests must be positive")
    return Options(**vars(args))


async def run_load(options: Options, one: Target, two: Target, rpm_target: Target,
                   wallet_target: Target, meters: dict[str, Meter]) -> dict[str, Any]:
    runs: dict[str, Run] = {}
    warmup = Run()
    async with session_for(max(options.concurrency, 2 * options.wallet_requests,
                               2 * options.rpm)) as session:
        await closed_loop(session, two, options.concurrency, 3.0, warmup)
        print(f"throughput: {options.duration:g} s per setup at concurrency "
              f"{options.concurrency} ...", flush=True)
        for target in abba((one, two), options.rounds):
            run = runs.setdefault(target.name, Run())
            await meters[target.name].measure(run, closed_loop(
                session, target, options.concurrency, options.duration / options.rounds, run))
        # Both instances look the two keys up first (GET /v1/models, which spends nothing
        # and counts for no limit), so that neither starts its burst late.
        for target in (rpm_target, wallet_target):
            for i, url in enumerate(target.urls):
                async with session.get(url.replace("/chat/completions", "/models"),
                                       headers=target.headers(i)) as response:
                    assert response.status == 200, await response.text()
        print(f"a key limited to {options.rpm} requests/minute gets {2 * options.rpm} at "
              f"once over both instances ...", flush=True)
        rpm_statuses = await burst(session, rpm_target, 2 * options.rpm)
        print(f"a wallet funded for {options.wallet_requests} requests gets "
              f"{2 * options.wallet_requests} at once over both instances ...", flush=True)
        wallet_statuses = await burst(session, wallet_target, 2 * options.wallet_requests)
    return {"runs": runs, "warmup": warmup, "rpm": rpm_statuses, "wallet": wallet_statuses}


def answered_by_instance(routers: list[Service], key: str,
                         statuses: tuple[int, ...] = (200,)) -> list[int]:
    """Completions each instance answered for ``key`` with one of ``statuses``, from its
    access log (one JSON line per request, naming the key's prefix)."""
    prefix = f'"key_prefix":"{key[:18]}"'
    wanted = tuple(f'"status":{status}' for status in statuses)
    return [sum(1 for line in router.log_tail(10**7).splitlines()
                if prefix in line and "/chat/completions" in line
                and any(status in line for status in wanted))
            for router in routers]


def wallet_state(database_url: str, email: str) -> tuple[int, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT w.posted_micros, w.pending_micros FROM billing_wallet w "
                           "JOIN accounts_user u ON u.id = w.user_id WHERE u.email = %s",
                           (email,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    env = router_env(options.database_url, [], redis_url=options.redis_url)
    upstream_port = free_port()
    ports = (free_port(), free_port())

    print(f"database {options.database_url}: recreate, migrate, seed; flush "
          f"{options.redis_url} ...", flush=True)
    prepare_database(options.database_url)
    flush_redis_db(options.redis_url)
    keys = seed(env, upstream_port, options.users)
    (rpm_key,) = seed_users(env, 1, credit_micros=10**12, prefix="limited", rpm=options.rpm)
    (wallet_key,) = seed_users(env, 1, prefix="exact",
                               credit_micros=options.wallet_requests * EXACT_COST_MICROS)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(upstream_port), env)
        services.append(upstream)
        routers = [start_service(f"router{i + 1}", router_argv(options.server, port, 1), env)
                   for i, port in enumerate(ports)]
        services += routers
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        for router, port in zip(routers, ports, strict=True):
            wait_ready(router, f"http://127.0.0.1:{port}/v1/models",
                       {"Authorization": f"Bearer {keys[0]}"})
        urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port in ports]
        print(f"instances :{ports[0]} and :{ports[1]} ({options.server}, 1 worker each), "
              f"Redis {options.redis_url}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        one = make_target("one instance", urls[0], ROUTER_MODEL, keys)
        two = make_target("two instances", urls, ROUTER_MODEL, keys)
        rpm_target = make_target("rpm", urls, ROUTER_MODEL, [rpm_key])
        wallet_target = make_target("wallet", urls, EXACT_MODEL, [wallet_key], max_tokens=4)
        # Each setup's CPU: the first instance alone, or both.
        meters = {"one instance": Meter(routers[0].proc.pid, options.database_url),
                  "two instances": Meter(routers[0].proc.pid, options.database_url)}
        meters["two instances"].router_pids += [routers[1].proc.pid]
        result = run_async(run_load(options, one, two, rpm_target, wallet_target, meters),
                           RUN_TIMEOUT_S)
        rpm, wallet = result["rpm"], result["wallet"]
        answered = (result["warmup"].ok + sum(run.ok for run in result["runs"].values())
                    + rpm[200] + wallet[200])
        billing = check_billing(options.database_url, answered)
        posted, pending = wallet_state(options.database_url, "exact0@example.com")
        warnings = [router.warnings() for router in routers]
        # The wallet's requests each instance decided, served or refused: one instance may
        # reserve the whole wallet in one statement, and the other then refuses every one.
        split = {"rpm": answered_by_instance(routers, rpm_key),
                 "wallet": answered_by_instance(routers, wallet_key, (200, 402))}
    finally:
        for service in reversed(services):
            stop_service(service)

    report = build_report(options, result, billing, answered, (posted, pending), split)
    report["environment"] = {"cpus": os.cpu_count(), "git": git_state(),
                             "python": sys.version.split()[0], "log_warnings": warnings}
    print_report(options, report)
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    return 0 if report["ok"] else 1


def build_report(options: Options, result: dict[str, Any], billing: Any, answered: int,
                 wallet: tuple[int, int], split: dict[str, list[int]]) -> dict[str, Any]:
    runs = {name: run.summary() for name, run in result["runs"].items()}
    rpm: Counter[int] = result["rpm"]
    statuses: Counter[int] = result["wallet"]
    checks = {
        "rpm_exact": rpm[200] == options.rpm and rpm[429] == options.rpm,
        "wallet_exact": (statuses[200] == options.wallet_requests
                         and statuses[402] == options.wallet_requests
                         and wallet == (0, 0)),
        "ledger_equals_usage": billing.ok(answered),
        "no_errors": not any(run["errors"] for run in runs.values()),
        # Otherwise one instance alone would have enforced the limits.
        "both_instances_took_part": all(n > 0 for counts in split.values() for n in counts),
    }
    return {"options": {k: str(v) for k, v in vars(options).items()}, "throughput": runs,
            "two_over_one_rps": ratio(runs["two instances"]["rps"],
                                      runs["one instance"]["rps"]),
            "rpm_statuses": dict(rpm), "wallet_statuses": dict(statuses),
            "wallet_posted_pending_micros": list(wallet), "answered_by_instance": split,
            "billing": vars(billing) | {"expected": answered}, "checks": checks,
            "ok": all(checks.values())}


def print_report(options: Options, report: dict[str, Any]) -> None:
    one, two = report["throughput"]["one instance"], report["throughput"]["two instances"]
    print(f"\nthroughput at concurrency {options.concurrency}: one instance "
          f"{fmt(one['rps'], 'req/s', 0)} (p50 {fmt(one['p50_ms'])}, p99 {fmt(one['p99_ms'])}), "
          f"two instances {fmt(two['rps'], 'req/s', 0)} (p50 {fmt(two['p50_ms'])}, p99 "
          f"{fmt(two['p99_ms'])}): ratio {fmt(report['two_over_one_rps'], '', 3)}")
    checks = report["checks"]
    print(f"rpm {options.rpm}, {2 * options.rpm} sent over both instances at once: "
          f"{report['rpm_statuses']} (200s by instance: {report['answered_by_instance']['rpm']})"
          f"  -> {'exact' if checks['rpm_exact'] else 'NOT EXACT'}")
    posted, pending = report["wallet_posted_pending_micros"]
    print(f"wallet for {options.wallet_requests} requests, {2 * options.wallet_requests} sent: "
          f"{report['wallet_statuses']} (decided by instance: "
          f"{report['answered_by_instance']['wallet']}), wallet ends at posted {posted} / "
          f"pending {pending} micro-USD  -> "
          f"{'exact' if checks['wallet_exact'] else 'NOT EXACT'}")
    billing = report["billing"]
    print(f"database: {billing['usage_records']} usage records, {billing['ledger_charges']} "
          f"ledger charges, {billing['charged_micros']} micro-USD charged = usage records' "
          f"{billing['usage_cost_micros']}, {billing['pending_holds']} pending holds, wallets "
          f"= ledger: {billing['ledger_matches_wallets']}; expected {billing['expected']} "
          f"answered requests  -> {'OK' if checks['ledger_equals_usage'] else 'MISMATCH'}")
    errors = {name: run["errors"] for name, run in report["throughput"].items() if run["errors"]}
    print(f"errors under load: {errors or 0}")


if __name__ == "__main__":
    sys.exit(main())
