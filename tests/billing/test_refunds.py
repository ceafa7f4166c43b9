"""Refunding one request: one ledger entry that gives its charge back, once, with a reason,
linked to the request; refused when nothing was charged; audited."""

from __future__ import annotations

import itertools

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from accounts.services import api_key_create
from audit.actors import Actor
from audit.models import AuditEntry
from billing.models import KeyBudget, LedgerEntry, UsageRecord, Wallet
from billing.selectors import wallet_audit
from billing.services import UsageReport, hold_create, hold_settle, hold_void, wallet_credit
from billing.services.ledger import ledger_post
from billing.services.refunds import RefundRefused, usage_refund
from tests.concurrency import run_concurrently

_ids = itertools.count(1)
FUNDS = 1_000_000


def charged_request(user, price, *, api_key=None, prompt=100, completion=200) -> UsageRecord:
    """A settled request: 100 prompt tokens at 1 µ$ and 200 output tokens at 2 µ$ = 500 µ$."""
    hold_id = f"req-{next(_ids)}"
    hold_create(user=user, hold_id=hold_id, amount_micros=5_000, price=price,
                model=price.model, api_key=api_key)
    outcome = hold_settle(hold_id=hold_id, usage=UsageReport(prompt_tokens=prompt,
                                                             completion_tokens=completion))
    return outcome.usage_record


@pytest.fixture
def funded(user):
    wallet_credit(user=user, amount_micros=FUNDS, idempotency_key=f"fund-{user.pk}", memo="",
                  kind="topup")
    return user


def staff_actor(staff) -> Actor:
    return Actor(user=staff, label=staff.email, ip="127.0.0.1")


@pytest.mark.django_db
class TestUsageRefund:
    def test_it_credits_the_charge_back_once_linked_to_the_request(self, funded, price, staff):
        record = charged_request(funded, price)
        assert Wallet.objects.get(user=funded).posted_micros == FUNDS - 500

        result = usage_refund(usage_record=record, reason="answer was garbage",
                              actor=staff_actor(staff))

        assert result.created
        entry = result.entry
        assert (entry.kind, entry.amount_micros) == ("refund", 500)
        assert entry.idempotency_key == f"refund:{record.request_id}"
        assert entry.hold_id == record.request_id
        assert entry.memo == "answer was garbage"
        assert entry.created_by == staff
        wallet = Wallet.objects.get(user=funded)
        assert wallet.posted_micros == entry.balance_after_micros == FUNDS
        assert wallet_audit(wallet_id=wallet.pk).consistent
        audit = AuditEntry.objects.get(action="usage.refund")
        assert (audit.actor, audit.reason, audit.object_id) == (staff, "answer was garbage",
                                                                str(record.pk))

    def test_refunding_again_writes_nothing_and_returns_the_first_entry(self, funded, price,
                                                                        staff):
        record = charged_request(funded, price)
        first = usage_refund(usage_record=record, reason="one", actor=staff_actor(staff))

        again = usage_refund(usage_record=record, reason="two", actor=staff_actor(staff))

        assert not again.created
        assert again.entry.pk == first.entry.pk
        assert LedgerEntry.objects.filter(kind="refund").count() == 1
        assert Wallet.objects.get(user=funded).posted_micros == FUNDS
        assert AuditEntry.objects.filter(action="usage.refund").count() == 1

    def test_a_request_that_charged_nothing_is_refused(self, funded, price, staff):
        hold_create(user=funded, hold_id="voided", amount_micros=5_000, price=price,
                    model=price.model)
        record = hold_void(hold_id="voided", usage=UsageReport(
            prompt_tokens=10, completion_tokens=0,
            status=UsageRecord.Status.UPSTREAM_ERROR)).usage_record

        with pytest.raises(RefundRefused, match="charged nothing"):
            usage_refund(usage_record=record, reason="x", actor=staff_actor(staff))
        assert not LedgerEntry.objects.filter(kind="refund").exists()

    def test_a_refund_needs_a_reason(self, funded, price, staff):
        record = charged_request(funded, price)
        with pytest.raises(RefundRefused, match="reason"):
            usage_refund(usage_record=record, reason="  ", actor=staff_actor(staff))

    def test_the_key_spend_counters_keep_the_charge(self, funded, price, staff):
        key = api_key_create(user=funded, name="capped").api_key
        KeyBudget.objects.create(api_key=key, lifetime_limit_micros=100_000)
        record = charged_request(funded, price, api_key=key)

        usage_refund(usage_record=record, reason="goodwill", actor=staff_actor(staff))

        assert KeyBudget.objects.get(api_key=key).spent_micros == 500

    def test_the_database_refuses_a_second_refund_of_a_request_under_another_key(
        self, funded, price
    ):
        record = charged_request(funded, price)
        usage_refund(usage_record=record, reason="first", actor=Actor.cli())
        wallet = Wallet.objects.get(user=funded)
        with pytest.raises(IntegrityError, match="billing_ledger_one_refund_per_request"), \
                transaction.atomic():
            ledger_post(wallet=wallet, kind="refund", amount_micros=500,
                        idempotency_key="another-key",
                        hold=LedgerEntry.objects.get(kind="charge").hold)


