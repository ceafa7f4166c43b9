"""The admin's lists of the growing tables page by cursor and never count them; the wallet
page checks its balance against the latest ledger entry instead of re-summing the ledger,
and says so loudly when they disagree."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_key_create
from billing.admin_records import (
    HoldAdmin,
    LedgerEntryAdmin,
    RefusedRequestsAdmin,
    UsageRecordAdmin,
)
from billing.models import Hold, LedgerEntry, RefusedRequests, UsageRecord, Wallet
from billing.services import UsageReport, hold_create, hold_settle, wallet_credit
from billing.services.refusals import RefusalCount, refusals_record

pytestmark = pytest.mark.django_db

PER_PAGE = 3
ADMINS = {"usagerecord": (UsageRecordAdmin, UsageRecord, "billing_usagerecord"),
          "hold": (HoldAdmin, Hold, "billing_hold"),
          "ledgerentry": (LedgerEntryAdmin, LedgerEntry, "billing_ledgerentry"),
          "refusedrequests": (RefusedRequestsAdmin, RefusedRequests, "billing_refusedrequests")}


@pytest.fixture
def requests_made(user, make_user, price, monkeypatch):
    """Eight settled requests of two users (a usage record, a hold and a charge each, some
    sharing a timestamp), their top-ups, and refusals in eight minutes; lists of 3 a page."""
    for admin_class, _, _ in ADMINS.values():
        monkeypatch.setattr(admin_class, "list_per_page", PER_PAGE)
    other = make_user()
    now = timezone.now()
    for who in (user, other):
        wallet_credit(user=who, amount_micros=5_000_000, idempotency_key=f"seed-{who.pk}",
                      memo="seed", kind=LedgerEntry.Kind.TOPUP)
    for n in range(8):
        who = user if n % 2 else other
        hold_create(user=who, hold_id=f"req-{n}", amount_micros=100_000, price=price,
                    model=price.model)
        hold_settle(hold_id=f"req-{n}", usage=UsageReport(prompt_tokens=10, completion_tokens=5))
        at = now - timedelta(seconds=n // 3)  # ties: a page boundary falls inside one
        Hold.objects.filter(pk=f"req-{n}").update(created_at=at)
        UsageRecord.objects.filter(request_id=f"req-{n}").update(created_at=at)
    key = api_key_create(user=user, name="ci").api_key
    refusals_record(counts=[RefusalCount(
        user_id=user.pk, api_key_id=key.pk, minute=(now - timedelta(minutes=n)).replace(
            second=0, microsecond=0), status=402, reason="balance", model=price.model,
        endpoint="chat", count=1, message="no money", last_request_id=f"r{n}")
        for n in range(8)])
    return {"user": user, "other": other}


def _newest_first(model, rows) -> list:
    if model is LedgerEntry:
        return sorted((r.pk for r in rows), reverse=True)
    field = "minute" if model is RefusedRequests else "created_at"
    return [r.pk for r in sorted(rows, key=lambda r: (getattr(r, field), r.pk), reverse=True)]


def _walk(client, name: str, query: dict) -> tuple[list, list[list[str]]]:
    """Every page through "Older", with the SQL each page ran."""
    path = reverse(f"admin:billing_{name}_changelist")
    url, seen, queries_per_page = path + "?" + "&".join(f"{k}={v}" for k, v in query.items()), \
        [], []
    while True:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        queries_per_page.append([q["sql"] for q in queries.captured_queries])
        cl = response.context["cl"]
        seen.extend(obj.pk for obj in cl.result_list)
        if cl.keyset_older_url is None:
            return seen, queries_per_page
        assert "Older" in response.text
        url = path + cl.keyset_older_url


@pytest.mark.parametrize("name", list(ADMINS))
def test_each_big_list_walks_every_row_once_newest_first(admin_client, requests_made, name):
    _, model, _ = ADMINS[name]

    seen, _ = _walk(admin_client, name, {})

    assert seen == _newest_first(model, model.objects.all())
    assert len(seen) > PER_PAGE * 2


@pytest.mark.parametrize(("name", "query", "narrowed"), [
    ("usagerecord", {"user__id__exact": "USER"}, {"user": "USER"}),
    ("hold", {"status__exact": "posted", "q": "test-model"}, {"status": "posted"}),
    ("ledgerentry", {"kind__exact": "charge"}, {"kind": "charge"}),
    ("ledgerentry", {"wallet__id__exact": "WALLET"}, {"wallet": "WALLET"}),
])
def test_filters_and_the_search_stay_on_every_page(admin_client, requests_made, name, query,
                                                  narrowed):
    _, model, _ = ADMINS[name]
    user = requests_made["user"]
    ids = {"USER": str(user.pk), "WALLET": str(Wallet.objects.get(user=user).pk)}
    query = {k: ids.get(v, v) for k, v in query.items()}
    narrowed = {k: ids.get(v, v) for k, v in narrowed.items()}
    wanted = model.objects.filter(**narrowed)

    seen, _ = _walk(admin_client, name, query)

    assert seen == _newest_first(model, wanted)
    assert len(seen) > PER_PAGE  # more than one page, so the filters crossed a page


@pytest.mark.parametrize("name", list(ADMINS))
def test_no_list_page_counts_or_scans_its_table(admin_client, requests_made, name):
    _, _, table = ADMINS[name]

    _, pages = _walk(admin_client, name, {})

    for queries in pages:
        counts = [sql for sql in queries if "COUNT(" in sql.upper() and table in sql]
        assert counts == []
        # Nor reads the whole table for a filter's choices (SELECT DISTINCT of a column).
        distinct = [sql for sql in queries if "DISTINCT" in sql.upper() and table in sql]
        assert distinct == []


@pytest.mark.parametrize("cursor", ["nonsense", "W10:abc:def"])
def test_a_bad_cursor_shows_the_newest_page(admin_client, requests_made, cursor):
    response = admin_client.get(reverse("admin:billing_usagerecord_changelist"),
                                {"cursor": cursor})

    assert response.status_code == 200  # not the changelist's "?e=1" error redirect
    assert [o.pk for o in response.context["cl"].result_list] == _newest_first(
        UsageRecord, UsageRecord.objects.all())[:PER_PAGE]


def test_a_cursor_of_another_list_is_not_taken(admin_client, requests_made):
    holds = admin_client.get(reverse("admin:billing_hold_changelist")).context["cl"]
    token = re.search(r"cursor=([^&]+)", holds.keyset_older_url).group(1)

    response = admin_client.get(reverse("admin:billing_usagerecord_changelist") + "?cursor="
                                + token)

    assert response.context["cl"].keyset_first_url is None  # the first page


def test_the_wallet_page_checks_the_running_balance_without_summing_the_ledger(
        admin_client, requests_made):
    wallet = Wallet.objects.get(user=requests_made["user"])
    url = reverse("admin:billing_wallet_change", args=[wallet.pk])

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)

    assert "The ledger and pending holds add up" in response.text
    assert "MISMATCH" not in response.text
    ledger_reads = [q["sql"] for q in queries.captured_queries
                    if "billing_ledgerentry" in q["sql"]]
    assert ledger_reads
    # Each read of the ledger is one row, the wallet's latest (the change form's own LIMIT 21
    # is of the wallet row): nothing adds up its history.
    for sql in ledger_reads:
        for read in re.findall(r'FROM "billing_ledgerentry"(.*?)(?:\) AS |$)', sql):
            assert read.rstrip().endswith("LIMIT 1"), sql
        assert not re.search(r'SUM\([^)]*\)[^()]*FROM "billing_ledgerentry"', sql), sql


def test_a_wallet_moved_outside_the_ledger_is_shown_as_a_mismatch(admin_client,
                                                                  requests_made):
    wallet = Wallet.objects.get(user=requests_made["user"])
    latest = LedgerEntry.objects.filter(wallet=wallet).order_by("-id").first()
    # What a hand-run UPDATE would do: the ledger is append-only, the wallet row is not.
    Wallet.objects.filter(pk=wallet.pk).update(posted_micros=latest.balance_after_micros + 7)

    response = admin_client.get(reverse("admin:billing_wallet_change", args=[wallet.pk]))

    assert "MISMATCH" in response.text
    assert "errornote" in response.text
    assert f"{(latest.balance_after_micros + 7) / 1_000_000:.6f}" in response.text


def test_a_pending_balance_without_its_holds_is_a_mismatch(admin_client, requests_made):
    wallet = Wallet.objects.get(user=requests_made["user"])
    Wallet.objects.filter(pk=wallet.pk).update(pending_micros=5)

    response = admin_client.get(reverse("admin:billing_wallet_change", args=[wallet.pk]))

    assert "MISMATCH" in response.text
    assert "pending holds 0.000000" in response.text
