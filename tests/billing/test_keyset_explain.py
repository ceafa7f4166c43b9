"""The pages' queries, as the code runs them, are read through the indexes made for them
(migration 0020), in the index's order: PostgreSQL's own plan says so.

The test tables hold a handful of rows, where a sequential scan and a sort are cheapest;
with those switched off the planner shows which index can serve the query at all, which is
what matters at ten million rows (bench/ shows the timings)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection  # noqa: F401 - the skipif condition reads it
from django.utils import timezone

from accounts.services import api_key_create
from billing.keyset import BY_ID, Cursor, keyset_page
from billing.models import Hold, LedgerEntry, RefusedRequests, UsageRecord
from billing.selectors import UsageFilters, usage_records_of
from billing.selectors.organization_usage import organization_usage_records
from billing.selectors.wallet_check import wallet_check
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from organizations.models import Organization
from tests.billing.plans import index_conditions, index_names, node_types, plan_of, uses

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'",
                       reason="the plans of PostgreSQL are what is checked"),
]


@pytest.fixture
def usage(user, price, make_user):
    """Records of two users, two models, a key and an organization."""
    other = make_user()
    key = api_key_create(user=user, name="k").api_key
    organization = Organization.objects.create(name="Acme")
    now = timezone.now()
    records = []
    for n in range(30):
        records.append(UsageRecord.objects.create(
            request_id=f"explain-{n}", user=user if n % 3 else other, price=price,
            model="m1" if n % 2 else "m2", api_key=key if n % 5 == 0 else None,
            organization=organization if n % 7 == 0 else None))
    UsageRecord.objects.update(created_at=now - timedelta(minutes=1))
    return {"user": user, "key": key, "organization": organization, "records": records,
            "at": now - timedelta(minutes=1)}


def test_a_users_pages_read_the_user_index_first_and_deep(usage):
    records = usage_records_of(user=usage["user"])
    cursor = Cursor("next", (usage["at"], usage["records"][-1].pk))

    uses(plan_of(lambda: keyset_page(records, size=25)), "billing_usage_user")
    deep = plan_of(lambda: keyset_page(records, cursor=cursor, size=25))
    uses(deep, "billing_usage_user")
    # The cursor is where the scan starts (an index condition), not a filter on every row.
    conditions = [c for c in index_conditions(deep) if "user_id" in c]
    assert conditions
    assert all("created_at <=" in c for c in conditions), conditions


def test_a_model_filter_reads_the_user_and_model_index(usage):
    records = usage_records_of(user=usage["user"], filters=UsageFilters(model="m1"))
    cursor = Cursor("next", (usage["at"], usage["records"][-1].pk))

    uses(plan_of(lambda: keyset_page(records, size=25)), "billing_usage_user_model")
    uses(plan_of(lambda: keyset_page(records, cursor=cursor, size=25)),
         "billing_usage_user_model")


def test_a_key_filter_reads_the_key_index(usage):
    records = usage_records_of(user=usage["user"],
                               filters=UsageFilters(api_key_id=usage["key"].pk))

    plan = plan_of(lambda: keyset_page(records, size=25))

    assert index_names(plan) & {"billing_usage_key", "billing_usage_user"}
    assert "Sort" not in node_types(plan)


def test_an_organizations_page_reads_its_partial_index(usage):
    records = organization_usage_records(organization=usage["organization"])

    uses(plan_of(lambda: keyset_page(records, size=25)), "billing_usage_org")


def test_the_admin_lists_read_their_time_indexes(usage, user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="seed", memo="")
    hold_create(user=user, hold_id="explain-hold", amount_micros=1_000, price=price,
                model=price.model)
    hold_settle(hold_id="explain-hold", usage=UsageReport(prompt_tokens=1, completion_tokens=1))
    at = timezone.now()

    uses(plan_of(lambda: keyset_page(UsageRecord.objects.all(), size=100,
                                     cursor=Cursor("next", (at, 10**9)))),
         "billing_usage_created")
    uses(plan_of(lambda: keyset_page(Hold.objects.all(), size=100,
                                     cursor=Cursor("next", (at, "zzz")))),
         "billing_hold_created")
    uses(plan_of(lambda: keyset_page(RefusedRequests.objects.all(), size=100,
                                     order=("minute", "id"))),
         "billing_refusal_minute")
    uses(plan_of(lambda: keyset_page(LedgerEntry.objects.all(), size=100, order=BY_ID,
                                     cursor=Cursor("next", (10**9,)))),
         "billing_ledgerentry_pkey")


def test_the_admin_holds_filtered_to_the_expired_read_their_partial_index(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="seed", memo="")
    for n in range(3):
        hold_create(user=user, hold_id=f"explain-{n}", amount_micros=1_000, price=price,
                    model=price.model)
    hold_settle(hold_id="explain-0", usage=UsageReport(prompt_tokens=1, completion_tokens=1))
    Hold.objects.filter(pk="explain-1").update(status="expired", resolved_at=timezone.now())
    expired = Hold.objects.filter(status="expired")

    uses(plan_of(lambda: keyset_page(expired, size=100)), "billing_hold_expired")
    at = timezone.now()
    uses(plan_of(lambda: keyset_page(expired, size=100, cursor=Cursor("next", (at, "zzz")))),
         "billing_hold_expired")
    assert [hold.pk for hold in keyset_page(expired, size=100).object_list] == ["explain-1"]


def test_the_wallet_check_probes_the_latest_entry_and_the_pending_holds(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="seed", memo="")
    hold_create(user=user, hold_id="explain-pending", amount_micros=1_000, price=price,
                model=price.model)
    wallet_id = LedgerEntry.objects.get().wallet_id

    plan = plan_of(lambda: wallet_check(wallet_id=wallet_id))

    names = index_names(plan)
    assert "billing_led_wallet__379ac1_idx" in names, json.dumps(plan, indent=1)
    assert wallet_check(wallet_id=wallet_id).consistent
