"""Requests refused for money (402) or a limit (429), counted for the user's usage list.

A refusal must cost the database nothing on the request path (a client looping on an empty
wallet would otherwise turn each refusal into an INSERT): this process counts them in memory
per key, minute, model, endpoint and reason, and writes the counts in one statement at most
every ``ROUTER_REFUSALS_FLUSH_MS``, and when it stops (``flush_refusals``, called by
``wait_for_settlements``). Counts are kept for at most ``MAX_GROUPS`` groups between writes:
past that, new groups are dropped and counted in ``router_refusals_dropped_total`` (memory
stays bounded whatever a client sends; the groups already counted still are).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings

from billing.models import RefusedRequests
from billing.services.refusals import RefusalCount, refusals_record
from proxy.ground.errors import ApiError
from proxy.ground.metrics import REFUSALS_DROPPED
from proxy.ground.orm_thread import recycled
from proxy.money.background import tracked
from proxy.selectors import Caller

logger = logging.getLogger("proxy.charging")

MAX_GROUPS = 10_000

Reason = RefusedRequests.Reason
GroupKey = tuple[int, datetime, int, str, str, str]  # key, minute, status, reason, model, endpoint


@dataclass
class _Group:
    user_id: int
    count: int
    message: str
    last_request_id: str


class RefusalTally:
    """One event loop's counts, and the write that is scheduled for them."""

    def __init__(self) -> None:
        self.groups: dict[GroupKey, _Group] = {}
        self.scheduled: asyncio.TimerHandle | None = None

    def note(self, key: GroupKey, user_id: int, message: str, request_id: str) -> None:
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                REFUSALS_DROPPED.inc()
                return
            self.groups[key] = _Group(user_id, 1, message, request_id)
        else:
            group.count += 1
            group.message, group.last_request_id = message, request_id
        if self.scheduled is None:
            loop = asyncio.get_running_loop()
            self.scheduled = loop.call_later(settings.ROUTER_REFUSALS_FLUSH_MS / 1000,
                                             lambda: tracked(self.flush()))

    async def flush(self) -> None:
        if self.scheduled is not None:
            self.scheduled.cancel()
            self.scheduled = None
        groups, self.groups = self.groups, {}
        if not groups:
            return
        counts = [RefusalCount(user_id=group.user_id, api_key_id=key[0], minute=key[1],
                               status=key[2], reason=key[3], model=key[4], endpoint=key[5],
                               count=group.count, message=group.message,
                               last_request_id=group.last_request_id)
                  for key, group in groups.items()]
        try:
            await sync_to_async(recycled, thread_sensitive=False)(
                lambda: refusals_record(counts=counts))
        except Exception:
            # What users are shown of their refusals, not money: lost counts are logged,
            # never retried in a loop that could grow while the database is away.
            logger.exception("%d refused-request counts could not be written", len(counts))


_tallies: dict[asyncio.AbstractEventLoop, RefusalTally] = {}


def _tally() -> RefusalTally:
    loop = asyncio.get_running_loop()
    tally = _tallies.get(loop)
    if tally is None:
        tally = _tallies[loop] = RefusalTally()
    return tally


def reason_of(error: ApiError) -> str | None:
    """The usage list's reason for a refusal, or None for an error that is not one."""
    if error.status == 429:
        return Reason.RATE_LIMIT
    if error.status == 402:
        if error.reason == "balance":
            return Reason.BALANCE
        return Reason.MEMBER_BUDGET if error.reason.startswith("member") else Reason.KEY_CAP
    return None


def note_refusal(*, caller: Caller, model: str, endpoint: str, error: ApiError,
                 request_id: str) -> None:
    """Count ``error`` if it refused the request for money or a limit."""
    reason = reason_of(error)
    if reason is None:
        return
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    _tally().note((caller.api_key_id, minute, error.status, reason, model, endpoint),
                  caller.user_id, error.message, request_id)


def forget_refusals() -> None:
    """Drop every count not written yet (tests: one test's counts must not reach the next
    test's database)."""
    for tally in list(_tallies.values()):
        tally.groups = {}


async def flush_refusals() -> None:
    """Write this loop's counts now (graceful shutdown, tests)."""
    tally = _tallies.get(asyncio.get_running_loop())
    if tally is not None:
        await tally.flush()
