"""Keeping the request path's connections warm while a process is quiet.

A request after a quiet spell paid for more than its own work (``bench/idle_ttft.py``): its
Redis script, its reservation in PostgreSQL and its upstream call each found the process
behind them asleep (from a bare client on a busy machine, a PING to a Redis idle for 10 s
took 1-8.5 ms, 0.3-0.5 ms when it was touched every second; an empty statement to an idle
PostgreSQL backend 2-5 ms, 0.3-0.6), and the upstream's connection closed (the router
reuses none idle past ``KEEPALIVE_SECONDS``), so the call waited for a new one.

So each process that called an upstream in the last ``QUIET_FOR_GOOD_SECONDS`` touches,
every ``ROUTER_KEEP_WARM_MS`` with no upstream call meanwhile: its Redis connection (a
PING), each idle connection of its PostgreSQL pool (an empty statement: a broken one is
replaced before a request finds it) and, for each upstream it called, a connection opened
ahead of the next call. Under traffic it does nothing (the requests keep everything warm);
after five quiet minutes it stops touching anything, like the lookups' keeper. Each touch
is what a request would do first anyway, and no request ever waits for one. What it cannot
keep warm is the machine itself (README, Performance: target 5).
"""

from __future__ import annotations

import asyncio
import logging
import time

from billing.services.hot_path import check_pool
from proxy.ground.shared_state import ping_redis
from proxy.upstream.http_client import existing_upstream_session
from router_admin.settings_cache import setting

logger = logging.getLogger(__name__)

# A process quiet for this long is left to sleep: its next request pays the wake-up, as
# it would without this (the lookups' keeper stops after as long: proxy.ground.cache).
QUIET_FOR_GOOD_SECONDS = 300.0

_keepers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


async def touch_once(period: float) -> bool:
    """One pass: touch what the request path uses, unless a call went upstream in the last
    ``period`` seconds or none in the last ``QUIET_FOR_GOOD_SECONDS``. Whether it touched."""
    session = existing_upstream_session()
    if session is None or not session.last_call:
        return False  # no request went upstream yet: nothing of it to keep warm
    quiet = time.monotonic() - max(session.last_call.values())
    if quiet < period or quiet >= QUIET_FOR_GOOD_SECONDS:
        return False
    outcomes = await asyncio.gather(ping_redis(), check_pool(),
                                    session.warm(QUIET_FOR_GOOD_SECONDS),
                                    return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            # Each is what the next request would try first; it will meet the failure and
            # answer for it as it always did. Nothing here is a request's concern.
            logger.debug("keeping connections warm failed", exc_info=outcome)
    return True


async def _keep(period: float) -> None:
    while True:
        await asyncio.sleep(period)
        await touch_once(period)


def start_keep_warm() -> asyncio.Task[None] | None:
    """Start this event loop's keeper (the ASGI server's startup); None when
    ``ROUTER_KEEP_WARM_MS`` is 0."""
    period = setting("ROUTER_KEEP_WARM_MS") / 1000
    if period <= 0:
        return None
    loop = asyncio.get_running_loop()
    keeper = _keepers.get(loop)
    if keeper is None or keeper.done():
        keeper = _keepers[loop] = loop.create_task(_keep(period), name="keep-warm")
    return keeper


async def stop_keep_warm() -> None:
    """End this event loop's keeper (the ASGI server's shutdown), before its connections
    are closed."""
    keeper = _keepers.pop(asyncio.get_running_loop(), None)
    if keeper is not None:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
