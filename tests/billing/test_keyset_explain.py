"""The pages' queries, as the code runs them, are read through the indexes made for them
(migration 0020), in the index's order: PostgreSQL's own plan says so.

The test tables hold a handful of rows, where a sequential scan and a sort are cheapest;
with those switched off the planner shows which index can serve the query at all, which is
what matters at ten million rows (bench/ shows the timings)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.services import api_key_create
from billing.keyset import BY_ID, Cursor, keyset_page
from billing.models import Hold, LedgerEntry, RefusedRequests, UsageRecord
from billing.selectors import UsageFilters, usage_records_of
from billing.selectors.organization_usage import organization_usage_records
from billing.selectors.wallet_check import wallet_check
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from organizations.models import Organization

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'",
                       reason="the plans of PostgreSQL are what is checked"),
]


def _parent_indexes() -> dict[str, str]:
    """Each partition's index and the index of the partitioned table it belongs to (0021
    partitions usage records and holds by month; a plan names the partitions' indexes)."""
    with connection.cursor() as cursor:
        cursor.execute("""SELECT child.relname, parent.relname FROM pg_inherits i
                          JOIN pg_class child ON child.oid = i.inhrelid
                          JOIN pg_class parent ON parent.oid = i.inhparent
                          WHERE child.relkind = 'i'""")
        return dict(cursor.fetchall())


def _index_names(plan: dict, parents: dict[str, str] | None = None) -> set[str]:
    """The indexes ``plan`` reads, by the names the models give them."""
    parents = _parent_indexes() if parents is None else parents
    names = set()
    if "Index Name" in plan:
        name = plan["Index Name"]
        while name in parents:
            name = parents[name]
        names.add(name)
    for child in plan.get("Plans", []):
        names |= _index_names(child, parents)
    return names


def _index_conditions(plan: dict) -> list[str]:
    conditions = [plan["Index Cond"]] if "Index Cond" in plan else []
    for child in plan.get("Plans", []):
        conditions += _index_conditions(child)
    return conditions


def _node_types(plan: dict) -> set[str]:
    types = {plan["Node Type"]}
    for child in plan.get("Plans", []):
        types |= _node_types(child)
    return types


def _plan_of(run: Callable[[], object]) -> dict:
    """The plan of the last query ``run`` makes, as the code made it."""
    with CaptureQueriesContext(connection) as queries:
        run()
    sql = queries.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (document,) = cursor.fetchone()
    return (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]


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


def _uses(plan: dict, index: str) -> None:
    assert index in _index_names(plan), json.dumps(plan, indent=1)
    assert "Sort" not in _node_types(plan), json.dumps(plan, indent=1)


def test_a_users_pages_read_the_user_index_first_and_deep(usage):
    records = usage_records_of(user=usage["user"])
    cursor = Cursor("next", (usage["at"], usage["records"][-1].pk))

    _uses(_plan_of(lambda: keyset_page(records, size=25)), "billing_usage_user")
    deep = _plan_of(lambda: keyset_page(records, cursor=cursor, size=25))
    _uses(deep, "billing_usage_user")
    # The cursor is where the scan starts (an index condition), not a filter on every row.
    conditions = [c for c in _index_conditions(deep) if "user_id" in c]
    assert conditions
    assert all("created_at <=" in c for c in conditions), conditions


def test_a_model_filter_reads_the_user_and_model_index(usage):
    records = usage_records_of(user=usage["user"], filters=UsageFilters(model="m1"))
    cursor = Cursor("next", (usage["at"], usage["records"][-1].pk))

    _uses(_plan_of(lambda: keyset_page(records, size=25)), "billing_usage_user_model")
    _uses(_plan_of(lambda: keyset_page(records, cursor=cursor, size=25)),
          "billing_usage_user_model")


def test_a_key_filter_reads_the_key_index(usage):
    records = usage_records_of(user=usage["user"],
                               filters=UsageFilters(api_key_id=usage["key"].pk))

    plan = _plan_of(lambda: keyset_page(records, size=25))

    assert _index_names(plan) & {"billing_usage_key", "billing_usage_user"}
    assert "Sort" not in _node_types(plan)


def test_an_organizations_page_reads_its_partial_index(usage):
    records = organization_usage_records(organization=usage["organization"])

    _uses(_plan_of(lambda: keyset_page(records, size=25)), "billing_usage_org")


def test_the_admin_lists_read_their_time_indexes(usage, user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="seed", memo="")
    hold_create(user=user, hold_id="explain-hold", amount_micros=1_000, price=price,
                model=price.model)
    hold_settle(hold_id="explain-hold", usage=UsageReport(prompt_tokens=1, completion_tokens=1))
    at = timezone.now()

    _uses(_plan_of(lambda: keyset_page(UsageRecord.objects.all(), size=100,
                                       cursor=Cursor("next", (at, 10**9)))),
          "billing_usage_created")
    _uses(_plan_of(lambda: keyset_page(Hold.objects.all(), size=100,
                                       cursor=Cursor("next", (at, "zzz")))),
          "billing_hold_created")
    _uses(_plan_of(lambda: keyset_page(RefusedRequests.objects.all(), size=100,
                                       order=("minute", "id"))),
          "billing_refusal_minute")
    _uses(_plan_of(lambda: keyset_page(LedgerEntry.objects.all(), size=100, order=BY_ID,
                                       cursor=Cursor("next", (10**9,)))),
          "billing_ledgerentry_pkey")


def test_the_wallet_check_probes_the_latest_entry_and_the_pending_holds(user, price):
    wallet_credit(user=user, amount_micros=1_000_000, idempotency_key="seed", memo="")
    hold_create(user=user, hold_id="explain-pending", amount_micros=1_000, price=price,
                model=price.model)
    wallet_id = LedgerEntry.objects.get().wallet_id

    plan = _plan_of(lambda: wallet_check(wallet_id=wallet_id))

    names = _index_names(plan)
    assert "billing_led_wallet__379ac1_idx" in names, json.dumps(plan, indent=1)
    assert wallet_check(wallet_id=wallet_id).consistent
