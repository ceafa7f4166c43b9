"""Receipts through the self-service API: the same figures as the printable page, and
never another user's."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from billing.models import Wallet
from tests.billing.receipt_credits import (
    card_topup_paid,
    charged,
    staff_credited,
    voucher_redeemed,
)
from tests.portal.api.conftest import session_client


def test_a_paid_card_top_up_has_a_receipt(api, member, stripe_keys):
    entry = card_topup_paid(member, amount_micros=20_000_000, payment_intent="pi_3ApiCard")
    Wallet.objects.filter(user=member).update(billing_name="Acme GmbH",
                                              billing_address="Hauptstr. 1\nBerlin")

    response = api.get(f"/api/receipts/{entry.pk}")

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "id": entry.pk,
        "number": f"R-{entry.pk:08d}",
        "issued_at": entry.created_at.isoformat().replace("+00:00", "Z"),
        "currency": "USD",
        "amount_micros": 20_000_000,
        "amount_usd": "20.000000",
        "balance_after_micros": 30_000_000,
        "balance_after_usd": "30.000000",
        "method": "card",
        "payment_intent_id": "pi_3ApiCard",
        "voucher_code_prefix": None,
        "billed_to": {"name": "Acme GmbH", "address": "Hauptstr. 1\nBerlin"},
        "issuer": "Binom Router",
    }


def test_a_voucher_and_a_staff_credit_have_receipts_listed_newest_first(api, member, staff):
    voucher_entry, code = voucher_redeemed(member, amount_micros=5_000_000)
    credit = staff_credited(member, staff, amount_micros=7_500_000)
    charged(member)

    results = api.get("/api/receipts").json()["results"]

    welcome = member.wallet.entries.get(idempotency_key=f"fund-{member.pk}")
    assert [row["id"] for row in results] == [credit.pk, voucher_entry.pk, welcome.pk]
    by_id = {row["id"]: row for row in results}
    assert (by_id[credit.pk]["method"], by_id[credit.pk]["amount_usd"]) == ("staff_credit",
                                                                            "7.500000")
    voucher_row = by_id[voucher_entry.pk]
    assert (voucher_row["method"], voucher_row["voucher_code_prefix"]) == ("voucher", code[:7])
    assert voucher_row["billed_to"] == {"name": "member@example.com", "address": ""}


def test_another_users_receipt_is_a_404_and_not_listed(api, other):
    entry, _ = voucher_redeemed(other)

    response = api.get(f"/api/receipts/{entry.pk}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert entry.pk not in [row["id"] for row in api.get("/api/receipts").json()["results"]]


@pytest.mark.django_db
def test_a_charge_has_no_receipt(member):
    entry = charged(member)

    response = session_client(member).get(f"/api/receipts/{entry.pk}")

    assert response.status_code == 404


@pytest.mark.django_db
def test_receipts_need_a_session_or_a_token(member):
    entry, _ = voucher_redeemed(member)

    assert APIClient().get(f"/api/receipts/{entry.pk}").status_code in (401, 403)


@pytest.mark.django_db
def test_the_schema_describes_the_receipts():
    document = APIClient().get("/api/schema/",
                               HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert "/api/receipts" in document["paths"]
    detail = document["paths"]["/api/receipts/{entry_id}"]["get"]
    assert detail["operationId"] == "receipts_retrieve"
    assert {"200", "404"} <= set(detail["responses"])
