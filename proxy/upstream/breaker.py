"""A circuit breaker per worker, shared by every router instance through Redis.

Closed: requests flow, failures are counted and a success resets the count. After
``ROUTER_BREAKER_FAILURES`` failures in a row it opens: the worker gets no requests for
``ROUTER_BREAKER_COOLDOWN_SECONDS``. Then it is half-open: exactly one trial request is let
through (across all instances); its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from proxy.ground.shared_state import redis_client, redis_failed, redis_key

# A trial that never reports back (its process died) frees the half-open slot after this.
TRIAL_TIMEOUT_SECONDS = 30.0

# KEYS[1] = the breaker's hash; ARGV = now, trial timeout. Returns 0 to refuse, 2 to let a
# request through a breaker with no failures on record, 1 through one with some.
_ALLOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 2 end
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return 1 end
local now = tonumber(ARGV[1])
if now < open_until then return 0 end
local trial_until = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
if now < trial_until then return 0 end
redis.call('HSET', KEYS[1], 'trial_until', now + tonumber(ARGV[2]))
return 1
"""
# ARGV = now, failures to open, cooldown. Returns 1 when this failure opened the breaker.
_FAILURE = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local in_trial = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0') > 0
if in_trial or failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[1]) + tonumber(ARGV[3]),
             'trial_until', 0)
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) + 3600))
  return 1
end
redis.call('EXPIRE', KEYS[1], 3600)
return 0
"""


@dataclass
class _Local:
    failures: int = 0
    open_until: float = 0.0
    trial_until: float = 0.0


_local: dict[int, _Local] = {}


def _key(worker_id: int) -> str:
    return redis_key(f"breaker:{worker_id}")


ALLOWED_CLEAN = 2  # allowed, and nothing to reset after a success
ALLOWED = 1
REFUSED = 0


async def breaker_allows(worker_id: int) -> int:
    """May a request go to this worker now (REFUSED, ALLOWED or ALLOWED_CLEAN)? Claims the
    half-open trial when it is due."""
    client = redis_client()
    now = time.time()
    if client is not None:
        try:
            return int(await client.eval(_ALLOW, 1, _key(worker_id), now,
                                         TRIAL_TIMEOUT_SECONDS))
        except RedisError as error:
            redis_failed(error)
    state = _local.get(worker_id)
    if state is None:
        return ALLOWED_CLEAN
    if state.open_until == 0:
        return ALLOWED
    if now < state.open_until or now < state.trial_until:
        return REFUSED
    state.trial_until = now + TRIAL_TIMEOUT_SECONDS
    return ALLOWED


async def breaker_success(worker_id: int) -> None:
    client = redis_client()
    if client is not None:
        try:
            await client.delete(_key(worker_id))
            return
        except RedisError as error:
            redis_failed(error)
    _local.pop(worker_id, None)


async def breaker_failure(worker_id: int) -> bool:
    """Count a failure; True when it opened (or re-opened) the breaker."""
    client = redis_client()
    now = time.time()
    threshold = settings.ROUTER_BREAKER_FAILURES
    cooldown = settings.ROUTER_BREAKER_COOLDOWN_SECONDS
    if client is not None:
        try:
            return bool(await client.eval(_FAILURE, 1, _key(worker_id), now, threshold,
                                          cooldown))
        except RedisError as error:
            redis_failed(error)
    state = _local.setdefault(worker_id, _Local())
    state.failures += 1
    if state.trial_until > 0 or state.failures >= threshold:
        state.open_until, state.trial_until = now + cooldown, 0.0
        return True
    return False


async def breaker_state(worker_id: int) -> str:
    """closed, open or half-open: for the admin and metrics."""
    client = redis_client()
    now = time.time()
    if client is not None:
        try:
            open_until = float(await client.hget(_key(worker_id), "open_until") or 0)
            if open_until == 0:
                return "closed"
            return "open" if now < open_until else "half-open"
        except RedisError as error:
            redis_failed(error)
    state = _local.get(worker_id)
    if state is None or state.open_until == 0:
        return "closed"
    return "open" if now < state.open_until else "half-open"


def reset_local_breakers() -> None:
    _local.clear()


def breaker_states_now(worker_ids: list[int]) -> dict[int, str]:
    """The breaker state of each worker, from synchronous code (the admin)."""
    from proxy.ground.shared_state import close_redis_clients

    async def read() -> dict[int, str]:
        try:
            return {worker_id: await breaker_state(worker_id) for worker_id in worker_ids}
        finally:
            await close_redis_clients()  # this loop ends here; so does its client

    return asyncio.run(read())
