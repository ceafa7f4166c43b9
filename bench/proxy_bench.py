"""What the router adds on top of its upstream: latency, throughput and time to first token.

    .venv/bin/python bench/proxy_bench.py [--requests N] [--duration S] [--database-url URL]

One run drops and recreates a dedicated PostgreSQL database, migrates and seeds it through
the ops CLI, starts a cheap local upstream (``bench/fast_upstream.py``) and the router
(uvicorn, one worker, full billing on PostgreSQL), then sends the same load straight to the
upstream and through the router, in alternating blocks so that the noise of a shared
machine falls on both alike. It prints added latency at concurrency 1 and 64, requests/s
both ways, streaming time to first token both ways, the targets next to them, and checks
afterwards that the database charged every request the router answered. Everything stays
on 127.0.0.1 and every phase is bounded in count or time.
"""
# Running fixed commands (manage.py, uvicorn, taskset, py-spy, git) is this script's job.
# ruff: noqa: S603, S607

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: its python runs manage.py, and uvicorn
# Fixed, so a run is reproducible; it only encrypts the (empty) upstream key of the bench.
FERNET_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"binom-router-bench").digest()).decode()
TMP = Path(tempfile.gettempdir())  # logs, the py-spy samples, the JSON results
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/binom_bench"
ROUTER_MODEL, UPSTREAM_MODEL = "bench-model", "upstream-model"
MESSAGES = [{"role": "user", "content": "Say hi"}]
REQUEST_TIMEOUT_S = 30  # per request; a stuck request fails the run instead of hanging it
RUN_TIMEOUT_S = 1800  # the whole load phase, whatever the options

