"""PostgreSQL stopped under load: every request is answered, 200 or 503 with Retry-After,
within a few seconds (none 500, none left hanging); every 200 is charged exactly once, by
its own router process once the database is back, not by the sweeper; and the router
serves again right after the restart, without a restart of its own.

The test runs a PostgreSQL cluster of its own so that it can stop it
(``tests/proxy/own_cluster.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
import psycopg

from tests.proxy.own_cluster import CLUSTER_MARKS, books, router, router_env, seed
from tests.proxy.upstream import UpstreamServer

pytestmark = CLUSTER_MARKS

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
    env = router_env(database_url)
    log_path = cluster.folder / "router.log"
    with (UpstreamServer(first_byte_delay=0.05, chunk_delay=0.005) as upstream,
          router(env, log_path) as running):
        base_url = running.base_url
        keys = seed(env, upstream.base_url, CLIENTS)
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
        holds, charges, usage, wallets_match = books(database_url)

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
