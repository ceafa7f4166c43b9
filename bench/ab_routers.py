"""Two builds of the router side by side in one run: which one is faster, as a ratio that
the machine's noise does not decide.

    .venv/bin/python bench/ab_routers.py --baseline /tmp/base [--rounds 12 --seconds 2]
        [--restart-every 4] [--api chat|responses|messages]

``--baseline`` is a checkout of the build to compare against (``git worktree add /tmp/base
<commit>``); the other build is this checkout. Both share the database schema (the bench
database is migrated by this checkout), unless ``--baseline-migration APP:NAME`` gives the
baseline a database of its own, migrated back to that migration: with ``--baseline`` a
checkout of this very commit, only the schema differs (an index added or dropped). One run
recreates the bench database, flushes the Redis database, starts the upstream
(``fast_upstream.py``) and both routers in the production configuration of
``proxy_bench.py`` (Redis on, every key with an RPM and a TPM limit, the worker a
max-in-flight; uvicorn with ``make serve``'s flags, one worker each), both routers pinned
to CPU 0 and the upstream and the load generator to CPU 1. Only one
router is loaded at a time, in alternating blocks (A B B A ...), so that both see the same
machine within seconds of each other. ``--api`` picks what the load speaks: chat
completions (the default), the Responses API (sent to the worker as chat completions, the
upstream direct measured as chat completions), or Anthropic's Messages API (sent natively to
an anthropic worker on the same upstream, the upstream direct measured on its
``/v1/messages``):

- concurrency 64: a closed loop of ``--seconds`` per block: requests/s and the router's CPU
  per request, and p99 over p50 of all the blocks' latencies pooled (a stall every few
  seconds lands in some blocks only);
- concurrency 1: ``--sequential`` requests per block: latency p50, and what the router adds
  to the upstream's own (measured in blocks of its own, between), and its CPU per request;
  the p90 and p99 added, over all blocks pooled;
- streams: ``--sequential`` streamed requests per block: time to first token p50, and the
  router's CPU per stream, start to end;
- interleaved (``--interleaved``, 0 to skip): as many requests and as many streams one by
  one, each turn going to the baseline, this build and the upstream direct in a row: what
  the machine does drifts within a block of a hundred requests, and only the order of one
  turn separates the three here (the order alternates). On this machine, blocks gave
  0.92 and 0.94 for a change that took a round trip out of each request. For streams, both
  the first token and the end of the body (what a client reading to the end waits for);
  and the requests' p90 and p99 added, over every round's requests pooled.

Both routers are started afresh every ``--restart-every`` rounds (4): two processes of the
same build, kept for a whole run, differed by 8 % in CPU per request and 15 % in added
latency at concurrency 1 (an A/A run: ``--baseline`` a worktree of this very commit), which
is each process's luck (memory layout, hash seeds), not the build's. Each figure is the
median over the blocks, and the ratio of the two builds is given with the spread of its
per-round ratios (each round holds one block of each build). At the end,
every request the routers answered is checked to be billed exactly, as in every bench.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from builds import (
    Builds,
    add_api_option,
    add_build_options,
    direct_target,
    prepare_builds,
    router_target,
    upstream_running,
)
from harness import (
    TMP,
    Service,
    check_billing,
    free_port,
    router_argv,
    run_async,
    start_service,
    stop_service,
    wait_ready,
)
from load import Run, Target, closed_loop, pct, sequential, session_for
from measure import Meter

# Latencies pooled over every block: phase ("c64", "c1", "c1 interleaved") -> build ->
# seconds.
Pooled = dict[str, dict[str, list[float]]]

RUN_TIMEOUT_S = 1800


def start_router(name: str, tree: Path, port: int, env: dict[str, str]) -> Service:
    """The router of the build in ``tree``, pinned to CPU 0."""
    return start_service(name, router_argv("uvicorn", port, 1, tree), env, cpu=0, cwd=tree)


def block_figures(run: Run) -> dict[str, float | None]:
    return {"rps": run.ok / run.wall if run.wall else None,
            "cpu_us": 1e6 * run.router_cpu / run.requests if run.requests else None,
            "p50_ms": pct(run.latencies, 50), "ttft_p50_ms": pct(run.ttfts, 50)}


async def measure(options: argparse.Namespace, targets: dict[str, Target],
                  meters: dict[str, Meter], rounds: range) -> dict[str, Any]:
    blocks: dict[str, dict[str, list[dict[str, float | None]]]] = {
        phase: {name: [] for name in targets}
        for phase in ("c64", "c1", "stream", "c1 interleaved", "stream interleaved")}
    # Every latency at concurrency 64, all blocks pooled: a stall of the router every few
    # seconds lands in some blocks only, so it shows in the pooled tail, not in the medians.
    # And the requests one by one, in blocks and interleaved: a block of a hundred or two
    # has no p99 of its own.
    pooled: Pooled = {phase: {name: [] for name in targets}
                      for phase in ("c64", "c1", "c1 interleaved")}
    answered: Counter[str] = Counter()  # per build: each may bill in its own database
    async with session_for(options.concurrency) as session:
        for target in targets.values():  # warm-up: keys, prices, connections, code paths
            warm = Run()
            await closed_loop(session, target, options.concurrency, 2.0, warm)
            if target.name != "direct":
                answered[target.name] += warm.ok
        for round_number in rounds:
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            for name in order:
                target, meter = targets[name], meters.get(name)
                for phase in ("c64", "c1", "stream"):
                    if phase == "c64" and meter is None:
                        continue  # the direct baseline only for what the router adds
                    run = Run()
                    if phase == "c64":
                        work = closed_loop(session, target, options.concurrency,
                                           options.seconds, run)
                    else:
                        work = sequential(session, target, options.sequential, run,
                                          stream=phase == "stream")
                    if meter is not None:
                        await meter.measure(run, work)
                    else:
                        await work
                    if run.errors:
                        raise SystemExit(f"{name} {phase}: errors {dict(run.errors)}")
                    if name != "direct":
                        answered[name] += run.ok
                    blocks[phase][name].append(block_figures(run))
                    if phase != "stream":
                        pooled[phase][name] += run.latencies
            if options.interleaved:
                answered += await interleaved(session, targets, order, options.interleaved,
                                              blocks, pooled["c1 interleaved"])
            print(f"round {round_number + 1}/{options.rounds} done", flush=True)
    return {"blocks": blocks, "pooled": pooled, "answered": answered}


async def interleaved(session: Any, targets: dict[str, Target], order: list[str], count: int,
                      blocks: dict[str, dict[str, list[dict[str, float | None]]]],
                      pooled: dict[str, list[float]]) -> Counter[str]:
    """``count`` turns of one request to each target in a row, then as many of streams;
    the requests each router answered. The requests' latencies are added to ``pooled``."""
    answered: Counter[str] = Counter()
    for phase, stream in (("c1 interleaved", False), ("stream interleaved", True)):
        runs = {name: Run() for name in targets}
        for turn in range(count):
            for name in order if turn % 2 == 0 else reversed(order):
                await sequential(session, targets[name], 1, runs[name], stream=stream)
        for name, run in runs.items():
            if run.errors:
                raise SystemExit(f"{name} {phase}: errors {dict(run.errors)}")
            blocks[phase][name].append(block_figures(run))
            if not stream:
                pooled[name] += run.latencies
            if name != "direct":
                answered[name] += run.ok
    return answered


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def tail_lines(rows: list[str], latencies: dict[str, list[float]], label: str) -> None:
    """p90 and p99 of each build's requests one by one, pooled, less the upstream's own at
    the same percentile (as ``proxy_bench.py`` gives what the router adds to p99)."""
    for q in (90, 99):
        values = {name: pct(latencies.get(name, []), q)
                  for name in ("direct", "baseline", "this build")}
        if all(values.values()):
            a, b = (values[name] - values["direct"] for name in ("baseline", "this build"))
            rows.append(f"{label.format(q=q):<34} {a:>10.2f} {b:>10.2f}   {b / a:>6.3f}   "
                        f"direct p{q} {values['direct']:.2f} ms")


