"""The search box of the admin's big lists finds what staff paste into it (a request id, a
key, an address, an organization, a model) through an index of the big table, never by
reading it newest first to the end (bench/scale_bench.py --admin-only: 1.8 s -> 12 ms for a
request id at a million usage records)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_key_create
from audit.actors import Actor
from billing import admin_search
from billing.admin_search import IndexedSearch
from billing.models import (
    Hold,
    LedgerEntry,
    RefusedRequests,
    UsageRecord,
    UsageRollup,
    Wallet,
)
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from billing.services.refunds import usage_refund
from billing.services.refusals import RefusalCount, refusals_record
from billing.services.rollups import usage_rollup
from organizations.services import organization_create, organization_key_create
from tests.billing.plans import index_conditions, node_types, plan_of_sql

pytestmark = pytest.mark.django_db

MODELS = {"usagerecord": UsageRecord, "hold": Hold, "ledgerentry": LedgerEntry,
          "refusedrequests": RefusedRequests, "usagerollup": UsageRollup}


@pytest.fixture
def traffic(make_user, price):
    """Requests of Ann (one with her key, one without), Bob, and the organization Acme
    Research (a key of its owner, Ann), each settled; a refund of Ann's keyed request, and
    refusals of Ann's key and of Bob."""
    ann = make_user(email="Ann.Lee@Example.com")
    bob = make_user(email="bob@elsewhere.org")
    acme = organization_create(name="Acme Research", owner=ann)
    ann_key = api_key_create(user=ann, name="ann").api_key
    acme_key = organization_key_create(organization=acme, actor=ann, name="acme").api_key
    for wallet in Wallet.objects.filter(pk__in=[
            Wallet.objects.get(user=ann).pk, Wallet.objects.get(user=bob).pk,
            Wallet.objects.get(organization=acme).pk]):
        wallet_credit(wallet=wallet, amount_micros=5_000_000, idempotency_key=f"seed-{wallet.pk}",
                      memo="seed", kind=LedgerEntry.Kind.TOPUP)
    made = {}
    for name, wallet, key in (("ann-keyed", Wallet.objects.get(user=ann), ann_key),
                              ("ann-plain", Wallet.objects.get(user=ann), None),
                              ("bob", Wallet.objects.get(user=bob), None),
                              ("acme", Wallet.objects.get(organization=acme), acme_key)):
        request_id = f"req_{name}"
        hold_create(wallet=wallet, hold_id=request_id, amount_micros=100_000, price=price,
                    model=price.model, api_key=key)
        made[name] = hold_settle(hold_id=request_id, usage=UsageReport(
            prompt_tokens=10, completion_tokens=5)).usage_record
    usage_refund(usage_record=made["ann-keyed"], reason="garbage", actor=Actor.cli())
    now = timezone.now()
    usage_rollup(since=now - timedelta(hours=2), until=now + timedelta(hours=1))
    minute = made["bob"].created_at.replace(second=0, microsecond=0)
    refusals_record(counts=[
        RefusalCount(user_id=who.pk, api_key_id=key.pk, minute=minute, status=402,
                     reason="balance", model=price.model, endpoint="chat", count=1,
                     message="no money", last_request_id="req_refused")
        for who, key in ((ann, ann_key), (bob, api_key_create(user=bob, name="b").api_key))])
    return {"ann": ann, "bob": bob, "acme": acme, "ann_key": ann_key, "records": made,
            "price": price}


def _found(client, table: str, term: str) -> set:
    response = client.get(reverse(f"admin:billing_{table}_changelist"), {"q": term})
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


def _usage(traffic, *names: str) -> set:
    return {traffic["records"][name].pk for name in names}


