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

It also prints the CPU each stream cost the router (and the upstream, for its direct
streams), from the scheduler's account of each process, over the stream as the client sees
it: after an idle spell, and warm (``--warm-samples`` streams one after the other, after
the warm-up). Work that runs slower on a machine that sat idle shows here as more CPU for
the same request, where a wait for another process would not. ``--floor`` measures the
same for a fixed piece of Python work in the bench itself (``cold_probe``). The report
keeps every sample in order, so a drift over the run shows.
The client opens a new connection when the server closed the idle one (uvicorn closes
keep-alive connections after 5 s), for both targets alike: as a real client would.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cold_probe import Workload
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
from measure import process_cpu_ns, process_tree

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
    warm_samples: int
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
    parser.add_argument("--warm-samples", type=int, default=20,
                        help="streams per target after the warm-up, one after the other: "
                             "the CPU per stream of a warm process, to compare")
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


@dataclass
class Cpu:
    """CPU per stream in microseconds, of the process(es) that served it: warm, and after
    an idle spell."""

    pids: list[int]
    warm: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)

    def used_ns(self) -> int:
        return sum(process_cpu_ns(pid) for pid in self.pids)


async def _costed(session: Any, target: Any, cpu: Cpu, into: list[float]
                  ) -> tuple[str | None, float, float | None]:
    """One stream, and the CPU it cost ``cpu``'s processes appended to ``into`` (us): from
    its request to its end as the client read it (the charge written after it is not in
    it, unless a charge of the streams before fell in that time)."""
    before = cpu.used_ns()
    outcome = await timed_stream(session, target)
    into.append((cpu.used_ns() - before) / 1000)
    return outcome


async def measure(options: Options, direct: Any, routed: Any, cpus: dict[str, Cpu]
                  ) -> dict[str, Run]:
    """``cpus``: the router's and the upstream's processes, whose CPU per stream (each for
    the streams sent to it) is recorded."""
    runs = {"direct": Run(), "router": Run()}
    serving = {"direct": cpus["upstream"], "router": cpus["router"]}
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
        work = Workload()
        cpus["python work"].warm.extend(work.cpu_us() for _ in range(options.warm_samples))
    async with session_for(1) as session:
        for target in (direct, routed):
            await sequential(session, target, options.warmup, Run(), stream=True)
        for _ in range(options.warm_samples):
            for target in (direct, routed):
                await _costed(session, target, serving[target.name],
                              serving[target.name].warm)
        for i in range(options.samples):
            print(f"  sample {i + 1}/{options.samples}: idle {options.idle_seconds:g} s ...",
                  flush=True)
            time.sleep(options.idle_seconds)  # nothing runs on this loop meanwhile
            pair = (direct, routed) if i % 2 == 0 else (routed, direct)
            for target in pair:
                runs[target.name].record(*await _costed(session, target, serving[target.name],
                                                        serving[target.name].idle))
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
                time.sleep(options.idle_seconds)
                cpus["python work"].idle.append(work.cpu_us())
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
        cpus = {"router": Cpu(process_tree(router.proc.pid)),
                "upstream": Cpu(process_tree(upstream.proc.pid)),
                "python work": Cpu([])}  # the bench's own (--floor): cold_probe.Workload
        runs = run_async(measure(options, direct, routed, cpus), timeout)
        served = runs["router"].ok + options.warmup + options.warm_samples
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
    cpu_rows, cpu_summary = _cpu_rows(cpus)
    rows += cpu_rows
    print()
    print(table(("", "direct", "router", "added"), rows))
    by_sample = [round(1000 * (b - a), 2) for a, b in zip(d, r, strict=False)]
    print("\nadded by sample, in order (ms): " + " ".join(f"{v:.2f}" for v in by_sample))
    for name, figures in cpu_summary.items():
        unit = "run" if name == "python work" else "stream"
        print(f"{name} CPU per {unit} after idle / warm (p50): {fmt(figures['ratio'], '', 2)}")
    met = "met" if added_p99 <= TARGET_ADDED_P99_MS else "not met"
    print(f"\nadded p99 {added_p99:.2f} ms: target <= {TARGET_ADDED_P99_MS:g} ms, {met}")
    print(f"billing: {billing.describe(served)}")
    report = {"options": {k: str(v) for k, v in vars(options).items()}, "summary": summary,
              "ttft_by_sample_ms": {name: [round(1000 * t, 3) for t in runs[name].ttfts]
                                    for name in ("direct", "router")},
              "added_by_sample_ms": by_sample, "cpu_us_per_stream": cpu_summary,
              "added_p99_ms": added_p99, "added_sorted_ms": added,
              "billing": vars(billing) | {"expected": served},
              "environment": {"git": git_state(), "loadavg": os.getloadavg(),
                              "router_log_warnings": warnings}}
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"results written to {options.out}")
    healthy = billing.ok(served) and not runs["router"].errors and not runs["direct"].errors
    return 0 if healthy else 1


def _cpu_rows(cpus: dict[str, Cpu]) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
    """Table rows of CPU per stream (the upstream's for direct streams, the router's for
    its own), and the figures for the report."""
    summary: dict[str, Any] = {}
    for name, cpu in cpus.items():
        if not cpu.warm:
            continue  # the python work, without --floor
        warm, idle = _median(cpu.warm), _median(cpu.idle)
        summary[name] = {"warm_p50": warm, "idle_p50": idle,
                         "idle_max": max(cpu.idle, default=None),
                         "ratio": idle / warm if warm and idle is not None else None,
                         "warm": [round(v, 1) for v in cpu.warm],
                         "idle": [round(v, 1) for v in cpu.idle]}
    up, router = summary["upstream"], summary["router"]
    rows = [(label, fmt(up[key], "us", 0), fmt(router[key], "us", 0), "")
            for label, key in (("CPU per stream warm p50", "warm_p50"),
                               ("CPU per stream after idle p50", "idle_p50"),
                               ("CPU per stream after idle max", "idle_max"))]
    work = summary.get("python work")
    if work is not None:
        rows.append(("python work in the bench: CPU warm / after idle p50", "",
                     f"{fmt(work['warm_p50'], 'us', 0)} / {fmt(work['idle_p50'], 'us', 0)}",
                     ""))
    return rows, summary


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


if __name__ == "__main__":
    sys.exit(main())
