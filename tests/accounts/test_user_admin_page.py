"""A user, from one page: balances, keys, latest requests and credits, and the
credit-or-adjust form on the user's admin page."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.selectors_overview import RECENT_REQUESTS, user_overview
from accounts.services import api_key_create, api_key_revoke
from audit.models import AuditEntry
from billing.models import LedgerEntry, UsageRecord, Wallet
from billing.services import hold_create, wallet_credit
from billing.services.rollups import usage_rollup
from tests.concurrency import run_concurrently
from tests.staff import staff_sign_in

_ids = itertools.count(1)


def _change_url(user: User) -> str:
    return reverse("admin:accounts_user_change", args=[user.pk])


def _credit_url(user: User) -> str:
    return reverse("admin:accounts_user_wallet_credit", args=[user.pk])


def _credit_form(amount: str, reason: str = "Invoice 42 paid by wire", *,
                 kind: str = "adjustment", operation_id: str | None = None) -> dict[str, str]:
    return {"credit-amount_usd": amount, "credit-kind": kind, "credit-reason": reason,
            "credit-operation_id": operation_id or str(uuid.uuid4())}


def _record(user: User, price, *, at: datetime, cost: int, **fields) -> UsageRecord:
    usage = UsageRecord.objects.create(
        request_id=f"req-{next(_ids)}", user=user, model=price.model, price=price,
        prompt_tokens=10, completion_tokens=5, cost_micros=cost, **fields)
    UsageRecord.objects.filter(pk=usage.pk).update(created_at=at)
    return usage


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_a_never_credited_user_is_found_and_credited_from_their_page(admin_client, make_user,
                                                                      staff):
    user = make_user(email="never.paid@example.com")
    found = admin_client.get(reverse("admin:accounts_user_changelist"), {"q": "never.paid"})
    assert [u.pk for u in found.context["cl"].result_list] == [user.pk]

    page = admin_client.get(_change_url(user))
    assert page.status_code == 200
    assert page.context["user_overview"].posted_micros == 0
    assert 'id="wallet-credit-form"' in page.text

    # The operation id drawn into the page is what makes a resubmission the same credit.
    operation_id = str(page.context["wallet_credit_form"]["operation_id"].value())
    assert f'value="{operation_id}"' in page.text
    response = admin_client.post(_credit_url(user), _credit_form(
        "12.345678", kind="topup", operation_id=operation_id), follow=True)

    entry = LedgerEntry.objects.get(wallet__user=user)
    assert (entry.kind, entry.amount_micros, entry.memo) == (
        "topup", 12_345_678, "Invoice 42 paid by wire")
    assert entry.created_by == staff
    assert Wallet.objects.get(user=user).posted_micros == 12_345_678
    assert response.redirect_chain[-1][0] == _change_url(user)
    assert any("Credited $12.345678" in message for message in _messages(response))
    assert response.context["user_overview"].posted_micros == 12_345_678


def test_the_reason_is_on_the_audit_trail_with_the_staff_member(admin_client, user, staff):
    admin_client.post(_credit_url(user), _credit_form("5", "goodwill after the outage"))
    audit = AuditEntry.objects.get(action="wallet.credit")
    assert audit.reason == "goodwill after the outage"
    assert (audit.actor, audit.object_id) == (staff, str(Wallet.objects.get(user=user).pk))
    assert audit.after["amount_micros"] == 5_000_000


def test_a_reason_is_required(admin_client, user):
    response = admin_client.post(_credit_url(user), _credit_form("5", "   "))
    assert response.status_code == 200
    assert response.context["wallet_credit_form"].errors["reason"]
    assert not LedgerEntry.objects.exists()


def test_an_adjustment_below_what_is_available_is_refused_and_changes_nothing(
    admin_client, user, price
):
    wallet_credit(user=user, amount_micros=3_000_000, idempotency_key="t", memo="")
    hold_create(user=user, hold_id="in-flight", amount_micros=1_000_000, price=price,
                model=price.model)
    ledger_before = list(LedgerEntry.objects.values_list("pk", flat=True))
    audits_before = AuditEntry.objects.count()

    # 3 posted, 1 held: 2 available; removing 2.5 would take what the request holds.
    response = admin_client.post(_credit_url(user), _credit_form("-2.5", "correction"))

    assert response.status_code == 200
    assert ("Cannot remove $2.500000: only $2.000000 is available"
            in " ".join(response.context["wallet_credit_form"].non_field_errors()))
    assert "Nothing was changed." in response.text
    wallet = Wallet.objects.get(user=user)
    assert (wallet.posted_micros, wallet.pending_micros) == (3_000_000, 1_000_000)
    assert list(LedgerEntry.objects.values_list("pk", flat=True)) == ledger_before
    assert AuditEntry.objects.count() == audits_before


def test_an_adjustment_down_to_exactly_what_is_available_is_allowed(admin_client, user):
    wallet_credit(user=user, amount_micros=3_000_000, idempotency_key="t", memo="")
    admin_client.post(_credit_url(user), _credit_form("-3", "closing the account"))
    assert Wallet.objects.get(user=user).posted_micros == 0


def test_a_top_up_cannot_remove_money(admin_client, user):
    wallet_credit(user=user, amount_micros=3_000_000, idempotency_key="t", memo="")
    response = admin_client.post(_credit_url(user), _credit_form("-1", kind="topup"))
    assert "must add money" in response.text
    assert Wallet.objects.get(user=user).posted_micros == 3_000_000


def test_staff_who_may_not_write_the_ledger_see_no_form_and_cannot_post_one(client, make_user):
    viewer = make_user(email="viewer@example.com", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_user", "change_user", "view_wallet"]))
    staff_sign_in(client, viewer)
    customer = make_user()
    page = client.get(_change_url(customer))
    assert page.context["user_overview"] is not None
    assert page.context["wallet_credit_form"] is None
    assert client.post(_credit_url(customer), _credit_form("5")).status_code == 403
    assert not LedgerEntry.objects.exists()


def test_the_panel_shows_what_direct_queries_say(admin_client, make_user, price):
    user, other = make_user(), make_user()
    now = timezone.now()
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0,
                                              microsecond=0)
    wallet_credit(user=user, amount_micros=50_000_000, idempotency_key="card",
                  kind=LedgerEntry.Kind.TOPUP, memo="card")
    wallet_credit(user=user, amount_micros=-1_250_000, idempotency_key="adj", memo="fix")
    hold_create(user=user, hold_id="pending", amount_micros=2_000_000, price=price,
                model=price.model)
    laptop = api_key_create(user=user, name="laptop").api_key
    revoked = api_key_create(user=user, name="old").api_key
    api_key_revoke(prefix=revoked.prefix)
    for minutes in range(RECENT_REQUESTS + 5):
        _record(user, price, at=now - timedelta(minutes=minutes), cost=1_000 + minutes,
                api_key=laptop)
    _record(user, price, at=month_start - timedelta(seconds=1), cost=999_999)  # last month
    _record(other, price, at=now, cost=777)
    usage_rollup(since=month_start - timedelta(days=1), until=now + timedelta(seconds=1))

    response = admin_client.get(_change_url(user))
    overview = response.context["user_overview"]

    wallet = Wallet.objects.get(user=user)
    assert (overview.posted_micros, overview.pending_micros) == (
        wallet.posted_micros, wallet.pending_micros)
    assert overview.available_micros == 46_750_000
    assert overview.month_spend_micros == UsageRecord.objects.filter(
        user=user, created_at__gte=month_start).aggregate(s=Sum("cost_micros"))["s"]
    assert [r.pk for r in overview.recent_requests] == list(
        UsageRecord.objects.filter(user=user).order_by("-created_at")
        .values_list("pk", flat=True)[:RECENT_REQUESTS])
    assert [e.pk for e in overview.recent_credits] == list(
        LedgerEntry.objects.filter(wallet=wallet, kind__in=["topup", "voucher", "adjustment"])
        .order_by("-id").values_list("pk", flat=True))
    assert {k.prefix for k in overview.api_keys} == {laptop.prefix, revoked.prefix}

    text = response.text
    assert 'title="46750000 micro-USD">$46.750000</span>' in text
    assert 'title="-1250000 micro-USD">-$1.250000</span>' in text
    assert "revoked" in text
    assert f"?user__id__exact={user.pk}" in text
    assert f"?wallet__id__exact={wallet.pk}" in text
    # The usage list it links to is the user's own.
    listed = admin_client.get(response.context["usage_list_url"])
    assert {r.user_id for r in listed.context["cl"].result_list} == {user.pk}


def test_the_panel_takes_the_same_few_queries_for_a_long_history(
    make_user, price, django_assert_max_num_queries
):
    fresh, busy = make_user(), make_user()
    now = timezone.now()
    for i in range(60):
        wallet_credit(user=busy, amount_micros=1_000_000, idempotency_key=f"c{i}", memo="")
        _record(busy, price, at=now - timedelta(minutes=i), cost=10)
    for i in range(30):
        api_key_create(user=busy, name=f"key {i}")
    queries = {}
    for name, user in (("fresh", fresh), ("busy", busy)):
        with django_assert_max_num_queries(8) as captured:
            overview = user_overview(user=user)
        queries[name] = len(captured.captured_queries)
    assert len(overview.recent_requests) == RECENT_REQUESTS
    assert queries["busy"] == queries["fresh"]


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submissions_of_one_form_credit_once(make_user):
    staff = make_user(email="root@example.com", is_staff=True, is_superuser=True)
    user = make_user(email="customer@example.com")
    signed_in = staff_sign_in(Client(), staff)
    data = _credit_form("10", "double-clicked credit")

    def submit(_: int) -> int:
        client = Client()
        client.cookies = signed_in.cookies
        return client.post(_credit_url(user), data).status_code

    statuses = run_concurrently(submit, [(i,) for i in range(20)], threads=20)

    assert statuses == [302] * 20
    assert LedgerEntry.objects.filter(wallet__user=user).count() == 1
    assert Wallet.objects.get(user=user).posted_micros == 10_000_000
    assert AuditEntry.objects.filter(action="wallet.credit").count() == 1
