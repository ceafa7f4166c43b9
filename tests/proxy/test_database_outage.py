"""PostgreSQL stopped under load: every request is answered, 200 or 503 with Retry-After,
within a few seconds (none 500, none left hanging); every 200 is charged exactly once, by
its own router process once the database is back, not by the sweeper; and the router
serves again right after the restart, without a restart of its own.

The test runs a PostgreSQL cluster of its own so that it can stop it: as root, through
``runuser -u postgres`` (initdb refuses to run as root).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.proxy.upstream import UpstreamServer
from tests.router_processes import ROOT, free_port, wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
CLIENTS = 4  # each with its own key and wallet; the last one streams
LOAD_S = 15.0
STOP_AT_S = 4.0  # into the load
# A clean stop, as an operator or a failover does it. "immediate" is a crash: PostgreSQL
# may then forget a reservation that was committed without waiting for the disk, and that
# request goes uncharged (by design: see billing/services/hot_path/statements.py).
STOP_MODE = "fast"
OUTAGE_S = 5.0
# The client gives up after this: a request the router left hanging shows as no answer.
CLIENT_TIMEOUT_S = 6.0
# What the router may take to answer anything, even while the database is away: twice
# ROUTER_DB_WAIT_MS (2 s; a statement may queue behind one that is waiting), and a margin.
ANSWER_WITHIN_S = 5.0
# How soon after PostgreSQL accepts connections again the router must serve.
SERVING_WITHIN_S = 2.0
# How soon after the restart the charges and releases the outage held up are written: the
# retries' longest pause (2 s), and a try.
SETTLED_WITHIN_S = 4.0
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 20}

# One process seeds the database (a manage.py command per step would start Django each
# time): the schema, the model's price, the worker, and one funded key per client.
SEED = """
import os
from django.core.management import call_command
from accounts.services import api_key_create, user_create
from billing.services import price_set, wallet_credit
from proxy.models import Worker, WorkerModel

call_command("migrate", verbosity=0)
price_set(model="test-model", input_usd_per_mtok="1", output_usd_per_mtok="2",
          max_output_tokens=500)
worker = Worker(name="local", kind="openai", base_url=os.environ["UPSTREAM_URL"])
worker.set_api_key("upstream-secret")
worker.save()
WorkerModel.objects.create(worker=worker, model="test-model", upstream_model="gpt-4o-mini")
for index in range(int(os.environ["CLIENTS"])):
    user = user_create(email=f"client{index}@example.com")
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key=f"fund-{index}",
                  memo="test", kind="topup")
    print(api_key_create(user=user).secret)
"""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and (PG_BIN / name).exists():
        found = str(PG_BIN / name)
    return found


_MISSING = [name for name in ("runuser", "initdb", "pg_ctl") if _binary(name) is None]

pytestmark = [
    pytest.mark.skipif(bool(_MISSING), reason=(
        "needs runuser, initdb and pg_ctl to run a PostgreSQL cluster it can stop; missing: "
        + ", ".join(_MISSING))),
    pytest.mark.skipif(os.geteuid() != 0, reason=(
        "needs root: the PostgreSQL cluster it stops runs as the postgres user, through "
        "runuser")),
]


@dataclass
class Cluster:
    folder: Path  # the data directory's parent, its Unix socket and its log
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def as_postgres(self, tool: str, *args: str, check: bool = True) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(_binary(tool)), *args],
                       check=check, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=None if check else subprocess.DEVNULL)

    def create(self) -> None:
        self.as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                         "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\nfsync = off\n")

    def start(self) -> None:
        self.as_postgres("pg_ctl", "-D", str(self.data), "-o",
                         f"-p {self.port} -k {self.folder}", "-l", str(self.folder / "log"),
                         "-w", "start")

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self.as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop",
                         check=check)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="router-outage-"))
    shutil.chown(folder, "postgres")  # initdb and the server run as postgres
    cluster = Cluster(folder, free_port())
    try:
        cluster.create()
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE router")
        yield cluster
    finally:
        cluster.stop("immediate", check=False)  # it may be stopped already
        shutil.rmtree(folder, ignore_errors=True)


def _router_env(database_url: str) -> dict[str, str]:
    # No Redis: the router's limits are its own process's, so nothing but PostgreSQL is
    # shared with the rest of the test session.
    env = {name: value for name, value in os.environ.items()
           if name not in {"REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update(DATABASE_URL=database_url, ALLOWED_HOSTS="127.0.0.1", DEBUG="0",
               LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


@contextmanager
def _router(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """A router process (uvicorn, as tests/router_processes.py starts them) whose output
    goes to ``log_path``; yields its /v1 URL."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "router_admin.asgi:application", "--log-level",
             "warning", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _seed(env: dict[str, str], upstream_url: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
        env={**env, "UPSTREAM_URL": upstream_url, "CLIENTS": str(CLIENTS)})
    assert result.returncode == 0, result.stdout + result.stderr
    keys = [line for line in result.stdout.split() if line.startswith("sk-")]
    assert len(keys) == CLIENTS, result.stdout
    return keys


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no answer in time, or a broken answer
    stream: bool
    request_id: str | None = None
    retry_after: str | None = None
    code: str | None = None
    cost_micros: int | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def _micros(usd: object) -> int:
    return int(Decimal(str(usd)) * 1_000_000)


