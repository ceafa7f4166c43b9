"""What the router adds on top of its upstream: latency, throughput and time to first token.

    .venv/bin/python bench/proxy_bench.py [--requests N] [--duration S] [--database-url URL]
    .venv/bin/python bench/proxy_bench.py --bare   # no Redis, no key limits

One run drops and recreates a dedicated PostgreSQL database, migrates and seeds it through
the ops CLI, starts a cheap local upstream (``bench/fast_upstream.py``) and the router
(uvicorn, one worker, full billing on PostgreSQL), then sends the same load straight to the
upstream and through the router, in alternating blocks so that the noise of a shared
machine falls on both alike. It prints added latency at concurrency 1 and 64, requests/s
both ways, streaming time to first token both ways, the targets next to them, the same at
concurrency 1 for the Responses API (``/v1/responses``, translated to chat for the upstream)
and the Anthropic Messages API (``/v1/messages``, sent natively to an anthropic worker on
the same upstream), and checks afterwards that the database charged every request the
router answered. Everything stays
on 127.0.0.1 and every phase is bounded in count or time.

By default it runs the router as it is deployed (the production configuration): limits,
worker slots and circuit breakers in Redis, and every request checked against its key's RPM
and TPM (limits high enough never to refuse one). ``--bare`` runs it without Redis and
without key limits (``--redis-url``, ``--key-rpm`` and ``--key-tpm`` set each one);
``--production`` is accepted and changes nothing.
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
    ANTHROPIC_MODEL,
    ANTHROPIC_UPSTREAM_MODEL,
    DEFAULT_SERVER,
    KEY_LIMIT_MAX,
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
    redis_summary,
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
from load import (
    Run,
    Target,
    abba,
    closed_loop,
    make_messages_target,
    make_responses_target,
    make_target,
    pct,
    sequential,
    session_for,
    split,
)
from measure import (
    Meter,
    process_cpu_seconds,
    process_tree,
)
from proxy_report import build_report, configuration, describe_configuration, print_report
from pyspy import make_profiler

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
RUN_TIMEOUT_S = 1800  # the whole load phase, whatever the options
# --production: what the router runs with when deployed. Redis shares limits, worker slots
# and circuit breakers across instances; every key carries an RPM and a TPM limit, here far
# above the load (a minute of it is well under 10,000,000 requests and 1,000,000,000 tokens),
# so that both are checked on every request and never refuse one. (A limit is at most
# 2,147,483,647, what its PostgreSQL column holds: a TPM of 10^10 would be refused.)
PRODUCTION = {"redis_url": "redis://127.0.0.1:6379/14", "key_rpm": 10_000_000,
              "key_tpm": 1_000_000_000}
LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")


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
    production: bool
    redis_url: str  # "" = no Redis
    key_rpm: int | None  # None = the bench keys have no such limit
    key_tpm: int | None
    key_concurrency: int | None


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
    parser.add_argument("--redis-url", default=None,
                        help="the router's REDIS_URL (limits, worker slots, circuit breakers); "
                             "that database is flushed first, so give it one of its own, "
                             "e.g. redis://127.0.0.1:6379/14 (default: no Redis)")
    parser.add_argument("--key-rpm", type=int, default=None, metavar="N",
                        help="requests per minute of each bench key (default: no limit)")
    parser.add_argument("--key-tpm", type=int, default=None, metavar="N",
                        help="tokens per minute of each bench key (default: no limit)")
    parser.add_argument("--key-concurrency", type=int, default=None, metavar="N",
                        help="requests in flight of each bench key (default: no limit)")
    parser.add_argument("--production", action="store_true",
                        help="the default (kept for older command lines)")
    parser.add_argument("--bare", action="store_true",
                        help="no Redis and no key limits, unless given explicitly (by "
                             f"default: --redis-url {PRODUCTION['redis_url']} --key-rpm "
                             f"{PRODUCTION['key_rpm']} --key-tpm {PRODUCTION['key_tpm']}; "
                             "--key-rpm 0 or --redis-url '' turn one off)")
    args = parser.parse_args(argv)
    if not args.bare:
        for name, value in PRODUCTION.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    del args.bare
    args.redis_url = args.redis_url or ""
    if args.redis_url and not urlsplit(args.redis_url).path.strip("/"):
        parser.error("--redis-url must name a database number (it is flushed), e.g. "
                     "redis://127.0.0.1:6379/14")
    for name in ("key_rpm", "key_tpm", "key_concurrency"):
        value = getattr(args, name)
        if value == 0:
            setattr(args, name, None)  # 0: no limit
        elif value is not None and not 1 <= value <= KEY_LIMIT_MAX:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and {KEY_LIMIT_MAX:,} "
                         "(0: no limit)")
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
    """The PostgreSQL backends serving the bench database (the router's connections; not
    an autovacuum worker that happens to be in it)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                            (name,)).fetchall()
    return [int(r[0]) for r in rows]



