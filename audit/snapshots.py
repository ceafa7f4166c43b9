"""Field values as the audit trail keeps them: JSON-ready, and secrets reduced to words.

A snapshot holds the real values, secrets included, in memory only: that is how a changed
key is told from a kept one. ``shown_changes`` turns two snapshots into what is stored, and
a secret never gets past it, not even as its digest or ciphertext (either would let anyone
who reads the trail test guesses offline, or tie two rows to one key).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import models

Snapshot = dict[str, Any]

# Matched against every key of a snapshot or of a dict a service passes, so a secret field
# added later is masked without anyone remembering to list it. Foreign keys are never named
# so (KeyBudget.api_key is an id, not a secret).
SECRET_NAME = re.compile(r"password|digest|secret|encrypted|hash", re.IGNORECASE)

SECRET_SET, SECRET_UNSET = "set", "not set"
SECRET_CHANGED, SECRET_REMOVED = "changed", "removed"

_ABSENT = object()


def is_secret(key: str) -> bool:
    return bool(SECRET_NAME.search(key))


def snapshot(obj: models.Model, *, fields: Iterable[str] | None = None) -> Snapshot:
    """``obj``'s concrete field values by field name, foreign keys as ids; ``fields`` picks
    some (a name that is not a field raises). By default the primary key (the row names it)
    and auto_now timestamps (they change on every save) are left out."""
    if fields is None:
        chosen = [field for field in obj._meta.concrete_fields
                  if not field.primary_key and not getattr(field, "auto_now", False)]
    else:
        chosen = [obj._meta.get_field(name) for name in fields]
    return {field.name: json_value(field.value_from_object(obj)) for field in chosen}


def json_value(value: Any) -> Any:
    """``value`` as JSON can hold it, so that what is compared is what would be stored."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        # Normalised: a price typed as "1" and read back from the column as "1.000000" is one
        # value, not a change.
        return format(value.normalize(), "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    return value


def shown_changes(before: Snapshot | None, after: Snapshot | None
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What the trail stores: every key for a creation (no ``before``) or a deletion (no
    ``after``); for a change only the keys whose value changed, so two empty dicts mean
    nothing changed. A secret shows as set / not set, and after a change as changed or
    removed."""
    if before is None or after is None:
        return _whole(before), _whole(after)
    shown_before: dict[str, Any] = {}
    shown_after: dict[str, Any] = {}
    for key in dict.fromkeys([*before, *after]):
        old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if old == new:
            continue
        if is_secret(key):
            if old is not _ABSENT:
                shown_before[key] = _presence(old)
            if new is not _ABSENT:
                had = old is not _ABSENT and bool(old)
                shown_after[key] = (SECRET_REMOVED if not new
                                    else SECRET_CHANGED if had else SECRET_SET)
            continue
        if old is not _ABSENT:
            shown_before[key] = old
        if new is not _ABSENT:
            shown_after[key] = new
    return shown_before, shown_after


def _whole(values: Snapshot | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {key: _presence(value) if is_secret(key) else value for key, value in values.items()}


def _presence(value: Any) -> str:
    return SECRET_SET if value else SECRET_UNSET