@pytest.mark.django_db(transaction=True)
def test_20_concurrent_refund_clicks_credit_once(funded, price, staff):
    record = charged_request(funded, price)
    actor = staff_actor(staff)

    results = run_concurrently(
        lambda: usage_refund(usage_record=record, reason="double clicked", actor=actor),
        [() for _ in range(20)])

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len({r.entry.pk for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    wallet = Wallet.objects.get(user=funded)
    assert wallet.posted_micros == FUNDS
    assert wallet_audit(wallet_id=wallet.pk).consistent
    assert AuditEntry.objects.filter(action="usage.refund").count() == 1


@pytest.mark.django_db
class TestAdmin:
    def test_the_record_page_links_to_the_refund_form_which_refunds_once(
        self, admin_client, funded, price
    ):
        record = charged_request(funded, price)
        page = reverse("admin:billing_usagerecord_change", args=[record.pk])
        url = reverse("admin:billing_usagerecord_refund", args=[record.pk])
        assert url in admin_client.get(page).text
        assert admin_client.get(url).status_code == 200

        first = admin_client.post(url, {"reason": "slow answer"})
        second = admin_client.post(url, {"reason": "slow answer"})  # a double click

        assert first.status_code == second.status_code == 302
        assert LedgerEntry.objects.filter(kind="refund").count() == 1
        assert Wallet.objects.get(user=funded).posted_micros == FUNDS
        text = admin_client.get(page).text
        assert "Refunded 0.000500 USD" in text
        assert "already refunded" in text

    def test_a_request_that_charged_nothing_shows_no_refund_link(self, admin_client, funded,
                                                                 price):
        hold_create(user=funded, hold_id="free", amount_micros=5_000, price=price,
                    model=price.model)
        record = hold_void(hold_id="free", usage=UsageReport(
            prompt_tokens=1, completion_tokens=0)).usage_record
        page = admin_client.get(reverse("admin:billing_usagerecord_change", args=[record.pk]))
        assert "Nothing was charged." in page.text
        response = admin_client.post(
            reverse("admin:billing_usagerecord_refund", args=[record.pk]), {"reason": "x"})
        assert response.status_code == 200
        assert "charged nothing" in response.text

    def test_staff_without_the_right_to_write_the_ledger_cannot_refund(
        self, client, make_user, funded, price
    ):
        from tests.staff import staff_sign_in
        viewer = make_user(email="viewer@example.com", is_staff=True)
        staff_sign_in(client, viewer)
        record = charged_request(funded, price)
        response = client.post(reverse("admin:billing_usagerecord_refund", args=[record.pk]),
                               {"reason": "x"})
        assert response.status_code == 403
        assert not LedgerEntry.objects.filter(kind="refund").exists()