@dataclass
class Results:
    c1: dict[str, Run] = field(default_factory=dict)
    cn: dict[str, Run] = field(default_factory=dict)
    stream: dict[str, Run] = field(default_factory=dict)
    warmup: dict[str, Run] = field(default_factory=dict)
    # The other APIs at concurrency 1: dialect ("responses", "messages") -> phase ("warmup",
    # "c1", "stream") -> target ("direct", "router") -> its run.
    dialects: dict[str, dict[str, dict[str, Run]]] = field(default_factory=dict)
    profile: Run = field(default_factory=Run)
    commit_probe: dict[str, dict[str, float]] = field(default_factory=dict)
    # One router answer after the measured phases: its status and x-ratelimit-* headers
    # (what the key's limits let through, as counted at that moment).
    limit_probe: dict[str, Any] = field(default_factory=dict)

    def _dialect_runs(self) -> list[tuple[str, dict[str, Run]]]:
        return [(dialect, runs) for dialect, phases in self.dialects.items()
                for runs in phases.values()]

    def router_ok(self) -> int:
        """Router requests answered 200, every API and phase (warm-up included): each must
        have been charged."""
        runs = [self.c1, self.cn, self.stream, self.warmup,
                *(runs for _, runs in self._dialect_runs())]
        return (sum(r["router"].ok for r in runs if "router" in r) + self.profile.ok
                + (self.limit_probe.get("status") == 200))

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for runs in (self.c1, self.cn, self.stream, self.warmup):
            for name, run in runs.items():
                total.update({f"{name}: {k}": v for k, v in run.errors.items()})
        for dialect, runs in self._dialect_runs():
            for name, run in runs.items():
                total.update({f"{dialect} {name}: {k}": v for k, v in run.errors.items()})
        total.update({f"router (profiled): {k}": v for k, v in self.profile.errors.items()})
        status = self.limit_probe.get("status", 200)
        if status != 200:
            label = status if isinstance(status, str) else f"HTTP {status}"
            total[f"router (limit probe): {label}"] += 1
        return total


async def probe_limits(session: aiohttp.ClientSession, router: Target) -> dict[str, Any]:
    """One request through the router (billed like the others): the rate-limit headers it
    answers with show the limits its key was checked against and what is left of them."""
    try:
        async with session.post(router.url, data=router.body, headers=router.headers(0)
                                ) as response:
            await response.read()
            return {"status": response.status} | {
                name: response.headers[name] for name in LIMIT_HEADERS
                if name in response.headers}
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": type(exc).__name__}


