"""Where the state that router instances share lives: Redis, or this process's memory.

With ``REDIS_URL`` set, circuit breakers and in-flight counts are kept in Redis so that
every router instance sees the same numbers. Without it (the embedded default), or while
Redis does not answer, each process keeps its own: requests keep flowing, and a warning
says the limits are per process until Redis is back. Money never depends on this.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}
_last_warning = 0.0
# How long a process keeps to its own counts after Redis failed, before trying it again.
RETRY_AFTER_SECONDS = 5.0
_down_until = 0.0


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


def redis_client() -> aioredis.Redis | None:
    """The shared Redis client of this event loop, or None to use local state."""
    if not settings.REDIS_URL or time.monotonic() < _down_until:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # Short timeouts: a Redis that hangs must not hold requests longer than a miss.
        client = CancellableRedis.from_url(settings.REDIS_URL, socket_timeout=0.25,
                                           socket_connect_timeout=0.25)
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
