"""Every key the router writes in Redis starts with ROUTER_REDIS_PREFIX, so that deployments
sharing one Redis (or one whose database was recreated under another name) never mix their
limits, worker slots, circuits, cache or Celery queues."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from django.core.cache import cache

from proxy.ground import shared_state
from proxy.limits import Limits, Scope, limits_admit
from proxy.upstream.breaker import ALLOWED_CLEAN, REFUSED, breaker_allows, breaker_failure
from proxy.upstream.capacity import slot_acquire
from router_admin.celery import app as celery_app

T = TypeVar("T")


def in_new_instance(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run in a fresh event loop with a fresh Redis client, as another process would."""

    async def in_loop() -> T:
        try:
            return await scenario()
        finally:
            await shared_state.close_redis_clients()

    shared_state.reset_for_tests()
    return asyncio.run(in_loop())


def key_limited(rpm: int | None = None) -> list[Scope]:
    return [Scope("key:1", Limits(rpm=rpm, tpm=1000, concurrency=5))]


async def exercise_everything() -> None:
    """One admission (window, tokens, in flight), one worker slot, one breaker failure."""
    admission = await limits_admit(scopes=key_limited(rpm=10), request_id="r1", tokens=10)
    assert (admission.allowed, admission.shared) == (True, True)
    assert await slot_acquire(3, 2, "r1")
    await breaker_failure(3)


def test_limits_slots_breakers_cache_and_celery_keys_all_start_with_the_prefix(
        redis_db, settings):
    prefix = settings.ROUTER_REDIS_PREFIX
    in_new_instance(exercise_everything)
    cache.set("probe", 1)
    celery_app.send_task("proxy.tasks.workers_probe")  # queued: no worker is running

    keys = set(redis_db.scan_iter(count=1000))
    assert {f"{prefix}limits:key:1:window", f"{prefix}limits:key:1:tokens",
            f"{prefix}limits:key:1:inflight", f"{prefix}inflight:3",
            f"{prefix}breaker:3"} <= keys
    assert any(key.startswith(f"{prefix}cache:") for key in keys)
    assert f"{prefix}celery:celery" in keys  # the default queue
    assert [key for key in keys if not key.startswith(prefix)] == []


def test_deployments_with_other_prefixes_share_one_redis_without_seeing_each_others_state(
        redis_db, settings):
    settings.ROUTER_BREAKER_FAILURES = 1
    settings.ROUTER_REDIS_PREFIX = "router:first:"
    one = key_limited(rpm=1)
    assert in_new_instance(lambda: limits_admit(scopes=one, request_id="a", tokens=1)).allowed
    assert in_new_instance(lambda: breaker_failure(3)) is True
    assert in_new_instance(lambda: slot_acquire(3, 1, "a"))
    assert not in_new_instance(lambda: limits_admit(scopes=one, request_id="b",
                                                    tokens=1)).allowed

    settings.ROUTER_REDIS_PREFIX = "router:second:"
    second = in_new_instance(lambda: limits_admit(scopes=one, request_id="b", tokens=1))
    assert (second.allowed, second.shared) == (True, True)  # in Redis, in its own window
    assert in_new_instance(lambda: breaker_allows(3)) == ALLOWED_CLEAN
    assert in_new_instance(lambda: slot_acquire(3, 1, "b"))

    settings.ROUTER_REDIS_PREFIX = "router:first:"  # and the first still sees only its own
    assert not in_new_instance(lambda: limits_admit(scopes=one, request_id="c",
                                                    tokens=1)).allowed
    assert in_new_instance(lambda: breaker_allows(3)) == REFUSED
    assert not in_new_instance(lambda: slot_acquire(3, 1, "c"))
    assert {key.split(":")[1] for key in redis_db.scan_iter()} == {"first", "second"}
