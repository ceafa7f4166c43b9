"""audit_record: one row in the change's transaction, none for a change that changed
nothing or rolled back."""

from __future__ import annotations

import pytest
from django.db import transaction

from audit.actors import Actor
from audit.models import AuditEntry
from audit.services import AuditOutsideTransaction, audit_record
from billing.errors import InvalidAmount
from billing.models import KeyBudget
from billing.selectors import SpendCaps
from billing.services.key_settings import api_key_configure, api_key_create_with_caps
from proxy.models import Worker
from proxy.services import worker_create, worker_set_enabled

POLICIES = {"name": "ci", "expires_at": None, "rpm": 5, "tpm": None, "max_concurrency": None,
            "allowed_models": [], "allowed_ips": []}


@pytest.fixture
def worker(db) -> Worker:
    return worker_create(name="up", kind="mock", models=[("m", "")])


def test_a_service_called_without_an_actor_writes_no_row(worker):
    worker_set_enabled(name="up", enabled=False)
    assert not AuditEntry.objects.exists()


def _disable_then_fail() -> None:
    with transaction.atomic():
        worker_set_enabled(name="up", enabled=False, actor=Actor.cli())
        assert AuditEntry.objects.count() == 1
        raise RuntimeError("a later step failed")


def test_a_change_that_rolls_back_takes_its_audit_row_with_it(worker):
    with pytest.raises(RuntimeError, match="later step failed"):
        _disable_then_fail()
    assert not AuditEntry.objects.exists()
    worker.refresh_from_db()
    assert worker.enabled


def test_doing_the_same_thing_twice_records_it_once(worker):
    for _ in range(2):
        worker_set_enabled(name="up", enabled=False, actor=Actor.cli())
    assert AuditEntry.objects.filter(action="worker.disable").count() == 1


def test_a_change_that_changes_no_field_writes_no_row(worker):
    with transaction.atomic():
        entry = audit_record(actor=Actor.cli(), action="worker.change", obj=worker,
                             before={"priority": 1}, after={"priority": 1})
    assert entry is None
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_recording_outside_the_changes_transaction_is_refused():
    worker = worker_create(name="up", kind="mock", models=[("m", "")])
    with pytest.raises(AuditOutsideTransaction):
        audit_record(actor=Actor.cli(), action="worker.change", obj=worker,
                     before={"priority": 0}, after={"priority": 1})
    assert not AuditEntry.objects.exists()


def test_a_keys_policies_and_caps_changed_together_write_one_row_each(user):
    api_key = api_key_create_with_caps(user=user, caps=SpendCaps(), **POLICIES).api_key
    api_key_configure(api_key=api_key, caps=SpendCaps(3_000_000, None), actor=Actor.cli(),
                      **{**POLICIES, "rpm": 50})

    caps, policies = AuditEntry.objects.order_by("id")
    assert (caps.action, caps.before, caps.after) == (
        "key_budget.set", None, {"lifetime_limit_micros": 3_000_000,
                                 "monthly_limit_micros": None})
    assert (policies.action, policies.before, policies.after) == (
        "api_key.change", {"rpm": 5}, {"rpm": 50})


def test_a_refused_cap_leaves_no_row_for_the_cap_or_the_policies(user):
    api_key = api_key_create_with_caps(user=user, caps=SpendCaps(1_000, None),
                                       **POLICIES).api_key
    KeyBudget.objects.filter(api_key=api_key).update(spent_micros=800)
    with pytest.raises(InvalidAmount):
        api_key_configure(api_key=api_key, caps=SpendCaps(700, None), actor=Actor.cli(),
                          **{**POLICIES, "rpm": 50})
    assert not AuditEntry.objects.exists()
