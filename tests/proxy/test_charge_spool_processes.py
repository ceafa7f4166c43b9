"""An answer given while the database was away, by a router process killed before the
database came back: the next process charges it (``proxy.money.spool``). Until 2026-12 the
charge went with the process, and the sweeper later released the hold: an answer
delivered and never paid for.

Real processes and a real outage: a router under uvicorn, its own PostgreSQL cluster
stopped between the hold's commit and the upstream's answer (``tests/proxy/own_cluster.py``),
the official OpenAI client, SIGKILL, and a second router process started afterwards.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import openai
import psycopg

from tests.proxy.own_cluster import CLUSTER_MARKS, books, router, router_env, seed
from tests.proxy.upstream import UpstreamServer
from tests.router_processes import until

pytestmark = CLUSTER_MARKS

MESSAGES = [{"role": "user", "content": "Say hi."}]
# The upstream takes this long to answer the request under test: the database is stopped
# meanwhile, after the hold's commit.
ANSWER_DELAY_S = 2.0


def _pending_hold(database_url: str) -> str | None:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT id FROM billing_hold WHERE status = 'pending'").fetchone()
    return None if row is None else str(row[0])


def _spooled_lines(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [line for path in directory.glob("charges-*.jsonl")
            for line in path.read_text().splitlines()]


def _charged(database_url: str, request_id: str) -> bool:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            return conn.execute("SELECT 1 FROM billing_usagerecord WHERE request_id = %s",
                                [request_id]).fetchone() is not None
    except psycopg.OperationalError:
        return False  # still starting


def test_an_answer_whose_charge_waited_for_the_database_is_charged_after_its_process_is_killed(
    cluster, tmp_path
):
    database_url = cluster.url("router")
    spool = tmp_path / "spool"
    env = {**router_env(database_url), "ROUTER_CHARGE_SPOOL_DIR": str(spool)}
    log_path = tmp_path / "routers.log"
    with UpstreamServer() as upstream:
        (key,) = seed(env, upstream.base_url, 1)
        answered: dict[str, Any] = {}
        with router(env, log_path) as first:
            client = openai.OpenAI(base_url=first.base_url, api_key=key, max_retries=0,
                                   timeout=30)
            client.chat.completions.create(model="test-model", messages=MESSAGES,
                                           max_tokens=20)  # lookups and connections warm
            until("the warm-up charged", lambda: _pending_hold(database_url) is None)
            upstream.configure(first_byte_delay=ANSWER_DELAY_S)

            def call() -> None:
                raw = client.chat.completions.with_raw_response.create(
                    model="test-model", messages=MESSAGES, max_tokens=20)
                answered.update(request_id=raw.headers["x-request-id"],
                                cost=int(raw.headers["x-router-cost-micros"]),
                                text=raw.parse().choices[0].message.content)

            caller = threading.Thread(target=call)
            caller.start()
            hold_id = until("the hold committed", lambda: _pending_hold(database_url))
            time.sleep(0.3)  # its commit acknowledged to the router, not only visible
            cluster.stop("fast")
            caller.join(30)
            # The answer went out: its hold was on the disk before the database stopped.
            assert answered["request_id"] == hold_id
            assert answered["cost"] > 0
            assert answered["text"]
            (line,) = until("the charge spooled", lambda: _spooled_lines(spool))
            assert hold_id in line
            first.process.kill()  # SIGKILL: no shutdown, no retries left in memory
            first.process.wait(10)
        assert _spooled_lines(spool) == [line]  # the dead process's file, as it left it

        cluster.start()
        with router(env, log_path):
            # The next process replays the spool at its start.
            until("the charge written by the next process",
                   lambda: _charged(database_url, hold_id))
            until("the spool file deleted", lambda: not _spooled_lines(spool))
    holds, charges, usage, wallets_match = books(database_url)
    assert holds[hold_id] == ("posted", answered["cost"])
    assert charges[hold_id] == [answered["cost"]]
    assert usage[hold_id] == [answered["cost"]]
    assert wallets_match  # and nothing pending
    assert "its spooled resolution was written" in log_path.read_text()