# The targets of the hot path (DESIGN.md), compared against in the report.
TARGET_ADDED_P50_C1_MS = 2.0
TARGET_ROUTER_RPS = 1000.0
TARGET_TTFT_ADDED_P50_MS = 3.0


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
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.router_env):
        parser.error("--router-env takes NAME=VALUE")
    for name in ("requests", "stream_requests", "concurrency", "block", "rounds", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return Options(**vars(args))


# --------------------------------------------------------------------------- database


def prepare_database(url: str) -> None:
    """Drop and recreate the bench database: every run starts from the same empty state."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        # It is dropped: never let a typo point this at a real database.
        raise SystemExit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def router_env(database_url: str, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DATABASE_URL=database_url, SECRET_KEY="bench-secret",
               ROUTER_ENCRYPTION_KEYS=FERNET_KEY, DEBUG="0",
               ALLOWED_HOSTS="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.update(item.split("=", 1) for item in extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def seed(env: dict[str, str], upstream_port: int, users: int) -> list[str]:
    """Migrate and seed through the ops CLI; returns one API key per user."""
    manage(env, "migrate", "--no-input")
    manage(env, "router", "price", "set", ROUTER_MODEL, "--input", "0.1", "--output", "0.2",
           "--max-output-tokens", "256")
    manage(env, "router", "worker", "add", "bench-up", "--kind", "openai",
           "--base-url", f"http://127.0.0.1:{upstream_port}/v1",
           "--models", f"{ROUTER_MODEL}={UPSTREAM_MODEL}", "--max-concurrency", "100000")
    keys = []
    for i in range(users):
        email = "bench@example.com" if i == 0 else f"bench{i}@example.com"
        manage(env, "router", "user", "create", email, "--credit", "1000000")
        keys.append(manage(env, "router", "key", "create", email).strip().splitlines()[-1])
    return keys


@dataclass
class BillingCheck:
    usage_records: int
    usage_ok: int
    ledger_charges: int
    pending_holds: int
    charged_micros: int
    ledger_matches_wallets: bool

    def ok(self, expected: int) -> bool:
        return (self.usage_records == expected and self.usage_ok == expected
                and self.ledger_charges == expected and self.pending_holds == 0
                and self.ledger_matches_wallets)


def check_billing(database_url: str, expected: int) -> BillingCheck:
    """What the database recorded; waits briefly for settlements still in flight."""
    deadline = time.monotonic() + 10
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        while True:
            row = conn.execute("""
                SELECT (SELECT count(*) FROM billing_usagerecord),
                       (SELECT count(*) FROM billing_usagerecord WHERE status = 'ok'),
                       (SELECT count(*) FROM billing_ledgerentry WHERE kind = 'charge'),
                       (SELECT count(*) FROM billing_hold WHERE status = 'pending'),
                       (SELECT coalesce(-sum(amount_micros), 0) FROM billing_ledgerentry
                         WHERE kind = 'charge'),
                       (SELECT bool_and(w.posted_micros = (SELECT coalesce(sum(amount_micros), 0)
                                        FROM billing_ledgerentry e WHERE e.wallet_id = w.id)
                                        AND w.pending_micros = 0)
                          FROM billing_wallet w)
            """).fetchone()
            assert row is not None
            check = BillingCheck(*(int(v) for v in row[:5]), ledger_matches_wallets=bool(row[5]))
            if check.ok(expected) or time.monotonic() > deadline:
                return check
            time.sleep(0.5)


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
    """The PostgreSQL backends serving the bench database (the router's connections)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (name,)).fetchall()
    return [int(r[0]) for r in rows]


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_pin() -> bool:
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def start_service(name: str, argv: list[str], env: dict[str, str], cpu: int | None
                  ) -> Service:
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: the pid stays the server's
    log_path = TMP / f"proxy_bench-{name}.log"
    log = log_path.open("wb")
    # Its own session, so stopping it kills its whole process group and nothing else.
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Service(name, proc, log_path, log)


def stop_service(service: Service) -> None:
    if service.proc.poll() is None:
        # SIGTERM first: uvicorn then drains and lets the last settlements reach the database.
        with contextlib.suppress(ProcessLookupError):  # it is already gone
            os.killpg(service.proc.pid, signal.SIGTERM)
        try:
            service.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it is already gone
                os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait(timeout=5)
    service.log.close()


def wait_ready(service: Service, url: str, headers: dict[str, str], timeout: float = 60
               ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise SystemExit(f"{service.name} exited ({service.proc.returncode}):\n"
                             f"{service.log_tail()}")
        try:
            request = urllib.request.Request(url, headers=headers)  # noqa: S310 (127.0.0.1)
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{service.name} did not answer {url} within {timeout:.0f} s:\n"
                     f"{service.log_tail()}")


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), 0 if it is gone or not visible."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot: how loaded the shared machine is."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Target:
    name: str  # "direct" or "router"
    url: str
    auth: tuple[str, ...]  # Authorization headers to rotate over (none for direct)
    body: bytes
    stream_body: bytes

    def headers(self, i: int) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers["Authorization"] = self.auth[i % len(self.auth)]
        return headers


def make_target(name: str, url: str, model: str, keys: list[str]) -> Target:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 16}
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return Target(name, url, tuple(f"Bearer {k}" for k in keys), orjson.dumps(body),
                  orjson.dumps(stream))


