"""Writing the audit trail. Services call ``audit_record`` inside their own transaction,
right after the change, so the row and the change commit or roll back together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import models, transaction

from audit.actors import Actor
from audit.models import AuditEntry
from audit.snapshots import Snapshot, shown_changes

_LABEL_MAX = AuditEntry._meta.get_field("object_label").max_length
_REASON_MAX = AuditEntry._meta.get_field("reason").max_length


class AuditOutsideTransaction(RuntimeError):
    """A caller recorded a change outside the transaction that makes it: the change could
    commit without its row, or the row without its change."""


@dataclass(frozen=True)
class AuditObject:
    """What a row is about, when that is not one model instance (a voucher batch)."""

    type: str
    id: str
    label: str

    @classmethod
    def of(cls, obj: models.Model) -> AuditObject:
        return cls(type=obj._meta.label_lower, id=str(obj.pk), label=str(obj)[:_LABEL_MAX])


Change = tuple[models.Model | AuditObject, Snapshot | None, Snapshot | None]


def audit_record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model | AuditObject,
    before: Snapshot | None,
    after: Snapshot | None,
    reason: str = "",
) -> AuditEntry | None:
    """Append one row: ``actor`` did ``action`` to ``obj``, whose fields went from ``before``
    (None: created) to ``after`` (None: deleted). Secrets are stored only as whether they
    changed. A change that changed nothing writes nothing and returns None."""
    entries = audit_record_each(actor=actor, action=action, changes=[(obj, before, after)],
                                reason=reason)
    return entries[0] if entries else None


def audit_record_each(*, actor: Actor, action: str, changes: Iterable[Change],
                      reason: str = "") -> list[AuditEntry]:
    """``audit_record`` for many objects changed by one action (vouchers voided together),
    in one INSERT."""
    if not transaction.get_connection().in_atomic_block:
        raise AuditOutsideTransaction(f"{action} must be recorded in its change's transaction.")
    rows = []
    for obj, before, after in changes:
        shown_before, shown_after = shown_changes(before, after)
        if before is not None and after is not None and not shown_before and not shown_after:
            continue
        target = obj if isinstance(obj, AuditObject) else AuditObject.of(obj)
        rows.append(AuditEntry(
            actor=actor.user, actor_label=actor.label, ip=actor.ip, action=action,
            object_type=target.type, object_id=target.id, object_label=target.label[:_LABEL_MAX],
            before=shown_before, after=shown_after, reason=(reason or "")[:_REASON_MAX],
        ))
    return AuditEntry.objects.bulk_create(rows) if rows else []
