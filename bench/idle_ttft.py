"""What a request pays after the router sat idle: time to first token after an idle spell.

    .venv/bin/python bench/idle_ttft.py [--samples 20] [--idle-seconds 10]

A deployment that is quiet for a while must not make its next caller wait: the lookups the
router caches (the key, its wallet and limits, prices, workers) expire after
``ROUTER_LOOKUP_TTL_SECONDS`` (5 s) and are reloaded ahead of expiry while in use; the
connections to PostgreSQL, Redis and the upstream may have been idle too. One run recreates
a bench database, starts the local upstream and one router process in the production
configuration (Redis on, the key with an RPM and a TPM limit, the worker a max-in-flight,
as ``proxy_bench.py`` by default), warms both up, then ``--samples`` times: waits
``--idle-seconds`` with nothing sent, then one stream straight to the upstream and one
through the router, alternating which goes first. It prints time to first token both ways
(p50, p99, max) and what the router adds, and checks the billing as the other benchmarks do.
The client opens a new connection when the server closed the idle one (uvicorn closes
keep-alive connections after 5 s), for both targets alike: as a real client would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    DEFAULT_SERVER,
    ROUTER_MODEL,
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
from load import Run, fmt, make_target, pct, sequential, session_for, table, timed_stream

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/idle_bench"
# The production key limits of proxy_bench.py: checked and counted on every request, far
# above this load.
KEY_RPM, KEY_TPM = 10_000_000, 1_000_000_000
TARGET_ADDED_P99_MS = 3.0  # issue 19, item 5


@dataclass(frozen=True)
class Options:
    samples: int
    idle_seconds: float
    warmup: int
    floor: bool
    database_url: str
    redis_url: str
    out: Path


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20,
                        help="idle spells, each followed by one stream per target")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="nothing is sent for this long before each sample (default 10, "
                             "twice the lookup cache's life)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--floor", action="store_true",
                        help="also time, each after its own idle spell, one Redis PING, "
                             "one PostgreSQL SELECT 1 and one INSERT (a commit, whose WAL "
                             "reaches the disk) from this process: what waking a process "
                             "that sat idle costs on this machine, whatever the code")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL,
                        help="dropped and recreated; its name must contain 'bench'")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                        help="flushed first; '' runs without Redis")
    parser.add_argument("--out", type=Path, default=TMP / "idle_ttft.json")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.idle_seconds < 0:
        parser.error("--samples must be at least 1 and --idle-seconds not negative")
    return Options(**vars(args))


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


async def measure(options: Options, direct: Any, routed: Any) -> dict[str, Run]:
    runs = {"direct": Run(), "router": Run()}
    if options.floor:
        import psycopg
        import redis

        runs["redis PING"], runs["postgres SELECT 1"] = Run(), Run()
        runs["postgres INSERT (commit)"] = Run()
        database = psycopg.connect(options.database_url, autocommit=True)
        cache = redis.Redis.from_url(options.redis_url or "redis://127.0.0.1:6379/13")
        cache.ping()
        database.execute("SELECT 1")
        # A commit waits for its WAL to reach the disk, as a request's reservation does.
        database.execute("CREATE TABLE IF NOT EXISTS idle_probe (id bigserial PRIMARY KEY)")
    async with session_for(1) as session:
        for target in (direct, routed):
            await sequential(session, target, options.warmup, Run(), stream=True)
        for i in range(options.samples):
            print(f"  sample {i + 1}/{options.samples}: idle {options.idle_seconds:g} s ...",
                  flush=True)
            time.sleep(options.idle_seconds)  # nothing runs on this loop meanwhile
            pair = (direct, routed) if i % 2 == 0 else (routed, direct)
            for target in pair:
                runs[target.name].record(*await timed_stream(session, target))
            if options.floor:
                time.sleep(options.idle_seconds)
                seconds = _timed(cache.ping)
                runs["redis PING"].record(None, seconds, seconds)
                time.sleep(options.idle_seconds)
                seconds = _timed(lambda: database.execute("SELECT 1").fetchone())
                runs["postgres SELECT 1"].record(None, seconds, seconds)
                time.sleep(options.idle_seconds)
                seconds = _timed(lambda: database.execute("INSERT INTO idle_probe DEFAULT VALUES"))
                runs["postgres INSERT (commit)"].record(None, seconds, seconds)
    return runs


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    pin = can_pin()
    env = router_env(options.database_url, [], redis_url=options.redis_url)
    upstream_port, router_port = free_port(), free_port()
    print(f"database {options.database_url}: recreate, migrate, seed ...", flush=True)
    prepare_database(options.database_url)
    if options.redis_url:
        flush_redis_db(options.redis_url)
    keys = seed(env, upstream_port, 1, key_rpm=KEY_RPM, key_tpm=KEY_TPM)
    services: list[Service] = []
    try:
        upstream = start_service("upstream", upstream_argv(upstream_port), env,
                                 1 if pin else None)
        services.append(upstream)
        router = start_service("router", router_argv(DEFAULT_SERVER, router_port, 1), env,
                               0 if pin else None)
        services.append(router)
        if pin:
            os.sched_setaffinity(0, {1})
        wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/v1/models", {})
        wait_ready(router, f"http://127.0.0.1:{router_port}/v1/models",
                   {"Authorization": f"Bearer {keys[0]}"})
        direct = make_target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                             UPSTREAM_MODEL, [])
        routed = make_target("router", f"http://127.0.0.1:{router_port}/v1/chat/completions",
                             ROUTER_MODEL, keys)
        print(f"{options.samples} samples, each after {options.idle_seconds:g} s idle; "
              f"Redis {'on' if options.redis_url else 'off'}", flush=True)
        timeout = options.samples * (options.idle_seconds + 30) + 300
        runs = run_async(measure(options, direct, routed), timeout)
        served = runs["router"].ok + options.warmup
        billing = check_billing(options.database_url, served)
        warnings = router.warnings()
    finally:
        for service in reversed(services):
            stop_service(service)

    d, r = runs["direct"].ttfts, runs["router"].ttfts
    added = [1000 * (b - a) for a, b in zip(sorted(d), sorted(r), strict=False)]
    summary = {name: {"ok": run.ok, "errors": dict(run.errors),
                      "ttft_p50_ms": pct(run.ttfts, 50), "ttft_p99_ms": pct(run.ttfts, 99),
                      "ttft_max_ms": 1000 * max(run.ttfts, default=0.0)}
               for name, run in runs.items()}
    added_p99 = (summary["router"]["ttft_p99_ms"] or 0) - (summary["direct"]["ttft_p99_ms"] or 0)
    rows = [(label, fmt(summary["direct"][k]), fmt(summary["router"][k]),
             fmt((summary["router"][k] or 0) - (summary["direct"][k] or 0)))
            for label, k in (("TTFT p50 after idle", "ttft_p50_ms"),
                             ("TTFT p99 after idle", "ttft_p99_ms"),
                             ("TTFT max after idle", "ttft_max_ms"))]
    for name in ("redis PING", "postgres SELECT 1", "postgres INSERT (commit)"):
        if name in summary:
            rows.append((f"{name} after idle p50 / max", "",
                         f"{fmt(summary[name]['ttft_p50_ms'])} / "
                         f"{fmt(summary[name]['ttft_max_ms'])}", ""))
    print()
    print(table(("", "direct", "router", "added"), rows))
    met = "met" if added_p99 <= TARGET_ADDED_P99_MS else "not met"
    print(f"\nadded p99 {added_p99:.2f} ms: target <= {TARGET_ADDED_P99_MS:g} ms, {met}")
    print(f"billing: {billing.describe(served)}")
    report = {"options": {k: str(v) for k, v in vars(options).items()}, "summary": summary,
              "added_p99_ms": added_p99, "added_sorted_ms": added,
              "billing": vars(billing) | {"expected": served},
              "environment": {"git": git_state(), "loadavg": os.getloadavg(),
                              "router_log_warnings": warnings}}
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"results written to {options.out}")
    healthy = billing.ok(served) and not runs["router"].errors and not runs["direct"].errors
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
