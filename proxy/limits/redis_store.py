"""The limits every router instance shares: one Lua script per step, so that a request is
checked and counted in all its scopes atomically, in one round trip.

Per scope three keys (``<ROUTER_REDIS_PREFIX>limits:<scope>:window``, ``:tokens``,
``:inflight``): its window (a sorted set of request ids scored by admission time), its
tokens (a hash of request id -> tokens, plus ``#total``; kept only while the scope has a
TPM limit), and its requests in flight (a sorted set of request ids scored by when their
lease lapses, so a process that dies cannot leak its slots for longer than the lease).
Times are Redis's own clock in whole milliseconds: one clock for every instance, and
numbers small enough that Lua (which writes numbers with 14 digits) hands them to Redis
exactly, where microseconds would be rounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.ground.shared_state import RedisScript, SlotAsk, redis_key
from proxy.limits.base import Scope, ScopeCount, Verdict

# KEYS: three per scope (window, tokens, in flight). ARGV: window ms, lease ms, request id,
# tokens, retry ms for a full concurrency limit, then per scope rpm, tpm and concurrency
# (-1: unlimited). Returns allowed, refused scope (1-based), dimension, retry ms (-1:
# never), used, then per scope the requests and tokens in its window before this one and,
# on a refusal, the ms until that window is empty. Checks every scope before writing to any.
# With one more key (a worker's in-flight set, ``proxy.upstream.capacity``) and two more
# arguments (its limit, its lease in seconds), an admitted request also takes a slot there
# if one is free, and the reply ends with 1 (taken) or 0: one round trip on the way in.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local id, need, busy_retry = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local horizon = now - window
local verdict = {1, 0, 0, 0, 0}
local rank = -1
local counts, limits = {}, {}
local scopes = math.floor(#KEYS / 3)
local slot_key = nil
if #KEYS > 3 * scopes then slot_key = KEYS[#KEYS] end

-- Keep the refusal that takes longest to clear: waiting it out clears the others too.
local function refuse(scope, dimension, retry, used)
  local r = retry
  if retry < 0 then r = math.huge end
  if r > rank then
    rank = r
    verdict = {0, scope, dimension, retry, used}
  end
end

-- Oldest first: when enough requests have left the window to free `excess` tokens.
local function tokens_free_in(w, tk, excess)
  local freed, start = 0, 0
  while true do
    local batch = redis.call('ZRANGE', w, start, start + 99, 'WITHSCORES')
    if #batch == 0 then return window end
    for j = 1, #batch, 2 do
      freed = freed + tonumber(redis.call('HGET', tk, batch[j]) or '0')
      if freed >= excess then return tonumber(batch[j + 1]) + window - now end
    end
    start = start + 100
  end
end

for i = 1, scopes do
  local w, tk, c = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local rpm, tpm, conc = tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4]),
                         tonumber(ARGV[3 * i + 5])
  limits[i] = {rpm, tpm, conc}
  local requests, tokens = 0, 0
  if tpm >= 0 then
    local gone = redis.call('ZRANGEBYSCORE', w, '-inf', horizon)
    if #gone > 0 then
      local freed = 0
      for _, old in ipairs(gone) do
        freed = freed + tonumber(redis.call('HGET', tk, old) or '0')
        redis.call('HDEL', tk, old)
      end
      redis.call('ZREMRANGEBYSCORE', w, '-inf', horizon)
      if freed ~= 0 then redis.call('HINCRBY', tk, '#total', -freed) end
    end
    tokens = tonumber(redis.call('HGET', tk, '#total') or '0')
  elseif rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', w, '-inf', horizon)
  end
  if rpm >= 0 or tpm >= 0 then
    requests = redis.call('ZCARD', w)
    if rpm >= 0 and requests >= rpm then
      if rpm == 0 then refuse(i, 1, -1, requests) else
        local nth = redis.call('ZRANGE', w, requests - rpm, requests - rpm, 'WITHSCORES')
        refuse(i, 1, tonumber(nth[2]) + window - now, requests)
      end
    end
    if tpm >= 0 and tokens + need > tpm then
      if need > tpm then refuse(i, 2, -1, tokens) else
        refuse(i, 2, tokens_free_in(w, tk, tokens + need - tpm), tokens)
      end
    end
  end
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', c, '-inf', now)
    local in_flight = redis.call('ZCARD', c)
    if in_flight >= conc and not redis.call('ZSCORE', c, id) then
      refuse(i, 3, conc == 0 and -1 or busy_retry, in_flight)
    end
  end
  counts[i] = {requests, tokens, 0}
end

if verdict[1] == 0 then
  -- Only a refusal reports when each window is empty again (an admission just filled it).
  for i = 1, #counts do
    if counts[i][1] > 0 then
      local newest = redis.call('ZRANGE', KEYS[3 * i - 2], -1, -1, 'WITHSCORES')
      counts[i][3] = tonumber(newest[2]) + window - now
    end
  end
else
  for i = 1, scopes do
    local w, tk, c = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    if limits[i][1] >= 0 or limits[i][2] >= 0 then
      redis.call('ZADD', w, now, id)
      redis.call('PEXPIRE', w, window + 1000)
    end
    if limits[i][2] >= 0 then
      local before = tonumber(redis.call('HGET', tk, id) or '0')
      redis.call('HSET', tk, id, need)
      redis.call('HINCRBY', tk, '#total', need - before)
      redis.call('PEXPIRE', tk, window + 1000)
    elseif limits[i][1] >= 0 then
      -- Tokens left from when the scope had a TPM limit would no longer leave with the
      -- requests they belong to.
      redis.call('DEL', tk)
    end
    if limits[i][3] >= 0 then
      redis.call('ZADD', c, now + lease, id)
      redis.call('PEXPIRE', c, lease + 1000)
    end
  end
end
for i = 1, #counts do
  for _, v in ipairs(counts[i]) do table.insert(verdict, v) end
end
if slot_key then
  local taken = 0
  if verdict[1] == 1 then
    local slot_limit = tonumber(ARGV[3 * scopes + 6])
    local slot_lease = tonumber(ARGV[3 * scopes + 7])
    local now_s = now / 1000
    redis.call('ZREMRANGEBYSCORE', slot_key, '-inf', now_s)
    if redis.call('ZSCORE', slot_key, id) then
      taken = 1
    elseif redis.call('ZCARD', slot_key) < slot_limit then
      redis.call('ZADD', slot_key, now_s + slot_lease, id)
      redis.call('EXPIRE', slot_key, math.ceil(slot_lease))
      taken = 1
    end
  end
  table.insert(verdict, taken)
end
return verdict
"""

