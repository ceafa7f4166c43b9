"""What every benchmark here needs around its load: a fresh database seeded through the ops
CLI, the upstream and router processes (started, awaited, measured, stopped), and the check
that the database charged every request the router answered.

The benchmarks are scripts (``python bench/<name>.py``), so this module is imported by its
plain name from the ``bench`` folder; the load itself is in ``load.py``.
"""
# Running fixed commands (manage.py, uvicorn, granian, taskset, git) is this module's job.
# ruff: noqa: S603, S607

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import hashlib
import os
import resource
import runpy
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
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from wal import ready_segments

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # serve.py, beside manage.py
from serve import SERVER, server_argv


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # The services a bench starts run in process groups of their own (so that a stop takes
    # their children too): a bench killed by SIGTERM must still reach the ``finally`` that
    # stops them. Without this, a `pkill` of ab_routers.py left its two routers and the
    # upstream running, holding PostgreSQL connections and a Redis database the test
    # suite's second worker uses.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: its python runs manage.py and the servers
# Fixed, so a run is reproducible; it only encrypts the (empty) upstream key of the bench.
FERNET_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"binom-router-bench").digest()).decode()
# Where the routers the bench starts keep their keys in Redis (redis_summary reads them).
BENCH_REDIS_PREFIX = "router:bench:"
TMP = Path(tempfile.gettempdir())  # logs, the py-spy samples, the JSON results
ROUTER_MODEL, UPSTREAM_MODEL = "bench-model", "upstream-model"
# Priced at 0 per input token and 1 micro-USD per output token: a request's hold and its
# charge are both exactly its max_tokens, so a wallet can be funded for exactly K requests.
EXACT_MODEL = "bench-exact"
# Served by a second worker, of kind anthropic, on the same local upstream: the Messages
# API goes to it natively (seed_anthropic).
ANTHROPIC_MODEL, ANTHROPIC_UPSTREAM_MODEL = "bench-claude", "upstream-claude"
SERVERS = ("uvicorn", "granian")
# What the bench worker takes in flight at once (its max-concurrency): far above any load
# here, so it is counted and checked on every request (in Redis when the router has it)
# but never refuses one.
WORKER_MAX_CONCURRENCY = 100_000
# The most an API key's RPM, TPM or concurrency limit can be (a PostgreSQL integer column).
KEY_LIMIT_MAX = 2_147_483_647
DEFAULT_SERVER = SERVER  # what `make serve` runs (bench/server_choice.py chose it)


def script_name() -> str:
    """Prefix of the log files of this run: the script's name (``proxy_bench``, ...)."""
    return Path(sys.argv[0]).stem or "bench"


def raise_open_files_limit() -> int:
    """Lift this process's open-files limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
        print(ready_segments(conn), flush=True)


def flush_redis_db(url: str) -> None:
    """Empty the one Redis database the bench uses (rate-limit windows of earlier runs)."""
    import redis

    if not urlsplit(url).path.strip("/"):
        raise SystemExit(f"refusing to flush {url}: name a database number, e.g. /14")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_summary(url: str, prefix: str = BENCH_REDIS_PREFIX) -> dict[str, Any]:
    """What the router keeps in its Redis database, read right after the load: keys by kind
    (``limits:key:*:window`` ..., after the router's ``prefix``), and the requests and tokens
    the API keys' rate-limit windows hold (those admitted in the last minute, counted in
    Redis)."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    kinds: Counter[str] = Counter()
    requests = tokens = 0
    try:
        for key in client.scan_iter(count=1000):
            parts = key.removeprefix(prefix).split(":")
            if not key.startswith(prefix):
                kind = "other (not the router's)"
            elif parts[0] == "limits" and len(parts) == 4:
                kind = f"limits:{parts[1]}:*:{parts[3]}"
                if parts[1] == "key" and parts[3] == "window":
                    requests += int(client.zcard(key))
                elif parts[1] == "key" and parts[3] == "tokens":
                    tokens += int(client.hget(key, "#total") or 0)
            elif len(parts) > 1:
                kind = f"{parts[0]}:*"  # inflight, breaker, cache, celery
            else:
                kind = parts[0]
            kinds[kind] += 1
    finally:
        client.close()
    return {"keys": dict(sorted(kinds.items())), "key_window_requests": requests,
            "key_window_tokens": tokens}


