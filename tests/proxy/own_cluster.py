"""A PostgreSQL cluster of a test's own, which it can stop and start, and router
processes pointed at it: for tests of what a database outage does to a router.

The cluster runs as root's tests do, through ``runuser -u postgres`` (initdb refuses to
run as root); tests using it carry ``CLUSTER_MARKS`` (skipped where that cannot be done).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.router_processes import ROOT, free_port, wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")

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


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and (PG_BIN / name).exists():
        found = str(PG_BIN / name)
    return found


MISSING = [name for name in ("runuser", "initdb", "pg_ctl") if binary(name) is None]

CLUSTER_MARKS = [
    pytest.mark.skipif(bool(MISSING), reason=(
        "needs runuser, initdb and pg_ctl to run a PostgreSQL cluster it can stop; missing: "
        + ", ".join(MISSING))),
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
        subprocess.run(["runuser", "-u", "postgres", "--", str(binary(tool)), *args],
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


def router_env(database_url: str) -> dict[str, str]:
    # No Redis: the router's limits are its own process's, so nothing but PostgreSQL is
    # shared with the rest of the test session.
    env = {name: value for name, value in os.environ.items()
           if name not in {"REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}}
    env.update(DATABASE_URL=database_url, ALLOWED_HOSTS="127.0.0.1", DEBUG="0",
               LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    return env


@dataclass
class RouterRun:
    process: subprocess.Popen[bytes]
    base_url: str  # its /v1


@contextmanager
def router(env: dict[str, str], log_path: Path) -> Iterator[RouterRun]:
    """A router process (uvicorn, as tests/router_processes.py starts them) whose output
    goes to ``log_path`` (appended); stopped as a process manager stops it (SIGTERM) unless
    the test killed it first."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "router_admin.asgi:application", "--log-level",
             "warning", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, process)
            yield RouterRun(process, f"http://127.0.0.1:{port}/v1")
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def seed(env: dict[str, str], upstream_url: str, clients: int) -> list[str]:
    """The schema, the model's price, the worker, and ``clients`` funded keys (one user
    each, $1): their secrets."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED], cwd=ROOT, capture_output=True,
        text=True, timeout=120, check=False,
        env={**env, "UPSTREAM_URL": upstream_url, "CLIENTS": str(clients)})
    assert result.returncode == 0, result.stdout + result.stderr
    keys = [line for line in result.stdout.split() if line.startswith("sk-")]
    assert len(keys) == clients, result.stdout
    return keys


def books(database_url: str) -> tuple[dict[str, tuple[str, int]], dict[str, list[int]],
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


