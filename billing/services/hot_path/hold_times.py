"""When each hold this process reserved was created: what lets its settle name the hold's
month partition (``statements.RESOLVE_AT_SQL``) instead of probing every month.

A hold is remembered when its reservation succeeds and forgotten once its resolution got an
answer from the database. A hold missing here (reserved by another process, or before this
one started) is still found, by the statements without a time: this is a shortcut, never
what decides whether a hold is charged.
"""

from __future__ import annotations

from datetime import datetime

# Holds in flight in one process are at most a few thousand; past this many, the oldest
# entries (requests that never settled, whose holds the sweeper resolves) are dropped.
LIMIT = 100_000

_created: dict[str, datetime] = {}


def remember(hold_id: str, created_at: datetime) -> None:
    if len(_created) >= LIMIT:
        # Dicts keep insertion order: the first key is the oldest reservation.
        _created.pop(next(iter(_created)), None)
    _created[hold_id] = created_at


def recall(hold_id: str) -> datetime | None:
    return _created.get(hold_id)


def forget(hold_id: str) -> None:
    _created.pop(hold_id, None)


def oldest(hold_ids: list[str]) -> datetime | None:
    """The earliest creation time of these holds; None when any of them is unknown."""
    times = [_created.get(hold_id) for hold_id in hold_ids]
    if not times or any(time is None for time in times):
        return None
    return min(times)  # type: ignore[type-var]
