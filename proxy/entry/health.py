"""Liveness and readiness for load balancers and orchestrators.

``/healthz`` answers while the process serves requests at all. ``/readyz`` answers 200 only
when this instance can do its job: the database and (when configured) Redis answer, and at
least one enabled worker exists; otherwise 503 naming what failed, so a load balancer
takes the instance out until it recovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse

from billing.services.hot_path import conninfo
from proxy.ground.orm_thread import recycled
from proxy.ground.responses import json_response
from proxy.models import Worker

CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(request: HttpRequest) -> HttpResponse:
    return json_response({"status": "ok"})


async def _database() -> None:
    if connection.vendor == "postgresql":
        # Its own short connection, not the pool's: the question is whether a new one works.
        async with await psycopg.AsyncConnection.connect(
                conninfo(), connect_timeout=int(CHECK_TIMEOUT_SECONDS)) as conn:
            await conn.execute("SELECT 1")
        return

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    await sync_to_async(recycled, thread_sensitive=False)(select_one)


async def _redis() -> None:
    if not settings.REDIS_URL:
        return
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_SECONDS,
                                     socket_connect_timeout=CHECK_TIMEOUT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _workers() -> None:
    exists = await sync_to_async(recycled, thread_sensitive=False)(
        Worker.objects.filter(enabled=True).exists)
    if not exists:
        raise RuntimeError("no enabled worker")


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": _database, "redis": _redis, "workers": _workers}


async def readyz(request: HttpRequest) -> HttpResponse:
    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS + 1)
        except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
            return f"failing: {error.__class__.__name__}"
        return "ok"

    results = dict(zip(CHECKS, await asyncio.gather(*(run(c) for c in CHECKS.values())),
                       strict=True))
    ready = all(result == "ok" for result in results.values())
    return json_response({"status": "ready" if ready else "not ready", "checks": results},
                         status=200 if ready else 503)
