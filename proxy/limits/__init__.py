"""Rate limits per API key and per user: requests per minute (RPM), tokens per minute (TPM)
and requests in flight (concurrency).

With ``REDIS_URL`` every router instance counts in the same Redis, so two instances together
let through exactly the limit; without it, or while Redis does not answer, each process
counts its own (``proxy.ground.shared_state`` warns). An admission is all or nothing: it is
checked in every scope and dimension, and counted in all of them only if all have room.

- RPM and TPM count over a sliding window of ``WINDOW_SECONDS``: the requests admitted in
  the last window, and their tokens. A request reserves its worst case (prompt plus
  ``max_tokens``) at admission; ``limits_correct_tokens`` replaces it by the actual count
  while the request is still in the window (afterwards it has already counted for a whole
  window at its estimate). A request whose estimate alone exceeds a TPM limit is refused
  whatever the window holds, and says it can never fit, as OpenAI does ("Request too
  large"): the caller should cap ``max_tokens`` so that it fits.
- Concurrency counts requests admitted and not yet released. A slot lapses after
  ``ROUTER_HOLD_TTL_SECONDS`` unreleased (a request cannot outlive its hold), so a process
  that dies cannot leak it.
- A refusal says how long until the refused limit has room (``retry_after_s``, rounded up
  to the millisecond; waiting that long is enough unless others take the room first). A
  full concurrency limit cannot know when a request will end: it says
  ``CONCURRENCY_RETRY_AFTER_S``.

Cost: one Redis round trip to admit (all scopes, all dimensions), and one to settle
(``limits_settle``: correct the tokens and release the slots together, the worker's slot
too; none when no scope limits TPM or concurrency and there is no worker slot to free),
whose reply nothing waits for (``_send_settle`` says why that is safe).
``limits_release`` alone ends a request that has no usage to count (it failed, or was
refused further on).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from proxy.ground.errors import ApiError
from proxy.ground.redis_pipeline import PipelinedRedis
from proxy.ground.shared_state import SlotAsk, redis_client, redis_failed
from proxy.limits import local_store, redis_store
from proxy.limits.base import DIMENSION_NAMES, NEVER, TOKENS, Limits, Scope, Verdict
from proxy.limits.headers import duration, ratelimit_headers, retry_headers
from router_admin.settings_cache import setting

logger = logging.getLogger(__name__)

__all__ = ["Admission", "Limits", "Refusal", "Scope", "SlotAsk", "limits_admit",
           "limits_asks_redis", "limits_correct_tokens",
           "limits_error", "limits_release", "limits_settle", "limits_settle_begin",
           "reset_local_limits"]

# The RPM and TPM window. A module constant so that tests can shorten it.
WINDOW_SECONDS = 60.0
# What a refusal for a full concurrency limit tells the client to wait.
CONCURRENCY_RETRY_AFTER_S = 1.0
# Slots released while Redis did not answer, to remove from it once it does (bounded: past
# that, the oldest lapse with their lease).
_unreleased: deque[tuple[str, str]] = deque(maxlen=10_000)


@dataclass(frozen=True)
class Refusal:
    scope: str  # its name, for logs ("key:123")
    who: str  # its label, for the client ("the API key sk-br-AbC...")
    dimension: str  # "requests per minute (RPM)", "tokens per minute (TPM)", ...
    limit: int
    used: int
    requested: int
    never_fits: bool  # the request alone is over the limit: retrying cannot help


@dataclass
class Admission:
    allowed: bool
    refused_by: str | None  # "key:123 requests per minute (RPM)"
    retry_after_s: float  # when refused: until the refused limit has room (0: never)
    headers: dict[str, str]  # x-ratelimit-*; on a refusal also retry-after(-ms)
    request_id: str = ""
    scopes: tuple[Scope, ...] = ()
    tokens: int = 0  # reserved at admission, then the actual count once corrected
    refusal: Refusal | None = None
    shared: bool = True  # counted in Redis (else in this process, where it is settled)
    maybe_in_redis: bool = False  # counted here after Redis failed to answer the admission
    released: bool = field(default=False, compare=False)
    # The worker's slot taken with the admission (its set and member), until a lease takes
    # it over (``take_slot``) or a release frees it.
    slot: tuple[str, str] | None = None

    def take_slot(self) -> list[tuple[str, str]]:
        """The slot taken with the admission, now the caller's to free (empty if none)."""
        slot, self.slot = self.slot, None
        return [slot] if slot else []


def _window_ms() -> int:
    return math.ceil(WINDOW_SECONDS * 1000)


def limits_asks_redis(scopes: Sequence[Scope]) -> bool:
    """Whether admitting a request in ``scopes`` waits for a round trip to Redis (there are
    limits to count, and Redis to count them in): only then is there a wait to overlap."""
    return (any(not scope.limits.unlimited for scope in scopes)
            and redis_client() is not None)


