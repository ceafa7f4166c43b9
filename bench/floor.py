"""What bounds issue 19's targets 1 and 2 on this machine: the router beside the least a
gateway on its stack can do (``floor_app.py``), in one run.

    .venv/bin/python bench/floor.py [--rounds 8] [--interleaved 500]

One run recreates the bench database (seeded as ``ab_routers.py`` seeds it: Redis on, the
key carrying an RPM and a TPM limit), starts the upstream (``fast_upstream.py``) on CPU 1
with the load generator, and on CPU 0, each under uvicorn with ``make serve``'s flags and
one process: the router, and four floors, each the one before with one more stage:

- ``relay``: the request's JSON read and its model rewritten, the upstream called through
  the router's own HTTP client, its answer's JSON read and written back (a stream relayed
  line by line);
- ``+ hold``: one round trip to PostgreSQL before the upstream call, taking a hold on a
  wallet (committed without waiting for the disk);
- ``+ limits``: one Redis script beside the hold;
- ``+ settle``: after the answer, one Redis script settling the limits, and the hold
  charged (the charges of 20 ms in one statement, as the router's linger).

Each round sends ``--interleaved`` turns of one request to every target in a row (the
order alternates), then as many streams: the machine's drift falls on all alike. Each
target's p50 less the upstream's own in the same round is what it adds (the median over
the rounds), its p99 added is over every round's requests pooled, and its CPU per request
and per stream is read from the scheduler, with how often it went to sleep waiting (each
sleep is a wake-up, and on this machine a process runs slower for a while after one). The
router's requests are checked to be billed exactly at the end.

A floor is what no build of the router can go below with the stages it needs, whatever its
own code does: the router must hold money in the database before it calls the upstream
(``DESIGN.md``'s reserve -> relay -> settle) and must count the key's limits across
processes, and it also authenticates, prices, meters, settles and logs, which the floors
do not. So where the ``+ settle`` floor already adds more than a target allows, the target
is out of reach on this stack and machine; what the router adds over that floor is the
share its own code could still win.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import psycopg
from builds import DEFAULT_DATABASE_URL
from floor_app import SCHEMA
from harness import (
    ROOT,
    ROUTER_MODEL,
    TMP,
    UPSTREAM_MODEL,
    Service,
    check_billing,
    flush_redis_db,
    free_port,
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
from load import Run, Target, make_target, pct, sequential, session_for
from measure import process_cpu_ns, process_tree, sleeps
from proxy_bench import PRODUCTION

from serve import APP

# name -> FLOOR_STAGES, in order: each adds one stage to the one before.
FLOORS = {"floor: relay": "", "floor: + hold": "pg", "floor: + limits": "pg,redis",
          "floor: + settle": "pg,redis,settle"}
ROUTER = "router"
DIRECT = "direct"
RUN_TIMEOUT_S = 1800


def start_servers(env: dict[str, str], upstream_port: int) -> tuple[dict[str, Service],
                                                                    dict[str, int]]:
    """The router and the floors, each on its own port, all pinned to CPU 0."""
    services: dict[str, Service] = {}
    ports: dict[str, int] = {}
    ports[ROUTER] = free_port()
    services[ROUTER] = start_service("router", router_argv("uvicorn", ports[ROUTER], 1), env,
                                     cpu=0)
    for name, stages in FLOORS.items():
        ports[name] = free_port()
        services[name] = start_service(name.replace(":", "").replace(" ", "_").replace(
            "+", "plus"), floor_argv(ports[name]), floor_env(env, stages, upstream_port),
            cpu=0)
    return services, ports


def floor_argv(port: int, server: str = "uvicorn", workers: int = 1) -> list[str]:
    """``floor_app.py`` under the router's server with its flags (``make serve``'s)."""
    argv = router_argv(server, port, workers)
    argv[argv.index(APP)] = "floor_app:app"
    return argv


def floor_env(env: dict[str, str], stages: str, upstream_port: int) -> dict[str, str]:
    """The router's environment (its database and Redis) with the floor's own settings."""
    return {**env, "FLOOR_STAGES": stages, "FLOOR_UPSTREAM_MODEL": UPSTREAM_MODEL,
            "FLOOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}"}


def cpu_ns(pids: list[int]) -> int:
    """CPU time of the processes, from the scheduler's own account (ticks are 10 ms)."""
    return sum(process_cpu_ns(pid) for pid in pids)