def _call(client: httpx.Client, url: str, *, stream: bool) -> Outcome:
    started = time.monotonic()
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}} if stream \
        else BODY
    outcome = Outcome(started, started, None, stream)
    try:
        with client.stream("POST", url, json=body) as response:
            outcome.request_id = response.headers.get("x-request-id")
            if response.status_code == 200 and stream:
                events = [line for line in response.iter_lines() if line.startswith("data: ")]
                if events[-1] != "data: [DONE]":
                    raise httpx.RemoteProtocolError("the stream ended without [DONE]")
                outcome.cost_micros = _micros(orjson.loads(events[-2][6:])["usage"]["cost"])
            else:
                response.read()
                if response.status_code == 200:
                    outcome.cost_micros = int(response.headers["x-router-cost-micros"])
                else:
                    outcome.code = response.json()["error"]["code"]
                    outcome.retry_after = response.headers.get("retry-after")
            outcome.status = response.status_code
    except httpx.HTTPError:
        pass  # no answer: status stays None
    outcome.ended = time.monotonic()
    return outcome


def _load(url: str, key: str, stream: bool, until: float, outcomes: list[Outcome]) -> None:
    with httpx.Client(timeout=CLIENT_TIMEOUT_S,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < until:
            outcomes.append(_call(client, url, stream=stream))


def _pending_holds(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM billing_hold WHERE status = 'pending'"
                           ).fetchone()
    assert row is not None
    return int(row[0])


def _last_resolved_after(database_url: str, restarted_at: datetime) -> float:
    """Seconds from the restart to the resolution of the last hold taken before it."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT max(resolved_at) FROM billing_hold WHERE created_at < %s",
                           [restarted_at]).fetchone()
    assert row is not None
    assert row[0] is not None
    return (row[0] - restarted_at).total_seconds()


def _books(database_url: str) -> tuple[dict[str, tuple[str, int]], dict[str, list[int]],
                                          dict[str, list[int]], bool]:
    """Holds (status, charged), ledger charges and usage records' costs by request id;
    whether every wallet equals its ledger, with nothing pending."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        holds = {row[0]: (row[1], row[2]) for row in conn.execute(
            "SELECT id, status, charged_micros FROM billing_hold")}
        charges: dict[str, list[int]] = {}
        for hold_id, amount in conn.execute(
                "SELECT hold_id, amount_micros FROM billing_ledgerentry WHERE kind = 'charge'"):
            charges.setdefault(hold_id, []).append(-amount)
        usage: dict[str, list[int]] = {}
        for request_id, cost in conn.execute(
                "SELECT request_id, cost_micros FROM billing_usagerecord"):
            usage.setdefault(request_id, []).append(cost)
        row = conn.execute("""
            SELECT bool_and(w.posted_micros = (SELECT coalesce(sum(e.amount_micros), 0)
                                                 FROM billing_ledgerentry e
                                                WHERE e.wallet_id = w.id)
                            AND w.pending_micros = 0)
              FROM billing_wallet w""").fetchone()
    assert row is not None
    return holds, charges, usage, bool(row[0])


def _summary(outcomes: list[Outcome], stopped: float, restarted: float) -> str:
    def line(name: str, chosen: list[Outcome]) -> str:
        counts = Counter(str(o.status) for o in chosen)
        took = sorted(o.seconds for o in chosen) or [0.0]
        return (f"{name}: {len(chosen)} requests ("
                f"{', '.join(f'{n} x {s}' for s, n in sorted(counts.items()))}), "
                f"median {took[len(took) // 2]:.2f} s, longest {took[-1]:.2f} s")

    return "\n".join((
        line("before the stop", [o for o in outcomes if o.ended < stopped]),
        line("during the outage",
             [o for o in outcomes if o.ended >= stopped and o.started < restarted]),
        line("sent after the restart", [o for o in outcomes if o.started >= restarted])))


