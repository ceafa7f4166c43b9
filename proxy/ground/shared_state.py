"""Where the state that router instances share lives: Redis, or this process's memory.

With ``REDIS_URL`` set, circuit breakers and in-flight counts are kept in Redis so that
every router instance sees the same numbers. Without it (the embedded default), or while
Redis does not answer, each process keeps its own: requests keep flowing, and a warning
says the limits are per process until Redis is back. Money never depends on this.

Every key starts with ``ROUTER_REDIS_PREFIX`` (``router:<database name>:``, so that
deployments can share one Redis), then keeps its layout (``limits:key:12:window``,
``inflight:3``, ``breaker:3``). Each event loop has one client
(``proxy.ground.redis_pipeline``): one connection, every command pipelined on it, so a
burst of requests never waits for a connection and never turns the shared limits into
per-process ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from proxy.ground.redis_pipeline import PipelinedRedis
from router_admin.settings_cache import forget_all, setting

logger = logging.getLogger(__name__)

_clients: dict[asyncio.AbstractEventLoop, PipelinedRedis] = {}
_last_warning = 0.0
# How long a process keeps to its own counts after Redis failed, before trying it again.
RETRY_AFTER_SECONDS = 5.0
_down_until = 0.0
# How long a command (or a new connection) may take before Redis counts as not answering.
# Short, so that a hung Redis holds few requests for long; but longer than the event loop
# itself may stall under a burst (its first pass over 2,000 new requests took up to 0.7 s on
# a busy machine), or the router would take its own lag for a slow Redis and fall back to
# per-process limits exactly when they matter.
REDIS_TIMEOUT_SECONDS = 1.0


def _setting(name: str) -> str:
    # ROUTER_REDIS_PREFIX and REDIS_URL: needed several times a request.
    return setting(name) or ""


def redis_key(name: str) -> str:
    """``name`` in this deployment's namespace."""
    return _setting("ROUTER_REDIS_PREFIX") + name


def redis_client() -> PipelinedRedis | None:
    """The shared Redis client of this event loop, or None to use local state."""
    url = _setting("REDIS_URL")
    if not url or time.monotonic() < _down_until:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = PipelinedRedis(url, timeout=REDIS_TIMEOUT_SECONDS,
                                                 connect_timeout=REDIS_TIMEOUT_SECONDS)
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


async def ping_redis() -> None:
    """A PING on this event loop's client, if it has one (nothing to keep warm otherwise):
    sent while the process is quiet (``proxy.entry.keep_warm``), so that the next request
    finds the connection open and Redis awake. A Redis that does not answer is noticed here
    rather than by that request."""
    client = _clients.get(asyncio.get_running_loop())
    if client is None or time.monotonic() < _down_until:
        return
    try:
        await client.ping()
    except RedisError as error:
        redis_failed(error)


async def close_redis_clients() -> None:
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def reset_for_tests() -> None:
    global _down_until, _last_warning
    forget_all()
    _down_until = _last_warning = 0.0
    _clients.clear()


class RedisScript:
    """A Lua script sent by its digest, and in full only when Redis does not know it yet
    (once per Redis start): a few bytes per call instead of the whole script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def run(self, client: PipelinedRedis, keys: Sequence[str],
                  args: Sequence[str | int | float], *, at_once: bool = False) -> Any:
        """The script's reply; ``at_once``: written before this returns to the loop, not
        with the rest of the loop's turn (``PipelinedRedis.send``)."""
        if at_once and (sent := self.send(client, keys, args, at_once=True)) is not None:
            return await sent
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def send(self, client: PipelinedRedis, keys: Sequence[str],
             args: Sequence[str | int | float], *, at_once: bool = False
             ) -> asyncio.Future[Any] | None:
        """The script sent without waiting (``PipelinedRedis.send``), and the future of its
        reply; None while the client has no connection open (then ``run`` it). Should Redis
        not know the script, it is sent again in full."""
        sent = client.send("EVALSHA", self.sha, len(keys), *keys, *args, at_once=at_once)
        if sent is None:
            return None
        relay = _ScriptReply(self, client, keys, args, at_once, sent.get_loop().create_future())
        sent.add_done_callback(relay)
        return relay.reply


class _ScriptReply:
    """Hands a script's reply to its caller's future: the EVALSHA's, or, when Redis did not
    know the script, that of the EVAL sent in its place.

    An object rather than a closure: a closure that passes itself on as a callback refers
    to itself, so every request's became garbage only the cycle collector frees, in passes
    that stopped the process for a tenth of a second under load (README, Performance)."""

    __slots__ = ("args", "at_once", "client", "keys", "reply", "retried", "script")

    def __init__(self, script: RedisScript, client: PipelinedRedis, keys: Sequence[str],
                 args: Sequence[str | int | float], at_once: bool,
                 reply: asyncio.Future[Any]) -> None:
        self.script = script
        self.client = client
        self.keys = keys
        self.args = args
        self.at_once = at_once
        self.reply = reply
        self.retried = False

    def __call__(self, done: asyncio.Future[Any]) -> None:
        # Asked first, whatever happens next: an exception nobody asks for is logged as lost.
        error = None if done.cancelled() else done.exception()
        reply = self.reply
        if reply.done():
            return
        if isinstance(error, NoScriptError) and not self.retried:
            self.retried = True
            keys = self.keys
            again = self.client.send("EVAL", self.script.source, len(keys), *keys,
                                     *self.args, at_once=self.at_once)
            if again is not None:
                again.add_done_callback(self)
                return
        if done.cancelled():
            reply.cancel()
        elif error is not None:
            reply.set_exception(error)
        else:
            reply.set_result(done.result())


@dataclass(frozen=True)
class SlotAsk:
    """A worker's slot to take with the admission: its in-flight set, its limit, and how
    long a slot lasts unreleased (``proxy.upstream.capacity``)."""

    key: str
    limit: int
    lease_s: float
