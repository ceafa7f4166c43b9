"""The database itself keeps the audit trail append-only, as it does the ledger."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from audit.actors import Actor
from audit.models import AuditEntry
from proxy.services import worker_create, worker_set_enabled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def entry() -> AuditEntry:
    worker_create(name="up", kind="mock", models=[("m", "")])
    with transaction.atomic():
        worker_set_enabled(name="up", enabled=False, actor=Actor.cli())
    return AuditEntry.objects.get()


def _sql(statement: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def test_updating_an_audit_row_fails_at_the_database(entry):
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE audit_auditentry SET actor_label = 'someone else' WHERE id = %s",
             [entry.pk])
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("UPDATE audit_auditentry SET reason = 'rewritten'")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(after={"enabled": True})
    entry.refresh_from_db()
    assert (entry.actor_label, entry.reason, entry.after) == ("cli", "", {"enabled": False})


def test_deleting_an_audit_row_fails_at_the_database(entry):
    with pytest.raises(IntegrityError, match="append-only"):
        _sql("DELETE FROM audit_auditentry WHERE id = %s", [entry.pk])
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