def test_usage_records_by_request_key_address_organization_and_model(admin_client, traffic):
    key = traffic["ann_key"]
    assert _found(admin_client, "usagerecord", "req_bob") == _usage(traffic, "bob")
    assert _found(admin_client, "usagerecord", key.prefix) == _usage(traffic, "ann-keyed")
    # The whole key pasted finds it by its prefix (only the prefix is stored).
    whole = key.prefix + "x" * 40
    assert _found(admin_client, "usagerecord", whole) == _usage(traffic, "ann-keyed")
    # An address in any case, as at sign-in; part of one; an organization's name.
    everything_of_ann = _usage(traffic, "ann-keyed", "ann-plain", "acme")
    assert _found(admin_client, "usagerecord", "ann.lee@example.COM") == everything_of_ann
    assert _found(admin_client, "usagerecord", "elsewhere") == _usage(traffic, "bob")
    assert _found(admin_client, "usagerecord", "acme res") == _usage(traffic, "acme")
    assert len(_found(admin_client, "usagerecord", traffic["price"].model)) == 4
    # What is none of these finds nothing (a request id is exact: no part of one).
    for term in ("req_bo", "sk-br-nosuchkey00", "nobody@nowhere", "no-such-model"):
        assert _found(admin_client, "usagerecord", term) == set(), term


def test_holds_by_request_address_organization_and_model(admin_client, traffic):
    assert _found(admin_client, "hold", "req_acme") == {"req_acme"}
    assert _found(admin_client, "hold", "BOB@elsewhere.org") == {"req_bob"}
    assert _found(admin_client, "hold", "Acme") == {"req_acme"}
    assert _found(admin_client, "hold", traffic["price"].model) == {
        "req_ann-keyed", "req_ann-plain", "req_bob", "req_acme"}


def test_ledger_entries_by_request_idempotency_key_address_and_organization(admin_client,
                                                                           traffic):
    def keys(term: str) -> set[str]:
        return set(LedgerEntry.objects.filter(pk__in=_found(admin_client, "ledgerentry", term))
                   .values_list("idempotency_key", flat=True))

    # A request's charge and its refund.
    assert keys("req_ann-keyed") == {"charge:req_ann-keyed", "refund:req_ann-keyed"}
    # Any entry by its whole idempotency key (a top-up's, here).
    acme_wallet = Wallet.objects.get(organization=traffic["acme"])
    assert keys(f"seed-{acme_wallet.pk}") == {f"seed-{acme_wallet.pk}"}
    assert keys("Acme Research") == {f"seed-{acme_wallet.pk}", "charge:req_acme"}
    bob_wallet = Wallet.objects.get(user=traffic["bob"])
    assert keys("bob@elsewhere.org") == {f"seed-{bob_wallet.pk}", "charge:req_bob"}


def test_refusals_by_key_address_and_model(admin_client, traffic):
    ann_refusal = RefusedRequests.objects.get(user=traffic["ann"]).pk
    assert _found(admin_client, "refusedrequests", traffic["ann_key"].prefix) == {ann_refusal}
    assert _found(admin_client, "refusedrequests", "ann.lee") == {ann_refusal}
    assert len(_found(admin_client, "refusedrequests", traffic["price"].model)) == 2


def test_roll_ups_by_key_address_organization_and_model(admin_client, traffic):
    def owners(term: str) -> list[tuple]:
        rows = UsageRollup.objects.filter(pk__in=_found(admin_client, "usagerollup", term))
        return sorted({(r.period, r.user.email, r.api_key_id, r.organization_id) for r in rows},
                      key=str)

    ann, bob, key = traffic["ann"], traffic["bob"], traffic["ann_key"]
    # The key's rows (the hour's and the day's), not its owner's other rows.
    assert owners(key.prefix) == [("day", ann.email, key.pk, None),
                                  ("hour", ann.email, key.pk, None)]
    assert {row[1] for row in owners("bob@elsewhere.org")} == {bob.email}
    assert {row[3] for row in owners("Acme")} == {traffic["acme"].pk}
    assert len(owners(traffic["price"].model)) == 2 * 4  # hour and day: 3 owners' keys + 1