@dataclass
class Run:
    """One phase against one target, merged over its alternating blocks."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    ttfts: list[float] = field(default_factory=list)  # seconds, streams only
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    wall: float = 0.0  # seconds the blocks took, summed
    router_cpu: float = 0.0  # CPU seconds of the router process during the blocks
    postgres_cpu: float = 0.0  # CPU seconds of the bench database's backends
    busy: int = 0  # machine-wide busy jiffies during the blocks
    ticks: int = 0  # machine-wide jiffies during the blocks
    db_samples: int = 0  # looks at pg_stat_activity (concurrent router blocks only)
    db_waits: Counter[str] = field(default_factory=Counter)  # what active backends wait on

    def record(self, error: str | None, seconds: float, ttft: float | None = None) -> None:
        if error is None:
            self.ok += 1
            self.latencies.append(seconds)
            if ttft is not None:
                self.ttfts.append(ttft)
        else:
            self.errors[error] += 1


_request_counter = itertools.count()  # rotates the router's keys over requests


async def timed_request(session: aiohttp.ClientSession, target: Target
                        ) -> tuple[str | None, float]:
    headers = target.headers(next(_request_counter))
    start = time.perf_counter()
    try:
        async with session.post(target.url, data=target.body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - start
    return (None if status == 200 else f"HTTP {status}"), time.perf_counter() - start


def _has_content(line: bytes) -> bool:
    """Whether an SSE ``data:`` line carries generated text (the role chunk does not)."""
    if not line.startswith(b"data:") or b'"content"' not in line:
        return False
    try:
        chunk = orjson.loads(line[5:])
    except orjson.JSONDecodeError:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ())


async def timed_stream(session: aiohttp.ClientSession, target: Target
                       ) -> tuple[str | None, float, float | None]:
    """(error, seconds to [DONE], seconds to the first content chunk)."""
    headers = target.headers(next(_request_counter))
    start = time.perf_counter()
    ttft: float | None = None
    done = False
    try:
        async with session.post(target.url, data=target.stream_body,
                                headers=headers) as response:
            if response.status != 200:
                await response.read()
                return f"HTTP {response.status}", time.perf_counter() - start, None
            async for line in response.content:
                if ttft is None and _has_content(line):
                    ttft = time.perf_counter() - start
                if line.startswith(b"data: [DONE]"):
                    done = True
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - start, None
    elapsed = time.perf_counter() - start
    if not done or ttft is None:
        return ("stream without [DONE]" if not done else "stream without content"), elapsed, None
    return None, elapsed, ttft


async def sequential(session: aiohttp.ClientSession, target: Target, count: int, run: Run,
                     *, stream: bool = False) -> None:
    for _ in range(count):
        if stream:
            error, seconds, ttft = await timed_stream(session, target)
            run.record(error, seconds, ttft)
        else:
            run.record(*await timed_request(session, target))


async def closed_loop(session: aiohttp.ClientSession, target: Target, concurrency: int,
                      seconds: float, run: Run) -> None:
    """``concurrency`` clients, each sending its next request when the last one is answered."""
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            run.record(*await timed_request(session, target))

    await asyncio.gather(*(client() for _ in range(concurrency)))


WAITS_SQL = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'running') FROM pg_stat_activity
 WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()
"""


class Meter:
    """Measures one block: wall time, router and PostgreSQL CPU, machine load, and on request
    what the bench database's busy backends are waiting for."""

    def __init__(self, router_pid: int, database_url: str) -> None:
        self.router_pid = router_pid
        self.database_url = database_url
        self.postgres_pids: list[int] = []

    def _snapshot(self) -> tuple[float, float, float, int, int]:
        busy, total = machine_busy_ticks()
        return (time.perf_counter(), process_cpu_seconds(self.router_pid),
                sum(process_cpu_seconds(p) for p in self.postgres_pids), busy, total)

    async def measure(self, run: Run, block: Awaitable[None], *, db_waits: bool = False
                      ) -> None:
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self._sample_waits(run, stop)) if db_waits else None
        before = self._snapshot()
        try:
            await block
        finally:
            after = self._snapshot()
            stop.set()
            if sampler is not None:
                await sampler
        run.wall += after[0] - before[0]
        run.router_cpu += after[1] - before[1]
        run.postgres_cpu += after[2] - before[2]
        run.busy += after[3] - before[3]
        run.ticks += after[4] - before[4]

    async def _sample_waits(self, run: Run, stop: asyncio.Event) -> None:
        # Every 20 ms; only under concurrent load, where it cannot shift a latency much.
        name = urlsplit(self.database_url).path.lstrip("/")
        async with await psycopg.AsyncConnection.connect(self.database_url,
                                                         autocommit=True) as conn:
            while not stop.is_set():
                cursor = await conn.execute(WAITS_SQL, (name,))
                run.db_samples += 1
                run.db_waits.update(row[0] for row in await cursor.fetchall())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)