def report(blocks: dict[str, dict[str, list[dict[str, float | None]]]],
           pooled: Pooled) -> list[str]:
    rows = []

    def line(label: str, phase: str, key: str, *, added: bool = False) -> None:
        a = [b[key] for b in blocks[phase]["baseline"]]
        b = [b[key] for b in blocks[phase]["this build"]]
        if added:
            direct = [d[key] for d in blocks[phase]["direct"]]
            a = [x - d for x, d in zip(a, direct, strict=True) if x is not None and d is not None]
            b = [x - d for x, d in zip(b, direct, strict=True) if x is not None and d is not None]
        ratios = sorted(y / x for x, y in zip(a, b, strict=True) if x and y is not None)
        ma, mb = median(a), median(b)
        spread = (f"{ratios[len(ratios) // 4]:.2f}-{ratios[(3 * len(ratios)) // 4]:.2f}"
                  if ratios else "-")
        rows.append(f"{label:<34} {ma:>10.2f} {mb:>10.2f}   {mb / ma:>6.3f}   {spread}"
                    if ma and mb else f"{label:<34} -")

    line("c=64 requests/s", "c64", "rps")
    line("c=64 router CPU per request (us)", "c64", "cpu_us")
    tails = {name: (pct(pooled["c64"].get(name, []), 50), pct(pooled["c64"].get(name, []), 99))
             for name in ("baseline", "this build")}
    if all(p50 and p99 for p50, p99 in tails.values()):
        (a50, a99), (b50, b99) = tails["baseline"], tails["this build"]
        rows.append(f"{'c=64 p99 / p50, blocks pooled':<34} {a99 / a50:>10.2f} {b99 / b50:>10.2f}"
                    f"   {(b99 / b50) / (a99 / a50):>6.3f}   p99 {a99:.1f} -> {b99:.1f} ms, "
                    f"p50 {a50:.1f} -> {b50:.1f} ms")
    line("c=1 latency p50 (ms)", "c1", "p50_ms")
    line("c=1 added p50 (ms)", "c1", "p50_ms", added=True)
    line("c=1 router CPU per request (us)", "c1", "cpu_us")
    tail_lines(rows, pooled["c1"], "c=1 added p{q}, blocks pooled")
    line("stream TTFT p50 (ms)", "stream", "ttft_p50_ms")
    line("stream TTFT added p50 (ms)", "stream", "ttft_p50_ms", added=True)
    line("stream router CPU per stream (us)", "stream", "cpu_us")
    if any(blocks["c1 interleaved"].values()):
        line("interleaved: c=1 added p50 (ms)", "c1 interleaved", "p50_ms", added=True)
        line("interleaved: TTFT added p50 (ms)", "stream interleaved", "ttft_p50_ms",
             added=True)
        # To the body's end, as a client reading it to the end waits for (its last event
        # and the end of the chunked body).
        line("interleaved: stream end added p50", "stream interleaved", "p50_ms", added=True)
        tail_lines(rows, pooled["c1 interleaved"], "interleaved: c=1 added p{q}, pooled")
    header = f"{'median of the blocks':<34} {'baseline':>10} {'this build':>10}   {'ratio':>6}   " \
             "middle half of the per-round ratios"
    return [header, *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--restart-every", type=int, default=4, metavar="ROUNDS",
                        help="start both routers afresh every ROUNDS rounds (0: never)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="closed-loop seconds per block at --concurrency")
    parser.add_argument("--sequential", type=int, default=100,
                        help="requests (and streams) per block at concurrency 1")
    parser.add_argument("--interleaved", type=int, default=100,
                        help="turns of one request (and one stream) to each target in a "
                             "row, per round (0: none)")
    parser.add_argument("--concurrency", type=int, default=64)
    add_build_options(parser)
    add_api_option(parser)
    parser.add_argument("--baseline-migration", metavar="APP:NAME",
                        help="the baseline's own database, migrated back to this migration "
                             "(compare schemas: --baseline a checkout of this commit)")
    parser.add_argument("--out", type=Path, default=TMP / "ab_routers.json")
    options = parser.parse_args(argv)

    builds = prepare_builds(parser, options)
    blocks: dict[str, dict[str, list[dict[str, float | None]]]] = {}
    pooled: Pooled = {}
    answered: Counter[str] = Counter()
    with upstream_running(builds):
        step = options.restart_every or options.rounds
        for first in range(0, options.rounds, step):
            rounds = range(first, min(first + step, options.rounds))
            # The builds start in turn first (which one a process's memory layout favours
            # is then the luck of each start, not of the build).
            order = list(builds.trees)
            if (first // step) % 2:
                order.reverse()
            result = measure_with_fresh_routers(options, builds, order, rounds)
            for phase, per_target in result["blocks"].items():
                for name, figures in per_target.items():
                    blocks.setdefault(phase, {}).setdefault(name, []).extend(figures)
            for phase, per_target in result["pooled"].items():
                for name, latencies in per_target.items():
                    pooled.setdefault(phase, {}).setdefault(name, []).extend(latencies)
            answered += result["answered"]
    lines = report(blocks, pooled)
    print("\n".join(lines))
    ok = True
    for database, names in builds.by_database().items():
        expected = sum(answered[name] for name in names)
        billing = check_billing(database, expected)
        ok = ok and billing.ok(expected)
        print(f"billing ({', '.join(names)}): {billing.describe(expected)}")
    options.out.write_text(json.dumps({"blocks": blocks, "report": lines,
                                       "billing_ok": ok}, indent=1))
    return 0 if ok else 1


def measure_with_fresh_routers(options: argparse.Namespace, builds: Builds, order: list[str],
                               rounds: range) -> dict[str, Any]:
    """Start a router of each build (in ``order``), measure ``rounds`` with them, stop them:
    two processes of one build differ by several per cent (memory layout, hash seeds), so a
    comparison that kept the same two processes for the whole run would measure their luck
    too."""
    trees = builds.trees
    ports = {name: free_port() for name in order}
    routers = {name: start_router(name.replace(" ", "_"), trees[name], ports[name],
                                  builds.envs[name]) for name in order}
    try:
        for name, router in routers.items():
            wait_ready(router, f"http://127.0.0.1:{ports[name]}/v1/models",
                       {"Authorization": f"Bearer {builds.keys_of[name][0]}"})
        targets = {"direct": direct_target(options.api, builds.upstream_port)}
        for name in ("baseline", "this build"):
            targets[name] = router_target(options.api, name, ports[name],
                                          builds.keys_of[name])
        meters = {name: Meter(router.proc.pid, builds.databases[name])
                  for name, router in routers.items()}
        print(f"rounds {rounds.start + 1}-{rounds.stop} of {options.rounds}: baseline "
              f"{trees['baseline']} :{ports['baseline']}, this build {trees['this build']} "
              f":{ports['this build']}", flush=True)
        return run_async(measure(options, targets, meters, rounds), RUN_TIMEOUT_S)
    finally:
        for router in routers.values():
            stop_service(router)


if __name__ == "__main__":
    sys.exit(main())