@pytest.mark.parametrize("table", list(MODELS))
def test_each_list_says_what_its_search_finds(admin_client, traffic, table):
    page = admin_client.get(reverse(f"admin:billing_{table}_changelist")).text
    assert 'id="searchbar"' in page
    assert "Search by " in page


def _page_plan(client, table: str, term: str) -> dict:
    """PostgreSQL's plan of the query that reads the list's page for ``term``, with
    sequential scans off: which index can serve it at all (the test tables are tiny)."""
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse(f"admin:billing_{table}_changelist"), {"q": term})
    name = MODELS[table]._meta.db_table
    (sql,) = [q["sql"] for q in queries.captured_queries
              if f'FROM "{name}"' in q["sql"] and "LIMIT" in q["sql"]]
    return plan_of_sql(sql, off=("enable_seqscan",))


@pytest.mark.skipif("connection.vendor != 'postgresql'",
                    reason="the plans of PostgreSQL are what is checked")
@pytest.mark.parametrize(("table", "term", "column"), [
    ("usagerecord", "req_bob", "request_id"),
    ("usagerecord", "KEY", "api_key_id"),
    ("usagerecord", "bob@elsewhere.org", "user_id"),
    ("usagerecord", "Acme Research", "organization_id"),
    ("hold", "req_bob", "id"),
    ("hold", "bob@elsewhere.org", "wallet_id"),
    ("ledgerentry", "req_bob", "idempotency_key"),
    ("ledgerentry", "bob@elsewhere.org", "wallet_id"),
    ("refusedrequests", "KEY", "api_key_id"),
    ("usagerollup", "KEY", "api_key_id"),
    ("usagerollup", "bob@elsewhere.org", "user_id"),
    ("usagerollup", "Acme Research", "organization_id"),
])
def test_a_search_reads_its_table_through_the_index_of_what_it_names(admin_client, traffic,
                                                                    table, term, column):
    term = traffic["ann_key"].prefix if term == "KEY" else term
    plan = _page_plan(admin_client, table, term)
    # The term's rows are where the scan starts (an index condition on the column), not a
    # filter on every row of an index read in the list's order.
    assert [c for c in index_conditions(plan) if f"{column} " in c or f"{column})" in c], (
        json.dumps(plan, indent=1))
    assert "Seq Scan" not in node_types(plan)


def test_terms_matching_many_users_or_organizations_are_read_as_subqueries(admin_client,
                                                                          traffic,
                                                                          monkeypatch):
    monkeypatch.setattr(admin_search, "FEW", 0)  # every lookup matches "many"
    assert _found(admin_client, "usagerecord", "Ann.Lee@example.com") == _usage(
        traffic, "ann-keyed", "ann-plain", "acme")
    assert _found(admin_client, "hold", "Acme") == {"req_acme"}
    assert _found(admin_client, "usagerecord", traffic["ann_key"].prefix) == _usage(
        traffic, "ann-keyed")


@pytest.mark.parametrize("term", ["a\x00b", "%", "_", "x" * 5000, "   "])
def test_odd_terms_find_nothing_or_everything_but_never_fail(admin_client, traffic, term):
    for table in MODELS:
        response = admin_client.get(reverse(f"admin:billing_{table}_changelist"), {"q": term})
        assert response.status_code == 200, (table, term)


def test_the_help_text_names_what_a_list_finds():
    assert IndexedSearch(model="model").help_text() == "Search by a priced model's exact name."
    assert IndexedSearch(api_key="k", model="model").help_text() == (
        "Search by an API key or its prefix or a priced model's exact name.")


def test_a_big_list_counts_only_its_page_and_says_so_once(admin_client, traffic):
    # Django's "1 result (Show all)" beside the box would count this page as the results.
    page = admin_client.get(reverse("admin:billing_usagerecord_changelist"),
                            {"q": "req_bob"}).text
    assert '<span class="small quiet">' not in page
    assert "1 usage record on this page" in page
    users = admin_client.get(reverse("admin:accounts_user_changelist"), {"q": "bob"}).text
    assert '<span class="small quiet">1 result' in users