async def dialect_phases(session: aiohttp.ClientSession, options: Options, meter: Meter,
                         phases: dict[str, dict[str, Run]], direct: Target, router: Target
                         ) -> None:
    """One API other than chat completions, at concurrency 1 as the chat rows: a short
    warm-up, then ``--requests`` sequential requests and ``--stream-requests`` sequential
    streams per target, in alternating blocks against the upstream called directly as the
    router calls it."""
    pair = (direct, router)
    for target in pair:
        run = phases.setdefault("warmup", {}).setdefault(target.name, Run())
        await sequential(session, target, max(10, options.warmup // 4), run)
        await sequential(session, target, max(10, options.warmup // 4), run, stream=True)
    for phase, count, stream in (("c1", options.requests, False),
                                 ("stream", options.stream_requests, True)):
        blocks = split(count, options.block)
        for i, target in enumerate(abba(pair, len(blocks))):
            run = phases.setdefault(phase, {}).setdefault(target.name, Run())
            await meter.measure(run, sequential(session, target, blocks[i // 2], run,
                                                stream=stream))


async def run_load(options: Options, direct: Target, router: Target, meter: Meter,
                   profile: Callable[[float, Run], Awaitable[dict[str, Any] | None]],
                   dialects: dict[str, tuple[Target, Target]]
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

        for dialect, (dialect_direct, dialect_router) in dialects.items():
            print(f"{dialect}: {options.requests} requests and {options.stream_requests} "
                  "streams per target ...", flush=True)
            await dialect_phases(session, options, meter,
                                 results.dialects.setdefault(dialect, {}),
                                 dialect_direct, dialect_router)

        results.commit_probe["end"] = probe_commits(options.database_url)
        results.limit_probe = await probe_limits(session, router)

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


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    pin = options.pin and can_pin()
    router_cpu, side_cpu = (0, 1) if pin else (None, None)
    env = router_env(options.database_url, options.router_env, redis_url=options.redis_url)
    upstream_port, router_port = free_port(), free_port()
    config = configuration(options)

    print(f"configuration: {describe_configuration(config)}", flush=True)
    print(f"database {options.database_url}: recreate, migrate, seed"
          + (f"; flush {options.redis_url}" if options.redis_url else "") + " ...", flush=True)
    prepare_database(options.database_url)
    if options.redis_url:
        flush_redis_db(options.redis_url)  # rate-limit windows and slots of earlier runs
    keys = seed(env, upstream_port, options.users, key_rpm=options.key_rpm,
                key_tpm=options.key_tpm, key_concurrency=options.key_concurrency)
    seed_anthropic(env, upstream_port)

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
        # The other APIs: the router's request against the one it makes of the upstream
        # (Responses: translated to chat completions on the OpenAI-compatible worker;
        # Messages: sent as it is to the anthropic worker).
        upstream_url, router_url = (f"http://127.0.0.1:{upstream_port}/v1",
                                    f"http://127.0.0.1:{router_port}/v1")
        dialects = {
            "responses": (make_target("direct", f"{upstream_url}/chat/completions",
                                      UPSTREAM_MODEL, []),
                          make_responses_target("router", f"{router_url}/responses",
                                                ROUTER_MODEL, keys)),
            "messages": (make_messages_target("direct", f"{upstream_url}/messages",
                                              ANTHROPIC_UPSTREAM_MODEL, []),
                         make_messages_target("router", f"{router_url}/messages",
                                              ANTHROPIC_MODEL, keys)),
        }
        meter = Meter(router.proc.pid, options.database_url)
        # granian runs the app in a child of the process it starts as: profile that one
        # (with uvicorn and one worker they are the same process).
        worker_pid = max(process_tree(router.proc.pid), key=process_cpu_seconds)
        results, profile = run_async(run_load(options, direct, routed, meter,
                                              make_profiler(worker_pid, side_cpu), dialects),
                                     RUN_TIMEOUT_S)
        environment["loadavg_end"] = os.getloadavg()
        # Right away: the windows hold the requests of the last minute only.
        redis = (redis_summary(options.redis_url, env["ROUTER_REDIS_PREFIX"])
                 if options.redis_url else None)
        billing = check_billing(options.database_url, results.router_ok())
        environment["router_log_warnings"] = router.warnings()
        if redis is not None:
            # The router falls back to counting in its own process while Redis does not
            # answer, and logs this when it does.
            redis["router_log_not_answering"] = sum(
                1 for line in router.log_tail(10**7).splitlines()
                if "Redis is not answering" in line)
    finally:
        for service in reversed(services):
            stop_service(service)

    report = build_report(options, results, billing, profile, environment, config, redis)
    print_report(report, options.concurrency)
    if environment["router_log_warnings"]:
        print(f"\nrouter log: {environment['router_log_warnings']} warning/error lines, see "
              f"{router.log_path}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    healthy = (billing.ok(results.router_ok()) and not report["errors"]
               and not report["configuration_problems"])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
