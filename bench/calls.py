"""Which Python functions the router calls per billed request, how often and for how
long, by cProfile: where ``instructions.py`` says how much a build does, this says what.

    .venv/bin/python bench/calls.py [--baseline /tmp/base] [--requests 3000] [--top 40]
                                    [--api chat|responses|messages]

The router (``make serve``'s uvicorn flags, one worker, the production configuration:
Redis on, key limits, the worker a max-in-flight) runs under ``profiled_router.py``;
after the warm-up each phase (``c64``, ``c1``, ``stream``, as in ``instructions.py``) is
profiled on its own. For each phase the report lists the functions by their own time
(cProfile's ``tottime``, inflated by the profiler's own cost per call, so read it as a
ranking) with their calls per request. With ``--baseline``, the same for the other build
and the functions whose calls per request differ: a count, which the machine's noise
does not move. ``--api`` picks the API the load speaks: chat completions (the default),
Responses (translated to chat completions for the worker), or Anthropic's Messages (sent
natively to an anthropic worker on the same upstream, as ``proxy_bench.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import shutil
import signal
import sys
from pathlib import Path

from builds import (
    THIS_BUILD,
    Builds,
    add_api_option,
    prepare_builds,
    router_target,
    upstream_running,
)
from harness import (
    TMP,
    check_billing,
    free_port,
    start_wrapped_router,
    stop_service,
    wait_ready,
)
from instructions import PHASES, closed_count, phase
from load import Run
from profiled_router import stats_written

Row = tuple[str, float, float]  # function, calls per request, own microseconds per request


def label(key: tuple[str, int, str]) -> str:
    path, line, function = key
    for root in (str(THIS_BUILD) + "/", "/site-packages/", "/lib/python3"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{function} ({path}:{line})" if line else function


def collect(pid: int, out: Path, requests: int, keep: Path | None) -> list[Row]:
    """Stop the profiler and read what it saw, per request."""
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    stats_written(out)
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, keep)
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    rows = [(label(key), calls / requests, own * 1e6 / requests)
            for key, (_, calls, own, _, _) in stats.items()]
    return sorted(rows, key=lambda row: -row[2])


def measure_build(name: str, tree: Path, builds: Builds, options: argparse.Namespace
                  ) -> tuple[dict[str, list[Row]], int]:
    port = free_port()
    out = TMP / f"calls-{name}.pstats"
    router = start_wrapped_router("profiled_router.py", out, name, tree, port, builds.env)
    answered = 0
    profiles: dict[str, list[Row]] = {}
    try:
        wait_ready(router, f"http://127.0.0.1:{port}/v1/models",
                   {"Authorization": f"Bearer {builds.keys[0]}"}, timeout=120)
        target = router_target(options.api, name, port, builds.keys)
        warm = Run()
        asyncio.run(closed_count(target, options.concurrency, options.warmup, warm))
        answered += warm.ok
        for phase_name in PHASES:
            run = Run()
            os.kill(router.proc.pid, signal.SIGUSR1)
            asyncio.run(phase(target, phase_name, options, run))
            if run.errors:
                raise SystemExit(f"{name} {phase_name}: errors {dict(run.errors)}")
            answered += run.ok
            keep = options.keep / f"{name}-{phase_name}.pstats" if options.keep else None
            profiles[phase_name] = collect(router.proc.pid, out, run.ok, keep)
    finally:
        stop_service(router)
        out.unlink(missing_ok=True)
    return profiles, answered


def report(name: str, phase_name: str, rows: list[Row], top: int) -> list[str]:
    total = sum(row[2] for row in rows)
    calls = sum(row[1] for row in rows)
    lines = [f"{name}, {phase_name}: {calls:,.0f} calls and {total:,.0f} us (profiled) per "
             "request", f"{'own us':>8} {'share':>6} {'calls':>7}  function"]
    lines += [f"{own:8.1f} {100 * own / total:5.1f}% {n:7.2f}  {function}"
              for function, n, own in rows[:top]]
    by_area: dict[str, tuple[float, float]] = {}
    for function, n, own in rows:
        area = area_of(function)
        calls_so_far, own_so_far = by_area.get(area, (0.0, 0.0))
        by_area[area] = (calls_so_far + n, own_so_far + own)
    lines.append("by area (own time, calls):")
    lines += [f"{own:8.1f} {100 * own / total:5.1f}% {n:7.1f}  {area}" for area, (n, own)
              in sorted(by_area.items(), key=lambda item: -item[1][1])]
    return lines


def area_of(function: str) -> str:
    """The package or folder a function's file is in; builtins apart."""
    if "(" not in function:
        return "builtins (" + function.split(" ")[0].strip("<") + ")"
    path = function.rpartition("(")[2].rstrip(")").rpartition(":")[0]
    path = path.removeprefix(".venv/lib/python3.11/site-packages/")
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def differences(base: list[Row], this: list[Row], top: int) -> list[str]:
    before = {row[0]: row[1] for row in base}
    after = {row[0]: row[1] for row in this}
    changed = sorted(((after.get(k, 0.0) - before.get(k, 0.0), k) for k in before | after),
                     key=lambda item: -abs(item[0]))
    return [f"{before.get(k, 0.0):8.2f} -> {after.get(k, 0.0):8.2f}  {k}"
            for delta, k in changed[:top] if abs(delta) >= 0.05]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=THIS_BUILD,
                        help="another checkout to profile too (a git worktree)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--database-url",
                        default="postgres://postgres@127.0.0.1:5432/binom_bench")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--top", type=int, default=40)
    add_api_option(parser)
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder to keep each phase's pstats file in (for pstats' "
                             "callers and callees)")
    options = parser.parse_args(argv)
    builds = prepare_builds(parser, options)
    names = ["this build"] if options.baseline.resolve() == THIS_BUILD else list(builds.trees)
    profiles: dict[str, dict[str, list[Row]]] = {}
    answered = 0
    with upstream_running(builds):
        for name in names:
            profiles[name], count = measure_build(name.replace(" ", "_"), builds.trees[name],
                                                  builds, options)
            answered += count
    for name in names:
        for phase_name in PHASES:
            print("\n".join(report(name, phase_name, profiles[name][phase_name], options.top)),
                  end="\n\n")
    if len(names) == 2:
        for phase_name in PHASES:
            print(f"calls per request that differ, {phase_name} (baseline -> this build):")
            print("\n".join(differences(profiles["baseline"][phase_name],
                                        profiles["this build"][phase_name], options.top)))
    billing = check_billing(options.database_url, answered)
    print(f"billing: {billing.describe(answered)}")
    return 0 if billing.ok(answered) else 1


if __name__ == "__main__":
    sys.exit(main())
