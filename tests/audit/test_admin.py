"""Staff read the audit trail in the admin: filtered by actor, object type and date,
searched by the changed object's label, and never edited."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry

LIST_URL = "admin:audit_auditentry_changelist"


def _entry(*, actor_label: str = "cli", object_type: str = "proxy.worker",
           object_label: str = "up (mock)", when: datetime | None = None, **fields):
    # Inserting is what the trail allows; a past date is given at insertion, as an UPDATE
    # would be refused.
    return AuditEntry.objects.create(
        actor_label=actor_label, object_type=object_type, object_id="1",
        object_label=object_label, action=fields.pop("action", "worker.disable"),
        created_at=when or timezone.now(), before={"enabled": True},
        after={"enabled": False}, **fields)


@pytest.fixture
def trail(staff) -> dict[str, AuditEntry]:
    return {
        "cli_worker": _entry(),
        "staff_price": _entry(actor=staff, actor_label=staff.email, ip="203.0.113.9",
                              object_type="billing.modelprice", action="price.set",
                              object_label="gpt-4o: $2.5 in / $10 out per 1M tokens"),
        "old_key": _entry(actor=staff, actor_label=staff.email, object_type="accounts.apikey",
                          action="api_key.change", object_label="sk-br-abcdef123456… (ci)",
                          when=datetime(2024, 1, 15, 12, 0, tzinfo=UTC)),
    }


def _listed(client, **query: str) -> set[int]:
    response = client.get(reverse(LIST_URL), query)
    assert response.status_code == 200
    return {entry.pk for entry in response.context["cl"].result_list}


def test_the_trail_is_filtered_by_actor(admin_client, trail, staff):
    assert _listed(admin_client, actor_label="cli") == {trail["cli_worker"].pk}
    assert _listed(admin_client, actor_label=staff.email) == {
        trail["staff_price"].pk, trail["old_key"].pk}


def test_the_trail_is_filtered_by_object_type(admin_client, trail):
    assert _listed(admin_client, object_type="billing.modelprice") == {
        trail["staff_price"].pk}
    assert _listed(admin_client, object_type="accounts.apikey") == {trail["old_key"].pk}


def test_the_trail_is_filtered_by_date_and_drilled_down_by_month(admin_client, trail):
    january = _listed(admin_client, created_at__year="2024", created_at__month="1")
    assert january == {trail["old_key"].pk}
    # The date filter's "Today": from the first moment of the day the entries were written
    # (the clock read again here, a midnight passed since would leave them on the day before).
    today = timezone.localtime(trail["cli_worker"].created_at).replace(
        hour=0, minute=0, second=0, microsecond=0)
    assert _listed(admin_client, created_at__gte=str(today)) == {
        trail["cli_worker"].pk, trail["staff_price"].pk}


def test_the_filters_offer_every_actor_and_object_type_present(admin_client, trail, staff):
    text = admin_client.get(reverse(LIST_URL)).text
    for choice in ("?actor_label=cli", "object_type=billing.modelprice",
                   "object_type=accounts.apikey", staff.email):
        assert choice in text


def test_the_trail_is_searched_by_the_objects_label(admin_client, trail):
    assert _listed(admin_client, q="gpt-4o") == {trail["staff_price"].pk}
    assert _listed(admin_client, q="sk-br-abcdef") == {trail["old_key"].pk}


def test_an_entry_is_shown_with_its_fields_before_and_after(admin_client, trail):
    entry = trail["staff_price"]
    response = admin_client.get(reverse("admin:audit_auditentry_change", args=[entry.pk]))
    assert response.status_code == 200
    assert "203.0.113.9" in response.text
    assert "&quot;enabled&quot;: false" in response.text


def test_staff_cannot_add_change_or_delete_an_entry(admin_client, trail):
    entry = trail["cli_worker"]
    change_url = reverse("admin:audit_auditentry_change", args=[entry.pk])
    assert admin_client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    assert admin_client.post(change_url, {"reason": "rewritten"}).status_code == 403
    assert admin_client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]),
                             {"post": "yes"}).status_code == 403
    response = admin_client.get(reverse(LIST_URL))
    assert "delete_selected" not in response.text
    entry.refresh_from_db()
    assert entry.reason == ""
