"""Where the state that router instances share lives: Redis, or this process's memory.

With ``REDIS_URL`` set, circuit breakers and in-flight counts are kept in Redis so that
every router instance sees the same numbers. Without it (the embedded default), or while
Redis does not answer, each process keeps its own: requests keep flowing, and a warning
says the limits are per process until Redis is back. Money never depends on this.

Every key starts with ``ROUTER_REDIS_PREFIX`` (``router:<database name>:``, so that
deployments can share one Redis), then keeps its layout (``limits:key:12:window``,
``inflight:3``, ``breaker:3``). Each event loop has one client with at most
``ROUTER_REDIS_MAX_CONNECTIONS`` connections; a command that finds them all busy waits its
turn, up to ``POOL_WAIT_SECONDS``, instead of failing: a burst of requests must not turn
the shared limits into per-process ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

logger = logging.getLogger(__name__)

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}
_last_warning = 0.0
# How long a process keeps to its own counts after Redis failed, before trying it again.
RETRY_AFTER_SECONDS = 5.0
_down_until = 0.0
# How long a command waits for one of the client's connections: past it, the request counts
# in this process. A burst clears well before (2,000 admissions at once take 0.3 s on an idle
# core, up to 2 s on a machine with four times more work than cores); a Redis that stops
# answering does not make the queue wait it out (WaitingPool).
POOL_WAIT_SECONDS = 5.0
# How long a command (or a new connection) may take before Redis counts as not answering.
# Short, so that a hung Redis holds few requests for long; but longer than the event loop
# itself may stall under a burst (its first pass over 2,000 new requests took up to 0.7 s on
# a busy machine), or the router would take its own lag for a slow Redis and fall back to
# per-process limits exactly when they matter.
REDIS_TIMEOUT_SECONDS = 1.0


class CancellableRedis(aioredis.Redis):
    """redis-py's client, minus a lost cancellation.

    With ``socket_timeout`` set, redis-py writes each command under ``asyncio.wait_for``,
    and on Python 3.11 ``wait_for`` drops a cancellation that arrives as the write
    completes (CPython gh-86296, fixed in 3.12): a request whose client hung up during a
    Redis call would go on as if nothing happened (waiting out a worker slot, say, with
    its hold taken). The task still counts the cancellation it was asked for, so one
    requested during the command and not delivered is raised when the command returns.
    """

    async def execute_command(self, *args: object, **options: object) -> object:
        task = asyncio.current_task()
        asked = task.cancelling() if task is not None else 0
        result = await super().execute_command(*args, **options)
        if task is not None and task.cancelling() > asked:
            raise asyncio.CancelledError
        return result


class WaitingPool(aioredis.ConnectionPool):
    """redis-py's pool, except that a command finding every connection busy waits for one
    (first come, first served, up to ``wait_seconds``) instead of failing at once.

    Not redis-py's BlockingConnectionPool: it takes a condition lock and starts a timer for
    every command, where this costs a counter until the pool is full (an asyncio.Semaphore,
    whose ``locked()`` walks its waiters, cost more than the rest of the bookkeeping). A
    turn is taken before a connection and given back with it. A waiting command gives up
    as soon as another one found Redis not answering: otherwise the queue behind a hung
    Redis would wait out the command timeout, ``max_connections`` commands at a time.
    """

    def __init__(self, *, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_seconds = wait_seconds
        self._free_turns = self.max_connections
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._holding_turns: set[AbstractConnection] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._free_turns and not self._waiting:
            self._free_turns -= 1
        else:
            await self._wait_for_a_turn()
        try:
            if time.monotonic() < _down_until:
                raise RedisConnectionError("Redis stopped answering while this command waited")
            # A connection that super() takes and fails to connect goes back through
            # release() before it raises: with no turn of its own yet, it returns none.
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:
            self._give_back_a_turn()
            raise
        self._holding_turns.add(connection)
        return connection

    async def _wait_for_a_turn(self) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(self.wait_seconds):
                await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled():
                self._give_back_a_turn()  # handed over just as this one gave up
            else:
                turn.cancel()  # skipped when turns are handed out
            if isinstance(error, TimeoutError):
                raise RedisConnectionError("No connection available.") from None
            raise

    def _give_back_a_turn(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free_turns += 1

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            # Only once it is back: a release cancelled while it waited for the pool's lock
            # is finished in the background by another call to this method.
            if (connection in self._holding_turns
                    and connection not in self._in_use_connections):
                self._holding_turns.discard(connection)
                self._give_back_a_turn()


_prefix: list[str] = []  # ROUTER_REDIS_PREFIX, read once: keys are made on every request


def redis_key(name: str) -> str:
    """``name`` in this deployment's namespace."""
    if not _prefix:
        _prefix.append(settings.ROUTER_REDIS_PREFIX)
    return _prefix[0] + name


@receiver(setting_changed)
def _forget_prefix(*, setting: str, **kwargs: Any) -> None:
    if setting == "ROUTER_REDIS_PREFIX":
        _prefix.clear()


def redis_client() -> aioredis.Redis | None:
    """The shared Redis client of this event loop, or None to use local state."""
    if not settings.REDIS_URL or time.monotonic() < _down_until:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = WaitingPool.from_url(settings.REDIS_URL,
                                    max_connections=settings.ROUTER_REDIS_MAX_CONNECTIONS,
                                    wait_seconds=POOL_WAIT_SECONDS,
                                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        client = CancellableRedis.from_pool(pool)  # closing the client closes its pool
        _clients[loop] = client
    return client


def redis_failed(error: RedisError) -> None:
    """Fall back to local state for a while, warning at most once a minute."""
    global _down_until, _last_warning
    _down_until = time.monotonic() + RETRY_AFTER_SECONDS
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        logger.warning("Redis is not answering (%s): rate limits, circuit breakers and worker "
                       "capacity are counted per process until it is back.",
                       error.__class__.__name__)


async def close_redis_clients() -> None:
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def reset_for_tests() -> None:
    global _down_until, _last_warning
    _down_until = _last_warning = 0.0
    _clients.clear()


class RedisScript:
    """A Lua script sent by its digest, and in full only when Redis does not know it yet
    (once per Redis start): a few bytes per call instead of the whole script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, client: aioredis.Redis, keys: Sequence[str],
                  args: Sequence[str | int | float]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


@dataclass(frozen=True)
class SlotAsk:
    """A worker's slot to take with the admission: its in-flight set, its limit, and how
    long a slot lasts unreleased (``proxy.upstream.capacity``)."""

    key: str
    limit: int
    lease_s: float