# Settle a request, and release slots. KEYS: `pairs` (window, tokens) pairs of the scopes
# whose tokens to correct, then in-flight sets. ARGV: window ms, request id, actual tokens,
# pairs, then per in-flight set the request id to remove from it (this request's, or those
# of releases that could not reach Redis earlier). A request that already left the window
# is not corrected: it counted for a whole window at its estimate.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, actual, pairs = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, 2 * pairs, 2 do
  local admitted = redis.call('ZSCORE', KEYS[i], id)
  if admitted and tonumber(admitted) > now - tonumber(ARGV[1]) then
    local before = redis.call('HGET', KEYS[i + 1], id)
    if before then
      redis.call('HSET', KEYS[i + 1], id, actual)
      redis.call('HINCRBY', KEYS[i + 1], '#total', actual - tonumber(before))
    end
  end
end
for i = 2 * pairs + 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[i - 2 * pairs + 4]) end
return 0
"""


_admit_script = RedisScript(_ADMIT)
_settle_script = RedisScript(_SETTLE)


# Each scope's three keys (its window, its tokens, its requests in flight), by prefix and
# scope name: built once instead of three strings and three prefix lookups per scope on
# every admission and settle. Bounded: forgotten whole when full.
_scope_keys: dict[tuple[str, str], tuple[str, str, str]] = {}
MAX_SCOPE_KEYS = 10_000


def _keys_of(name: str) -> tuple[str, str, str]:
    prefix = redis_key("")
    keys = _scope_keys.get((prefix, name))
    if keys is None:
        if len(_scope_keys) >= MAX_SCOPE_KEYS:
            _scope_keys.clear()
        keys = _scope_keys[(prefix, name)] = (f"{prefix}limits:{name}:window",
                                               f"{prefix}limits:{name}:tokens",
                                               f"{prefix}limits:{name}:inflight")
    return keys


def _limit(value: int | None) -> int:
    return -1 if value is None else value


async def admit(client: PipelinedRedis, scopes: Sequence[Scope], *, request_id: str,
                tokens: int, window_ms: int, lease_ms: int, busy_retry_ms: int,
                slot: SlotAsk | None = None, at_once: bool = False) -> tuple[Verdict, bool]:
    """The verdict, and whether the worker's slot ``slot`` asks for was taken with it
    (``at_once``: the script written at once, ``RedisScript.run``)."""
    keys: list[str] = []
    args: list[str | int | float] = [window_ms, lease_ms, request_id, tokens, busy_retry_ms]
    for scope in scopes:
        keys += _keys_of(scope.name)
        args += [_limit(scope.limits.rpm), _limit(scope.limits.tpm),
                 _limit(scope.limits.concurrency)]
    if slot is not None:
        keys.append(slot.key)
        args += [slot.limit, slot.lease_s]
    reply = [int(value) for value in await _admit_script.run(client, keys, args,
                                                             at_once=at_once)]
    counts = tuple(ScopeCount(*reply[5 + 3 * i:8 + 3 * i]) for i in range(len(scopes)))
    verdict = Verdict(allowed=reply[0] == 1, refused_scope=reply[1] - 1, dimension=reply[2],
                      retry_ms=reply[3], used=reply[4], counts=counts)
    return verdict, slot is not None and reply[-1] == 1


def in_flight_slots(scopes: Sequence[Scope], request_id: str) -> list[tuple[str, str]]:
    """The (in-flight set, request id) pairs that a release removes."""
    return [(_keys_of(scope.name)[2], request_id) for scope in scopes]


def _settle_command(*, request_id: str, correct: Sequence[Scope], actual_tokens: int,
                    window_ms: int, release: Sequence[tuple[str, str]]
                    ) -> tuple[list[str], list[str | int]]:
    keys: list[str] = []
    for scope in correct:
        keys += _keys_of(scope.name)[:2]
    keys += [key for key, _ in release]
    args: list[str | int] = [window_ms, request_id, actual_tokens, len(correct)]
    args += [slot_request_id for _, slot_request_id in release]
    return keys, args


async def settle(client: PipelinedRedis, *, request_id: str, correct: Sequence[Scope],
                 actual_tokens: int, window_ms: int,
                 release: Sequence[tuple[str, str]]) -> None:
    keys, args = _settle_command(request_id=request_id, correct=correct,
                                 actual_tokens=actual_tokens, window_ms=window_ms,
                                 release=release)
    await _settle_script.run(client, keys, args)


def send_settle(client: PipelinedRedis, *, request_id: str, correct: Sequence[Scope],
                actual_tokens: int, window_ms: int, release: Sequence[tuple[str, str]],
                at_once: bool) -> asyncio.Future[Any] | None:
    """``settle`` sent without waiting for its reply (``RedisScript.send``)."""
    keys, args = _settle_command(request_id=request_id, correct=correct,
                                 actual_tokens=actual_tokens, window_ms=window_ms,
                                 release=release)
    return _settle_script.send(client, keys, args, at_once=at_once)
