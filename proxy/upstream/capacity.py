"""How many requests each worker has in flight, against its ``max_concurrency``.

With Redis the count is shared by every router instance: a sorted set per worker of the
requests holding a slot, scored by when the slot lapses, so a process that dies without
releasing its slots cannot leak them for longer than ``SLOT_LEASE_SECONDS``. Without
Redis each process counts its own.
"""

from __future__ import annotations

import time
from collections import defaultdict

from redis.exceptions import RedisError

from proxy.ground.shared_state import (
    RedisScript,
    SlotAsk,
    redis_client,
    redis_failed,
    redis_key,
)

# A slot lapses after this long unless released; longer than any request may take.
SLOT_LEASE_SECONDS = 3600.0

# KEYS[1] = the worker's set; ARGV = now, limit, request id, lease. 1 when a slot was taken.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])))
return 1
"""

_acquire_script = RedisScript(_ACQUIRE)

_local: defaultdict[int, set[str]] = defaultdict(set)


def _key(worker_id: int) -> str:
    return redis_key(f"inflight:{worker_id}")


async def slot_acquire(worker_id: int, limit: int, request_id: str) -> bool:
    client = redis_client()
    if client is not None:
        try:
            return bool(await _acquire_script.run(client, [_key(worker_id)],
                                                  [time.time(), limit, request_id,
                                                   SLOT_LEASE_SECONDS]))
        except RedisError as error:
            redis_failed(error)
    holders = _local[worker_id]
    if len(holders) >= limit:
        return False
    holders.add(request_id)
    return True


def slot_ask(worker_id: int, limit: int) -> SlotAsk:
    """A slot of this worker, for another script to take in the same round trip (the
    request's admission, ``proxy.limits.limits_admit``)."""
    return SlotAsk(key=_key(worker_id), limit=limit, lease_s=SLOT_LEASE_SECONDS)


def slot_hand_over(worker_id: int, request_id: str) -> list[tuple[str, str]]:
    """Free the slot here, and return the (set, request id) pair to remove from Redis, for
    a caller that removes it together with other work in one round trip (the request's
    limits, ``proxy.limits.limits_settle``); empty without Redis."""
    _local[worker_id].discard(request_id)
    return [(_key(worker_id), request_id)] if redis_client() is not None else []


async def slot_release(worker_id: int, request_id: str) -> None:
    # Both places: the slot may have been taken locally while Redis was away.
    _local[worker_id].discard(request_id)
    client = redis_client()
    if client is not None:
        try:
            await client.zrem(_key(worker_id), request_id)
        except RedisError as error:
            redis_failed(error)


async def in_flight(worker_id: int) -> int:
    client = redis_client()
    if client is not None:
        try:
            return int(await client.zcount(_key(worker_id), time.time(), "+inf"))
        except RedisError as error:
            redis_failed(error)
    return len(_local[worker_id])


def reset_local_slots() -> None:
    _local.clear()