async def measure(options: argparse.Namespace, targets: dict[str, Target],
                  pids: dict[str, list[int]]) -> dict[str, Any]:
    """Per target and round: p50 latency and time to first token (ms), CPU per request and
    per stream (us); every request's latency pooled; the router's answered count."""
    rounds: dict[str, dict[str, list[float]]] = {
        name: {"p50": [], "ttft": [], "cpu": [], "stream_cpu": [], "sleeps": [],
               "stream_sleeps": []} for name in targets}
    pooled: dict[str, list[float]] = {name: [] for name in targets}
    answered = 0
    async with session_for(1) as session:
        for target in targets.values():  # warm-up: connections, lookups, code paths
            for stream in (False, True):
                warm = Run()
                await sequential(session, target, options.warmup, warm, stream=stream)
                if warm.errors:
                    raise SystemExit(f"{target.name} warm-up: errors {dict(warm.errors)}")
                answered += warm.ok if target.name == ROUTER else 0
        for round_number in range(options.rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for stream, figure, cpu, slept in ((False, "p50", "cpu", "sleeps"),
                                               (True, "ttft", "stream_cpu", "stream_sleeps")):
                runs = {name: Run() for name in targets}
                before = {name: cpu_ns(p) for name, p in pids.items()}
                asleep = {name: sum(map(sleeps, p)) for name, p in pids.items()}
                for turn in range(options.interleaved):
                    for name in order if turn % 2 == 0 else reversed(order):
                        await sequential(session, targets[name], 1, runs[name], stream=stream)
                for name, run in runs.items():
                    if run.errors:
                        raise SystemExit(f"{name}: errors {dict(run.errors)}")
                    rounds[name][figure].append(pct(run.ttfts if stream else run.latencies,
                                                    50) or 0.0)
                    if name in pids:
                        used = cpu_ns(pids[name]) - before[name]
                        rounds[name][cpu].append(used / 1000 / run.ok)
                        rounds[name][slept].append(
                            (sum(map(sleeps, pids[name])) - asleep[name]) / run.ok)
                    if not stream:
                        pooled[name] += run.latencies
                answered += runs[ROUTER].ok
            print(f"round {round_number + 1}/{options.rounds} done", flush=True)
    return {"rounds": rounds, "pooled": pooled, "answered": answered}


def report(rounds: dict[str, dict[str, list[float]]], pooled: dict[str, list[float]]
           ) -> list[str]:
    def added(name: str, figure: str) -> float:
        return statistics.median(a - d for a, d in zip(rounds[name][figure],
                                                       rounds[DIRECT][figure], strict=True))

    direct_p99 = pct(pooled[DIRECT], 99) or 0.0
    lines = [f"upstream direct: p50 {statistics.median(rounds[DIRECT]['p50']):.2f} ms, "
             f"first token p50 {statistics.median(rounds[DIRECT]['ttft']):.2f} ms",
             "| target | added p50 | added p99 | first token added p50 | CPU per request | "
             "CPU per stream | sleeps per request / stream |", "|---|---|---|---|---|---|---|"]
    for name in rounds:
        if name == DIRECT:
            continue
        lines.append(
            f"| {name} | {added(name, 'p50'):.2f} ms | "
            f"{(pct(pooled[name], 99) or 0.0) - direct_p99:.2f} ms | "
            f"{added(name, 'ttft'):.2f} ms | {statistics.median(rounds[name]['cpu']):,.0f} us | "
            f"{statistics.median(rounds[name]['stream_cpu']):,.0f} us | "
            f"{statistics.median(rounds[name]['sleeps']):.1f} / "
            f"{statistics.median(rounds[name]['stream_sleeps']):.1f} |")
    floor = list(FLOORS)[-1]
    lines.append(f"the router over the last floor: {added(ROUTER, 'p50') - added(floor, 'p50'):.2f}"
                 f" ms added at p50, {added(ROUTER, 'ttft') - added(floor, 'ttft'):.2f} ms to "
                 "the first token")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--interleaved", type=int, default=500,
                        help="turns of one request (then one stream) to every target, per "
                             "round")
    parser.add_argument("--warmup", type=int, default=200,
                        help="requests and streams to each target before the rounds")
    parser.add_argument("--redis-url", default=PRODUCTION["redis_url"])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--out", type=Path, default=TMP / "floor.json")
    options = parser.parse_args(argv)

    upstream_port = free_port()
    flush_redis_db(options.redis_url)
    prepare_database(options.database_url)
    env = router_env(options.database_url, [], redis_url=options.redis_url)
    keys = seed(env, upstream_port, 1, key_rpm=PRODUCTION["key_rpm"],
                key_tpm=PRODUCTION["key_tpm"])
    with psycopg.connect(options.database_url, autocommit=True) as connection:
        connection.execute(SCHEMA)

    os.sched_setaffinity(0, {1})  # the load generator beside the upstream
    upstream = start_service("upstream", upstream_argv(upstream_port), env, cpu=1)
    services: dict[str, Service] = {}
    try:
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        services, ports = start_servers(env, upstream_port)
        for name, service in services.items():
            wait_ready(service, f"http://127.0.0.1:{ports[name]}/v1/models",
                       {"Authorization": f"Bearer {keys[0]}"}, timeout=120)
        targets = {DIRECT: make_target(DIRECT, f"http://127.0.0.1:{upstream_port}/v1/chat/"
                                       "completions", UPSTREAM_MODEL, [])}
        for name in (*FLOORS, ROUTER):
            targets[name] = make_target(name, f"http://127.0.0.1:{ports[name]}/v1/chat/"
                                        "completions", ROUTER_MODEL, keys)
        pids = {name: process_tree(service.proc.pid) for name, service in services.items()}
        result = run_async(measure(options, targets, pids), RUN_TIMEOUT_S)
    finally:
        for service in services.values():
            stop_service(service)
        stop_service(upstream)
    lines = report(result["rounds"], result["pooled"])
    print("\n".join(lines))
    billing = check_billing(options.database_url, result["answered"])
    print(f"billing (router): {billing.describe(result['answered'])}")
    options.out.write_text(json.dumps({"rounds": result["rounds"], "report": lines,
                                       "billing_ok": billing.ok(result["answered"])},
                                      indent=1))
    return 0 if billing.ok(result["answered"]) else 1


if __name__ == "__main__":
    sys.exit(main())