async def limits_admit(*, scopes: Sequence[Scope], request_id: str, tokens: int,
                       slot: SlotAsk | None = None, at_once: bool = False) -> Admission:
    """Admit a request (``tokens``: its worst case) in all its scopes, or in none; with
    ``slot``, take that worker slot in the same round trip if the request is admitted and
    one is free (``Admission.slot``). Without limits to count, no slot is taken here.
    ``at_once``: the script is written to Redis as soon as it is ready rather than with
    the rest of the loop's turn, for a caller that sends other work meanwhile."""
    if tokens < 0:
        raise ValueError("tokens cannot be negative")
    if not request_id or request_id.startswith("#"):
        raise ValueError(f"Not a request id: {request_id!r}")
    limited = tuple(scope for scope in scopes if not scope.limits.unlimited)
    if not limited:
        return Admission(True, None, 0.0, {}, request_id=request_id, tokens=tokens)
    window_ms = _window_ms()
    options = {"request_id": request_id, "tokens": tokens, "window_ms": window_ms,
               "lease_ms": setting("ROUTER_HOLD_TTL_SECONDS") * 1000,
               "busy_retry_ms": math.ceil(CONCURRENCY_RETRY_AFTER_S * 1000)}
    client = redis_client()
    verdict: Verdict | None = None
    slot_taken = False
    if client is not None and await _settle_in_redis(client):
        try:
            verdict, slot_taken = await redis_store.admit(client, limited, slot=slot,
                                                          at_once=at_once, **options)
        except RedisError as error:
            # The script may have run and only its answer been lost: the release then
            # removes the slot from Redis too; the window's counts lapse with the window.
            redis_failed(error)
    shared = verdict is not None
    if verdict is None:
        verdict = local_store.admit(limited, **options)
    headers = ratelimit_headers(limited, verdict, tokens=tokens, window_ms=window_ms)
    admission = Admission(verdict.allowed, None, 0.0, headers, request_id=request_id,
                          scopes=limited, tokens=tokens, shared=shared,
                          maybe_in_redis=not shared and client is not None)
    if slot_taken and slot is not None:
        admission.slot = (slot.key, request_id)
    if not verdict.allowed:
        _refused(admission, verdict)
    return admission


def _refused(admission: Admission, verdict: Verdict) -> None:
    scope = admission.scopes[verdict.refused_scope]
    dimension = DIMENSION_NAMES[verdict.dimension]
    limit = (scope.limits.rpm, scope.limits.tpm, scope.limits.concurrency)[verdict.dimension - 1]
    assert limit is not None
    admission.refused_by = f"{scope.name} {dimension}"
    admission.refusal = Refusal(
        scope=scope.name, who=scope.label, dimension=dimension, limit=limit,
        used=verdict.used,
        requested=admission.tokens if verdict.dimension == TOKENS else 1,
        never_fits=verdict.retry_ms == NEVER)
    if verdict.retry_ms == NEVER:
        # OpenAI's clients retry a 429 unless told not to; this one cannot succeed.
        admission.headers["x-should-retry"] = "false"
    else:
        admission.retry_after_s = verdict.retry_ms / 1000
        admission.headers.update(retry_headers(verdict.retry_ms))


async def limits_correct_tokens(admission: Admission, *, actual_tokens: int) -> None:
    """Count the request's actual tokens instead of the estimate it reserved."""
    rest = _settle_begin(admission, actual_tokens=actual_tokens, release=False)
    if rest is not None:
        await rest


async def limits_release(admission: Admission) -> None:
    """The request ended: free its concurrency slots (and the worker's slot taken with
    the admission, if no lease took it over). Calling it again does nothing."""
    rest = _settle_begin(admission, actual_tokens=None, release=True,
                         also_release=admission.take_slot())
    if rest is not None:
        await rest


async def limits_settle(admission: Admission, *, actual_tokens: int,
                        also_release: Sequence[tuple[str, str]] = ()) -> None:
    """Both at once, in one round trip: correct the tokens and release the slots, with
    ``also_release``: other in-flight entries of the request to remove in the same trip
    (its worker's slot, ``Lease.hand_over``)."""
    rest = limits_settle_begin(admission, actual_tokens=actual_tokens,
                               also_release=also_release)
    if rest is not None:
        await rest


def limits_settle_begin(admission: Admission, *, actual_tokens: int,
                        also_release: Sequence[tuple[str, str]] = ()
                        ) -> Coroutine[Any, Any, bool] | None:
    """``limits_settle`` as far as it goes without waiting: None when that was all (the
    usual case: counted in this process, or the command sent to Redis, whose reply nobody
    waits for), else the rest to await (Redis has no connection open yet). The end of a
    request that is answered whole needs no task of its own this way."""
    return _settle_begin(admission, actual_tokens=actual_tokens, release=True,
                         also_release=[*also_release, *admission.take_slot()])