@functools.cache
def metrics_dir() -> str:
    """A folder of this bench run for the routers' Prometheus files, removed when the run
    ends."""
    folder = tempfile.mkdtemp(prefix="bench-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def router_env(database_url: str, extra: list[str], *, redis_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update(DATABASE_URL=database_url, SECRET_KEY="bench-secret",
               ROUTER_ENCRYPTION_KEYS=FERNET_KEY, DEBUG="0",
               ROUTER_REDIS_PREFIX=BENCH_REDIS_PREFIX,
               ALLOWED_HOSTS="127.0.0.1,localhost", PYTHONUNBUFFERED="1",
               # As `make serve` runs the web server (serve.py web): every process keeps
               # its metrics in files there, which costs each request more than memory.
               PROMETHEUS_MULTIPROC_DIR=metrics_dir())
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(item.split("=", 1) for item in extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def seed(env: dict[str, str], upstream_port: int, users: int, *,
         max_concurrency: int = WORKER_MAX_CONCURRENCY, key_rpm: int | None = None,
         key_tpm: int | None = None, key_concurrency: int | None = None) -> list[str]:
    """Migrate, and seed prices and the worker through the ops CLI; then ``users`` users with
    1,000,000 USD each and one API key each (returned, in order), limited to ``key_rpm``,
    ``key_tpm`` and ``key_concurrency`` (None: not limited)."""
    manage(env, "migrate", "--no-input")
    manage(env, "router", "price", "set", ROUTER_MODEL, "--input", "0.1", "--output", "0.2",
           "--max-output-tokens", "256")
    manage(env, "router", "price", "set", EXACT_MODEL, "--input", "0", "--output", "1",
           "--max-output-tokens", "256")
    manage(env, "router", "worker", "add", "bench-up", "--kind", "openai",
           "--base-url", f"http://127.0.0.1:{upstream_port}/v1",
           "--models", f"{ROUTER_MODEL}={UPSTREAM_MODEL},{EXACT_MODEL}={UPSTREAM_MODEL}",
           "--max-concurrency", str(max_concurrency))
    return seed_users(env, users, credit_micros=1_000_000 * 1_000_000, rpm=key_rpm,
                      tpm=key_tpm, max_concurrency=key_concurrency)


def seed_anthropic(env: dict[str, str], upstream_port: int, *,
                   max_concurrency: int = WORKER_MAX_CONCURRENCY) -> None:
    """A second worker, ``bench-anthropic`` (kind anthropic), on the same local upstream,
    serving ``ANTHROPIC_MODEL``, and its price (the same as ``ROUTER_MODEL``'s). Its base URL
    ends in ``/v1`` as Anthropic's does: the router posts to ``<base>/messages``, which
    ``fast_upstream.py`` answers in Anthropic's own format."""
    manage(env, "router", "price", "set", ANTHROPIC_MODEL, "--input", "0.1", "--output", "0.2",
           "--max-output-tokens", "256")
    manage(env, "router", "worker", "add", "bench-anthropic", "--kind", "anthropic",
           "--base-url", f"http://127.0.0.1:{upstream_port}/v1",
           "--models", f"{ANTHROPIC_MODEL}={ANTHROPIC_UPSTREAM_MODEL}",
           "--max-concurrency", str(max_concurrency))


def seed_users(env: dict[str, str], count: int, *, credit_micros: int, prefix: str = "bench",
               rpm: int | None = None, tpm: int | None = None,
               max_concurrency: int | None = None) -> list[str]:
    """``count`` users, each with ``credit_micros`` and one API key (limited to ``rpm``,
    ``tpm`` and ``max_concurrency`` requests in flight; None: not limited), in one process
    (the CLI would start Django once per user)."""
    argv = [str(BIN / "python"), "bench/seed_users.py", "--count", str(count),
            "--credit-micros", str(credit_micros), "--prefix", prefix]
    for flag, limit in (("--rpm", rpm), ("--tpm", tpm), ("--max-concurrency", max_concurrency)):
        if limit is not None:
            argv += [flag, str(limit)]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"seed_users.py failed:\n{result.stdout}{result.stderr}")
    keys = result.stdout.split()
    assert len(keys) == count, result.stdout
    return keys


@dataclass
class BillingCheck:
    usage_records: int
    usage_ok: int
    ledger_charges: int
    pending_holds: int
    charged_micros: int
    usage_cost_micros: int
    ledger_matches_wallets: bool

    def ok(self, expected: int) -> bool:
        return (self.usage_records == expected and self.usage_ok == expected
                and self.ledger_charges == expected and self.pending_holds == 0
                and self.charged_micros == self.usage_cost_micros
                and self.ledger_matches_wallets)

    def describe(self, expected: int) -> str:
        return (f"{self.usage_records} usage records ({self.usage_ok} ok), "
                f"{self.ledger_charges} ledger charges, {self.pending_holds} pending holds, "
                f"{self.charged_micros} micro-USD charged (usage records: "
                f"{self.usage_cost_micros}); expected {expected} (router 200s, warm-up "
                f"included); every wallet = its ledger: {self.ledger_matches_wallets}  -> "
                f"{'OK' if self.ok(expected) else 'MISMATCH'}")