def abba(targets: tuple[Target, Target], rounds: int) -> Iterator[Target]:
    """A B B A A B ...: each target goes first as often as second, so drift cancels out."""
    for i in range(rounds):
        yield from (targets if i % 2 == 0 else targets[::-1])


def split(total: int, size: int) -> list[int]:
    blocks = [size] * (total // size)
    if total % size:
        blocks.append(total % size)
    return blocks


@dataclass
class Results:
    c1: dict[str, Run] = field(default_factory=dict)
    cn: dict[str, Run] = field(default_factory=dict)
    stream: dict[str, Run] = field(default_factory=dict)
    warmup: dict[str, Run] = field(default_factory=dict)
    profile: Run = field(default_factory=Run)
    commit_probe: dict[str, dict[str, float]] = field(default_factory=dict)

    def router_ok(self) -> int:
        runs = [self.c1, self.cn, self.stream, self.warmup]
        return sum(r["router"].ok for r in runs if "router" in r) + self.profile.ok

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for runs in (self.c1, self.cn, self.stream, self.warmup):
            for name, run in runs.items():
                total.update({f"{name}: {k}": v for k, v in run.errors.items()})
        total.update({f"router (profiled): {k}": v for k, v in self.profile.errors.items()})
        return total


async def run_load(options: Options, direct: Target, router: Target, meter: Meter,
                   profile: Callable[[float, Run], Awaitable[dict[str, Any] | None]]
                   ) -> tuple[Results, dict[str, Any] | None]:
    results = Results()
    pair = (direct, router)
    connector = aiohttp.TCPConnector(limit=options.concurrency,
                                     limit_per_host=options.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
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

        results.commit_probe["end"] = probe_commits(options.database_url)

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


# --------------------------------------------------------------------------- profile

# Leaf frames of threads that are only waiting: py-spy does not always see them as idle.
WAITING_LEAVES = ("_worker (concurrent/futures/thread.py)", "Condition.wait (threading.py)",
                  "Event.wait (threading.py)", "Thread._wait_for_tstate_lock (threading.py)")


def classify(frame: str) -> str:
    """Which part of the stack a py-spy frame (``function (path)``) belongs to."""
    path = frame.rpartition("(")[2]
    for needle, area in (("psycopg", "psycopg (database driver)"),
                         ("django/db", "django ORM"),
                         ("aiohttp", "aiohttp (upstream client)"),
                         ("uvicorn", "uvicorn / httptools (server)"),
                         ("asgiref", "asgiref (sync_to_async)"),
                         ("concurrent/futures", "threads"), ("threading.py", "threads"),
                         ("django/", "django (request, response, other)"),
                         ("adrf", "adrf / DRF"), ("rest_framework", "adrf / DRF"),
                         ("asyncio", "asyncio / uvloop"), ("uvloop", "asyncio / uvloop"),
                         ("quicktok", "token counting"), ("proxy/tokens", "token counting"),
                         ("proxy/", "proxy app"), ("billing/", "billing app"),
                         ("accounts/", "accounts app"), ("orjson", "orjson"),
                         ("logging", "logging")):
        if needle in path:
            return area
    return "other"


def thread_kind(root: str) -> str:
    """What a thread is, from py-spy's ``thread (tid): name`` root frame."""
    name = root.rpartition(": ")[2]
    if name == "MainThread":
        return "event loop"
    if name.startswith(("uvloop_", "asyncio_")):
        return "default executor (sync_to_async)"
    if name.startswith("ThreadPoolExecutor-"):
        return "one-off executors (asgiref ThreadSensitiveContext)"
    if name.endswith("(join)"):
        return "executor joiners (asgiref)"
    return "other threads"


def parse_raw(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;...;leaf count`` per line."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def _shares(counter: Counter[str], total: int, n: int) -> list[tuple[str, float]]:
    return [(key, round(100 * c / total, 1)) for key, c in counter.most_common(n)] if total \
        else []


def summarize_cpu(raw: str) -> dict[str, Any]:
    """From a ``--gil`` profile: where the router's Python CPU goes."""
    leaf: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for frames, count in parse_raw(raw):
        frames = frames[1:] if frames[0].startswith("thread (") else frames
        if not frames:
            continue
        total += count
        leaf[frames[-1]] += count
        areas[classify(frames[-1])] += count
        for frame in set(frames):
            if any(p in frame for p in ("(proxy/", "(billing/", "(accounts/")):
                own[frame] += count
    return {"samples": total, "areas_pct": _shares(areas, total, 20),
            "top_self_pct": _shares(leaf, total, 20),
            "top_own_inclusive_pct": _shares(own, total, 20)}


def summarize_threads(raw: str) -> dict[str, Any]:
    """From an all-threads profile: which threads are busy."""
    kinds: Counter[str] = Counter()
    total = 0
    for frames, count in parse_raw(raw):
        if frames[-1] in WAITING_LEAVES:
            continue
        kinds[thread_kind(frames[0])] += count
        total += count
    return {"samples": total, "threads_pct": _shares(kinds, total, 10)}


async def count_thread_creations(pid: int, seconds: float) -> int | None:
    """Threads the router's existing threads create in ``seconds`` (perf, if installed).

    Exact where py-spy can only guess: short-lived threads are rarely sampled.
    """
    perf = shutil.which("perf")
    if perf is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        perf, "stat", "-x", ",", "-e", "sched:sched_process_fork", "-p", str(pid), "--",
        "sleep", f"{seconds:g}", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    for line in err.decode(errors="replace").splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == "sched:sched_process_fork" and fields[0].isdigit():
            return int(fields[0])
    return None


def make_profiler(router_pid: int, cpu: int | None
                  ) -> Callable[[float, Run], Awaitable[dict[str, Any] | None]]:
    py_spy = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists()
                                        else None)
    rate = 67

    async def record(name: str, seconds: int, *flags: str) -> str | dict[str, str]:
        assert py_spy is not None
        out = TMP / f"proxy_bench-router.pyspy-{name}.txt"
        # Blocking (py-spy pauses the router for each sample): --nonblocking reads stacks
        # while they change and returned long runs of one stale stack. A low rate keeps the
        # pauses from changing the regime too much; the router still slows down somewhat.
        argv = [py_spy, "record", "--pid", str(router_pid), "--duration", str(seconds),
                "--rate", str(rate), "--format", "raw", "--nolineno", "--threads",
                *flags, "--output", str(out)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"error": "py-spy did not finish"}
        if proc.returncode != 0 or not out.exists():
            return {"error": output.decode(errors="replace")[-500:]}
        return out.read_text()

    async def profile(seconds: float, load: Run) -> dict[str, Any] | None:
        """Half the time only the thread holding the GIL (where Python CPU goes), half all
        busy threads (which threads work, and how many are created)."""
        if py_spy is None:
            print("  py-spy is not installed: no profile (pip install py-spy)", flush=True)
            return None
        half = max(1, round(seconds / 2))
        # perf first, alone: py-spy's pauses would slow the router but not change this count.
        before = load.ok + sum(load.errors.values())
        forks = await count_thread_creations(router_pid, 2)
        requests = load.ok + sum(load.errors.values()) - before
        cpu_raw = await record("gil", half, "--gil")
        threads_raw = await record("threads", half)
        report: dict[str, Any] = {
            "seconds_each": half, "rate_hz": rate,
            "threads_created_per_request": (forks / requests if forks is not None and requests
                                            else None)}
        report["cpu"] = cpu_raw if isinstance(cpu_raw, dict) else summarize_cpu(cpu_raw)
        report["threads"] = (threads_raw if isinstance(threads_raw, dict)
                             else summarize_threads(threads_raw))
        report["raw"] = str(TMP / "proxy_bench-router.pyspy-{gil,threads}.txt")
        return report

    return profile


# --------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def verdict(value: float | None, target: float, *, at_most: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value <= target if at_most else value >= target) else "MISS"


def fmt(value: float | None, unit: str = "ms", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}".strip()


def run_summary(run: Run) -> dict[str, Any]:
    n = run.ok + sum(run.errors.values())
    return {"ok": run.ok, "errors": dict(run.errors), "wall_s": round(run.wall, 3),
            "p50_ms": pct(run.latencies, 50), "p90_ms": pct(run.latencies, 90),
            "p99_ms": pct(run.latencies, 99), "max_ms": pct(run.latencies, 100),
            "ttft_p50_ms": pct(run.ttfts, 50), "ttft_p99_ms": pct(run.ttfts, 99),
            "rps": run.ok / run.wall if run.wall else None,
            "router_cpu_pct": 100 * run.router_cpu / run.wall if run.wall else None,
            "router_cpu_us_per_request": 1e6 * run.router_cpu / n if n else None,
            "postgres_cpu_us_per_request": 1e6 * run.postgres_cpu / n if n else None,
            "machine_busy_pct": 100 * run.busy / run.ticks if run.ticks else None,
            "db_active_backends_mean": (sum(run.db_waits.values()) / run.db_samples
                                        if run.db_samples else None),
            "db_waits_pct": _shares(run.db_waits, sum(run.db_waits.values()), 8)}


def build_report(options: Options, results: Results, billing: BillingCheck,
                 profile: dict[str, Any] | None, environment: dict[str, Any]
                 ) -> dict[str, Any]:
    c1 = {k: run_summary(v) for k, v in results.c1.items()}
    cn = {k: run_summary(v) for k, v in results.cn.items()}
    st = {k: run_summary(v) for k, v in results.stream.items()}
    added_c1_p50 = diff(c1["router"]["p50_ms"], c1["direct"]["p50_ms"])
    ttft_added = diff(st["router"]["ttft_p50_ms"], st["direct"]["ttft_p50_ms"])
    router_rps, direct_rps = cn["router"]["rps"], cn["direct"]["rps"]
    expected = results.router_ok()
    return {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "environment": environment,
        "concurrency_1": c1 | {"added_p50_ms": added_c1_p50,
                               "added_p99_ms": diff(c1["router"]["p99_ms"],
                                                    c1["direct"]["p99_ms"])},
        f"concurrency_{options.concurrency}": cn | {
            "added_p50_ms": diff(cn["router"]["p50_ms"], cn["direct"]["p50_ms"]),
            "added_p99_ms": diff(cn["router"]["p99_ms"], cn["direct"]["p99_ms"]),
            "router_to_direct_rps": router_rps / direct_rps if router_rps and direct_rps
            else None},
        "streaming": st | {"ttft_added_p50_ms": ttft_added,
                           "ttft_added_p99_ms": diff(st["router"]["ttft_p99_ms"],
                                                     st["direct"]["ttft_p99_ms"])},
        "targets": {
            "added_p50_c1_ms": [TARGET_ADDED_P50_C1_MS,
                                verdict(added_c1_p50, TARGET_ADDED_P50_C1_MS, at_most=True)],
            "router_rps": [TARGET_ROUTER_RPS,
                           verdict(router_rps, TARGET_ROUTER_RPS, at_most=False)],
            "ttft_added_p50_ms": [TARGET_TTFT_ADDED_P50_MS,
                                  verdict(ttft_added, TARGET_TTFT_ADDED_P50_MS, at_most=True)],
        },
        "postgres_commit_probe": results.commit_probe,
        "errors": dict(results.errors()),
        "billing": vars(billing) | {"expected": expected, "ok": billing.ok(expected)},
        "profile": profile,
    }


def print_report(report: dict[str, Any], concurrency: int) -> None:
    c1, st = report["concurrency_1"], report["streaming"]
    cn = report[f"concurrency_{concurrency}"]
    targets = report["targets"]
    d, r = "direct", "router"
    rows = [
        ("c=1 latency p50", fmt(c1[d]["p50_ms"]), fmt(c1[r]["p50_ms"]),
         fmt(c1["added_p50_ms"]), f"<= {TARGET_ADDED_P50_C1_MS:g} ms  "
         f"{targets['added_p50_c1_ms'][1]}"),
        ("c=1 latency p99", fmt(c1[d]["p99_ms"]), fmt(c1[r]["p99_ms"]),
         fmt(c1["added_p99_ms"]), ""),
        (f"c={concurrency} latency p50", fmt(cn[d]["p50_ms"]), fmt(cn[r]["p50_ms"]),
         fmt(cn["added_p50_ms"]), ""),
        (f"c={concurrency} latency p99", fmt(cn[d]["p99_ms"]), fmt(cn[r]["p99_ms"]),
         fmt(cn["added_p99_ms"]), ""),
        (f"c={concurrency} requests/s", fmt(cn[d]["rps"], "", 0), fmt(cn[r]["rps"], "", 0),
         f"ratio {fmt(cn['router_to_direct_rps'], '', 3)}",
         f">= {TARGET_ROUTER_RPS:,.0f}/s  {targets['router_rps'][1]}"),
        ("stream TTFT p50", fmt(st[d]["ttft_p50_ms"]), fmt(st[r]["ttft_p50_ms"]),
         fmt(st["ttft_added_p50_ms"]), f"<= {TARGET_TTFT_ADDED_P50_MS:g} ms  "
         f"{targets['ttft_added_p50_ms'][1]}"),
        ("stream TTFT p99", fmt(st[d]["ttft_p99_ms"]), fmt(st[r]["ttft_p99_ms"]),
         fmt(st["ttft_added_p99_ms"]), ""),
        ("stream total p50", fmt(st[d]["p50_ms"]), fmt(st[r]["p50_ms"]),
         fmt(diff(st[r]["p50_ms"], st[d]["p50_ms"])), ""),
    ]
    header = ("", "direct", "router", "added", "target")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))

    print("\n(direct requests/s is bounded by the load generator, which shares a CPU with the "
          "upstream: the ratio is an upper bound)")
    print("\nwhere the time goes (router process; PostgreSQL = the bench database's backends)")
    for label, runs in (("c=1", c1), (f"c={concurrency}", cn), ("stream", st)):
        router = runs[r]
        print(f"  {label:<7} router CPU {fmt(router['router_cpu_pct'], '%', 0):>5} of a core, "
              f"{fmt(router['router_cpu_us_per_request'], 'us', 0):>7}/request; PostgreSQL "
              f"{fmt(router['postgres_cpu_us_per_request'], 'us', 0):>7}/request; machine busy "
              f"{fmt(router['machine_busy_pct'], '%', 0)} (direct blocks: "
              f"{fmt(runs[d]['machine_busy_pct'], '%', 0)})")

    waits = cn[r]
    if waits["db_active_backends_mean"] is not None:
        print(f"  c={concurrency} PostgreSQL: {waits['db_active_backends_mean']:.1f} busy backends "
              f"on average, each: " + ", ".join(f"{n} {p}%" for n, p in waits["db_waits_pct"]))
    for when, probe in report["postgres_commit_probe"].items():
        print(f"  PostgreSQL one-row autocommit UPDATE at the {when}: p50 {probe['p50_ms']:.2f} "
              f"ms, p99 {probe['p99_ms']:.2f} ms -> one wallet takes at most "
              f"~{probe['one_wallet_max_rps']:,.0f} requests/s (2 wallet updates each)")

    errors = report["errors"]
    print(f"\nerrors: {sum(errors.values())}" + (f" {errors}" if errors else ""))
    billing = report["billing"]
    print(f"billing: {billing['usage_records']} usage records ({billing['usage_ok']} ok), "
          f"{billing['ledger_charges']} ledger charges, {billing['pending_holds']} pending "
          f"holds, {billing['charged_micros']} micro-USD charged; expected "
          f"{billing['expected']} (router 200s incl. warm-up); ledger = wallets: "
          f"{billing['ledger_matches_wallets']}  -> {'OK' if billing['ok'] else 'MISMATCH'}")

    profile = report["profile"]
    if profile:
        print_profile(profile, concurrency)