def test_a_database_outage_under_load_is_answered_503_and_every_answer_is_charged_once(
    cluster, caplog
):
    caplog.set_level(logging.WARNING, logger="httpx")  # a line per request otherwise
    database_url = cluster.url("router")
    env = _router_env(database_url)
    log_path = cluster.folder / "router.log"
    with (UpstreamServer(first_byte_delay=0.05, chunk_delay=0.005) as upstream,
          _router(env, log_path) as base_url):
        keys = _seed(env, upstream.base_url)
        warm_ups = []  # the upstream's tokenizer, the router's lookups and connections
        for key in keys:
            with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as c:
                warm_ups.append(_call(c, f"{base_url}/chat/completions", stream=False))
        assert [o.status for o in warm_ups] == [200] * len(keys)
        outcomes: list[list[Outcome]] = [[] for _ in keys]
        began = time.monotonic()
        clients = [threading.Thread(target=_load, args=(
            f"{base_url}/chat/completions", key, index == CLIENTS - 1, began + LOAD_S,
            outcomes[index])) for index, key in enumerate(keys)]
        for client in clients:
            client.start()
        time.sleep(max(0.0, began + STOP_AT_S - time.monotonic()))
        stopped = time.monotonic()
        cluster.stop(STOP_MODE)
        time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
        cluster.start()
        restarted, restarted_at = time.monotonic(), datetime.now(UTC)
        for client in clients:
            client.join()
        # Every hold is resolved by its own router process, retrying, soon after the
        # restart: the sweeper (not running here) would take ROUTER_HOLD_TTL_SECONDS.
        deadline = time.monotonic() + 10
        while _pending_holds(database_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        settled_after = _last_resolved_after(database_url, restarted_at)
        holds, charges, usage, wallets_match = _books(database_url)

    everything = [o for per_client in outcomes for o in per_client]
    after = [o for o in everything if o.started >= restarted]
    first = min((o.ended for o in after if o.status == 200), default=float("inf"))
    summary = "\n".join((
        _summary(everything, stopped, restarted),
        f"the first answer to a request sent after the restart: {first - restarted:.2f} s "
        "after it",
        f"the last hold taken before the restart was resolved {settled_after:.2f} s after "
        "it",
        "the slowest: " + ", ".join(
            f"{o.status} {'stream ' if o.stream else ''}sent {o.started - stopped:+.2f} s from "
            f"the stop, {o.seconds:.2f} s"
            for o in sorted(everything, key=lambda o: -o.seconds)[:5]),
        "the router's log ends with:", *log_path.read_text(errors="replace").splitlines()[-15:]))
    print(summary)

    unanswered = [o for o in everything if o.status is None]
    assert not unanswered, f"{len(unanswered)} requests got no answer\n{summary}"
    assert {o.status for o in everything} <= {200, 503}, summary
    refused = [o for o in everything if o.status == 503]
    answered = [o for o in everything if o.status == 200]
    assert refused, f"the outage was never seen\n{summary}"
    assert all(o.code == "service_unavailable" and o.retry_after for o in refused)
    assert max(o.seconds for o in everything) <= ANSWER_WITHIN_S, summary

    assert first - restarted <= SERVING_WITHIN_S, summary
    late = [o for o in after if o.started >= restarted + SERVING_WITHIN_S]
    assert late, summary
    assert all(o.status == 200 for o in late), summary

    assert not [hold_id for hold_id, (status, _) in holds.items() if status == "pending"]
    assert settled_after <= SETTLED_WITHIN_S, summary
    for outcome in answered:
        assert outcome.request_id is not None
        assert holds[outcome.request_id] == ("posted", outcome.cost_micros)
        assert charges.get(outcome.request_id) == [outcome.cost_micros]
        assert usage.get(outcome.request_id) == [outcome.cost_micros]
    for outcome in refused:
        assert holds.get(outcome.request_id, ("voided", 0)) == ("voided", 0)
        assert outcome.request_id not in charges
        assert usage.get(outcome.request_id, [0]) == [0]
    assert sum(len(c) for c in charges.values()) == len(answered) + len(warm_ups)
    assert wallets_match
