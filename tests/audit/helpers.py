"""What the audit tests read back: one row, and everything the table holds as text."""

from __future__ import annotations

from django.db import connection

from audit.models import AuditEntry


def only_entry(**filters: object) -> AuditEntry:
    """The one audit row matching ``filters``; fails if there are none or several."""
    entries = list(AuditEntry.objects.filter(**filters))
    assert len(entries) == 1, [str(entry) for entry in entries]
    return entries[0]


def trail_text() -> str:
    """Every column of every audit row as the database returns it: where no secret may be."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditentry")
        return repr(cursor.fetchall())


def assert_not_in_trail(*secrets: str) -> None:
    text = trail_text()
    assert AuditEntry.objects.exists()  # an empty table would prove nothing
    for secret in secrets:
        assert secret
        assert secret not in text
