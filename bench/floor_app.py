"""The least a gateway on the router's stack can do per request: an ASGI app for
``bench/floor.py``, which measures it beside the router to say what bounds issue 19's
targets 1 and 2.

It runs under uvicorn with ``make serve``'s flags (uvloop, the router's HTTP protocol),
relays ``POST /v1/chat/completions`` to the upstream through the router's own HTTP client
(``proxy.upstream.http_client``), rewriting the model and reading the answer's JSON (a
gateway that bills must read the usage), and relays a stream line by line. No
authentication, no prices, no metering, no access log, no metrics, no Django. Each of
``FLOOR_STAGES`` (comma-separated) adds one thing the router cannot do without, on the
request's way before the upstream call:

- ``pg``: one round trip to PostgreSQL that takes a hold on a wallet (a guarded ``UPDATE``
  and an ``INSERT``, one statement), committed without waiting for the disk
  (``synchronous_commit`` off: the router's answer waits for it; this does not);
- ``redis``: one script run in Redis (the limits' counters), beside the hold, as the router
  sends its limits' script beside its reservation;
- ``settle``: after the answer, one Redis script (the limits settled with the tokens
  used) and the hold charged, the charges of ``LINGER_S`` in one statement, as the router's
  charges of answers already sent wait ``ROUTER_SETTLE_LINGER_MS`` for company.

Authentication, prices, metering, the access log and the metrics are left out. So each
stage is a floor: no build of the router on this stack can add less to a request than the
floor with the stages it needs.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import aiohttp
import orjson
import psycopg
from yarl import URL

from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.upstream.http_client import UpstreamSession

STAGES = frozenset(filter(None, os.environ.get("FLOOR_STAGES", "").split(",")))
UPSTREAM = URL(os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:1/v1/chat/completions"))
UPSTREAM_MODEL = os.environ.get("FLOOR_UPSTREAM_MODEL", "upstream-model")
# As the router's process (router_admin/asgi.py, GC_YOUNG_THRESHOLD): what was loaded at the
# start frozen out of the cycle collector's sight, which then runs every 200,000 objects.
GC_YOUNG_THRESHOLD = 200_000
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=60)
HOLD_MICROS = 1_000

# Made by floor.py in the bench database.
SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_wallet (
    id integer PRIMARY KEY, balance bigint NOT NULL, reserved bigint NOT NULL,
    CHECK (reserved <= balance));
CREATE TABLE IF NOT EXISTS floor_hold (
    id bigserial PRIMARY KEY, wallet_id integer NOT NULL REFERENCES floor_wallet,
    amount bigint NOT NULL, charged bigint, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO floor_wallet VALUES (1, 9000000000000000000, 0) ON CONFLICT (id) DO NOTHING;
"""
HOLD_SQL = """
WITH wallet AS (
    UPDATE floor_wallet SET reserved = reserved + %(amount)s
    WHERE id = 1 AND balance - reserved >= %(amount)s RETURNING id)
INSERT INTO floor_hold (wallet_id, amount) SELECT id, %(amount)s FROM wallet RETURNING id
"""
CHARGE_SQL = """
WITH charged AS (
    UPDATE floor_hold SET charged = amount / 2
    WHERE id = ANY(%(ids)s) AND charged IS NULL RETURNING amount, charged)
UPDATE floor_wallet SET reserved = reserved - (SELECT sum(amount) FROM charged),
    balance = balance - (SELECT sum(charged) FROM charged)
WHERE id = 1
"""
LINGER_S = 0.020
LIMITS_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end
return redis.call('INCRBY', KEYS[2], ARGV[1])
"""
JSON_HEADERS = [(b"content-type", b"application/json")]
STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Floor:
    """What the app holds for its one event loop: the upstream session, and the database
    connection and Redis client of its stages."""

    def __init__(self) -> None:
        self.session = UpstreamSession(asyncio.get_running_loop())
        self.database: psycopg.AsyncConnection[Any] | None = None
        self.redis: PipelinedRedis | None = None
        self.script = ""
        self.unsettled: list[int] = []  # holds answered and not yet charged
        self.charging: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly

    async def start(self) -> None:
        if "pg" in STAGES:
            self.database = await psycopg.AsyncConnection.connect(
                os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=0)
            await self.database.execute("SET synchronous_commit = off")
        if "redis" in STAGES:
            self.redis = PipelinedRedis(os.environ["REDIS_URL"], timeout=1.0,
                                        connect_timeout=1.0)
            self.script = (await self.redis.execute("SCRIPT", "LOAD", LIMITS_SCRIPT)).decode()

    async def stop(self) -> None:
        await self.session.close()
        if self.database is not None:
            await self.database.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def admit(self) -> int | None:
        """The stages' round trips, side by side: the hold's id (None without a hold); a
        refusal is a failed request."""
        if self.database is None:
            return None
        if self.redis is None:
            return await self._hold(self.database)
        hold_id, _ = await asyncio.gather(
            self._hold(self.database),
            self.redis.evalsha(self.script, 2, "floor:rpm", "floor:tpm", 20))
        return hold_id

    def settle(self, hold_id: int | None) -> None:
        """After the answer: the limits settled now, the charge with those of ``LINGER_S``."""
        if "settle" not in STAGES or hold_id is None:
            return
        if self.redis is not None:
            self.redis.send("EVALSHA", self.script, 2, "floor:rpm", "floor:tpm", -4)
        if not self.unsettled:
            asyncio.get_running_loop().call_later(LINGER_S, self._charge_soon)
        self.unsettled.append(hold_id)

    def _charge_soon(self) -> None:
        ids, self.unsettled = self.unsettled, []
        task = asyncio.get_running_loop().create_task(self._charge(ids))
        self.charging.add(task)
        task.add_done_callback(self.charging.discard)

    async def _charge(self, ids: list[int]) -> None:
        assert self.database is not None
        await self.database.execute(CHARGE_SQL, {"ids": ids})

    @staticmethod
    async def _hold(database: psycopg.AsyncConnection[Any]) -> int:
        cursor = await database.execute(HOLD_SQL, {"amount": HOLD_MICROS})
        row = await cursor.fetchone()
        if row is None:
            raise RuntimeError("the floor's wallet cannot cover the hold")
        return int(row[0])


app_state: dict[str, Floor] = {}  # the lifespan's Floor, for the requests


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["method"] == "POST":
        await relay(app_state["floor"], receive, send)
    else:  # readiness: GET /v1/models
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})


async def lifespan(receive: Any, send: Any) -> None:
    floor: Floor | None = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            gc.collect()
            gc.freeze()
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
            floor = Floor()
            await floor.start()
            app_state["floor"] = floor
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if floor is not None:
                await floor.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def relay(floor: Floor, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    request["model"] = UPSTREAM_MODEL
    hold_id = await floor.admit()
    upstream = await floor.session.post(UPSTREAM, data=orjson.dumps(request),
                                        headers={"Content-Type": "application/json"},
                                        timeout=TIMEOUT)
    try:
        if not request.get("stream"):
            answer = orjson.loads(await upstream.read())
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(
                            out := orjson.dumps(answer)))]})
            await send({"type": "http.response.body", "body": out})
            floor.settle(hold_id)
            return
        await send({"type": "http.response.start", "status": upstream.status,
                    "headers": STREAM_HEADERS})
        while line := await upstream.readline():
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        floor.settle(hold_id)
    finally:
        upstream.release()