def print_profile(profile: dict[str, Any], concurrency: int) -> None:
    cpu, threads = profile["cpu"], profile["threads"]
    print(f"\npy-spy on the router under c={concurrency}, {profile['seconds_each']} s each at "
          f"{profile['rate_hz']} Hz ({profile['raw']})")
    if "error" in threads:
        print(f"  threads: py-spy failed: {threads['error']}")
    else:
        print("  busy threads: " + ", ".join(f"{n} {p}%" for n, p in threads["threads_pct"]))
    if profile.get("threads_created_per_request") is not None:
        print(f"  threads created per request (perf, over 2 s before py-spy): "
              f"{profile['threads_created_per_request']:.2f}")
    if "error" in cpu:
        print(f"  GIL: py-spy failed: {cpu['error']}")
        return
    print(f"  holding the GIL ({cpu['samples']} samples), by area: " + ", ".join(
        f"{n} {p}%" for n, p in cpu["areas_pct"][:10]))
    print("  top self frames:")
    for frame, p in cpu["top_self_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")
    print("  top inclusive frames in proxy/billing/accounts:")
    for frame, p in cpu["top_own_inclusive_pct"][:12]:
        print(f"    {p:5.1f}%  {frame}")


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "changed": git("diff", "--shortstat", "HEAD")}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    pin = options.pin and can_pin()
    router_cpu, side_cpu = (0, 1) if pin else (None, None)
    env = router_env(options.database_url, options.router_env)
    upstream_port, router_port = free_port(), free_port()

    print(f"database {options.database_url}: recreate, migrate, seed ...", flush=True)
    prepare_database(options.database_url)
    keys = seed(env, upstream_port, options.users)

    services: list[Service] = []
    try:
        upstream = start_service("upstream", [
            str(BIN / "python"), "bench/fast_upstream.py", "--port", str(upstream_port),
            "--chunk-delay-ms", str(options.upstream_chunk_delay_ms)], env, side_cpu)
        services.append(upstream)
        router = start_service("router", [
            str(BIN / "uvicorn"), "router_admin.asgi:application", "--host", "127.0.0.1",
            "--port", str(router_port), "--workers", "1", "--no-access-log",
            "--log-level", "warning"], env, router_cpu)
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
        meter = Meter(router.proc.pid, options.database_url)
        results, profile = _run_async(run_load(options, direct, routed, meter,
                                               make_profiler(router.proc.pid, side_cpu)))
        environment["loadavg_end"] = os.getloadavg()
        billing = check_billing(options.database_url, results.router_ok())
        router_log = router.log_tail(2000)
        environment["router_log_warnings"] = sum(
            1 for line in router_log.splitlines()
            if any(w in line for w in ("WARNING", "ERROR", "Traceback")))
    finally:
        for service in reversed(services):
            stop_service(service)

    report = build_report(options, results, billing, profile, environment)
    print_report(report, options.concurrency)
    if environment["router_log_warnings"]:
        print(f"\nrouter log: {environment['router_log_warnings']} warning/error lines, see "
              f"{TMP / 'proxy_bench-router.log'}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {options.out}")
    healthy = billing.ok(results.router_ok()) and not report["errors"]
    return 0 if healthy else 1


def _run_async(coroutine: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, RUN_TIMEOUT_S)

    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded())
    return uvloop.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