def check_billing(database_url: str, expected: int) -> BillingCheck:
    """What the database recorded; waits briefly for settlements still in flight."""
    deadline = time.monotonic() + 30
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        while True:
            row = conn.execute("""
                SELECT (SELECT count(*) FROM billing_usagerecord),
                       (SELECT count(*) FROM billing_usagerecord WHERE status = 'ok'),
                       (SELECT count(*) FROM billing_ledgerentry WHERE kind = 'charge'),
                       (SELECT count(*) FROM billing_hold WHERE status = 'pending'),
                       (SELECT coalesce(-sum(amount_micros), 0) FROM billing_ledgerentry
                         WHERE kind = 'charge'),
                       (SELECT coalesce(sum(cost_micros), 0) FROM billing_usagerecord),
                       (SELECT bool_and(w.posted_micros = (SELECT coalesce(sum(amount_micros), 0)
                                        FROM billing_ledgerentry e WHERE e.wallet_id = w.id)
                                        AND w.pending_micros = 0)
                          FROM billing_wallet w)
            """).fetchone()
            assert row is not None
            check = BillingCheck(*(int(v) for v in row[:6]), ledger_matches_wallets=bool(row[6]))
            if check.ok(expected) or time.monotonic() > deadline:
                return check
            time.sleep(0.5)


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

    def warnings(self) -> int:
        """Warning, error and traceback lines in its log so far."""
        return sum(1 for line in self.log_tail(100_000).splitlines()
                   if any(w in line for w in ("WARNING", "ERROR", "Traceback")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_pin() -> bool:
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def start_service(name: str, argv: list[str], env: dict[str, str], cpu: int | None = None,
                  cwd: Path = ROOT) -> Service:
    """``argv`` in ``cwd`` (another build's checkout: uvicorn imports the app from its
    working directory), logging to ``/tmp/<script>-<name>.log``."""
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: the pid stays the server's
    log_path = TMP / f"{script_name()}-{name}.log"
    log = log_path.open("wb")
    # Its own session, so stopping it kills its whole process group and nothing else.
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Service(name, proc, log_path, log)


def stop_service(service: Service) -> None:
    if service.proc.poll() is None:
        # SIGTERM first: the server then drains and lets the last settlements reach the
        # database.
        with contextlib.suppress(ProcessLookupError):  # it is already gone
            os.killpg(service.proc.pid, signal.SIGTERM)
        try:
            service.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it is already gone
                os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait(timeout=5)
    service.log.close()


def upstream_argv(port: int, *, chunk_delay_ms: float = 0.0, answer_seconds: float = 0.0
                  ) -> list[str]:
    return [str(BIN / "python"), "bench/fast_upstream.py", "--port", str(port),
            "--chunk-delay-ms", str(chunk_delay_ms), "--answer-seconds", str(answer_seconds)]


def router_argv(server: str, port: int, workers: int, tree: Path | None = None) -> list[str]:
    """The router under ``server`` with ``workers`` processes, with the flags `make serve`
    gives it (serve.py), on 127.0.0.1; ``tree``: another checkout, whose own serve.py says
    which flags (a build is measured as it would be deployed)."""
    if server not in SERVERS:
        raise SystemExit(f"unknown server {server!r} (one of {', '.join(SERVERS)})")
    argv_of = server_argv
    if tree is not None and tree.resolve() != ROOT:
        argv_of = runpy.run_path(str(tree / "serve.py"), run_name="serve_of_other_build")[
            "server_argv"]
    return argv_of(server, host="127.0.0.1", port=port, workers=workers)


def start_wrapped_router(wrapper: str, out: Path, name: str, tree: Path, port: int,
                         env: dict[str, str]) -> Service:
    """The router of the build in ``tree`` (``make serve``'s uvicorn, one worker, on CPU 0)
    run by this checkout's bench script ``wrapper``, which writes what it records to
    ``out`` (``profiled_router.py``, ``gc_watch.py``)."""
    argv = [str(BIN / "python"), str(Path(__file__).parent / wrapper), str(out),
            *router_argv("uvicorn", port, 1, tree)]
    return start_service(name, argv, env, cpu=0, cwd=tree)


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


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "changed": git("diff", "--shortstat", "HEAD")}


def run_async(coroutine: Awaitable[Any], timeout: float) -> Any:
    """Run the load on uvloop when it is installed, bounded in time whatever the options."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, timeout)

    try:
        import uvloop
    except ImportError:
        return asyncio.run(bounded())
    return uvloop.run(bounded())