def _settle_begin(admission: Admission, *, actual_tokens: int | None, release: bool,
                  also_release: Sequence[tuple[str, str]] = ()
                  ) -> Coroutine[Any, Any, bool] | None:
    correct: tuple[Scope, ...] = ()
    freed: tuple[Scope, ...] = ()
    request_id = admission.request_id
    if admission.allowed:
        if actual_tokens is not None and actual_tokens != admission.tokens:
            admission.tokens = actual_tokens
            correct = tuple(scope for scope in admission.scopes
                            if scope.limits.tpm is not None)
        if release and not admission.released:
            admission.released = True
            freed = tuple(scope for scope in admission.scopes
                          if scope.limits.concurrency is not None)
        if not admission.shared:
            if correct:
                local_store.correct_tokens(correct, request_id=request_id,
                                           actual_tokens=admission.tokens,
                                           window_ms=_window_ms())
            if freed:
                local_store.release(freed, request_id=request_id)
            correct = ()
            if not admission.maybe_in_redis:
                freed = ()
    if not correct and not freed and not also_release:
        return None
    _unreleased.extend(redis_store.in_flight_slots(freed, request_id))
    _unreleased.extend(also_release)
    client = redis_client()
    if client is None:
        return None
    # Should this fail, the estimate stays counted: stricter than the truth, for one
    # window.
    return _send_settle(client, request_id=request_id, correct=correct,
                        actual_tokens=admission.tokens, at_once=bool(freed))


def _send_settle(client: PipelinedRedis, *, request_id: str, correct: tuple[Scope, ...],
                 actual_tokens: int, at_once: bool) -> Coroutine[Any, Any, bool] | None:
    """Settle in Redis, with the slots released while it did not answer, without waiting
    for the reply (handled when it comes); None once sent, else the round trip to await
    (no connection open yet).

    The end of a request need not wait a round trip before its answer goes (one round trip
    less at concurrency 1). Every admission of this process goes on the same connection
    after it, so the client's next request sees it here whatever happens. ``at_once`` (a
    concurrency slot of the client's is freed): it is written before the answer, in a
    write of its own, so that the next request sees it on any instance too, and a client
    calling one request after another at its concurrency limit is not refused for the one
    that just ended. Otherwise it goes with the other commands of this turn of the loop
    (one write for many: a few microseconds later, and a token count or a worker's slot
    that lingers that long refuses nobody wrongly)."""
    slots = list(_unreleased)
    _unreleased.clear()
    if not slots and not correct:
        return None
    reply = redis_store.send_settle(client, request_id=request_id, correct=correct,
                                    actual_tokens=actual_tokens, window_ms=_window_ms(),
                                    release=slots, at_once=at_once)
    if reply is None:
        return _settle_waiting(client, slots, request_id=request_id, correct=correct,
                               actual_tokens=actual_tokens)
    reply.add_done_callback(lambda done: _settled(done, slots))
    return None


async def _settle_in_redis(client: PipelinedRedis) -> bool:
    """Free in Redis the slots released while it did not answer, waiting for it: kept for
    later again should it still not answer (False), as a slot left behind by a short outage
    would otherwise stay taken for its whole lease."""
    slots = list(_unreleased)
    _unreleased.clear()
    if not slots:
        return True
    return await _settle_waiting(client, slots)


async def _settle_waiting(client: PipelinedRedis, slots: list[tuple[str, str]], *,
                          request_id: str = "", correct: tuple[Scope, ...] = (),
                          actual_tokens: int = 0) -> bool:
    try:
        await redis_store.settle(client, request_id=request_id, correct=correct,
                                 actual_tokens=actual_tokens, window_ms=_window_ms(),
                                 release=slots)
    except RedisError as error:
        _settle_failed(error, slots)
        return False
    return True


def _settled(reply: asyncio.Future[object], slots: list[tuple[str, str]]) -> None:
    error = None if reply.cancelled() else reply.exception()
    if isinstance(error, RedisError):
        _settle_failed(error, slots)
    elif error is not None:
        logger.error("settling the limits in Redis failed", exc_info=error)


def _settle_failed(error: RedisError, slots: list[tuple[str, str]]) -> None:
    redis_failed(error)
    _unreleased.extendleft(reversed(slots))


def limits_error(admission: Admission) -> ApiError:
    """The 429 for a refused admission, worded like OpenAI's, with its headers."""
    refusal = admission.refusal
    assert refusal is not None
    if refusal.never_fits:
        message = (f"Request too large for {refusal.who} on {refusal.dimension}: Limit "
                   f"{refusal.limit}, Requested {refusal.requested}. The request can never "
                   "fit this limit: reduce the input or max_tokens.")
    else:
        message = (f"Rate limit reached for {refusal.who} on {refusal.dimension}: Limit "
                   f"{refusal.limit}, Used {refusal.used}, Requested {refusal.requested}. "
                   f"Please try again in {duration(round(admission.retry_after_s * 1000))}.")
    return ApiError(429, message, "rate_limit_exceeded", code="rate_limit_exceeded",
                    headers=dict(admission.headers), reason="rate_limit")


def reset_local_limits() -> None:
    local_store.reset()
    _unreleased.clear()
