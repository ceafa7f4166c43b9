"""Instructions the router executes per billed request, for two builds: a count, not a time,
so that a change of a few per cent shows where timings on this shared machine cannot.

    .venv/bin/python bench/instructions.py --baseline /tmp/base [--requests 3000]

Side-by-side timings (``ab_routers.py``) resolve about 10 % here: an A/A run, the same
build against itself, gave 0.91 for CPU per request with the routers restarted every two
rounds. Valgrind's callgrind counts the instructions a process executes whatever else the
machine does (the same total twice for the same program and inputs, with the other core
busy or not), so a change of 1 % of the router's work is a change of 1 % of the count.

Each build's router runs under callgrind (``make serve``'s uvicorn flags, one worker, the
production configuration of ``proxy_bench.py``: Redis on, every key with an RPM and a TPM
limit, the worker a max-in-flight) with collection off while it starts and warms up;
then for each phase collection is switched on, the phase's requests are sent, and it is
switched off again:

- ``c64``: ``--requests`` requests from 64 clients at once (closed loop);
- ``c1``: ``--sequential`` requests one after the other;
- ``stream``: ``--sequential`` streamed requests one after the other.

The figure is the phase's instructions divided by its requests. Under callgrind the router
runs about 50 times slower, so PostgreSQL, Redis and the upstream answer it almost at once:
what is counted is the router's own work, in a regime (batches of reservations, the loop's
turns) that differs from the real one, but the same for both builds. Every request is
checked to be billed exactly at the end, as in every bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from builds import Builds, add_build_options, prepare_builds, upstream_running
from harness import (
    BIN,
    ROUTER_MODEL,
    TMP,
    Service,
    check_billing,
    free_port,
    router_argv,
    start_service,
    stop_service,
    wait_ready,
)
from load import Run, Target, make_target, sequential, session_for

PHASES = ("c64", "c1", "stream")
# A router under callgrind takes minutes to start (Django, the tokenizer's tables).
START_TIMEOUT_S = 900


def callgrind_argv(out: Path, port: int, tree: Path) -> list[str]:
    argv = router_argv("uvicorn", port, 1, tree)
    # The uvicorn script runs under the virtualenv's interpreter, which valgrind must start.
    return ["taskset", "-c", "0", "valgrind", "--tool=callgrind",
            f"--callgrind-out-file={out}", str(BIN / "python"), *argv]


def start_router(name: str, tree: Path, port: int, env: dict[str, str], out: Path) -> Service:
    return start_service(name, callgrind_argv(out, port, tree), env, cwd=tree)


def control(pid: int, *args: str) -> str:
    result = subprocess.run(["callgrind_control", *args, str(pid)],  # noqa: S603, S607
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise SystemExit(f"callgrind_control {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def instructions_so_far(pid: int, out: Path) -> int:
    """Dump the counts collected since the last dump, and read their total."""
    before = set(out.parent.glob(out.name + "*"))
    control(pid, "--dump")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(out.parent.glob(out.name + "*")) - before
        for path in new:
            text = path.read_text(errors="replace")
            found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
            if found:
                path.unlink()
                return int(found.group(1))
        time.sleep(0.2)
    raise SystemExit("callgrind wrote no dump")


async def closed_count(target: Target, concurrency: int, requests: int, run: Run) -> None:
    """``requests`` requests from ``concurrency`` clients, each sending its next when the
    last one is answered."""
    left = requests
    async with session_for(concurrency) as session:

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await sequential(session, target, 1, run)

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def phase(target: Target, name: str, options: argparse.Namespace, run: Run) -> None:
    if name == "c64":
        await closed_count(target, options.concurrency, options.requests, run)
        return
    async with session_for(1) as session:
        await sequential(session, target, options.sequential, run, stream=name == "stream")


def measure_build(name: str, tree: Path, builds: Builds, options: argparse.Namespace
                  ) -> tuple[dict[str, float], int]:
    env, keys = builds.env, builds.keys
    port = free_port()
    out = TMP / f"instructions-{name}.callgrind"
    for stale in out.parent.glob(out.name + "*"):
        stale.unlink()
    router = start_router(name, tree, port, env, out)
    answered = 0
    per_request: dict[str, float] = {}
    try:
        started = time.monotonic()
        wait_ready(router, f"http://127.0.0.1:{port}/v1/models",
                   {"Authorization": f"Bearer {keys[0]}"}, timeout=START_TIMEOUT_S)
        print(f"{name}: started under callgrind in {time.monotonic() - started:.0f} s",
              flush=True)
        target = make_target(name, f"http://127.0.0.1:{port}/v1/chat/completions",
                             ROUTER_MODEL, keys)
        warm = Run()
        asyncio.run(closed_count(target, options.concurrency, options.warmup, warm))
        answered += warm.ok
        for phase_name in PHASES:
            run = Run()
            control(router.proc.pid, "--zero")  # what it did so far is not counted
            asyncio.run(phase(target, phase_name, options, run))
            if run.errors:
                raise SystemExit(f"{name} {phase_name}: errors {dict(run.errors)}")
            answered += run.ok
            per_request[phase_name] = instructions_so_far(router.proc.pid, out) / run.ok
            print(f"{name} {phase_name}: {per_request[phase_name]:,.0f} instructions per "
                  f"request ({run.ok} requests)", flush=True)
    finally:
        stop_service(router)
        for leftover in out.parent.glob(out.name + "*"):
            leftover.unlink()
    return per_request, answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000,
                        help="requests counted at --concurrency")
    parser.add_argument("--sequential", type=int, default=300,
                        help="requests (and streams) counted one after the other")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    add_build_options(parser)
    parser.add_argument("--out", type=Path, default=TMP / "instructions.json")
    options = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")

    builds = prepare_builds(parser, options)
    results: dict[str, dict[str, float]] = {}
    answered = 0
    with upstream_running(builds):
        for name, tree in builds.trees.items():
            results[name], count = measure_build(name.replace(" ", "_"), tree, builds, options)
            answered += count
    billing = check_billing(options.database_url, answered)
    ok = billing.ok(answered)
    lines = [f"{'instructions per request':<28} {'baseline':>14} {'this build':>14}   ratio"]
    for name in PHASES:
        a, b = results["baseline"][name], results["this build"][name]
        lines.append(f"{name:<28} {a:>14,.0f} {b:>14,.0f}   {b / a:.3f}")
    print("\n".join(lines))
    print(f"billing: {billing.describe(answered)}")
    options.out.write_text(json.dumps({"per_request": results, "report": lines,
                                       "billing_ok": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
