"""A circuit breaker per worker, shared by every router instance through Redis.

Closed: requests flow, failures are counted and a success resets the count. After
``ROUTER_BREAKER_FAILURES`` failures in a row it opens: the worker gets no requests for
``ROUTER_BREAKER_COOLDOWN_SECONDS``. Then it is half-open: exactly one trial request is let
through (across all instances); its success closes the breaker, its failure opens it again.

With Redis, a request does not ask Redis whether a breaker lets it through: each process
keeps what Redis holds for the workers it uses (``_Snapshot``), read once when a worker is
first seen, refreshed in the background every ``ROUTER_BREAKER_REFRESH_MS`` (one pipelined
read for all of them; no request waits for it), and updated at once by its own failures
and successes, which go to Redis as they happen. Redis is asked only to claim a half-open
breaker's one trial. So another instance's breaker opening is seen here within the refresh
interval, at the price of a few more requests to a failing worker meanwhile (each of which
is failed over like any other failure).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.ground.shared_state import RedisScript, redis_client, redis_failed, redis_key
from router_admin.settings_cache import setting

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


_allow_script = RedisScript(_ALLOW)
_failure_script = RedisScript(_FAILURE)


@dataclass
class _Local:
    failures: int = 0
    open_until: float = 0.0
    trial_until: float = 0.0


# The breakers themselves, while there is no Redis (with Redis, ``_Snapshot`` keeps what was
# last read of them there).
_local: dict[int, _Local] = {}


class _Snapshot:
    """One event loop's view of the breakers in Redis (the ASGI server runs one per
    process)."""

    def __init__(self) -> None:
        self.states: dict[int, _Local | None] = {}  # None: no breaker on record (closed)
        self.read_at = time.monotonic()
        self.refreshing: asyncio.Task[None] | None = None

    def refresh_if_due(self, client: PipelinedRedis) -> None:
        due = time.monotonic() - self.read_at >= setting("ROUTER_BREAKER_REFRESH_MS") / 1000
        if due and self.refreshing is None:
            self.refreshing = asyncio.get_running_loop().create_task(self._refresh(client))

    async def _refresh(self, client: PipelinedRedis) -> None:
        try:
            ids = list(self.states)
            fresh = await _read(client, ids)
            self.states.update(zip(ids, fresh, strict=True))
            self.read_at = time.monotonic()
        except RedisError as error:
            redis_failed(error)
        finally:
            self.refreshing = None


_snapshots: dict[asyncio.AbstractEventLoop, _Snapshot] = {}


def _snapshot() -> _Snapshot:
    loop = asyncio.get_running_loop()
    found = _snapshots.get(loop)
    if found is None:
        found = _snapshots[loop] = _Snapshot()
    return found


async def _read(client: PipelinedRedis, worker_ids: list[int]) -> list[_Local | None]:
    """The breakers of ``worker_ids`` as Redis holds them, in one round trip."""
    rows = await client.execute_many([("HMGET", _key(worker_id), "failures", "open_until",
                                       "trial_until") for worker_id in worker_ids])
    return [None if all(value is None for value in row)
            else _Local(int(row[0] or 0), float(row[1] or 0), float(row[2] or 0))
            for row in rows]


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
            return await _allows_shared(client, worker_id, now)
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


async def _allows_shared(client: PipelinedRedis, worker_id: int, now: float) -> int:
    snapshot = _snapshot()
    if worker_id not in snapshot.states:
        # First seen by this process: read, once, rather than guess it closed.
        snapshot.states[worker_id] = (await _read(client, [worker_id]))[0]
    else:
        snapshot.refresh_if_due(client)
    seen = snapshot.states[worker_id]
    if seen is None:
        return ALLOWED_CLEAN
    if seen.open_until == 0:
        return ALLOWED
    if now < seen.open_until or now < seen.trial_until:
        return REFUSED
    # Half-open, as far as this process knows: Redis decides which request is the trial.
    verdict = int(await _allow_script.run(client, [_key(worker_id)],
                                          [now, TRIAL_TIMEOUT_SECONDS]))
    if verdict == REFUSED:
        seen.trial_until = now + TRIAL_TIMEOUT_SECONDS  # another instance's trial
    elif verdict == ALLOWED and seen.open_until:
        seen.trial_until = now + TRIAL_TIMEOUT_SECONDS
    else:
        snapshot.states[worker_id] = None  # closed meanwhile
    return verdict


def breaker_closed_in_memory(worker_id: int) -> int | None:
    """ALLOWED_CLEAN or ALLOWED when this process knows the worker's circuit (as kept from
    Redis) to be closed; None when it is open, half-open (whose trial Redis must grant) or
    not known yet. Never waits: for choosing a worker before asking Redis anything."""
    client = redis_client()
    if client is None:
        return None
    snapshot = _snapshot()
    if worker_id not in snapshot.states:
        return None
    snapshot.refresh_if_due(client)
    seen = snapshot.states[worker_id]
    if seen is None:
        return ALLOWED_CLEAN
    return ALLOWED if seen.open_until == 0 else None


async def breaker_success(worker_id: int) -> None:
    client = redis_client()
    if client is not None:
        try:
            await client.delete(_key(worker_id))
            _snapshot().states[worker_id] = None
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
            opened = bool(await _failure_script.run(client, [_key(worker_id)],
                                                    [now, threshold, cooldown]))
        except RedisError as error:
            redis_failed(error)
        else:
            states = _snapshot().states
            seen = states.get(worker_id) or _Local()
            seen.failures += 1
            if opened:
                seen.open_until, seen.trial_until = now + cooldown, 0.0
            states[worker_id] = seen
            return opened
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
    _snapshots.clear()


def breaker_states_now(worker_ids: list[int]) -> dict[int, str]:
    """The breaker state of each worker, from synchronous code (the admin)."""
    from proxy.ground.shared_state import close_redis_clients

    async def read() -> dict[int, str]:
        try:
            return {worker_id: await breaker_state(worker_id) for worker_id in worker_ids}
        finally:
            await close_redis_clients()  # this loop ends here; so does its client

    return asyncio.run(read())
